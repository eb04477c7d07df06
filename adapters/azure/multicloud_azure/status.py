"""How a gang's VMs read as a workload status (pure: VMs in, status out).

Azure's eviction signal is read before the node's exit tag (preemption wins, via the kit's
``node_end``): the adapter creates Spot VMs with eviction policy ``Delete``, so a Spot VM that
Azure is deleting, or that is gone, while multicloud did not terminate it, was evicted —
whatever exit code its node managed to report while its container was killed (137, 143).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from multicloud.adapterkit import AZURE_TAGS, ErrorBoundary, Ownership, gang_end, node_end
from multicloud.provider import Handle, MarketKind, OwnedWorkload, WorkloadState, WorkloadStatus
from multicloud_azure.arm import Vm
from multicloud_azure.errors import lost_place_scope
from multicloud_azure.node import EXIT_TAG

__all__ = ["gang_status", "node_status", "owned_gangs"]

log = logging.getLogger(__name__)

# The kit's ownership tags, and Azure's own: which gang a VM is of, its rank, the gang's size
# and market (so that the sweep can rebuild the handle from any one of its VMs).
TAG_JOB, TAG_ATTEMPT, TAG_INSTALL, TAG_REQUEST, TAG_FLEET = (
    AZURE_TAGS.key(n) for n in ("job", "attempt", "install", "request", "fleet")
)
TAG_GANG, TAG_RANK, TAG_NODES, TAG_MARKET = (
    AZURE_TAGS.key(n) for n in ("gang", "rank", "nodes", "market")
)

_STOPPED = ("stopped", "stopping", "deallocated", "deallocating")


def node_status(
    vm: Vm | None, *, spot: bool, errors: ErrorBoundary, region: str, zone: str | None
) -> WorkloadStatus:
    """Read one node.

    Args:
        vm: The node's VM (None: it is gone).
        spot: The gang is a Spot gang.
        errors: The fleet entry's error boundary (what a late failure code means).
        region: Region of the gang.
        zone: Zone of the gang, as offers name it.

    Returns:
        The node's status.
    """
    if vm is None:
        if spot:
            return WorkloadStatus(WorkloadState.PREEMPTED, "the Spot VM was evicted (deleted)")
        return WorkloadStatus(WorkloadState.FAILED, "a VM of the gang vanished")
    evicting = spot and vm.provisioning == "deleting"
    ended = node_end(vm.tags.get(EXIT_TAG), reclaimed=evicting)
    if ended is not None:
        return WorkloadStatus(ended.state, f"{vm.name}: {ended.message}", ended.exit_code)
    if vm.provisioning == "failed":
        # An accepted VM that failed after launch stopped waiting: capacity or quota means
        # the gang lost its place (re-placed, the scope blocked), anything else a failure.
        scope = lost_place_scope(errors, vm.failure_code, vm.failure, region=region, zone=zone)
        state = WorkloadState.FAILED if scope is None else WorkloadState.PREEMPTED
        return WorkloadStatus(state, f"{vm.name}: {vm.failure or 'failed'}", blocked_scope=scope)
    if vm.provisioning == "deleting":
        return WorkloadStatus(WorkloadState.TERMINATED, f"{vm.name} is being deleted")
    if vm.power in _STOPPED:
        return WorkloadStatus(
            WorkloadState.FAILED, f"{vm.name} is {vm.power} without reporting an exit code"
        )
    if vm.provisioning == "succeeded" and vm.power == "running":
        return WorkloadStatus(WorkloadState.RUNNING, "running")
    return WorkloadStatus(WorkloadState.PROVISIONING, f"{vm.name}: {vm.provisioning or 'creating'}")


def gang_status(
    handle: Handle, vms: Mapping[str, Vm], *, terminated: bool, errors: ErrorBoundary
) -> WorkloadStatus:
    """Read a gang from the VMs of its resource group.

    Args:
        handle: The gang (VMs ``<id>-<rank>``).
        vms: VMs by name.
        terminated: This process terminated the gang.
        errors: The fleet entry's error boundary.

    Returns:
        The gang's status: every node's, combined by the kit's ``gang_end``.
    """
    if terminated:
        return WorkloadStatus(WorkloadState.TERMINATED, "terminated")
    spot = handle.market is MarketKind.SPOT
    nodes = [vms.get(f"{handle.id}-{rank}") for rank in range(handle.nodes)]
    if not spot and all(vm is None for vm in nodes):
        return WorkloadStatus(WorkloadState.UNKNOWN, "no such VM")
    return gang_end(
        [
            node_status(vm, spot=spot, errors=errors, region=handle.region, zone=handle.zone)
            for vm in nodes
        ]
    )


def owned_gangs(vms: Iterable[Vm], install_id: str, fleet_name: str) -> list[OwnedWorkload]:
    """Return the gangs among ``vms`` that ``install_id`` launched through this fleet entry.

    Args:
        vms: VMs of the subscription.
        install_id: The install.
        fleet_name: Fleet provider name.

    Returns:
        One workload per gang (finished ones included), in gang-name order.
    """
    gangs: dict[str, tuple[Vm, Ownership]] = {}
    for vm in vms:
        owner = Ownership.parse(vm.tags, AZURE_TAGS)
        gang = vm.tags.get(TAG_GANG)
        if owner is None or gang is None or vm.provisioning == "deleting":
            continue
        if owner.belongs_to(install_id, fleet_name, AZURE_TAGS):
            gangs.setdefault(gang, (vm, owner))
    out: list[OwnedWorkload] = []
    for gang, (vm, owner) in sorted(gangs.items()):
        try:
            nodes = int(vm.tags.get(TAG_NODES, "1"))
            market = MarketKind(vm.tags.get(TAG_MARKET, MarketKind.ON_DEMAND.value))
        except ValueError:
            log.warning("VM %s has unreadable multicloud tags; skipped", vm.name)
            continue
        handle = Handle(
            provider=fleet_name,
            id=gang,
            request_id=owner.request,
            region=vm.location,
            zone=f"{vm.location}-{vm.zone}" if vm.zone else None,
            instance_type=vm.size,
            nodes=nodes,
            market=market,
            job_id=owner.job,
            extra=(("resource_group", vm.resource_group),),
        )
        out.append(owner.owned(handle))
    return out
