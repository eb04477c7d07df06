"""GPU node pools: a cluster's GPU nodes grouped by type and place.

The pools are read from two lists (nodes; live pods of every namespace). What a node is
comes from its labels (:mod:`.nodes`, as the adapter or its preset reads them); the rest is
any cluster's: a node takes work when it is Ready, not cordoned and has allocatable GPUs of
one of the GPU resources (``nvidia.com/gpu``, ``amd.com/gpu``), all of them whole; a pool's
capacity is its whole nodes no live pod holds a GPU on (every multicloud pod takes all GPUs
of its node).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from multicloud.provider import Offer
from multicloud_kubernetes.nodes import NodeType, gpu_count_mismatch

__all__ = [
    "REGION_LABEL", "ZONE_LABEL", "NodePool", "NodeTyper", "quantity", "quota_refusal",
    "read_pools",
]

REGION_LABEL = "topology.kubernetes.io/region"
ZONE_LABEL = "topology.kubernetes.io/zone"


NodeTyper = Callable[[Mapping[str, str]], "NodeType | str"]
"""Reads a node's labels: its type, or why it is left out of the offers."""


@dataclass(frozen=True)
class NodePool:
    """GPU nodes of one type in one place.

    Attributes:
        instance_type: The offers' name for it (the label value, suffixed ``.<n>gpu`` when
            one type comes with several GPU counts).
        label: Node label key the pool is selected by.
        value: Its value.
        accelerator: Canonical accelerator name.
        gpus: Allocatable GPUs per node.
        region: Region.
        zone: Zone, when the nodes carry one.
        nodes: Nodes that take work.
        free: Nodes no live pod holds a GPU on.
        rdma: Pods on it request the RDMA resource.
        resource: Extended resource of its GPUs (``nvidia.com/gpu``, ``amd.com/gpu``).
        taints: ``(key, value, effect)`` scheduling taints of its nodes (tolerated).
        region_from_label: The nodes carry the region label (then it is selected on too).
    """

    instance_type: str
    label: str
    value: str
    accelerator: str
    gpus: int
    region: str
    zone: str | None
    nodes: int
    free: int
    rdma: bool = False
    resource: str = "nvidia.com/gpu"
    taints: tuple[tuple[str, str, str], ...] = ()
    region_from_label: bool = True

    def selector(self) -> dict[str, str]:
        """Return the node selector that keeps pods in this pool."""
        selector = {self.label: self.value}
        if self.region_from_label:
            selector[REGION_LABEL] = self.region
        if self.zone:
            selector[ZONE_LABEL] = self.zone
        return selector

    def matches(self, offer: Offer) -> bool:
        """Return True if ``offer`` was made from this pool."""
        return (self.region, self.zone, self.instance_type) == (offer.region, offer.zone,
                                                                offer.instance_type)


def quantity(value: Any) -> int:
    """Return a whole-number quantity (``"8"``), 0 for anything else."""
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return 0


def _gpus_held(pod: Any, gpu_resources: Sequence[str]) -> int:
    total = 0
    for c in (pod.spec.containers if pod.spec else None) or []:
        res = c.resources
        limits = (res.limits if res else None) or {}
        requests = (res.requests if res else None) or {}
        total += sum(quantity(limits.get(r) or requests.get(r)) for r in gpu_resources)
    return total


def read_pools(
    nodes: Iterable[Any],
    pods: Iterable[Any],
    *,
    node_type: NodeTyper,
    usable: Callable[[Mapping[str, str]], bool],
    region: str | None,
    gpu_resources: Sequence[str],
    rdma_resource: str,
    skip: Callable[[str, str], None],
) -> list[NodePool]:
    """Group a cluster's GPU nodes into pools.

    Args:
        nodes: ``V1Node`` objects.
        pods: Live ``V1Pod`` objects of every namespace (they hold GPUs).
        node_type: The adapter's (or preset's) reading of a node's labels.
        usable: The preset's node-state check (a node in repair takes no work).
        region: Region of nodes without the region label.
        gpu_resources: Extended resources of GPUs; a node's is the first it has.
        rdma_resource: Extended resource of the RDMA devices.
        skip: Told ``(key, why)`` for each node or type left out (logged once per key).

    Returns:
        Pools sorted by region, zone and instance type.
    """
    used: dict[str, int] = defaultdict(int)
    for pod in pods:
        node_name = pod.spec.node_name if pod.spec else None
        if node_name and (pod.status.phase if pod.status else None) in ("Pending", "Running"):
            used[node_name] += _gpus_held(pod, gpu_resources)

    Key = tuple[str, str | None, NodeType, bool, int, str]
    groups: dict[Key, list[Any]] = defaultdict(list)
    for node in nodes:
        name, labels = node.metadata.name, node.metadata.labels or {}
        allocatable = (node.status.allocatable if node.status else None) or {}
        resource = next((r for r in gpu_resources if quantity(allocatable.get(r)) > 0), "")
        gpus = quantity(allocatable.get(resource)) if resource else 0
        ready = any(
            c.type == "Ready" and c.status == "True"
            for c in (node.status.conditions if node.status else None) or []
        )
        if gpus <= 0 or not ready or (node.spec and node.spec.unschedulable) or not usable(labels):
            continue
        kind = node_type(labels)
        partial = gpu_count_mismatch(labels, gpus)
        if isinstance(kind, str) or partial:
            skip(f"type:{name}", f"node {name}: {partial or kind}")
            continue
        where = labels.get(REGION_LABEL) or region
        if not where:
            skip(f"region:{name}", f"node {name} has no {REGION_LABEL} label and no region option")
            continue
        rdma = kind.rdma or quantity(allocatable.get(rdma_resource)) > 0
        key = (where, labels.get(ZONE_LABEL), kind, rdma, gpus, resource)
        groups[key].append((node, REGION_LABEL in labels))

    counts: dict[tuple[str, str | None, str], set[int]] = defaultdict(set)
    for where, zone, kind, _, gpus, _ in groups:
        counts[(where, zone, kind.value)].add(gpus)
    out = []
    for (where, zone, kind, rdma, gpus, resource), members in groups.items():
        mixed = len(counts[(where, zone, kind.value)]) > 1
        taints = {
            (t.key, t.value or "", t.effect)
            for node, _ in members
            for t in (node.spec.taints if node.spec else None) or []
            if t.effect in ("NoSchedule", "NoExecute")
            and not str(t.key).startswith("node.kubernetes.io/")
        }
        out.append(
            NodePool(
                instance_type=f"{kind.value}.{gpus}gpu" if mixed else kind.value,
                label=kind.label,
                value=kind.value,
                accelerator=kind.accelerator,
                gpus=gpus,
                region=where,
                zone=zone,
                nodes=len(members),
                free=sum(1 for node, _ in members if not used.get(node.metadata.name)),
                rdma=rdma,
                resource=resource,
                taints=tuple(sorted(taints)),
                region_from_label=all(from_label for _, from_label in members),
            )
        )
    return sorted(out, key=lambda p: (p.region, p.zone or "", p.instance_type))


def quota_refusal(quotas: Iterable[Any], resource: str, wanted: int) -> str | None:
    """Say which namespace ResourceQuota on ``resource`` would refuse ``wanted`` more.

    Pods are checked against quota when the Job controller creates them, long after the Job
    was accepted; without this check the refusal shows only as a Job that never runs.

    Args:
        quotas: ``V1ResourceQuota`` objects of the namespace.
        resource: The extended resource (GPUs).
        wanted: How many the launch needs.

    Returns:
        The API server's own wording of the refusal, or None.
    """
    for q in quotas:
        hard = (q.status.hard if q.status else None) or (q.spec.hard if q.spec else None) or {}
        used = (q.status.used if q.status else None) or {}
        for key in (f"requests.{resource}", f"limits.{resource}"):
            if key in hard and quantity(used.get(key)) + wanted > quantity(hard[key]):
                return (f"exceeded quota: {q.metadata.name}, requested: {key}={wanted}, "
                        f"used: {key}={quantity(used.get(key))}, limited: {key}={hard[key]}")
    return None
