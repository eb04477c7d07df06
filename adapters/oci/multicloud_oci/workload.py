"""How a launch looks on OCI and how it is read back: tags, names, and a gang's status.

A launch is a gang of instances ``<base>-<rank>`` (``base`` from the kit's
``resource_name``), each carrying the ownership labels as freeform tags plus the gang size;
its rank and compute cluster ride in the instance's custom metadata.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from multicloud.adapterkit import OCI_TAGS, Ownership, gang_end, node_end, resource_name
from multicloud.provider import Handle, MarketKind, WorkloadState, WorkloadStatus
from multicloud_oci.node import RANK_KEY, reported

__all__ = [
    "CLUSTER_KEY",
    "DEAD",
    "OCI_TAGS",
    "TAG_NODES",
    "gang_status",
    "owned_handle",
    "rank_of",
]

TAG_NODES = OCI_TAGS.key("nodes")
CLUSTER_KEY = "multicloud_cluster"
"""Custom metadata key holding the compute cluster a node was launched into."""

DEAD = frozenset({"TERMINATING", "TERMINATED"})
_STOPPED = frozenset({"STOPPING", "STOPPED"})
_STARTING = frozenset({"PROVISIONING", "STARTING", "MOVING"})


def rank_of(instance: Any) -> int:
    """Return a node's rank (from its metadata; -1 when it carries none)."""
    try:
        return int((instance.metadata or {}).get(RANK_KEY, -1))
    except ValueError:
        return -1


def _node_status(instance: Any) -> WorkloadStatus:
    state = str(instance.lifecycle_state)
    report = reported(instance.display_name)
    if state in DEAD or state in _STOPPED:
        # OCI terminates a reclaimed preemptible instance; a node that reported first has
        # already said whether it was being reclaimed.
        preemptible = instance.preemptible_instance_config is not None
        end = node_end(report, reclaimed=report is None and preemptible and state in DEAD)
        return end or WorkloadStatus(
            WorkloadState.TERMINATED, f"instance {instance.display_name} is {state.lower()}"
        )
    end = node_end(report)
    if end is not None:
        return end
    if state in _STARTING:
        return WorkloadStatus(WorkloadState.PROVISIONING, f"instance is {state.lower()}")
    return WorkloadStatus(WorkloadState.RUNNING)


def gang_status(nodes: int, instances: Iterable[Any]) -> WorkloadStatus:
    """Return the status of one launch from its instances (a re-launched rank's live one wins).

    Args:
        nodes: Nodes of the gang.
        instances: Every instance found under the launch's request id.

    Returns:
        The gang's status (TERMINATED when no instance exists any more).
    """
    by_rank: dict[int, Any] = {}
    for inst in sorted(instances, key=lambda i: i.lifecycle_state not in DEAD):
        by_rank[rank_of(inst)] = inst
    if not by_rank:
        return WorkloadStatus(WorkloadState.TERMINATED, "no instance of the gang exists")
    return gang_end(
        [
            _node_status(by_rank[r])
            if r in by_rank
            else WorkloadStatus(WorkloadState.TERMINATED, f"node {r} of the gang is gone")
            for r in range(nodes)
        ]
    )


def owned_handle(
    fleet_name: str,
    region: str,
    tags: Mapping[str, str],
    own: Ownership,
    first: Any | None,
    cluster: str | None = None,
) -> Handle:
    """Rebuild the handle of a launch from what the sweep found.

    Args:
        fleet_name: Fleet provider name.
        region: Region listed.
        tags: Freeform tags of an instance or compute cluster of the launch.
        own: The ownership they carry.
        first: One of its instances, or None when only its compute cluster is left.
        cluster: That compute cluster's OCID.

    Returns:
        The handle (its id is the launch's base name, as ``launch`` returned it).
    """
    market = MarketKind.ON_DEMAND
    extra: dict[str, str] = {"cluster": cluster} if cluster else {}
    if first is not None:
        if first.preemptible_instance_config is not None:
            market = MarketKind.SPOT
        elif first.capacity_reservation_id:
            market = MarketKind.RESERVED
        cluster = (first.metadata or {}).get(CLUSTER_KEY)
        if cluster:
            extra["cluster"] = cluster
    return Handle(
        provider=fleet_name,
        id=resource_name(fleet_name, own.request),
        request_id=own.request,
        region=region,
        zone=first.availability_domain if first is not None else None,
        instance_type=first.shape if first is not None else "compute-cluster",
        nodes=int(tags.get(TAG_NODES, "1")),
        market=market,
        job_id=own.job,
        extra=tuple(sorted(extra.items())),
    )
