"""The node contract: what every node of a gang runs and what it is given, on every cloud.

One module renders it for all clouds (docs/node-contract.md is the same contract in prose,
for the people who write training code):

* **VM clouds** (AWS, GCP, Azure, OCI) boot a bash *node program* rendered by
  :func:`render_node_program`. The cloud contributes only a :class:`Binding`: a few bash
  snippets that read its metadata service (this node's rank, rank 0's address), fetch a
  secret by name, tell whether the node is being reclaimed, and report the end. Everything
  else — the environment, the one secret rule and its exit codes, the container's flags,
  "preemption wins over an exit code" — is the same text on every cloud.
* **Kubernetes clouds** (CoreWeave, any cluster) run the container directly;
  :func:`~multicloud.adapterkit.pod.pod_contract` gives the same environment (the rank
  from the Indexed Job's completion index), the shared memory volume, the accelerator and
  RDMA resources and the memlock capability.

The status side (:mod:`multicloud.adapterkit.ending`, re-exported here) reads what a node
reported with :func:`node_end` and a gang with :func:`gang_end`; both let preemption win.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from multicloud.accelerators import ACCELERATORS
from multicloud.adapterkit.ending import PREEMPTED, NodeExit, gang_end, node_end
from multicloud.provider import LaunchSpec, Offer

__all__ = [
    "MASTER_PORT",
    "PREEMPTED",
    "Binding",
    "Family",
    "NodeExit",
    "NodeShape",
    "contract_env",
    "family_of",
    "gang_end",
    "node_end",
    "render_node_program",
    "secret_env_name",
]

MASTER_PORT = 29500
"""Rank 0's rendezvous port (torchrun's default)."""

Family = Literal["nvidia", "amd", "neuron", "tpu", "cpu"]

_FAMILY_OF_VENDOR: dict[str, Family] = {
    "nvidia": "nvidia",
    "amd": "amd",
    "aws": "neuron",
    "google": "tpu",
    "generic": "cpu",
}
_VENDOR = {a.name: a.vendor for a in ACCELERATORS}


def family_of(accelerator: str) -> Family:
    """Return the device family of a canonical accelerator name (how a container gets it).

    Args:
        accelerator: Canonical accelerator name (``H100``, ``Trainium``, ``TPU-v5e``).

    Returns:
        ``nvidia``, ``amd``, ``neuron``, ``tpu`` or ``cpu``.
    """
    return _FAMILY_OF_VENDOR.get(_VENDOR.get(accelerator, "generic"), "cpu")


@dataclass(frozen=True)
class NodeShape:
    """What one node of the gang has, as far as the container is concerned.

    Attributes:
        family: Device family (decides the container's device flags).
        accelerators: Accelerators per node.
        rdma: The node has RDMA devices (InfiniBand, EFA, RoCE) under ``/dev/infiniband``.
    """

    family: Family
    accelerators: int
    rdma: bool = False

    @classmethod
    def of(cls, offer: Offer, *, rdma: bool = False) -> NodeShape:
        """Return the shape of the offer's nodes.

        Args:
            offer: The planned offer.
            rdma: Whether its instance type has RDMA devices (the adapter knows).

        Returns:
            The shape.
        """
        return cls(family_of(offer.accelerator), max(offer.count, 1), rdma)


def secret_env_name(secret: str) -> str:
    """Return the environment variable a secret is given as (one rule, every cloud).

    Args:
        secret: Secret name or path (``HF_TOKEN``, ``prod/hf-token``,
            ``projects/p/secrets/hf-token``).

    Returns:
        The last path component, upper-cased, with anything but letters, digits and ``_``
        replaced by ``_`` (``HF_TOKEN``); a leading digit gets a ``_`` in front.
    """
    last = secret.rstrip("/").rsplit("/", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9_]", "_", last).upper()
    return name if name and not name[0].isdigit() else f"_{name}"


def contract_env(
    spec: LaunchSpec, offer: Offer, request_id: str, shape: NodeShape
) -> dict[str, str]:
    """Return the environment every node of the gang gets, but for its rank and rank 0.

    ``NODE_RANK`` and ``MASTER_ADDR`` are learned on the node (VMs) or given by the
    orchestrator (Kubernetes). The same values are exported with torchrun's ``PET_``
    prefix, so a plain ``torchrun train.py`` forms the gang without flags.

    Args:
        spec: The launch.
        offer: The offer launched on.
        request_id: The launch's idempotency key.
        shape: The node's shape.

    Returns:
        The job's own variables, then the contract's (which win on a clash, but for
        ``MASTER_PORT``, which the job may set).
    """
    per_node = shape.accelerators if shape.family != "cpu" else 1
    env = dict(spec.env)
    # The one contract value a job may choose: another rendezvous port.
    port = env.get("MASTER_PORT") or str(MASTER_PORT)
    env.update(
        {
            "MULTICLOUD_JOB_ID": spec.job_id,
            "MULTICLOUD_ATTEMPT": str(spec.attempt),
            "MULTICLOUD_REQUEST_ID": request_id,
            "MULTICLOUD_ACCELERATOR": offer.accelerator,
            "NNODES": str(spec.nodes),
            "NPROC_PER_NODE": str(per_node),
            "WORLD_SIZE": str(spec.nodes * per_node),
            "MASTER_PORT": port,
            "PET_NNODES": str(spec.nodes),
            "PET_NPROC_PER_NODE": str(per_node),
            "PET_MASTER_PORT": port,
        }
    )
    if spec.checkpoint:
        env["MULTICLOUD_CHECKPOINT"] = spec.checkpoint
    return env


@dataclass(frozen=True)
class Binding:
    """What one VM cloud contributes to the node program: bash snippets, nothing else.

    Each snippet is the body of a bash function; ``$1`` is its argument.

    Attributes:
        cloud: Cloud name (for the script's header).
        prelude: Definitions the snippets use (metadata helpers, variables).
        rank: Prints this node's rank, 0-based.
        master: Prints rank 0's IP address (empty while it is not known yet; retried).
        secret: Prints the value of the secret named ``$1``; fails if it cannot be read.
        reclaimed: Succeeds when the cloud is reclaiming this node (spot interruption,
            preemption, eviction).
        report: Records ``$1`` (an exit code, or ``preempted``) where the adapter's status
            reader finds it; retried with back-off by the program.
        halt: Stops the node so that it stops billing (``:`` where a node cannot).
        tpu: The node is a TPU VM worker (exports ``TPU_WORKER_ID``).
    """

    cloud: str
    prelude: str
    rank: str
    master: str
    secret: str
    reclaimed: str
    report: str
    halt: str = "shutdown -h now"
    tpu: bool = False


def _container_flags(shape: NodeShape) -> list[str]:
    # Host networking: peers reach rank 0's rendezvous port and NCCL/Gloo advertise the
    # host's address, not a bridge's. Host IPC: the host's /dev/shm, not Docker's 64 MiB.
    flags = [
        "--network", "host",
        "--ipc", "host",
        "--ulimit", "memlock=-1:-1",
        "--ulimit", "stack=67108864:67108864",
    ]
    if shape.family == "nvidia":
        flags += ["--gpus", "all"]
    elif shape.family == "amd":
        flags += ["--device=/dev/kfd", "--device=/dev/dri", "--group-add", "video"]
    elif shape.family == "tpu":
        # Google's TPU VM images run containers privileged to reach /dev/accel* and vfio.
        flags += ["--privileged"]
    elif shape.family == "neuron":
        # How many /dev/neuron* a node has depends on its type: listed on the node.
        flags += [_NEURON_DEVICES]
    if shape.rdma:
        flags += ["--device=/dev/infiniband", "--cap-add=IPC_LOCK"]
    return flags


_NEURON_DEVICES = "$(mc_neuron_devices)"
"""Placeholder for the node's Neuron device flags (a shell expansion, left unquoted)."""


def _shell_words(words: Sequence[str]) -> str:
    return " ".join(w if w == _NEURON_DEVICES else shlex.quote(w) for w in words)


def _command_words(command: str | Sequence[str] | None) -> list[str]:
    if command is None:
        return []
    if isinstance(command, str):
        return ["sh", "-c", command]
    return [str(part) for part in command]


def render_node_program(
    spec: LaunchSpec,
    offer: Offer,
    request_id: str,
    binding: Binding,
    *,
    shape: NodeShape | None = None,
    max_wait_s: int = 600,
) -> str:
    """Render the bash program one node of the gang boots with.

    Args:
        spec: The launch (image, command, env, secret names, nodes).
        offer: The offer launched on (accelerator and count per node).
        request_id: The launch's idempotency key.
        binding: The cloud's snippets.
        shape: The node's shape (default: from the offer, without RDMA).
        max_wait_s: How long a node waits for rank 0's address before it gives up.

    Returns:
        The program. It holds secret *names* only; values are fetched on the node.
    """
    shape = shape or NodeShape.of(offer)
    q = shlex.quote
    env = contract_env(spec, offer, request_id, shape)
    tries = max(1, max_wait_s // 5)
    lines = [
        "#!/bin/bash",
        f"# multicloud node program ({binding.cloud}); the contract: docs/node-contract.md.",
        "set -u",
        binding.prelude.rstrip("\n"),
        f"mc_rank() {{\n{binding.rank}\n}}",
        f"mc_master() {{\n{binding.master}\n}}",
        f"mc_secret() {{\n{binding.secret}\n}}",
        f"mc_reclaimed() {{\n{binding.reclaimed}\n}}",
        f"mc_report_once() {{\n{binding.report}\n}}",
        # The report is the only way the scheduler learns how the node ended: retry it
        # (throttling, a credential not issued yet) before the node stops.
        "mc_report() {",
        "  local try=1",
        '  until mc_report_once "$1"; do',
        '    if [ "$try" -ge 5 ]; then echo "multicloud: could not report $1" >&2; return 1; fi',
        '    sleep "$(( 2 ** try ))"; try=$(( try + 1 ))',
        "  done",
        "}",
        # Preemption wins: a node the cloud is reclaiming reports "preempted", whatever its
        # command returned (a reclaim kills the container: 137 or 143).
        "mc_end() {",
        f'  if mc_reclaimed; then mc_report {PREEMPTED}; else mc_report "$1"; fi',
        '  rm -f "$ENVFILE"',
        f"  {binding.halt}",
        '  exit "$1"',
        "}",
        # A reclaim or a host-maintenance stop sends SIGTERM to everything on the node: the
        # program must outlive its container to ask whether it is being reclaimed and report.
        "trap 'echo \"multicloud: SIGTERM; reporting before the node stops\" >&2' TERM",
        "mc_neuron_devices() {",
        "  local d",
        "  for d in /dev/neuron[0-9]*; do [ -e \"$d\" ] && printf -- '--device=%s ' \"$d\"; done",
        "}",
        "umask 077",
        "ENVFILE=$(mktemp)",
        "put() { printf '%s=%s\\n' \"$1\" \"$2\" >> \"$ENVFILE\"; }",
        "# secret NAME VARIABLE: one rule on every cloud (docs/node-contract.md).",
        "secret() {",
        "  local value",
        '  if ! value=$(mc_secret "$1"); then',
        '    echo "multicloud: secret $1 could not be read (missing, disabled or no access)" >&2',
        f"    mc_end {int(NodeExit.SECRET_UNREADABLE)}",
        "  fi",
        '  case "$value" in',
        "    *$'\\n'*|*$'\\r'*)",
        '      echo "multicloud: secret $1 spans lines; store it on one line (e.g. base64)" >&2',
        f"      mc_end {int(NodeExit.SECRET_MULTILINE)};;",
        "  esac",
        '  put "$2" "$value"',
        "}",
    ]
    for key, value in env.items():
        lines.append(f"put {q(key)} {q(value)}")
    lines += [
        "NODE_RANK=$(mc_rank)",
        'case "$NODE_RANK" in',
        "  ''|*[!0-9]*)",
        '    echo "multicloud: this node could not learn its rank" >&2',
        f"    mc_end {int(NodeExit.NO_PEERS)};;",
        "esac",
        "MASTER_ADDR=",
        f"for _ in $(seq 1 {tries}); do",
        '  MASTER_ADDR=$(mc_master) && [ -n "$MASTER_ADDR" ] && break',
        "  MASTER_ADDR=",
        "  sleep 5",
        "done",
        'if [ -z "$MASTER_ADDR" ]; then',
        '  echo "multicloud: rank 0\'s address did not appear" >&2',
        f"  mc_end {int(NodeExit.NO_PEERS)}",
        "fi",
        'put NODE_RANK "$NODE_RANK"',
        'put PET_NODE_RANK "$NODE_RANK"',
        'put MASTER_ADDR "$MASTER_ADDR"',
        'put PET_MASTER_ADDR "$MASTER_ADDR"',
    ]
    if binding.tpu:
        lines.append('put TPU_WORKER_ID "$NODE_RANK"')
    for name in spec.secrets:
        lines.append(f"secret {q(name)} {q(secret_env_name(name))}")
    command = _command_words(spec.command)
    if spec.image is not None:
        run = ["docker", "run", "--rm", *_container_flags(shape)]
        lines.append(
            _shell_words(run)
            + ' --env-file "$ENVFILE" '
            + " ".join(q(w) for w in [spec.image, *command])
        )
    else:
        # No image: the command runs on the host with the same environment. The env file is
        # raw KEY=value lines, read line by line rather than sourced (no shell quoting).
        lines.append(
            '(while IFS= read -r line; do export "${line%%=*}=${line#*=}"; done < "$ENVFILE"; '
            + "exec "
            + " ".join(q(w) for w in command)
            + ")"
        )
    lines += ['mc_end "$?"', ""]
    return "\n".join(lines)
