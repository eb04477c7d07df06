"""How a node or a gang ended, read the same way on every cloud; preemption wins.

The node program (:mod:`multicloud.adapterkit.node`) reports an exit code or
:data:`PREEMPTED`; :func:`node_end` reads one node's report and :func:`gang_end` combines a
gang's (docs/architecture.md, "Adapters"; docs/node-contract.md in prose).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum

from multicloud.provider import WorkloadState, WorkloadStatus

__all__ = ["PREEMPTED", "NodeExit", "gang_end", "node_end"]

PREEMPTED = "preempted"
"""What a node reports instead of an exit code when the cloud was reclaiming it."""


class NodeExit(IntEnum):
    """Exit codes the node program itself reports (anything else is the command's own)."""

    NO_PEERS = 75
    """The node could not learn its rank or rank 0's address in time (EX_TEMPFAIL)."""
    SECRET_UNREADABLE = 77
    """A secret could not be read: missing, disabled or no permission (EX_NOPERM)."""
    SECRET_MULTILINE = 78
    """A secret's value spans lines; env files hold one line per variable (EX_CONFIG)."""


_EXIT_MEANING: dict[int, str] = {
    NodeExit.NO_PEERS: "the node could not learn its rank or rank 0's address",
    NodeExit.SECRET_UNREADABLE: "a secret could not be read (missing, disabled or no access)",
    NodeExit.SECRET_MULTILINE: "a secret's value spans lines (store it on one line, e.g. base64)",
}


def node_end(
    reported: str | None, *, reclaimed: bool = False, program: bool = True
) -> WorkloadStatus | None:
    """Read how one node ended; preemption wins over an exit code.

    Args:
        reported: What the node reported (an exit code or ``preempted``), None if nothing.
        reclaimed: The cloud itself says it reclaimed the node (spot interruption,
            preemption, eviction), whatever the node reported.
        program: The code came from the node program, whose own codes (:class:`NodeExit`)
            mean what they say; False where the code is the command's own (a Kubernetes
            container), so a command exiting 75 is just a command exiting 75.

    Returns:
        PREEMPTED, SUCCEEDED or FAILED (with the exit code and what it means), TERMINATED
        when the gang never formed (re-placed); None when the node has not reported and was
        not reclaimed.
    """
    if reclaimed or reported == PREEMPTED:
        return WorkloadStatus(WorkloadState.PREEMPTED, "the cloud reclaimed the node")
    if reported is None or reported == "":
        return None
    try:
        code = int(reported)
    except ValueError:
        return WorkloadStatus(WorkloadState.FAILED, f"the node reported {reported!r}")
    if code == 0:
        return WorkloadStatus(WorkloadState.SUCCEEDED, "exit code 0", exit_code=0)
    if not program:
        return WorkloadStatus(
            WorkloadState.FAILED, f"the command exited with {code}", exit_code=code
        )
    if code == NodeExit.NO_PEERS:
        # The gang never formed (a peer did not boot, say): the workload is lost, and the
        # scheduler re-places it rather than failing the job for its command.
        return WorkloadStatus(WorkloadState.TERMINATED, _EXIT_MEANING[code], exit_code=code)
    meaning = _EXIT_MEANING.get(code, f"the command exited with {code}")
    return WorkloadStatus(WorkloadState.FAILED, meaning, exit_code=code)


_GANG_ORDER = (
    WorkloadState.PREEMPTED,
    WorkloadState.FAILED,
    WorkloadState.TERMINATED,
    WorkloadState.UNKNOWN,
    WorkloadState.PROVISIONING,
    WorkloadState.RUNNING,
)


def gang_end(members: Sequence[WorkloadStatus]) -> WorkloadStatus:
    """Combine the nodes of a gang into the gang's status.

    A gang is preempted if any node was reclaimed (preemption wins), failed if any node
    failed, gone if a node vanished; it is provisioning while any node is, running while
    any runs, and succeeded only when every node succeeded.

    Args:
        members: One status per node (at least one).

    Returns:
        The gang's status (the deciding node's message and exit code).
    """
    if not members:
        return WorkloadStatus(WorkloadState.UNKNOWN, "no node of the gang was found")
    for state in _GANG_ORDER:
        hit = next((m for m in members if m.state is state), None)
        if hit is not None:
            return hit
    return members[0]
