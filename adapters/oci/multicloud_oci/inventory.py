"""What a tenancy can launch where: availability domains, shapes, capacity, reservations, quota.

Read through the Compute, Identity and Limits APIs and cached for a while (launches and
terminations through this adapter drop the cached capacity of their availability domain):

* ``ListAvailabilityDomains`` per region, ``ListShapes`` per availability domain (the shapes
  the tenancy may launch there, with their GPUs, RDMA ports and limit names);
* ``CreateComputeCapacityReport`` per availability domain: how many nodes of each shape
  could launch now (best effort: a tenancy without the permission gets no capacity);
* capacity reservations (``ListComputeCapacityReservations`` + ``Get…``): capacity already
  paid for, offered at $0;
* ``GetResourceAvailability`` of the shape's GPU limit per availability domain, before a
  launch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import oci

from multicloud.errors import CapacityError, QuotaError, error_scope
from multicloud.provider import Offer
from multicloud_oci.clients import list_all

__all__ = ["Inventory", "Pool", "ShapeFacts", "limit_name"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# Compute limit names of the GPU families (Oracle's "Compute Quotas" page: GPUs per
# availability domain), for a shape whose ListShapes entry names no quota.
_LIMITS: tuple[tuple[str, str], ...] = (
    ("BM.GPU.A100-v2.", "gpu-a100-v2-count"),
    ("BM.GPU.H100.", "gpu-h100-count"),
    ("BM.GPU.H200.", "gpu-h200-count"),
    ("BM.GPU.B200.", "gpu-b200-count"),
    ("BM.GPU.MI300X.", "gpu-mi300x-count"),
    ("BM.GPU4.", "gpu4-count"),
    ("BM.GPU3.", "gpu3-count"),
    ("VM.GPU3.", "gpu3-count"),
    ("BM.GPU2.", "gpu2-count"),
    ("VM.GPU2.", "gpu2-count"),
    ("BM.GPU.A10.", "gpu-a10-count"),
    ("VM.GPU.A10.", "gpu-a10-count"),
)


@dataclass(frozen=True)
class ShapeFacts:
    """What the adapter needs to know of one shape in one availability domain.

    Attributes:
        gpus: GPUs per node.
        rdma: The shape has RDMA ports (a gang goes on one compute cluster).
        quota_names: Quota / limit names ListShapes gives for the shape.
    """

    gpus: int
    rdma: bool
    quota_names: tuple[str, ...] = ()


def limit_name(shape: str, facts: ShapeFacts) -> str | None:
    """Return the Compute limit that counts the shape's GPUs (None: none known).

    Args:
        shape: Shape name.
        facts: Its facts (the quota names ListShapes gives win over the built-in table).

    Returns:
        The limit name.
    """
    for name in facts.quota_names:
        if name.startswith("gpu") and name.endswith("-count"):
            return name
    return next((limit for prefix, limit in _LIMITS if shape.startswith(prefix)), None)


@dataclass(frozen=True)
class Pool:
    """Free room in one capacity reservation for one shape.

    Attributes:
        reservation: The reservation's OCID.
        ad: Its availability domain.
        shape: The shape it reserves.
        free: Nodes reserved and not used.
    """

    reservation: str
    ad: str
    shape: str
    free: int


class Inventory:
    """Cached reads of what one compartment can launch, per region and availability domain.

    Args:
        clients: The SDK clients.
        compartment_id: The compartment launched into.
        ttl_s: How long a read stays fresh.
        capacity_report: Read compute capacity reports for offers' capacity.
        clock: Monotonic clock (tests).
    """

    def __init__(
        self,
        clients: Any,
        compartment_id: str,
        *,
        ttl_s: float = 300.0,
        capacity_report: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clients = clients
        self._compartment = compartment_id
        self._ttl = ttl_s
        self._report = capacity_report
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, ...], tuple[float, Any]] = {}

    def _cached(self, key: tuple[str, ...], read: Callable[[], T]) -> T:
        now = self._clock()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]  # type: ignore[no-any-return]
        value = read()
        with self._lock:
            self._cache[key] = (now, value)
        return value

    def forget(self, region: str, ad: str) -> None:
        """Drop what our own launch or termination changed: capacity and reservations."""
        with self._lock:
            self._cache.pop(("capacity", region, ad), None)
            self._cache.pop(("reservations", region), None)

    def ads(self, region: str) -> list[str]:
        """Return the availability domains of ``region`` (sorted)."""

        def read() -> list[str]:
            data = self._clients.identity(region).list_availability_domains(self._compartment).data
            return sorted(ad.name for ad in data)

        return self._cached(("ads", region), read)

    def shapes(self, region: str, ad: str) -> dict[str, ShapeFacts]:
        """Return the shapes the tenancy may launch in ``ad``, by name."""

        def read() -> dict[str, ShapeFacts]:
            rows = list_all(
                self._clients.compute(region).list_shapes, self._compartment,
                availability_domain=ad,
            )
            return {
                s.shape: ShapeFacts(
                    int(s.gpus or 0), bool(s.rdma_ports), tuple(s.quota_names or ())
                )
                for s in rows
            }

        return self._cached(("shapes", region, ad), read)

    def capacity(self, region: str, ad: str, shapes: list[str]) -> dict[str, int]:
        """Return how many nodes of each shape could launch now in ``ad`` (best effort).

        Args:
            region: Region.
            ad: Availability domain.
            shapes: Shapes to ask about.

        Returns:
            Shape → nodes available (0 when out of host capacity); shapes the report did
            not answer for (or every shape, without a report) are absent.
        """
        if not self._report or not shapes:
            return {}

        def read() -> dict[str, int]:
            details = oci.core.models.CreateComputeCapacityReportDetails(
                compartment_id=self._compartment,
                availability_domain=ad,
                shape_availabilities=[
                    oci.core.models.CreateCapacityReportShapeAvailabilityDetails(instance_shape=s)
                    for s in sorted(shapes)
                ],
            )
            try:
                report = self._clients.compute(region).create_compute_capacity_report(details)
            except oci.exceptions.ServiceError as exc:
                # Capacity reports need their own permission; without it offers simply
                # carry no capacity (the launch still meets "Out of host capacity").
                log.info("no compute capacity report for %s: %s %s", ad, exc.status, exc.code)
                return {}
            out: dict[str, int] = {}
            for row in report.data.shape_availabilities or ():
                if row.availability_status == "AVAILABLE":
                    out[row.instance_shape] = int(row.available_count or 0)
                elif row.availability_status == "OUT_OF_HOST_CAPACITY":
                    out[row.instance_shape] = 0
            return out

        return self._cached(("capacity", region, ad), read)

    def reservations(self, region: str) -> list[Pool]:
        """Return the free room of every active capacity reservation of the compartment."""

        def read() -> list[Pool]:
            compute = self._clients.compute(region)
            summaries = list_all(
                compute.list_compute_capacity_reservations, self._compartment,
                lifecycle_state="ACTIVE",
            )
            pools = []
            for summary in summaries:
                full = compute.get_compute_capacity_reservation(summary.id).data
                for config in full.instance_reservation_configs or ():
                    free = int(config.reserved_count or 0) - int(config.used_count or 0)
                    pools.append(Pool(full.id, full.availability_domain, config.instance_shape,
                                      max(free, 0)))
            return pools

        return self._cached(("reservations", region), read)

    def headroom(self, region: str, ad: str, limit: str) -> int | None:
        """Return how much of a Compute limit is left in ``ad`` (None: unknown).

        A limit the Limits service does not know (404) leaves the check to the launch.
        """
        try:
            data = self._clients.limits(region).get_resource_availability(
                "compute", limit, self._compartment, availability_domain=ad
            ).data
        except oci.exceptions.ServiceError as exc:
            if exc.status != 404:
                raise
            log.info("no resource availability for %s in %s: %s", limit, ad, exc.code)
            return None
        return None if data.available is None else int(data.available)

    def preflight(self, fleet_name: str, offer: Offer, facts: ShapeFacts, nodes: int) -> None:
        """Refuse a launch before it is sent when its reservation or GPU limit has no room.

        Args:
            fleet_name: Fleet provider name (for the error).
            offer: The planned offer (its zone is the availability domain).
            facts: The shape's facts there.
            nodes: Nodes about to be launched.

        Raises:
            CapacityError: The reservation has fewer free nodes (scope: the AD).
            QuotaError: The GPU limit has no room in the AD (scope: the AD), or in no AD of
                the region (scope: the region, so the region is skipped at once).
        """
        region, ad = offer.region, str(offer.zone)
        if offer.reservation is not None:
            free = sum(p.free for p in self.reservations(region)
                       if p.reservation == offer.reservation and p.shape == offer.instance_type)
            if free < nodes:
                raise CapacityError(
                    f"reservation {offer.reservation} has {free} of {nodes} nodes free",
                    provider=fleet_name, scope=error_scope(fleet_name, region, ad),
                )
            return
        limit = limit_name(offer.instance_type, facts)
        need = nodes * (facts.gpus or offer.count)
        room = None if limit is None else self.headroom(region, ad, limit)
        if limit is None or room is None or room >= need:
            return
        others = [self.headroom(region, a, limit) for a in self.ads(region) if a != ad]
        elsewhere = any(o is None or o >= need for o in others)
        raise QuotaError(
            f"{limit} has {room} GPUs left in {ad}; {offer.instance_type} x{nodes} needs {need}",
            provider=fleet_name,
            scope=error_scope(fleet_name, region, ad if elsewhere else None),
        )
