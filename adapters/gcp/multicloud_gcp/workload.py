"""Names, labels and the startup script that carry a workload onto Google Cloud.

How a workload runs and reports its end (documented in docs/providers/gcp.md):

* GPU VMs boot with a ``startup-script`` metadata item rendered here. It resolves the job's
  secret *names* from Secret Manager on the host (the values never appear in metadata, labels
  or logs), runs the container image with the command and env, then writes the exit code to
  the instance's own label ``multicloud-exit`` and powers the VM off. A stopped VM keeps its
  labels and stops billing for its GPUs, so the adapter reads the exit code from the same
  ``instances.list`` call it uses for status.
* TPU VMs get the same script; worker 0 writes ``multicloud-exit`` on the TPU node's labels
  through the TPU API (a TPU VM cannot be stopped from inside), every worker runs the
  container.

The exact job id, attempt and install id also travel in metadata (labels are lowercased and
limited to 63 characters), so the orphan sweep gets them back unchanged.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import uuid

from multicloud.provider import LaunchSpec

__all__ = [
    "LABEL_ATTEMPT",
    "LABEL_EXIT",
    "LABEL_HANDLE",
    "LABEL_INSTALL",
    "LABEL_JOB",
    "LABEL_PROVIDER",
    "LABEL_SPEC",
    "META_ATTEMPT",
    "META_INSTALL",
    "META_JOB",
    "META_TYPE",
    "REQUEST_NAMESPACE",
    "SECRET_EXIT_CODE",
    "base_name",
    "label_value",
    "labels_for",
    "node_request_id",
    "request_uuid",
    "spec_digest",
    "startup_script",
]

LABEL_JOB = "multicloud-job"
LABEL_ATTEMPT = "multicloud-attempt"
LABEL_INSTALL = "multicloud-install"
LABEL_HANDLE = "multicloud-handle"
LABEL_PROVIDER = "multicloud-provider"
LABEL_SPEC = "multicloud-spec"
LABEL_EXIT = "multicloud-exit"
"""Set by the workload itself when it ends: the container's exit code."""

META_JOB = "multicloud-job-id"
META_ATTEMPT = "multicloud-attempt"
META_INSTALL = "multicloud-install-id"
META_TYPE = "multicloud-instance-type"

# uuid5(NAMESPACE_URL, "https://github.com/multicloud/multicloud-gcp"), fixed forever.
REQUEST_NAMESPACE = uuid.UUID("8e2b5e15-a710-50e7-8197-6837151d3ff0")
"""UUIDv5 namespace of the ``requestId`` values this adapter sends to Google."""

_LABEL_MAX = 63

SECRET_EXIT_CODE = 78
"""Exit code reported when a secret cannot be used (missing, forbidden, not one line).

The workload does not start; the message on the serial console names the secret, never its
value. 78 is ``EX_CONFIG`` of ``sysexits.h``: the job's configuration is wrong, re-placing it
elsewhere would not help.
"""

_SECRET_PY = """import base64, json, sys
try:
    value = base64.b64decode(json.load(sys.stdin)["payload"]["data"]).decode()
except Exception:
    sys.exit(2)  # nothing of the answer is printed: it may hold part of the value
value = value.rstrip("\\r\\n")
if "\\n" in value or "\\r" in value:
    sys.exit(3)
sys.stdout.write(value)"""


def label_value(value: str) -> str:
    """Make ``value`` a valid GCP label value (lowercase, ``[a-z0-9_-]``, at most 63 chars).

    A value that had to be shortened or changed keeps a short hash of the original, so two
    different job ids never share a label.

    Args:
        value: Any string.

    Returns:
        The label value.
    """
    clean = re.sub(r"[^a-z0-9_-]", "-", value.lower())
    if clean == value and len(clean) <= _LABEL_MAX:
        return clean
    digest = hashlib.sha256(value.encode()).hexdigest()[:8]
    return f"{clean[: _LABEL_MAX - 9]}-{digest}"


def base_name(fleet_name: str, request_id: str) -> str:
    """Return the deterministic name of a launch (the handle id).

    VM ``i`` of the gang is ``<base>-<i>``; a TPU queued resource or node is ``<base>``. A
    re-send of the same request id computes the same names and so finds what it created.

    Args:
        fleet_name: Fleet provider name (two fleet entries never share names).
        request_id: The launch's idempotency key.

    Returns:
        ``mc-`` and 20 hex characters: a valid instance, node and queued-resource name.
    """
    digest = hashlib.sha256(f"{fleet_name}|{request_id}".encode()).hexdigest()[:20]
    return f"mc-{digest}"


def request_uuid(request_id: str) -> str:
    """Return the UUIDv5 of our request id, the ``requestId`` Google de-duplicates on."""
    return str(uuid.uuid5(REQUEST_NAMESPACE, request_id))


def node_request_id(request_id: str, zone: str, node: int, *, resend: str = "") -> str:
    """Return the ``requestId`` of one VM insert of a gang.

    Each insert of a gang is its own request, so each needs its own ``requestId``; the zone
    is part of it because a re-placement into another zone under the same key is another
    request (Google would otherwise answer it with the first zone's operation).

    Google answers a ``requestId`` it has already seen with that request's (finished)
    operation and creates nothing, so an insert that failed, or whose VM was deleted since,
    can never be sent again under its first ``requestId``. Such a re-send passes ``resend``
    (a fresh random suffix): duplicates are still impossible, because the VM's name is
    deterministic and Google refuses a second VM of that name (409 ``alreadyExists``).

    Args:
        request_id: The launch's idempotency key.
        zone: Zone of the gang.
        node: Index of the VM in the gang.
        resend: Empty for the first send; a fresh suffix for a re-send.

    Returns:
        ``uuid5(REQUEST_NAMESPACE, f"{request_id}/{zone}/{node}")``, with
        ``/resend/<suffix>`` appended to the name for a re-send.
    """
    key = f"{request_id}/{zone}/{node}"
    return request_uuid(f"{key}/resend/{resend}" if resend else key)


def spec_digest(spec: LaunchSpec, instance_type: str, zone: str) -> str:
    """Return a short digest of what a launch asks for, to refuse a reused key."""
    data = json.dumps(
        [
            spec.job_id,
            spec.attempt,
            spec.nodes,
            spec.market.value,
            spec.image,
            spec.command,
            sorted(spec.env.items()),
            list(spec.secrets),
            instance_type,
            zone,
        ],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def labels_for(
    spec: LaunchSpec, *, fleet_name: str, handle_id: str, install_id: str, digest: str
) -> dict[str, str]:
    """Return the labels every resource of a launch carries.

    Args:
        spec: The launch.
        fleet_name: Fleet provider name.
        handle_id: The launch's base name.
        install_id: Scheduler install id.
        digest: ``spec_digest`` of the launch.

    Returns:
        Job, attempt, install, handle, provider and spec labels.
    """
    return {
        LABEL_JOB: label_value(spec.job_id),
        LABEL_ATTEMPT: label_value(str(spec.attempt)),
        LABEL_INSTALL: label_value(install_id),
        LABEL_HANDLE: handle_id,
        LABEL_PROVIDER: label_value(fleet_name),
        LABEL_SPEC: digest,
    }


def _env_name(secret: str) -> str:
    # "projects/p/secrets/hf-token" and "hf-token" both become HF_TOKEN.
    last = secret.rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9_]", "_", last).upper()


def _command(spec: LaunchSpec) -> list[str]:
    if spec.command is None:
        return []
    if isinstance(spec.command, str):
        return ["/bin/sh", "-c", spec.command]
    return list(spec.command)


_REPORTER = f"""import json, sys, urllib.request
rc, kind = sys.argv[1], sys.argv[2]
MD = "http://metadata.google.internal/computeMetadata/v1/"
def md(path):
    req = urllib.request.Request(MD + path, headers={{"Metadata-Flavor": "Google"}})
    return urllib.request.urlopen(req, timeout=10).read().decode()
def call(method, url, body=None):
    tok = json.loads(md("instance/service-accounts/default/token"))["access_token"]
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={{
        "Authorization": "Bearer " + tok, "Content-Type": "application/json"}})
    return json.loads(urllib.request.urlopen(req, timeout=30).read() or b"{{}}")
project, name = md("project/project-id"), md("instance/name")
zone = md("instance/zone").rsplit("/", 1)[-1]
if kind == "vm":
    url = ("https://compute.googleapis.com/compute/v1/projects/%s/zones/%s/instances/%s"
           % (project, zone, name))
    me = call("GET", url)
    labels = dict(me.get("labels", {{}}), **{{"{LABEL_EXIT}": rc}})
    call("POST", url + "/setLabels",
         {{"labels": labels, "labelFingerprint": me["labelFingerprint"]}})
else:
    try:
        worker = md("instance/attributes/agent-worker-number")
    except Exception:
        worker = "0"
    if worker.strip() == "0":
        node = sys.argv[3]
        url = ("https://tpu.googleapis.com/v2/projects/%s/locations/%s/nodes/%s"
               % (project, zone, node))
        me = call("GET", url)
        labels = dict(me.get("labels", {{}}), **{{"{LABEL_EXIT}": rc}})
        call("PATCH", url + "?updateMask=labels", {{"labels": labels}})"""


def startup_script(
    spec: LaunchSpec, *, kind: str, nodes: int, coordinator: str, resource: str = ""
) -> str:
    """Render the startup script that runs the workload and reports its end.

    Args:
        spec: The launch (image, command, env, secret names).
        kind: ``"vm"`` (report on the instance's labels, then power off) or ``"tpu"``
            (worker 0 reports on the TPU node's labels).
        nodes: Nodes of the gang (exported as ``MULTICLOUD_NUM_NODES``).
        coordinator: Host name of node 0 (exported as ``MULTICLOUD_COORDINATOR``; empty =
            not exported).
        resource: The TPU node id the exit code is reported on (TPU VMs only).

    Returns:
        A bash script. It holds secret names only; values are fetched on the host.
    """
    q = shlex.quote
    env = {
        **spec.env,
        "MULTICLOUD_JOB_ID": spec.job_id,
        "MULTICLOUD_ATTEMPT": str(spec.attempt),
        "MULTICLOUD_NUM_NODES": str(nodes),
    }
    if coordinator:
        env["MULTICLOUD_COORDINATOR"] = coordinator
    if spec.checkpoint:
        env["MULTICLOUD_CHECKPOINT"] = spec.checkpoint
    stop = "shutdown -h now" if kind == "vm" else ":"
    lines = [
        "#!/bin/bash",
        "# Written by multicloud-gcp. Runs the job's container, then reports its exit code.",
        "set -u",
        'MD="http://metadata.google.internal/computeMetadata/v1"',
        'md() { curl -sf -H "Metadata-Flavor: Google" "$MD/$1"; }',
        "token() { md instance/service-accounts/default/token |"
        " python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])'; }",
        "PROJECT=$(md project/project-id)",
        "NAME=$(md instance/name)",
        "ZONE=$(md instance/zone | awk -F/ '{print $NF}')",
        "export MULTICLOUD_NODE_RANK=${NAME##*-}",
        # The reporter merges the exit code into the resource's existing labels (a labels
        # update replaces the whole map) with the VM's own service-account token; stdlib
        # Python only.
        "report() {",
        f"python3 - \"$1\" {q(kind)} {q(resource or '-')} <<'PY'",
        _REPORTER,
        "PY",
        "}",
        # A stopped VM keeps its labels and stops billing for its accelerators.
        f'finish() {{ report "$1"; {stop}; exit "$1"; }}',
        # Reads one secret's value from Secret Manager (stdin: the access answer). Prints
        # nothing but the value, and exits 2 when there is none (missing, disabled, no
        # access) and 3 when it is not one line: Docker's env-file parser would print the
        # offending line, i.e. part of the secret, to the serial console.
        "read -r -d '' SECRET_PY <<'SECRETPY'",
        _SECRET_PY,
        "SECRETPY",
        "secret() {  # $1 = secret name (the only thing ever printed), $2 = resource, $3 = env",
        "  local value rc",
        '  value=$(curl -sf -H "Authorization: Bearer $(token)" '
        '"https://secretmanager.googleapis.com/v1/$2/versions/latest:access" '
        '| python3 -c "$SECRET_PY")',
        "  rc=$?",
        '  if [ "$rc" -eq 0 ]; then printf \'%s=%s\\n\' "$3" "$value" >> "$ENVFILE"; return; fi',
        "  unset value",
        '  if [ "$rc" -eq 3 ]; then why="is not a single line (refused: env files hold one line'
        ' per variable)"; else why="could not be read from Secret Manager (missing, disabled or'
        ' no access)"; fi',
        f'  echo "multicloud: secret $1 $why; exiting {SECRET_EXIT_CODE}" >&2',
        '  rm -f "$ENVFILE"',
        f"  finish {SECRET_EXIT_CODE}",
        "}",
        "ENVFILE=$(mktemp)",
        'chmod 600 "$ENVFILE"',
    ]
    for key, value in sorted(env.items()):
        lines.append(f"printf '%s=%s\\n' {q(key)} {q(value)} >> \"$ENVFILE\"")
    lines.append('printf \'MULTICLOUD_NODE_RANK=%s\\n\' "$MULTICLOUD_NODE_RANK" >> "$ENVFILE"')
    for secret in spec.secrets:
        # The path by name only; the value goes from Secret Manager straight into a 0600
        # file read by docker, and a secret that cannot be used ends the workload.
        path = (
            q(secret)
            if secret.startswith("projects/")
            else f'"projects/$PROJECT/secrets/"{q(secret)}'
        )
        lines.append(f"secret {q(secret)} {path} {q(_env_name(secret))}")
    gpu = "--gpus all" if kind == "vm" else "--privileged --net host"
    image = q(spec.image) if spec.image else "ubuntu:22.04"
    command = " ".join(q(part) for part in _command(spec))
    lines += [
        f'docker run --rm {gpu} --env-file "$ENVFILE" {image} {command}',
        "RC=$?",
        'rm -f "$ENVFILE"',
        'finish "$RC"',
    ]
    return "\n".join(lines) + "\n"
