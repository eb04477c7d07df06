"""How an EC2 gang ended: each node read by the kit's ``node_end``, the gang by ``gang_end``.

EC2's own word that it reclaimed a spot instance (``InstanceLifecycle: spot`` with a
``StateReason`` of ``Server.SpotInstanceTermination``/``…Shutdown``/``…Hibernation``) is read
*before* the node's exit tag: a reclaim kills the container, and a node whose report still got
out then tagged 137 or 143.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from multicloud.adapterkit import gang_end, node_end
from multicloud.provider import WorkloadState, WorkloadStatus
from multicloud_aws.node import EXIT_TAG

__all__ = ["LIVE_STATES", "SPOT_RECLAIM", "gang_status", "tags_of"]

SPOT_RECLAIM = frozenset(
    {
        "Server.SpotInstanceTermination",
        "Server.SpotInstanceShutdown",
        "Server.SpotInstanceHibernation",
    }
)
"""``StateReason.Code`` of a spot instance EC2 interrupted."""

LIVE_STATES = ("pending", "running", "stopping", "stopped")
_ENDED = frozenset({"shutting-down", "terminated", "stopping", "stopped"})
_SELF_SHUTDOWN = "Client.InstanceInitiatedShutdown"
"""``StateReason`` of an instance that powered itself off (the node program's last step)."""


def tags_of(instance: Mapping[str, Any]) -> dict[str, str]:
    """Return an EC2 item's tags as a dict."""
    return {str(t["Key"]): str(t.get("Value", "")) for t in instance.get("Tags") or []}


def _node(instance: Mapping[str, Any]) -> WorkloadStatus:
    state = str((instance.get("State") or {}).get("Name", ""))
    reason = str((instance.get("StateReason") or {}).get("Code", ""))
    reclaimed = instance.get("InstanceLifecycle") == "spot" and reason in SPOT_RECLAIM
    ended = node_end(tags_of(instance).get(EXIT_TAG), reclaimed=reclaimed)
    if ended is not None:
        return ended
    if state in _ENDED and reason == _SELF_SHUTDOWN:
        # It powered itself off without its tag: it ran and ended, so it is not re-run as lost.
        return WorkloadStatus(
            WorkloadState.FAILED,
            "host ended without reporting an exit code (instance profile allowed to tag?)",
        )
    if state in _ENDED:
        why = reason or "no reason"
        return WorkloadStatus(WorkloadState.TERMINATED, f"instance {state} ({why})")
    if state == "pending":
        return WorkloadStatus(WorkloadState.PROVISIONING, "pending")
    return WorkloadStatus(WorkloadState.RUNNING, "running")


def gang_status(members: Sequence[Mapping[str, Any]]) -> WorkloadStatus:
    """Return the status of a gang from its instances (UNKNOWN when EC2 lists none)."""
    if not members:
        return WorkloadStatus(WorkloadState.UNKNOWN, "no such instances (gone or never made)")
    return gang_end([_node(i) for i in members])
