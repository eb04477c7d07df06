"""The custom-data program each VM runs: the workload, then the report of how it ended.

Custom data is a ``#!/usr/bin/env python3`` program (cloud-init runs a custom-data file that
starts with ``#!`` once, on first boot). It carries the container image, the command, the plain
environment and the *names* of the secrets, never their values. On the VM it:

1. resolves each secret name from Key Vault (``https://<key_vault>.vault.azure.net``) with a
   token of the VM's managed identity from the instance metadata service (IMDS); the Key Vault
   secret name is the variable name with ``_`` replaced by ``-`` (Key Vault allows only letters,
   digits and dashes); values go into a mode-0600 env file handed to ``docker --env-file``;
2. runs ``docker run --rm --gpus all --network host`` with the image and command, and
   ``MULTICLOUD_NODE_RANK`` / ``MULTICLOUD_NUM_NODES`` / ``MULTICLOUD_HEAD`` set for gangs;
3. when the command ends, tags its own VM ``multicloud:exit=<code>`` (ARM "Tags - Update At
   Scope", Merge) and deallocates itself (``POST .../deallocate``), so compute billing stops
   while the status stays readable until the orphan sweep or ``terminate`` deletes the VM;
   if either call fails it powers the VM off (``shutdown -h now``) instead.

The adapter reads ``multicloud:exit`` of node 0 as the workload's end.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from multicloud.provider import LaunchSpec

__all__ = ["CUSTOM_DATA_LIMIT", "EXIT_TAG", "WorkloadConfig", "custom_data", "program"]

EXIT_TAG = "multicloud:exit"
"""Tag the VM sets on itself with the command's exit code."""

CUSTOM_DATA_LIMIT = 65535
"""Azure's limit on the base64 custom data of a VM, in characters."""

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# The program is plain text with one placeholder; the configuration is a JSON literal so that
# no value can break out of it, whatever it contains.
_PROGRAM = r'''#!/usr/bin/env python3
"""multicloud workload runner (generated; holds secret names only, never values)."""
import json, os, subprocess, sys, tempfile, time, urllib.parse, urllib.request

CONFIG = json.loads(__CONFIG__)
IMDS = CONFIG["imds_endpoint"].rstrip("/")
ARM = CONFIG["arm_endpoint"].rstrip("/")


def imds_token(resource):
    query = {"api-version": "2018-02-01", "resource": resource}
    if CONFIG.get("identity_client_id"):
        query["client_id"] = CONFIG["identity_client_id"]
    req = urllib.request.Request(
        IMDS + "/identity/oauth2/token?" + urllib.parse.urlencode(query),
        headers={"Metadata": "true"},
    )
    for attempt in range(10):
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read())["access_token"]
        except Exception:
            time.sleep(2 + attempt)
    raise RuntimeError("no managed identity token from IMDS")


def call(method, url, token, body=None):
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=30) as resp:
        raw = resp.read()
        return json.loads(raw) if raw else None


def resource_id():
    if CONFIG.get("vm_id"):
        return CONFIG["vm_id"]
    req = urllib.request.Request(
        IMDS + "/instance/compute/resourceId?api-version=2021-02-01&format=text",
        headers={"Metadata": "true"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.read().decode().strip()


def secret_env_file():
    names = CONFIG["secrets"]
    fd, path = tempfile.mkstemp(prefix="mc-env-")
    os.chmod(path, 0o600)
    with os.fdopen(fd, "w") as out:
        for key, value in CONFIG["env"].items():
            out.write(key + "=" + value.replace("\n", " ") + "\n")
        if names:
            vault = CONFIG["vault_url"].rstrip("/")
            token = imds_token(CONFIG["vault_resource"])
            for name in names:
                doc = call("GET", vault + "/secrets/" + name.replace("_", "-")
                           + "?api-version=7.4", token)
                out.write(name + "=" + doc["value"].replace("\n", " ") + "\n")
    return path


def run():
    env_file = secret_env_file()
    argv = ["docker", "run", "--rm", "--gpus", "all", "--network", "host",
            "--env-file", env_file, CONFIG["image"]]
    command = CONFIG["command"]
    if isinstance(command, str):
        argv += ["/bin/sh", "-c", command]
    elif command:
        argv += list(command)
    try:
        return subprocess.call(argv)
    finally:
        os.unlink(env_file)


def report(code):
    try:
        token = imds_token(ARM + "/")
        vm = resource_id()
        call("PATCH", ARM + vm + "/providers/Microsoft.Resources/tags/default"
             "?api-version=2021-04-01", token,
             {"operation": "Merge", "properties": {"tags": {CONFIG["exit_tag"]: str(code)}}})
        call("POST", ARM + vm + "/deallocate?api-version=2024-07-01", token)
    except Exception as exc:
        print("multicloud: could not report the exit code: %s" % exc, file=sys.stderr)
        subprocess.call(CONFIG["poweroff"])


if __name__ == "__main__":
    try:
        code = run()
    except Exception as exc:
        print("multicloud: workload could not start: %s" % exc, file=sys.stderr)
        code = 125
    report(code)
'''


@dataclass(frozen=True, slots=True)
class WorkloadConfig:
    """Settings of the runner that come from the adapter, not the job.

    The last four fields only change in tests, which run the program on this machine
    against the fake ARM (``multicloud_azure.testing``) instead of a VM.

    Attributes:
        key_vault: Key Vault name the secrets are read from (required when a job has secrets).
        identity_client_id: Client id of the VM's user-assigned identity, if it has one.
        arm_endpoint: Resource Manager endpoint the VM reports its end to.
        imds_endpoint: Instance metadata service (managed identity tokens).
        vault_url: Key Vault URL; ``{name}`` is replaced by ``key_vault``.
        vault_resource: Token resource of Key Vault.
        poweroff: Command that powers the VM off when reporting fails.
    """

    key_vault: str | None = None
    identity_client_id: str | None = None
    arm_endpoint: str = "https://management.azure.com"
    imds_endpoint: str = "http://169.254.169.254/metadata"
    vault_url: str = "https://{name}.vault.azure.net"
    vault_resource: str = "https://vault.azure.net"
    poweroff: tuple[str, ...] = ("shutdown", "-h", "now")


def program(
    spec: LaunchSpec, *, rank: int, head: str, config: WorkloadConfig, vm_id: str = ""
) -> str:
    """Return the runner program of one node.

    Args:
        spec: What to run.
        rank: Node rank in the gang (0 reports the workload's end to the adapter).
        head: VM name of node 0 (resolvable inside the virtual network).
        config: Adapter-side settings.
        vm_id: ARM resource id of this node's VM (else the VM asks IMDS for it).

    Returns:
        The program text.

    Raises:
        ValueError: If the spec has no image, a bad variable or secret name, or secrets
            without a Key Vault to read them from.
    """
    if not spec.image:
        raise ValueError(f"job {spec.job_id} has no container image to run")
    names = list(spec.env) + list(spec.secrets)
    bad = [n for n in names if not _ENV_NAME.match(n)]
    if bad:
        raise ValueError(f"not valid environment variable names: {', '.join(sorted(bad))}")
    if spec.secrets and not config.key_vault:
        raise ValueError(
            "the job has secrets but the adapter has no key_vault option to resolve them from"
        )
    env: dict[str, str] = {
        "MULTICLOUD_JOB_ID": spec.job_id,
        "MULTICLOUD_ATTEMPT": str(spec.attempt),
        "MULTICLOUD_NODE_RANK": str(rank),
        "MULTICLOUD_NUM_NODES": str(spec.nodes),
        "MULTICLOUD_HEAD": head,
    }
    if spec.checkpoint:
        env["MULTICLOUD_CHECKPOINT"] = spec.checkpoint
    env.update(spec.env)
    command: str | list[str] | None
    command = list(spec.command) if isinstance(spec.command, tuple) else spec.command
    doc = {
        "image": spec.image,
        "command": command,
        "env": env,
        "secrets": list(spec.secrets),
        "key_vault": config.key_vault,
        "identity_client_id": config.identity_client_id,
        "arm_endpoint": config.arm_endpoint,
        "imds_endpoint": config.imds_endpoint,
        "vault_url": config.vault_url.replace("{name}", config.key_vault or ""),
        "vault_resource": config.vault_resource,
        "poweroff": list(config.poweroff),
        "vm_id": vm_id,
        "exit_tag": EXIT_TAG,
    }
    # json.dumps twice: the inner gives the document, the outer a valid Python string literal.
    return _PROGRAM.replace("__CONFIG__", json.dumps(json.dumps(doc, sort_keys=True)))


def custom_data(text: str) -> str:
    """Encode a program as VM custom data.

    Args:
        text: The program.

    Returns:
        Its base64 text.

    Raises:
        ValueError: If the encoded program is over Azure's limit.
    """
    encoded = base64.b64encode(text.encode("utf-8")).decode("ascii")
    if len(encoded) > CUSTOM_DATA_LIMIT:
        raise ValueError(
            f"custom data is {len(encoded)} characters, over Azure's {CUSTOM_DATA_LIMIT}; "
            "shorten the command or environment"
        )
    return encoded


def config_of(text: str) -> Mapping[str, object]:
    """Read back the configuration embedded in a runner program (for tests and debugging).

    Args:
        text: A program made by :func:`program`.

    Returns:
        The configuration document.

    Raises:
        ValueError: If the text is not such a program.
    """
    for line in text.splitlines():
        if line.startswith("CONFIG = json.loads("):
            literal = line[len("CONFIG = json.loads(") : -1]
            doc = json.loads(json.loads(literal))
            if isinstance(doc, dict):
                return doc
    raise ValueError("not a multicloud runner program")
