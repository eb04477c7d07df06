"""Offers and quota: the shipped catalog's GCP rows, narrowed by what Google lists.

* one ``machineTypes.aggregatedList`` (``name eq "(a2|a3|a4|g2)-.*"``): a GPU row stays if its
  zone lists the machine type (vCPUs and memory are kept for live pricing);
* one TPU ``acceleratorTypes.list`` per zone with TPU rows: a slice stays where it is listed
  (a regional catalog row becomes one offer per zone of its region that lists it);
* live prices from the Cloud Billing Catalog (off by default, :mod:`multicloud_gcp.pricing`).

Quota is read from ``regions.get`` (cached) before any insert (:meth:`Book.check_quota`).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from multicloud.adapterkit import region_matches
from multicloud.catalog import load_catalog
from multicloud.errors import QuotaError, error_scope
from multicloud.provider import LaunchSpec, MarketKind, Offer, ResourceRequest
from multicloud_gcp.pricing import LivePrices, fetch_skus
from multicloud_gcp.workload import is_tpu

if TYPE_CHECKING:
    from multicloud_gcp.provider import GCPProvider

__all__ = ["GPU_QUOTA_METRICS", "Book", "quota_metric", "region_of"]

log = logging.getLogger(__name__)

GPU_QUOTA_METRICS: tuple[tuple[str, str, str], ...] = (
    # (machine-type prefix, regional quota metric, Billing SKU GPU key); longest prefix first.
    ("a2-ultragpu", "NVIDIA_A100_80GB_GPUS", "A100-80GB"),
    ("a2-", "NVIDIA_A100_GPUS", "A100"),
    ("a3-megagpu", "NVIDIA_H100_MEGA_GPUS", "H100-MEGA"),
    ("a3-ultragpu", "NVIDIA_H200_GPUS", "H200"),
    ("a3-", "NVIDIA_H100_GPUS", "H100"),
    ("a4-", "NVIDIA_B200_GPUS", "B200"),
    ("g2-", "NVIDIA_L4_GPUS", "L4"),
)
"""Regional quota metric of each GPU machine family; spot VMs use ``PREEMPTIBLE_<metric>``
where that quota was granted."""


def quota_metric(instance_type: str) -> tuple[str, str] | None:
    """Return ``(quota metric, SKU GPU key)`` of a GPU machine type, or None."""
    return next(((m, s) for p, m, s in GPU_QUOTA_METRICS if instance_type.startswith(p)), None)


def region_of(zone: str) -> str:
    """Return the region of a zone (``us-central1-a`` -> ``us-central1``)."""
    return zone.rsplit("-", 1)[0]


@dataclass(frozen=True)
class _Listing:
    machine_types: dict[str, set[str]]
    shapes: dict[str, tuple[int, float]]
    tpu_types: dict[str, dict[str, str]]
    fetched_at: float


class Book:
    """The offers of one adapter and the facts behind them (listings, quotas, live prices).

    Args:
        gcp: The adapter (clients, project, options, error boundary).
    """

    def __init__(self, gcp: GCPProvider) -> None:
        self.gcp = gcp
        self._lock = threading.RLock()
        self._listing: _Listing | None = None
        self._offers: dict[str, Offer] | None = None
        self._live: LivePrices | None = None
        self._quotas: dict[str, tuple[float, dict[str, tuple[float, float]]]] = {}
        catalog = load_catalog()
        self.version = catalog.version
        self.rows = [
            o
            for o in catalog.offers("gcp", fleet_name=gcp.fleet_name)
            if region_matches(gcp.regions, o.region)
        ]

    def offers(self, request: ResourceRequest) -> list[Offer]:
        """Return the offers matching ``request`` (capacity unknown: None)."""
        wanted = set(request.accelerators)
        with self._lock:
            listing = self._current()
            if self._offers is None:
                self._offers = self._build(listing)
            every = list(self._offers.values())
        return [
            o
            for o in every
            if (not wanted or o.accelerator in wanted)
            and o.count >= request.count
            and region_matches(request.regions, o.region)
        ]

    def topology(self, zone: str, instance_type: str) -> str:
        """Return the topology a zone lists for a TPU slice ("" when not known)."""
        listing = self._listing
        return listing.tpu_types.get(zone, {}).get(instance_type, "") if listing else ""

    def tpu_zones(self) -> dict[str, set[str]]:
        """Return the zones whose TPU listing is needed, with the catalog TPU types asked there."""
        zones_of: dict[str, set[str]] = defaultdict(set)
        for row in self.rows:
            if row.zone:
                zones_of[row.region].add(row.zone)
        wanted: dict[str, set[str]] = defaultdict(set)
        for row in self.rows:
            if is_tpu(row.instance_type):
                for zone in [row.zone] if row.zone else sorted(zones_of[row.region]):
                    wanted[zone].add(row.instance_type)
        return wanted

    def refresh(self) -> None:
        """Drop cached listings and live prices so the next ``offers`` fetches them again."""
        with self._lock:
            self._listing = self._offers = self._live = None

    # -- listings and prices ------------------------------------------------------------------

    def _current(self) -> _Listing:
        listing = self._listing
        if listing is None or time.monotonic() - listing.fetched_at > self.gcp.listing_ttl_s:
            listing = self._listing = self._fetch()
            # Live prices are refreshed with the listings, once per listing period.
            self._offers = self._live = None
        return listing

    def _fetch(self) -> _Listing:
        from google.cloud import compute_v1

        machine_types: dict[str, set[str]] = defaultdict(set)
        shapes: dict[str, tuple[int, float]] = {}
        gpu_zones = {r.zone for r in self.rows if r.zone and not is_tpu(r.instance_type)}
        request = compute_v1.AggregatedListMachineTypesRequest(
            project=self.gcp.project, filter='name eq "(a2|a3|a4|g2)-.*"'
        )

        def list_machine_types() -> None:
            for scope, scoped in self.gcp.clients.machine_types.aggregated_list(request=request):
                zone = scope.rsplit("/", 1)[-1]
                if zone not in gpu_zones:
                    continue
                for mt in scoped.machine_types:
                    machine_types[zone].add(mt.name)
                    shapes[mt.name] = (int(mt.guest_cpus), mt.memory_mb / 1024.0)

        if gpu_zones:
            self.gcp.call(list_machine_types, doing="listing machine types")
        tpu_types = {zone: self._tpu_types(zone) for zone in sorted(self.tpu_zones())}
        return _Listing(dict(machine_types), shapes, tpu_types, time.monotonic())

    def _tpu_types(self, zone: str) -> dict[str, str]:
        parent = f"projects/{self.gcp.project}/locations/{zone}"

        def run() -> dict[str, str]:
            out: dict[str, str] = {}
            for at in self.gcp.clients.tpu.list_accelerator_types(parent=parent):
                configs = at.accelerator_configs
                out[f"tpu-{at.type_}"] = configs[0].topology if configs else ""
            return out

        # A zone the TPU API does not serve answers 404: nothing offered there.
        types = self.gcp.call_or_none(run, doing="listing TPU accelerator types", zone=zone)
        return types or {}

    def _build(self, listing: _Listing) -> dict[str, Offer]:
        out: dict[str, Offer] = {}
        live = self._live_prices()
        version = f"{self.version}+gcp-live-{live.date}" if live else self.version
        tpu_zones = sorted(self.tpu_zones())
        for row in self.rows:
            if is_tpu(row.instance_type):
                for zone in tpu_zones:
                    here = zone == row.zone or (row.zone is None and region_of(zone) == row.region)
                    if here and row.instance_type in listing.tpu_types.get(zone, {}):
                        offer = dataclasses.replace(row, zone=zone, catalog_version=version)
                        out.setdefault(offer.key, offer)
            elif row.zone and row.instance_type in listing.machine_types.get(row.zone, ()):
                offer = dataclasses.replace(row, catalog_version=version)
                out[offer.key] = self._reprice(offer, live, listing) if live else offer
        return out

    @staticmethod
    def _reprice(offer: Offer, live: LivePrices, listing: _Listing) -> Offer:
        shape = listing.shapes.get(offer.instance_type)
        family = quota_metric(offer.instance_type)
        if shape is None or family is None:
            return offer
        price, spot = (
            live.machine_price(
                region=offer.region,
                instance_type=offer.instance_type,
                gpu=family[1],
                gpus=offer.count,
                vcpus=shape[0],
                memory_gib=shape[1],
                spot=market,
            )
            for market in (False, True)
        )
        # Only markets the catalog knows are re-priced: a spot SKU alone does not make a
        # machine type spot-capable (A3 Ultra, for one, has none in the catalog).
        return dataclasses.replace(
            offer,
            price=price if price is not None and offer.price is not None else offer.price,
            spot_price=spot
            if spot is not None and offer.spot_price is not None
            else offer.spot_price,
        )

    def _live_prices(self) -> LivePrices | None:
        gcp = self.gcp
        if not gcp.live_pricing or self._live is not None:
            return self._live
        try:
            if gcp.api_endpoint is not None or gcp.billing_api_endpoint.startswith("http://"):
                import requests

                session: Any = requests.Session()
            else:
                from google.auth.transport.requests import AuthorizedSession

                session = AuthorizedSession(gcp.clients.credentials)  # type: ignore[no-untyped-call]
            self._live = fetch_skus(session, gcp.billing_api_endpoint)
        except Exception as exc:
            # Prices fall back to the shipped catalog: a pricing outage must not stop planning.
            log.warning("live GCP pricing unavailable, using catalog prices: %s", exc)
        return self._live

    # -- quota ----------------------------------------------------------------------------------

    def region_quotas(self, region: str, *, fresh: bool = False) -> dict[str, tuple[float, float]]:
        """Return ``metric -> (limit, usage)`` of a region (``regions.get``, cached briefly)."""
        with self._lock:
            cached = self._quotas.get(region)
            if not fresh and cached and time.monotonic() - cached[0] <= self.gcp.quota_ttl_s:
                return cached[1]
        from google.cloud import compute_v1

        request = compute_v1.GetRegionRequest(project=self.gcp.project, region=region)
        reply = self.gcp.call(
            lambda: self.gcp.clients.regions.get(request=request),
            doing=f"reading quotas of {region}",
            region=region,
        )
        quotas = {q.metric: (float(q.limit), float(q.usage)) for q in reply.quotas}
        with self._lock:
            self._quotas[region] = (time.monotonic(), quotas)
        return quotas

    def check_quota(self, offer: Offer, spec: LaunchSpec, *, nodes: int) -> None:
        """Refuse, before any insert, a launch the region's GPU quota cannot hold.

        Spot VMs count against ``PREEMPTIBLE_<metric>`` only where that quota was granted (a
        limit above 0); otherwise against the standard quota — Compute Engine "Create and use
        Spot VMs": request preemptible quota "to prevent Spot VMs from consuming your quotas
        for standard VMs' CPUs, GPUs, and disks".

        Args:
            offer: The offer launched on.
            spec: The launch (its market).
            nodes: VMs still to create.

        Raises:
            QuotaError: If the metric's free quota is below GPUs per node x ``nodes``.
        """
        family = quota_metric(offer.instance_type)
        if not self.gcp.quota_check or family is None:
            return
        quotas = self.region_quotas(offer.region)
        metric = family[0]
        preemptible = quotas.get(f"PREEMPTIBLE_{metric}")
        if spec.market is MarketKind.SPOT and preemptible is not None and preemptible[0] > 0:
            metric = f"PREEMPTIBLE_{metric}"
        if metric not in quotas:
            return  # the region does not report this family: the insert decides
        limit, usage = quotas[metric]
        need = offer.count * nodes
        if limit - usage < need:
            raise QuotaError(
                f"{metric} quota in {offer.region}: {limit - usage:g} free of {limit:g}, "
                f"{need} needed for {nodes} x {offer.instance_type}",
                provider=self.gcp.fleet_name,
                scope=error_scope(self.gcp.fleet_name, offer.region),
            )
