"""The Google Cloud adapter: GPU VMs on Compute Engine and TPU VMs through the TPU API.

See docs/providers/gcp.md for credentials, permissions, options and the error table. In
short:

* ``offers`` = the shipped catalog's GCP rows (A2/A3/A4/G2 machine types and TPU slices),
  narrowed by the live machine-type listing (one ``machineTypes.aggregatedList``) and the
  TPU accelerator-type listing of each zone, cached for ``listing_ttl_s``.
* ``launch`` checks the region's GPU quota (``regions.get``, cached for ``quota_ttl_s``)
  before any insert, then creates the gang as N VMs ``<handle>-<i>`` in the offer's zone
  (``instances.insert`` with ``requestId`` = UUIDv5 of our request id, zone and node), or a
  TPU slice as a queued resource (falling back to a plain node), and waits for the
  operations. A re-send finds the resources by their deterministic names.
* ``status`` is one ``instances.list`` per zone (filtered by the install label), plus one
  ``nodes.list`` / ``queuedResources.list`` per TPU zone.
* ``terminate`` deletes what carries the handle's label; nothing there is a no-op.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from multicloud.catalog import load_catalog
from multicloud.errors import (
    AuthError,
    CapacityError,
    InvalidRequestError,
    ProviderError,
    QuotaError,
    TransientError,
    error_scope,
)
from multicloud.provider import (
    Capability,
    Handle,
    LaunchSpec,
    MarketKind,
    Offer,
    OwnedWorkload,
    ResourceRequest,
    WorkloadState,
    WorkloadStatus,
)
from multicloud_gcp import errors as gerr
from multicloud_gcp.clients import GCPClients, build_clients
from multicloud_gcp.pricing import LivePrices, fetch_skus
from multicloud_gcp.workload import (
    LABEL_ATTEMPT,
    LABEL_EXIT,
    LABEL_HANDLE,
    LABEL_INSTALL,
    LABEL_JOB,
    LABEL_PROVIDER,
    LABEL_SPEC,
    META_ATTEMPT,
    META_INSTALL,
    META_JOB,
    META_TYPE,
    base_name,
    label_value,
    labels_for,
    node_request_id,
    request_uuid,
    spec_digest,
    startup_script,
)

__all__ = [
    "DEFAULT_IMAGE",
    "GPU_QUOTA_METRICS",
    "TPU_RUNTIME_VERSIONS",
    "GCPProvider",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_IMAGE = "projects/deeplearning-platform-release/global/images/family/pytorch-latest-gpu"
"""Boot image of GPU VMs: NVIDIA driver, Docker and the NVIDIA container toolkit included."""

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
"""Regional quota metric of each GPU machine family; spot VMs use ``PREEMPTIBLE_<metric>``."""

TPU_RUNTIME_VERSIONS: dict[str, str] = {
    "v5litepod": "v2-alpha-tpuv5-lite",
    "v5p": "v2-alpha-tpuv5",
    "v6e": "v2-alpha-tpuv6e",
}
"""Default TPU VM software version per TPU generation (override with ``tpu_runtime_version``)."""

_TPU_CONFIG_TYPES: dict[str, str] = {"v5litepod": "V5LITE_POD", "v5p": "V5P", "v6e": "V6E"}
_MACHINE_FILTER = 'name eq "(a2|a3|a4|g2)-.*"'
# Our own programming errors are not cloud errors: they propagate instead of being translated.
_BUGS: tuple[type[BaseException], ...] = (TypeError, AttributeError, NameError, AssertionError)
_KIND_VM = "vm"
_KIND_QR = "tpu-qr"
_KIND_NODE = "tpu-node"
_GONE_INSTANCE = frozenset({"STOPPING", "STOPPED", "TERMINATED", "SUSPENDING", "SUSPENDED"})
_STOPPING_INSTANCE = frozenset({"STOPPING", "SUSPENDING"})
_MESSAGES = {
    WorkloadState.PROVISIONING: "provisioning",
    WorkloadState.RUNNING: "running",
    WorkloadState.SUCCEEDED: "workload exited 0",
}


@dataclass(frozen=True)
class _Listing:
    """What the live listings say is offered, and the facts offers need."""

    machine_types: dict[str, set[str]]
    shapes: dict[str, tuple[int, float]]
    tpu_types: dict[str, dict[str, str]]
    fetched_at: float


def _matches(globs: Sequence[str], region: str) -> bool:
    return not globs or any(fnmatch.fnmatchcase(region, g) for g in globs)


def _region_of(zone: str) -> str:
    return zone.rsplit("-", 1)[0]


def _last(url: str) -> str:
    return url.rsplit("/", 1)[-1]


def _is_tpu(instance_type: str) -> bool:
    return instance_type.startswith("tpu-")


def _tpu_generation(instance_type: str) -> str:
    return instance_type.removeprefix("tpu-").rsplit("-", 1)[0]


def _quota_metric(instance_type: str) -> tuple[str, str] | None:
    for prefix, metric, sku in GPU_QUOTA_METRICS:
        if instance_type.startswith(prefix):
            return metric, sku
    return None


class GCPProvider:
    """Google Cloud behind the multicloud Provider protocol (GPU VMs and TPU VMs).

    Args:
        fleet_name: Fleet provider name; stamped on offers, handles, scopes and labels.
        regions: Region globs narrowing the offers (empty = every catalog region).
        project: Project id (default: the one named by the credentials).
        credentials_file: Service-account JSON key (default: Application Default
            Credentials, which covers ``gcloud auth application-default login``, the
            metadata server on GCE and GKE Workload Identity).
        api_endpoint: Compute endpoint override (``http://127.0.0.1:PORT`` for the fake);
            implies anonymous credentials.
        tpu_api_endpoint: TPU endpoint override (defaults to ``api_endpoint``).
        billing_api_endpoint: Cloud Billing endpoint override for ``live_pricing``.
        network: VPC network of the VMs and TPUs.
        subnetwork: Subnetwork (required for custom-mode VPCs).
        image: Boot image of GPU VMs.
        tpu_runtime_version: TPU software version (default: per generation).
        disk_gb: Boot disk size of GPU VMs.
        disk_type: Boot disk type (default: ``hyperdisk-balanced`` for A4 / A3 Ultra, which
            need it, else ``pd-balanced``).
        service_account: Service account the VMs run as (default: the project's default).
        external_ip: Give VMs and TPU VMs an external IP (to pull public images).
        live_pricing: Re-price GPU offers from the Cloud Billing Catalog API.
        quota_check: Check regional GPU quota before inserting.
        quota_ttl_s: How long a region's quotas are cached.
        listing_ttl_s: How long the machine-type / accelerator-type listings are cached.
        tpu_queued_resources: Create TPUs as queued resources (else plain nodes).
        compact_placement: Put a multi-node GPU gang under a COLLOCATED placement policy.
        operation_timeout_s: Longest wait for a launch or delete operation.
        poll_interval_s: Pause between polls of a TPU operation.
        install_id: Install id labelled when a spec carries the default one.
        clients: Pre-built clients (a test hook); built lazily from the options otherwise.
    """

    name: ClassVar[str] = "gcp"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.SPOT,
            Capability.TPU,
            Capability.MULTI_NODE,
            Capability.QUOTA_PROBE,
            Capability.LIVE_PRICES,
        }
    )

    def __init__(
        self,
        *,
        fleet_name: str = "gcp",
        regions: Sequence[str] = (),
        project: str | None = None,
        credentials_file: str | None = None,
        api_endpoint: str | None = None,
        tpu_api_endpoint: str | None = None,
        billing_api_endpoint: str | None = None,
        network: str = "global/networks/default",
        subnetwork: str | None = None,
        image: str = DEFAULT_IMAGE,
        tpu_runtime_version: str | None = None,
        disk_gb: int = 200,
        disk_type: str | None = None,
        service_account: str | None = None,
        external_ip: bool = True,
        live_pricing: bool = False,
        quota_check: bool = True,
        quota_ttl_s: float = 60.0,
        listing_ttl_s: float = 300.0,
        tpu_queued_resources: bool = True,
        compact_placement: bool = True,
        operation_timeout_s: float = 900.0,
        poll_interval_s: float = 2.0,
        install_id: str = "default",
        clients: GCPClients | None = None,
    ) -> None:
        if disk_gb < 10:
            raise ValueError(f"disk_gb must be at least 10, got {disk_gb}")
        if operation_timeout_s <= 0 or poll_interval_s < 0:
            raise ValueError("operation_timeout_s must be positive and poll_interval_s >= 0")
        self.fleet_name = fleet_name
        self.regions = tuple(regions)
        self.credentials_file = credentials_file
        self.api_endpoint = api_endpoint
        self.tpu_api_endpoint = tpu_api_endpoint
        self.billing_api_endpoint = billing_api_endpoint or (
            api_endpoint or "https://cloudbilling.googleapis.com"
        )
        self.network = network
        self.subnetwork = subnetwork
        self.image = image
        self.tpu_runtime_version = tpu_runtime_version
        self.disk_gb = disk_gb
        self.disk_type = disk_type
        self.service_account = service_account
        self.external_ip = external_ip
        self.live_pricing = live_pricing
        self.quota_check = quota_check
        self.quota_ttl_s = quota_ttl_s
        self.listing_ttl_s = listing_ttl_s
        self.tpu_queued_resources = tpu_queued_resources
        self.compact_placement = compact_placement
        self.operation_timeout_s = operation_timeout_s
        self.poll_interval_s = poll_interval_s
        self.install_id = install_id
        self._project = project
        self._clients = clients
        self._lock = threading.RLock()
        self._listing: _Listing | None = None
        self._offers: dict[str, Offer] | None = None
        self._quotas: dict[str, tuple[float, dict[str, tuple[float, float]]]] = {}
        self._live: LivePrices | None = None
        catalog = load_catalog()
        self._catalog_version = catalog.version
        self._rows = [
            o
            for o in catalog.offers("gcp", fleet_name=fleet_name)
            if _matches(self.regions, o.region)
        ]

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def clients(self) -> GCPClients:
        """The Google clients, built on first use (so a missing credential is an AuthError)."""
        with self._lock:
            if self._clients is None:
                self._clients = self._call(
                    lambda: build_clients(
                        credentials_file=self.credentials_file,
                        api_endpoint=self.api_endpoint,
                        tpu_api_endpoint=self.tpu_api_endpoint,
                    ),
                    what="building Google Cloud clients",
                )
            return self._clients

    @property
    def project(self) -> str:
        """The project id (from the options, else from the credentials)."""
        project = self._project or self.clients.project
        if not project:
            raise AuthError(
                "no Google Cloud project: set the 'project' option or GOOGLE_CLOUD_PROJECT",
                provider=self.fleet_name,
                scope=self.fleet_name,
            )
        return project

    def _call(
        self,
        fn: Callable[[], T],
        *,
        what: str,
        zone: str | None = None,
        region: str | None = None,
    ) -> T:
        """Run one SDK call; every exception leaves as a ProviderError."""
        try:
            return fn()
        except ProviderError:
            raise
        except _BUGS:
            raise
        except Exception as exc:
            raise self._translated(
                exc, what=what, region=region or (_region_of(zone) if zone else None), zone=zone
            ) from exc

    def _translated(
        self, exc: BaseException, *, what: str, region: str | None, zone: str | None = None
    ) -> ProviderError:
        """The ProviderError an SDK exception of one call becomes."""
        return gerr.translate(
            gerr.failure_from_exception(exc),
            provider=self.fleet_name,
            region=region,
            zone=zone,
            what=what,
        )

    @staticmethod
    def _status_code(exc: BaseException) -> int | None:
        code = getattr(exc, "code", None)
        return code if isinstance(code, int) else None

    def _call_unless(
        self, fn: Callable[[], T], codes: Collection[int], *, what: str, zone: str
    ) -> T | None:
        """Like ``_call``, but an answer with one of ``codes`` is None instead of an error."""
        try:
            return fn()
        except _BUGS:
            raise
        except Exception as exc:
            if self._status_code(exc) in codes:
                return None
            raise self._translated(exc, what=what, region=_region_of(zone), zone=zone) from exc

    def _call_or_missing(self, fn: Callable[[], T], *, what: str, zone: str) -> T | None:
        """Like ``_call`` but a 404 answer is None (gone, or never existed)."""
        return self._call_unless(fn, (404,), what=what, zone=zone)

    # -- check --------------------------------------------------------------------------------

    def check(self) -> None:
        """Probe credentials and the Compute API with one cheap regional read.

        Raises:
            AuthError: If credentials or the project are missing or lack permission.
            TransientError: If the API cannot be reached.
        """
        region = self._rows[0].region if self._rows else "us-central1"
        self._region_quotas(region, fresh=True)

    # -- offers -------------------------------------------------------------------------------

    def offers(self, request: ResourceRequest) -> list[Offer]:
        """Return catalog-priced offers that the live listings confirm, filtered by ``request``.

        Args:
            request: Accelerators, minimum accelerators per node and region globs.

        Returns:
            Matching offers (capacity unknown: None).
        """
        wanted = set(request.accelerators)
        return [
            o
            for o in self._all_offers().values()
            if (not wanted or o.accelerator in wanted)
            and o.count >= request.count
            and _matches(request.regions, o.region)
        ]

    def _all_offers(self) -> dict[str, Offer]:
        with self._lock:
            listing = self._current_listing()
            if self._offers is None:
                self._offers = self._build_offers(listing)
            return self._offers

    def _current_listing(self) -> _Listing:
        listing = self._listing
        if listing is None or time.monotonic() - listing.fetched_at > self.listing_ttl_s:
            listing = self._fetch_listing()
            self._listing = listing
            self._offers = None
            # Live prices are refreshed with the listings, once per listing period.
            self._live = None
        return listing

    def _tpu_zones(self) -> dict[str, set[str]]:
        """Zones whose TPU listing is needed, and the catalog TPU types asked there."""
        zones_of_region: dict[str, set[str]] = defaultdict(set)
        for row in self._rows:
            if row.zone:
                zones_of_region[row.region].add(row.zone)
        wanted: dict[str, set[str]] = defaultdict(set)
        for row in self._rows:
            if not _is_tpu(row.instance_type):
                continue
            # A regional TPU row may run in any zone of its region that lists the type.
            for zone in [row.zone] if row.zone else sorted(zones_of_region[row.region]):
                wanted[zone].add(row.instance_type)
        return wanted

    def _fetch_listing(self) -> _Listing:
        machine_types: dict[str, set[str]] = defaultdict(set)
        shapes: dict[str, tuple[int, float]] = {}
        gpu_zones = {r.zone for r in self._rows if r.zone and not _is_tpu(r.instance_type)}
        if gpu_zones:
            from google.cloud import compute_v1

            request = compute_v1.AggregatedListMachineTypesRequest(
                project=self.project, filter=_MACHINE_FILTER
            )

            def list_machine_types() -> None:
                for scope, scoped in self.clients.machine_types.aggregated_list(request=request):
                    zone = _last(scope)
                    if zone not in gpu_zones:
                        continue
                    for mt in scoped.machine_types:
                        machine_types[zone].add(mt.name)
                        shapes[mt.name] = (int(mt.guest_cpus), mt.memory_mb / 1024.0)

            self._call(list_machine_types, what="listing machine types")
        tpu_types: dict[str, dict[str, str]] = {}
        for zone in sorted(self._tpu_zones()):
            tpu_types[zone] = self._list_tpu_types(zone)
        return _Listing(dict(machine_types), shapes, tpu_types, time.monotonic())

    def _list_tpu_types(self, zone: str) -> dict[str, str]:
        parent = f"projects/{self.project}/locations/{zone}"

        def run() -> dict[str, str]:
            out: dict[str, str] = {}
            for at in self.clients.tpu.list_accelerator_types(parent=parent):
                topology = at.accelerator_configs[0].topology if at.accelerator_configs else ""
                out[f"tpu-{at.type_}"] = topology
            return out

        # A zone the TPU API does not serve answers 404: nothing offered there.
        return self._call_or_missing(run, what="listing TPU accelerator types", zone=zone) or {}

    def _build_offers(self, listing: _Listing) -> dict[str, Offer]:
        out: dict[str, Offer] = {}
        version = self._catalog_version
        live = self._live_prices()
        if live is not None:
            version = f"{version}+gcp-live-{live.date}"
        tpu_zones = self._tpu_zones()
        for row in self._rows:
            if _is_tpu(row.instance_type):
                zones = [
                    z
                    for z in sorted(tpu_zones)
                    if row.instance_type in listing.tpu_types.get(z, {})
                    and (z == row.zone or (row.zone is None and _region_of(z) == row.region))
                ]
                for zone in zones:
                    offer = dataclasses.replace(row, zone=zone, catalog_version=version)
                    out.setdefault(offer.key, offer)
                continue
            if row.zone is None or row.instance_type not in listing.machine_types.get(
                row.zone, set()
            ):
                continue
            offer = dataclasses.replace(row, catalog_version=version)
            if live is not None:
                offer = self._reprice(offer, live, listing)
            out[offer.key] = offer
        return out

    def _reprice(self, offer: Offer, live: LivePrices, listing: _Listing) -> Offer:
        shape = listing.shapes.get(offer.instance_type)
        family = _quota_metric(offer.instance_type)
        if shape is None or family is None:
            return offer
        prices = [
            live.machine_price(
                region=offer.region,
                instance_type=offer.instance_type,
                gpu=family[1],
                gpus=offer.count,
                vcpus=shape[0],
                memory_gib=shape[1],
                spot=spot,
            )
            for spot in (False, True)
        ]
        # Only markets the catalog knows are re-priced: a spot SKU alone does not make a
        # machine type spot-capable (A3 Ultra, for one, has none in the catalog).
        return dataclasses.replace(
            offer,
            price=prices[0] if prices[0] is not None and offer.price is not None else offer.price,
            spot_price=(
                prices[1]
                if prices[1] is not None and offer.spot_price is not None
                else offer.spot_price
            ),
        )

    def _live_prices(self) -> LivePrices | None:
        if not self.live_pricing:
            return None
        if self._live is not None:
            return self._live
        try:
            if self.api_endpoint is not None or self.billing_api_endpoint.startswith("http://"):
                import requests

                session: Any = requests.Session()
            else:
                from google.auth.transport.requests import AuthorizedSession

                session = AuthorizedSession(self.clients.credentials)  # type: ignore[no-untyped-call]
            self._live = fetch_skus(session, self.billing_api_endpoint)
        except Exception as exc:
            # Prices fall back to the shipped catalog: a pricing outage must not stop planning.
            log.warning("live GCP pricing unavailable, using catalog prices: %s", exc)
            return None
        return self._live

    def refresh_prices(self) -> None:
        """Drop cached listings and live prices so the next ``offers`` fetches them again."""
        with self._lock:
            self._live = None
            self._listing = None
            self._offers = None

    # -- quota --------------------------------------------------------------------------------

    def _region_quotas(self, region: str, *, fresh: bool = False) -> dict[str, tuple[float, float]]:
        with self._lock:
            cached = self._quotas.get(region)
            if not fresh and cached and time.monotonic() - cached[0] <= self.quota_ttl_s:
                return cached[1]
        from google.cloud import compute_v1

        reply = self._call(
            lambda: self.clients.regions.get(
                request=compute_v1.GetRegionRequest(project=self.project, region=region)
            ),
            what=f"reading quotas of {region}",
            region=region,
        )
        quotas = {q.metric: (float(q.limit), float(q.usage)) for q in reply.quotas}
        with self._lock:
            self._quotas[region] = (time.monotonic(), quotas)
        return quotas

    def _check_quota(self, offer: Offer, spec: LaunchSpec, *, nodes: int) -> None:
        family = _quota_metric(offer.instance_type)
        if not self.quota_check or family is None:
            return
        metric = family[0]
        if spec.market is MarketKind.SPOT:
            metric = f"PREEMPTIBLE_{metric}"
        quotas = self._region_quotas(offer.region)
        if metric not in quotas:
            # The region does not report this family at all: let the insert decide.
            return
        limit, usage = quotas[metric]
        need = offer.count * nodes
        if limit - usage < need:
            raise QuotaError(
                f"{metric} quota in {offer.region}: {limit - usage:g} free of {limit:g}, "
                f"{need} needed for {nodes} x {offer.instance_type}",
                provider=self.fleet_name,
                scope=error_scope(self.fleet_name, offer.region),
            )

    # -- launch -------------------------------------------------------------------------------

    def launch(self, offer: Offer, spec: LaunchSpec, *, request_id: str) -> Handle:
        """Launch ``spec`` on ``offer``; the same ``request_id`` finds the same resources.

        Args:
            offer: One of this adapter's offers.
            spec: What to launch.
            request_id: Idempotency key.

        Returns:
            The handle (id = the launch's base name).

        Raises:
            InvalidRequestError: If the offer is not this adapter's, spot is asked where there
                is no spot market, or ``request_id`` was used for another launch.
            QuotaError: If the region lacks GPU quota (checked before any insert).
            CapacityError: If the zone has no capacity (stockout).
            AuthError: If credentials lack a permission.
            TransientError: On throttling, 5xx and timeouts.
        """
        own = self._all_offers().get(offer.key)
        if offer.provider != self.fleet_name or own is None or offer.reservation is not None:
            raise InvalidRequestError(
                f"{self.fleet_name} has no offer {offer.instance_type} in "
                f"{offer.zone or offer.region}",
                provider=self.fleet_name,
            )
        if spec.nodes < 1:
            raise InvalidRequestError(
                f"nodes must be at least 1, got {spec.nodes}", provider=self.fleet_name
            )
        if spec.market is MarketKind.SPOT and own.spot_price is None:
            raise InvalidRequestError(
                f"{own.instance_type} in {own.zone} has no spot market", provider=self.fleet_name
            )
        if spec.market is MarketKind.ON_DEMAND and own.price is None:
            raise InvalidRequestError(
                f"{own.instance_type} in {own.zone} is not sold on demand",
                provider=self.fleet_name,
            )
        if spec.market is MarketKind.RESERVED:
            raise InvalidRequestError(
                "reservations are not supported by the gcp adapter yet", provider=self.fleet_name
            )
        if _is_tpu(own.instance_type) and spec.nodes != 1:
            raise InvalidRequestError(
                "a TPU slice is one node of the offer's topology; ask for a larger slice "
                f"instead of {spec.nodes} nodes",
                provider=self.fleet_name,
            )
        assert own.zone is not None  # every offer built above is zonal
        handle_id = base_name(self.fleet_name, request_id)
        install = spec.install_id if spec.install_id != "default" else self.install_id
        digest = spec_digest(spec, own.instance_type, own.zone)
        labels = labels_for(
            spec,
            fleet_name=self.fleet_name,
            handle_id=handle_id,
            install_id=install,
            digest=digest,
        )
        metadata = {META_JOB: spec.job_id, META_ATTEMPT: str(spec.attempt), META_INSTALL: install}
        handle = Handle(
            provider=self.fleet_name,
            id=handle_id,
            request_id=request_id,
            region=own.region,
            zone=own.zone,
            instance_type=own.instance_type,
            nodes=spec.nodes,
            market=spec.market,
            job_id=spec.job_id,
            extra=(("install", label_value(install)), ("kind", _KIND_VM)),
        )
        if _is_tpu(own.instance_type):
            kind = self._launch_tpu(own, spec, handle_id, request_id, labels, metadata)
            return dataclasses.replace(
                handle, extra=(("install", label_value(install)), ("kind", kind))
            )
        self._launch_vms(own, spec, handle_id, request_id, labels, metadata)
        return handle

    def _reuse_check(self, found_labels: dict[str, str], digest: str, request_id: str) -> None:
        if found_labels.get(LABEL_SPEC) != digest:
            raise InvalidRequestError(
                f"request id {request_id!r} was already used for another launch",
                provider=self.fleet_name,
            )

    def _list_instances(self, zone: str, filter_: str) -> list[Any]:
        from google.cloud import compute_v1

        request = compute_v1.ListInstancesRequest(project=self.project, zone=zone, filter=filter_)
        return self._call(
            lambda: list(self.clients.instances.list(request=request)),
            what=f"listing instances in {zone}",
            zone=zone,
        )

    def _launch_vms(
        self,
        offer: Offer,
        spec: LaunchSpec,
        handle_id: str,
        request_id: str,
        labels: dict[str, str],
        metadata: dict[str, str],
    ) -> None:
        zone = offer.zone
        assert zone is not None
        # A re-send finds what the first send created (deterministic names and labels).
        existing = {
            i.name: i for i in self._list_instances(zone, f'labels.{LABEL_HANDLE} = "{handle_id}"')
        }
        for instance in existing.values():
            self._reuse_check(dict(instance.labels), labels[LABEL_SPEC], request_id)
        # A VM stopping or stopped without having reported an exit code is not a node of a
        # live gang (an undo or terminate deleting it, a preemption, a host error): adopting
        # it would hand the scheduler a workload that is already lost. It is replaced.
        stale = [
            i
            for i in existing.values()
            if i.status in _GONE_INSTANCE and LABEL_EXIT not in i.labels
        ]
        if stale:
            self._clear_stale(zone, stale, request_id)
            for instance in stale:
                del existing[instance.name]
        names = [f"{handle_id}-{i}" for i in range(spec.nodes)]
        missing = sum(name not in existing for name in names)
        if missing:
            # Only what is still to be created needs quota; checked before any insert.
            self._check_quota(offer, spec, nodes=missing)
        policy = self._placement_policy(offer, spec, handle_id, request_id) if missing else None
        coordinator = f"{names[0]}.{zone}.c.{self.project}.internal"
        script = startup_script(spec, kind="vm", nodes=spec.nodes, coordinator=coordinator)
        operations: list[tuple[str, Any]] = []
        failures: list[ProviderError] = []
        for index, name in enumerate(names):
            if name in existing:
                continue
            body = self._instance_body(name, offer, spec, labels, metadata, script)
            if policy is not None:
                body.resource_policies = [policy]
            try:
                op = self._insert(zone, body, request_id, index)
            except ProviderError as exc:
                # Stop here, but still wait for the inserts already sent: what the gang
                # does next depends on which VMs came up.
                failures.append(exc)
                break
            if op is not None:
                operations.append((name, op))
        try:
            failures = self._wait_all(zone, operations, what="creating instances") + failures
        except ProviderError as exc:
            failures.append(exc)
        if not failures:
            return
        fatal = next((f for f in failures if not isinstance(f, TransientError)), None)
        if fatal is None:
            # Only passing errors (5xx, throttling, a timeout): the scheduler re-sends the same
            # request id, which adopts the VMs that came up and inserts the rest. Deleting
            # them here would make that re-send start from nothing again.
            raise failures[0]
        # Capacity, quota, a bad request: the gang cannot be completed here, and a partial
        # gang is useless and still billed: delete what did come up. A fresh key each time,
        # so that an earlier undo of the same launch is never answered instead.
        undo = f"{request_id}/undo/{uuid.uuid4().hex}"
        try:
            self._delete_instances(zone, names, request_id=undo)
            if policy is not None:
                self._delete_policy(offer.region, handle_id, request_id=undo)
        except ProviderError as exc:
            log.warning("could not clean up the partial gang %s: %s", handle_id, exc)
        raise fatal

    def _clear_stale(self, zone: str, stale: list[Any], request_id: str) -> None:
        """Get VMs of an earlier send that cannot be adopted out of the way, or raise.

        A VM still stopping (being deleted, or stopped) is waited for by the scheduler's next
        re-send (TransientError); one at rest (TERMINATED, STOPPED, SUSPENDED) is deleted
        here, and the launch goes on to create it again.
        """
        moving = sorted(i.name for i in stale if i.status in _STOPPING_INSTANCE)
        if moving:
            raise TransientError(
                f"VM(s) {', '.join(moving)} of an earlier send of this launch are still "
                "stopping or being deleted; re-send once they are gone",
                provider=self.fleet_name,
                scope=error_scope(self.fleet_name, _region_of(zone), zone),
            )
        names = sorted(i.name for i in stale)
        log.info("replacing VM(s) %s that stopped without reporting", ", ".join(names))
        self._delete_instances(zone, names, request_id=f"{request_id}/replace/{uuid.uuid4().hex}")

    def _placement_policy(
        self, offer: Offer, spec: LaunchSpec, handle_id: str, request_id: str
    ) -> str | None:
        """Create (or find) the gang's COLLOCATED placement policy; its URL, or None."""
        if not self.compact_placement or spec.nodes < 2:
            return None
        from google.cloud import compute_v1

        region = offer.region
        name = f"{handle_id}-pp"
        link = f"projects/{self.project}/regions/{region}/resourcePolicies/{name}"
        policy = compute_v1.ResourcePolicy(
            name=name,
            description=f"multicloud gang {handle_id} ({spec.nodes} x {offer.instance_type})",
            group_placement_policy=compute_v1.ResourcePolicyGroupPlacementPolicy(
                collocation="COLLOCATED", vm_count=spec.nodes
            ),
        )
        key = f"{request_id}/{region}/placement"
        op = None
        for rid in (request_uuid(key), request_uuid(f"{key}/resend/{uuid.uuid4().hex}")):
            request = compute_v1.InsertResourcePolicyRequest(
                project=self.project,
                region=region,
                resource_policy_resource=policy,
                request_id=rid,
            )
            try:
                op = self.clients.resource_policies.insert_unary(request=request)
            except _BUGS:
                raise
            except Exception as exc:
                if self._status_code(exc) == 409:
                    return link
                raise self._translated(
                    exc, what=f"creating placement policy {name}", region=region
                ) from exc
            if op.status != compute_v1.Operation.Status.DONE:
                break
            # Answered with an earlier send's finished operation (the policy may have been
            # deleted by an undo since): send it again as a new request; 409 = it is there.
        assert op is not None
        failure = self._wait_region(region, op.name, what=f"creating placement policy {name}")
        if failure is not None:
            raise failure
        return link

    def _wait_region(self, region: str, op_name: str, *, what: str) -> ProviderError | None:
        """Wait for one region operation (bounded); its translated error, if any."""
        from google.cloud import compute_v1

        deadline = time.monotonic() + self.operation_timeout_s
        request = compute_v1.WaitRegionOperationRequest(
            project=self.project, region=region, operation=op_name
        )
        while True:
            op = self._call(
                lambda: self.clients.region_operations.wait(request=request),
                what=f"{what}: waiting",
                region=region,
            )
            if op.status == compute_v1.Operation.Status.DONE:
                break
            if time.monotonic() > deadline:
                return TransientError(
                    f"{what}: still running after {self.operation_timeout_s}s",
                    provider=self.fleet_name,
                    scope=error_scope(self.fleet_name, region),
                )
        errors = [(e.code, e.message) for e in op.error.errors] if op.error else []
        if not errors and op.http_error_status_code < 400:
            return None
        failure = gerr.failure_from_operation(
            errors, op.http_error_status_code, op.http_error_message
        )
        if failure.status == 404:
            return None
        return gerr.translate(failure, provider=self.fleet_name, region=region, what=what)

    def _delete_policy(self, region: str, handle_id: str, *, request_id: str) -> None:
        """Delete a gang's placement policy; gone is fine, in use is logged and left."""
        from google.cloud import compute_v1

        name = f"{handle_id}-pp"
        request = compute_v1.DeleteResourcePolicyRequest(
            project=self.project,
            region=region,
            resource_policy=name,
            request_id=request_uuid(f"{request_id}/delete/{name}"),
        )
        try:
            op = self.clients.resource_policies.delete_unary(request=request)
        except _BUGS:
            raise
        except Exception as exc:
            if self._status_code(exc) not in (404,):
                log.warning("placement policy %s not deleted: %s", name, exc)
            return
        failure = self._wait_region(region, op.name, what=f"deleting placement policy {name}")
        if failure is not None:
            log.warning("placement policy %s not deleted: %s", name, failure)

    def _insert(self, zone: str, body: Any, request_id: str, node: int) -> Any | None:
        """Insert one VM of a gang; its operation, or None when the VM already exists."""
        from google.cloud import compute_v1

        op = self._insert_once(zone, body, node_request_id(request_id, zone, node))
        if op is not None and op.status == compute_v1.Operation.Status.DONE:
            # A VM insert is never finished when it is answered: this is the operation of an
            # earlier send under the same requestId (Google de-duplicates on it), whose VM is
            # not there (it failed, or was deleted since; the caller listed it missing). Send
            # it again as a new request; the VM name still rules out a duplicate (409).
            resend = uuid.uuid4().hex
            op = self._insert_once(
                zone, body, node_request_id(request_id, zone, node, resend=resend)
            )
        return op

    def _insert_once(self, zone: str, body: Any, rid: str) -> Any | None:
        from google.cloud import compute_v1

        request = compute_v1.InsertInstanceRequest(
            project=self.project, zone=zone, instance_resource=body, request_id=rid
        )
        try:
            return self.clients.instances.insert_unary(request=request)
        except _BUGS:
            raise
        except Exception as exc:
            if self._status_code(exc) == 409:
                # alreadyExists: an earlier send created it; the caller re-lists on re-send.
                return None
            raise self._translated(
                exc, what=f"inserting {body.name}", region=_region_of(zone), zone=zone
            ) from exc

    def _instance_body(
        self,
        name: str,
        offer: Offer,
        spec: LaunchSpec,
        labels: dict[str, str],
        metadata: dict[str, str],
        script: str,
    ) -> Any:
        from google.cloud import compute_v1

        zone = offer.zone
        spot = spec.market is MarketKind.SPOT
        items = [
            compute_v1.Items(key="startup-script", value=script),
            compute_v1.Items(key="install-nvidia-driver", value="True"),
            *(compute_v1.Items(key=k, value=v) for k, v in sorted(metadata.items())),
        ]
        nic = compute_v1.NetworkInterface(network=self.network)
        if self.subnetwork:
            nic.subnetwork = self.subnetwork
        if self.external_ip:
            nic.access_configs = [
                compute_v1.AccessConfig(name="external-nat", type_="ONE_TO_ONE_NAT")
            ]
        scheduling = compute_v1.Scheduling(
            # GPU VMs cannot live-migrate; spot VMs must not restart on their own.
            on_host_maintenance="TERMINATE",
            automatic_restart=not spot,
            provisioning_model="SPOT" if spot else "STANDARD",
        )
        if spot:
            # STOP keeps the VM (and its labels) so that status can see the preemption.
            scheduling.instance_termination_action = "STOP"
        return compute_v1.Instance(
            name=name,
            machine_type=f"zones/{zone}/machineTypes/{offer.instance_type}",
            labels=labels,
            metadata=compute_v1.Metadata(items=items),
            disks=[
                compute_v1.AttachedDisk(
                    boot=True,
                    auto_delete=True,
                    initialize_params=compute_v1.AttachedDiskInitializeParams(
                        source_image=self.image,
                        disk_size_gb=self.disk_gb,
                        disk_type=f"zones/{zone}/diskTypes/{self._disk_type(offer)}",
                    ),
                )
            ],
            network_interfaces=[nic],
            scheduling=scheduling,
            service_accounts=[
                compute_v1.ServiceAccount(
                    email=self.service_account or "default",
                    scopes=["https://www.googleapis.com/auth/cloud-platform"],
                )
            ],
        )

    def _disk_type(self, offer: Offer) -> str:
        if self.disk_type:
            return self.disk_type
        # A4 and A3 Ultra boot only from Hyperdisk; the older families from Persistent Disk.
        if offer.instance_type.startswith(("a4-", "a3-ultragpu")):
            return "hyperdisk-balanced"
        return "pd-balanced"

    def _wait_all(
        self, zone: str, operations: list[tuple[str, Any]], *, what: str
    ) -> list[ProviderError]:
        """Wait for Compute zone operations with our own ZoneOperationsClient (bounded)."""
        from google.cloud import compute_v1

        deadline = time.monotonic() + self.operation_timeout_s
        pending = {op.name: (target, op) for target, op in operations}
        failures: list[ProviderError] = []
        while pending:
            if time.monotonic() > deadline:
                failures.append(
                    TransientError(
                        f"{what}: operations still running after {self.operation_timeout_s}s",
                        provider=self.fleet_name,
                        scope=error_scope(self.fleet_name, _region_of(zone), zone),
                    )
                )
                break
            for op_name, (target, _) in list(pending.items()):
                op = self._call(
                    lambda n=op_name: self.clients.zone_operations.wait(  # type: ignore[misc]
                        request=compute_v1.WaitZoneOperationRequest(
                            project=self.project, zone=zone, operation=n
                        )
                    ),
                    what=f"{what}: waiting for {op_name}",
                    zone=zone,
                )
                if op.status != compute_v1.Operation.Status.DONE:
                    continue
                del pending[op_name]
                errors = [(e.code, e.message) for e in op.error.errors] if op.error else []
                if errors or op.http_error_status_code >= 400:
                    failure = gerr.failure_from_operation(
                        errors, op.http_error_status_code, op.http_error_message
                    )
                    if failure.status == 404 or failure.has("RESOURCE_NOT_FOUND"):
                        continue
                    failures.append(
                        gerr.translate(
                            failure,
                            provider=self.fleet_name,
                            region=_region_of(zone),
                            zone=zone,
                            what=f"{what} ({target})",
                        )
                    )
        return failures

    # -- TPU launch ---------------------------------------------------------------------------

    def _tpu_node(
        self,
        offer: Offer,
        spec: LaunchSpec,
        handle_id: str,
        labels: dict[str, str],
        metadata: dict[str, str],
        *,
        spot_in_node: bool,
    ) -> Any:
        from google.cloud import tpu_v2

        zone = offer.zone
        assert zone is not None
        generation = _tpu_generation(offer.instance_type)
        listing = self._listing.tpu_types.get(zone, {}) if self._listing else {}
        topology = listing.get(offer.instance_type, "")
        script = startup_script(
            # No coordinator: the TPU runtime finds the slice's workers itself.
            spec,
            kind="tpu",
            nodes=spec.nodes,
            coordinator="",
            resource=handle_id,
        )
        node = tpu_v2.Node(
            runtime_version=self.tpu_runtime_version
            or TPU_RUNTIME_VERSIONS.get(generation, "tpu-ubuntu2204-base"),
            network_config=tpu_v2.NetworkConfig(
                network=self.network,
                subnetwork=self.subnetwork or "",
                enable_external_ips=self.external_ip,
            ),
            labels=labels,
            metadata={"startup-script": script, META_TYPE: offer.instance_type, **metadata},
        )
        config_type = _TPU_CONFIG_TYPES.get(generation)
        if topology and config_type:
            # The topology the zone lists for this slice, so the shape is explicit.
            node.accelerator_config = tpu_v2.AcceleratorConfig(
                type_=getattr(tpu_v2.AcceleratorConfig.Type, config_type), topology=topology
            )
        else:
            node.accelerator_type = offer.instance_type.removeprefix("tpu-")
        if spot_in_node:
            node.scheduling_config = tpu_v2.SchedulingConfig(spot=True)
        return node

    def _launch_tpu(
        self,
        offer: Offer,
        spec: LaunchSpec,
        handle_id: str,
        request_id: str,
        labels: dict[str, str],
        metadata: dict[str, str],
    ) -> str:
        zone = offer.zone
        assert zone is not None
        parent = f"projects/{self.project}/locations/{zone}"
        spot = spec.market is MarketKind.SPOT
        tpu = self.clients.tpu
        # A re-send finds the node first, whichever way the first send created it.
        found = self._call_or_missing(
            lambda: tpu.get_node(name=f"{parent}/nodes/{handle_id}"),
            what=f"reading TPU node {handle_id}",
            zone=zone,
        )
        if found is not None:
            self._reuse_check(dict(found.labels), labels[LABEL_SPEC], request_id)
            return _KIND_QR if found.queued_resource else _KIND_NODE
        if self.tpu_queued_resources:
            done = self._launch_queued(offer, spec, handle_id, request_id, labels, metadata)
            if done:
                return _KIND_QR
        node = self._tpu_node(offer, spec, handle_id, labels, metadata, spot_in_node=spot)
        try:
            op = tpu.create_node(parent=parent, node_id=handle_id, node=node)
        except _BUGS:
            raise
        except Exception as exc:
            if self._status_code(exc) == 409:
                return _KIND_NODE
            raise self._translated(
                exc, what=f"creating TPU node {handle_id}", region=offer.region, zone=zone
            ) from exc
        self._wait_tpu(op.operation.name, zone, what=f"creating TPU node {handle_id}")
        return _KIND_NODE

    def _launch_queued(
        self,
        offer: Offer,
        spec: LaunchSpec,
        handle_id: str,
        request_id: str,
        labels: dict[str, str],
        metadata: dict[str, str],
    ) -> bool:
        """Create the slice as a queued resource; False when the API does not offer them."""
        from google.cloud import tpu_v2

        zone = offer.zone
        assert zone is not None
        parent = f"projects/{self.project}/locations/{zone}"
        tpu = self.clients.tpu
        name = f"{parent}/queuedResources/{handle_id}"
        try:
            found = tpu.get_queued_resource(name=name)
        except _BUGS:
            raise
        except Exception as exc:
            code = self._status_code(exc)
            if code == 501:
                return False
            if code != 404:
                raise self._translated(
                    exc, what=f"reading queued resource {handle_id}", region=offer.region, zone=zone
                ) from exc
            found = None
        if found is not None:
            specs = found.tpu.node_spec
            got = dict(specs[0].node.labels) if specs else {}
            self._reuse_check(got, labels[LABEL_SPEC], request_id)
            return True
        node = self._tpu_node(offer, spec, handle_id, labels, metadata, spot_in_node=False)
        resource = tpu_v2.QueuedResource(
            tpu=tpu_v2.QueuedResource.Tpu(
                node_spec=[
                    tpu_v2.QueuedResource.Tpu.NodeSpec(parent=parent, node_id=handle_id, node=node)
                ]
            )
        )
        if spec.market is MarketKind.SPOT:
            resource.spot = tpu_v2.QueuedResource.Spot()
        key = f"{request_id}/{zone}"
        for rid in (request_uuid(key), request_uuid(f"{key}/resend/{uuid.uuid4().hex}")):
            try:
                op = tpu.create_queued_resource(
                    request=tpu_v2.CreateQueuedResourceRequest(
                        parent=parent,
                        queued_resource_id=handle_id,
                        queued_resource=resource,
                        request_id=rid,
                    )
                )
            except _BUGS:
                raise
            except Exception as exc:
                code = self._status_code(exc)
                if code in (404, 501):
                    # No queued resources here (API or zone): fall back to a plain node.
                    return False
                if code == 409:
                    return True
                raise self._translated(
                    exc,
                    what=f"creating queued resource {handle_id}",
                    region=offer.region,
                    zone=zone,
                ) from exc
            if not op.operation.done:
                break
            # Answered with an earlier send's finished operation (the queued resource is not
            # there: that create failed, or it was deleted since): send it again as a new
            # request; the queued resource id still rules out a duplicate (409).
        self._wait_tpu(op.operation.name, zone, what=f"creating queued resource {handle_id}")
        return True

    def _wait_tpu(self, op_name: str, zone: str, *, what: str, missing_ok: bool = False) -> None:
        """Poll a TPU long-running operation (bounded) and raise its error, translated."""
        from google.longrunning import operations_pb2  # type: ignore[import-untyped]

        deadline = time.monotonic() + self.operation_timeout_s
        while True:
            op = self._call(
                lambda: self.clients.tpu.get_operation(
                    request=operations_pb2.GetOperationRequest(name=op_name)
                ),
                what=f"{what}: polling",
                zone=zone,
            )
            if op.done:
                break
            if time.monotonic() > deadline:
                raise TransientError(
                    f"{what}: still running after {self.operation_timeout_s}s",
                    provider=self.fleet_name,
                    scope=error_scope(self.fleet_name, _region_of(zone), zone),
                )
            time.sleep(self.poll_interval_s)
        if op.HasField("error") and op.error.code:
            failure = gerr.failure_from_status(op.error.code, op.error.message)
            if missing_ok and failure.status == 404:
                return
            raise gerr.translate(
                failure,
                provider=self.fleet_name,
                region=_region_of(zone),
                zone=zone,
                what=what,
            )

    # -- status -------------------------------------------------------------------------------

    def status(self, handles: Sequence[Handle]) -> dict[str, WorkloadStatus]:
        """Return the status of each handle: one list call per zone (and kind).

        Args:
            handles: Handles to look up.

        Returns:
            Status per handle id; a handle with nothing left in the cloud is UNKNOWN.
        """
        out: dict[str, WorkloadStatus] = {}
        vm_groups: dict[tuple[str, str], list[Handle]] = defaultdict(list)
        tpu_groups: dict[str, list[Handle]] = defaultdict(list)
        for handle in handles:
            extra = dict(handle.extra)
            zone = handle.zone
            if zone is None:
                out[handle.id] = WorkloadStatus(WorkloadState.UNKNOWN, "handle has no zone")
                continue
            if extra.get("kind", _KIND_VM) == _KIND_VM:
                vm_groups[(zone, extra.get("install", ""))].append(handle)
            else:
                tpu_groups[zone].append(handle)
        for (zone, install), group in vm_groups.items():
            out.update(self._vm_status(zone, install, group))
        for zone, group in tpu_groups.items():
            out.update(self._tpu_status(zone, group))
        return out

    def _vm_status(
        self, zone: str, install: str, handles: list[Handle]
    ) -> dict[str, WorkloadStatus]:
        filter_ = f'labels.{LABEL_INSTALL} = "{install}"' if install else f"labels.{LABEL_HANDLE}:*"
        by_handle: dict[str, list[Any]] = defaultdict(list)
        for instance in self._list_instances(zone, filter_):
            by_handle[instance.labels.get(LABEL_HANDLE, "")].append(instance)
        suspects = [
            i
            for h in handles
            for i in by_handle.get(h.id, ())
            if i.status in _GONE_INSTANCE
            and LABEL_EXIT not in i.labels
            and i.scheduling.provisioning_model == "SPOT"
        ]
        preempted = self._preempted(zone) if suspects else set()
        out: dict[str, WorkloadStatus] = {}
        for handle in handles:
            instances = by_handle.get(handle.id, [])
            out[handle.id] = self._gang_status(handle, instances, preempted)
        return out

    def _preempted(self, zone: str) -> set[str]:
        """Names of instances with a ``compute.instances.preempted`` operation in ``zone``."""
        from google.cloud import compute_v1

        request = compute_v1.ListZoneOperationsRequest(
            project=self.project, zone=zone, filter='operationType = "compute.instances.preempted"'
        )
        ops = self._call(
            lambda: list(self.clients.zone_operations.list(request=request)),
            what=f"listing preemptions in {zone}",
            zone=zone,
        )
        return {_last(op.target_link) for op in ops}

    @staticmethod
    def _instance_state(instance: Any, preempted: set[str]) -> WorkloadStatus:
        exit_label = instance.labels.get(LABEL_EXIT)
        if exit_label is not None:
            try:
                code = int(exit_label)
            except ValueError:
                code = -1
            if code == 0:
                return WorkloadStatus(WorkloadState.SUCCEEDED, "workload exited 0", 0)
            return WorkloadStatus(WorkloadState.FAILED, f"workload exited {code}", code)
        status = instance.status
        if status in ("PROVISIONING", "STAGING"):
            return WorkloadStatus(WorkloadState.PROVISIONING, f"{instance.name} {status}")
        if status in ("RUNNING", "REPAIRING"):
            return WorkloadStatus(WorkloadState.RUNNING, f"{instance.name} {status}")
        if instance.name in preempted:
            return WorkloadStatus(WorkloadState.PREEMPTED, f"{instance.name} was preempted")
        return WorkloadStatus(
            WorkloadState.FAILED, f"{instance.name} is {status} without reporting an exit code"
        )

    def _gang_status(
        self, handle: Handle, instances: list[Any], preempted: set[str]
    ) -> WorkloadStatus:
        if not instances:
            return WorkloadStatus(WorkloadState.UNKNOWN, "no instances left for this workload")
        states = [self._instance_state(i, preempted) for i in instances]
        if len(instances) < handle.nodes:
            return WorkloadStatus(
                WorkloadState.TERMINATED,
                f"{handle.nodes - len(instances)} of {handle.nodes} node(s) are gone",
            )
        for wanted in (WorkloadState.PREEMPTED, WorkloadState.FAILED):
            hit = next((s for s in states if s.state is wanted), None)
            if hit is not None:
                return hit
        if all(s.state is WorkloadState.SUCCEEDED for s in states):
            return WorkloadStatus(WorkloadState.SUCCEEDED, "every node exited 0", 0)
        if any(s.state is WorkloadState.PROVISIONING for s in states):
            return WorkloadStatus(WorkloadState.PROVISIONING, _MESSAGES[WorkloadState.PROVISIONING])
        return WorkloadStatus(WorkloadState.RUNNING, _MESSAGES[WorkloadState.RUNNING])

    def _tpu_status(self, zone: str, handles: list[Handle]) -> dict[str, WorkloadStatus]:
        parent = f"projects/{self.project}/locations/{zone}"
        tpu = self.clients.tpu
        queued: dict[str, Any] = {}
        if any(dict(h.extra).get("kind") == _KIND_QR for h in handles):
            queued = {
                _last(q.name): q
                for q in self._call(
                    lambda: list(tpu.list_queued_resources(parent=parent)),
                    what=f"listing queued resources in {zone}",
                    zone=zone,
                )
            }
        # After the queued resources: a slice that just became ACTIVE has its node listed.
        nodes = {
            _last(n.name): n
            for n in self._call(
                lambda: list(tpu.list_nodes(parent=parent)),
                what=f"listing TPU nodes in {zone}",
                zone=zone,
            )
        }
        out: dict[str, WorkloadStatus] = {}
        for handle in handles:
            qr = queued.get(handle.id)
            node = nodes.get(handle.id)
            if dict(handle.extra).get("kind") == _KIND_QR:
                out[handle.id] = self._queued_state(handle, qr, node, zone)
            else:
                out[handle.id] = self._node_state(handle, node)
        return out

    def _queued_state(self, handle: Handle, qr: Any, node: Any, zone: str) -> WorkloadStatus:
        from google.cloud import tpu_v2

        if qr is None:
            return (
                self._node_state(handle, node)
                if node is not None
                else WorkloadStatus(
                    WorkloadState.UNKNOWN, "no queued resource left for this workload"
                )
            )
        qs = tpu_v2.QueuedResourceState.State
        state = qr.state.state
        if state in (qs.CREATING, qs.ACCEPTED, qs.WAITING_FOR_RESOURCES, qs.PROVISIONING):
            return WorkloadStatus(WorkloadState.PROVISIONING, f"queued resource {state.name}")
        if state == qs.FAILED:
            error = qr.state.failed_data.error
            failure = gerr.failure_from_status(error.code, error.message)
            rule = gerr.classify(failure)
            message = f"queued resource failed: {error.message}"
            if rule is not None and issubclass(rule.error, (CapacityError, QuotaError)):
                # The slice never got its capacity (a stockout; the quota): PREEMPTED, i.e.
                # capacity lost and the job re-placed, as a CapacityError at launch would,
                # with the scope to block so the next plan does not walk straight back in:
                # the zone for capacity, the region for quota (the provider for a global one).
                scope = gerr.translate(
                    failure, provider=self.fleet_name, region=handle.region, zone=zone
                ).scope
                return WorkloadStatus(WorkloadState.PREEMPTED, message, blocked_scope=scope)
            if rule is not None and issubclass(rule.error, TransientError):
                # A passing error loses the attempt (re-placed), without blocking anything.
                return WorkloadStatus(WorkloadState.TERMINATED, message)
            # Anything else is the request's own fault.
            return WorkloadStatus(WorkloadState.FAILED, message)
        if state in (qs.SUSPENDING, qs.SUSPENDED):
            if handle.market is MarketKind.SPOT:
                return WorkloadStatus(WorkloadState.PREEMPTED, "spot TPU slice was reclaimed")
            return WorkloadStatus(WorkloadState.TERMINATED, f"queued resource {state.name}")
        if state == qs.DELETING:
            return WorkloadStatus(WorkloadState.TERMINATED, "queued resource is being deleted")
        return self._node_state(handle, node)

    @staticmethod
    def _node_state(handle: Handle, node: Any) -> WorkloadStatus:
        from google.cloud import tpu_v2

        if node is None:
            return WorkloadStatus(WorkloadState.UNKNOWN, "no TPU node left for this workload")
        exit_label = node.labels.get(LABEL_EXIT)
        if exit_label is not None:
            code = int(exit_label) if exit_label.lstrip("-").isdigit() else -1
            if code == 0:
                return WorkloadStatus(WorkloadState.SUCCEEDED, "workload exited 0", 0)
            return WorkloadStatus(WorkloadState.FAILED, f"workload exited {code}", code)
        ns = tpu_v2.Node.State
        state = node.state
        if state in (ns.CREATING, ns.STARTING, ns.RESTARTING, ns.STATE_UNSPECIFIED):
            return WorkloadStatus(WorkloadState.PROVISIONING, f"TPU node {state.name}")
        if state == ns.PREEMPTED or (state == ns.TERMINATED and handle.market is MarketKind.SPOT):
            return WorkloadStatus(WorkloadState.PREEMPTED, "spot TPU node was preempted")
        if state in (ns.DELETING, ns.TERMINATED, ns.STOPPED, ns.STOPPING, ns.HIDDEN):
            return WorkloadStatus(WorkloadState.TERMINATED, f"TPU node {state.name}")
        return WorkloadStatus(WorkloadState.RUNNING, f"TPU node {state.name}")

    # -- terminate ----------------------------------------------------------------------------

    def terminate(self, handle: Handle, *, request_id: str) -> None:
        """Delete a workload's resources; nothing left (404) is a no-op.

        Args:
            handle: The workload.
            request_id: Idempotency key of the termination.
        """
        zone = handle.zone
        if zone is None:
            return
        kind = dict(handle.extra).get("kind", _KIND_VM)
        if kind == _KIND_VM:
            names = [
                i.name for i in self._list_instances(zone, f'labels.{LABEL_HANDLE} = "{handle.id}"')
            ]
            self._delete_instances(zone, names, request_id=request_id)
            if self.compact_placement and handle.nodes > 1:
                self._delete_policy(handle.region, handle.id, request_id=request_id)
            return
        from google.cloud import tpu_v2

        parent = f"projects/{self.project}/locations/{zone}"
        tpu = self.clients.tpu
        if kind == _KIND_QR:
            op = self._call_or_missing(
                lambda: tpu.delete_queued_resource(
                    request=tpu_v2.DeleteQueuedResourceRequest(
                        name=f"{parent}/queuedResources/{handle.id}",
                        force=True,
                        request_id=request_uuid(f"{request_id}/delete"),
                    )
                ),
                what=f"deleting queued resource {handle.id}",
                zone=zone,
            )
        else:
            op = self._call_or_missing(
                lambda: tpu.delete_node(name=f"{parent}/nodes/{handle.id}"),
                what=f"deleting TPU node {handle.id}",
                zone=zone,
            )
        if op is not None:
            self._wait_tpu(op.operation.name, zone, what=f"deleting {handle.id}", missing_ok=True)

    def _delete_instances(self, zone: str, names: list[str], *, request_id: str) -> None:
        from google.cloud import compute_v1

        operations: list[tuple[str, Any]] = []
        for name in names:
            op = self._call_or_missing(
                lambda n=name: self.clients.instances.delete_unary(  # type: ignore[misc]
                    request=compute_v1.DeleteInstanceRequest(
                        project=self.project,
                        zone=zone,
                        instance=n,
                        request_id=request_uuid(f"{request_id}/delete/{n}"),
                    )
                ),
                what=f"deleting {name}",
                zone=zone,
            )
            if op is not None:
                operations.append((name, op))
        failures = self._wait_all(zone, operations, what="deleting instances")
        if failures:
            raise failures[0]

    # -- orphan sweep (SupportsSweep) -----------------------------------------------------------

    def owned(self, install_id: str) -> list[OwnedWorkload]:
        """Return what ``install_id`` launched through this fleet entry and still exists.

        Finished VMs (stopped after reporting) are included: they still hold disks, and the
        sweep terminates whatever no live attempt owns.

        Args:
            install_id: Install id the resources are labelled with.

        Returns:
            One entry per launch (a gang is one entry), with its job and attempt.
        """
        install = label_value(install_id)
        filter_ = (
            f'labels.{LABEL_INSTALL} = "{install}" AND '
            f'labels.{LABEL_PROVIDER} = "{label_value(self.fleet_name)}"'
        )
        from google.cloud import compute_v1

        request = compute_v1.AggregatedListInstancesRequest(project=self.project, filter=filter_)
        gangs: dict[tuple[str, str], list[Any]] = defaultdict(list)

        def collect() -> None:
            for scope, scoped in self.clients.instances.aggregated_list(request=request):
                zone = _last(scope)
                if not _matches(self.regions, _region_of(zone)):
                    continue
                for instance in scoped.instances:
                    gangs[(zone, instance.labels.get(LABEL_HANDLE, ""))].append(instance)

        self._call(collect, what="listing owned instances")
        out: list[OwnedWorkload] = []
        for (zone, handle_id), instances in sorted(gangs.items()):
            first = instances[0]
            meta = {item.key: item.value for item in first.metadata.items}
            market = (
                MarketKind.SPOT
                if first.scheduling.provisioning_model == "SPOT"
                else MarketKind.ON_DEMAND
            )
            out.append(
                self._owned(
                    handle_id,
                    zone,
                    _last(first.machine_type),
                    len(instances),
                    market,
                    dict(first.labels),
                    meta,
                    install,
                    _KIND_VM,
                )
            )
        fleet = label_value(self.fleet_name)
        tpu = self.clients.tpu
        for zone in sorted(self._tpu_zones()):
            parent = f"projects/{self.project}/locations/{zone}"
            found: dict[str, tuple[Any, MarketKind, str]] = {}
            # Queued resources first: one still waiting for capacity has no node yet, but its
            # node spec carries our labels and metadata.
            if self.tpu_queued_resources:
                queued = self._tpu_list_or_none(
                    lambda p=parent: list(tpu.list_queued_resources(parent=p)),  # type: ignore[misc]
                    zone,
                )
                for qr in queued or ():
                    specs = qr.tpu.node_spec
                    if specs:
                        market = MarketKind.SPOT if "spot" in qr else MarketKind.ON_DEMAND
                        found[_last(qr.name)] = (specs[0].node, market, _KIND_QR)
            nodes = self._tpu_list_or_none(
                lambda p=parent: list(tpu.list_nodes(parent=p)),  # type: ignore[misc]
                zone,
            )
            for node in nodes or ():
                if _last(node.name) not in found:
                    spot = node.scheduling_config.spot
                    market = MarketKind.SPOT if spot else MarketKind.ON_DEMAND
                    found[_last(node.name)] = (node, market, _KIND_NODE)
            for handle_id, (node, market, kind) in sorted(found.items()):
                labels = dict(node.labels)
                if labels.get(LABEL_INSTALL) != install or labels.get(LABEL_PROVIDER) != fleet:
                    continue
                meta = dict(node.metadata)
                out.append(
                    self._owned(
                        handle_id,
                        zone,
                        meta.get(META_TYPE, ""),
                        1,
                        market,
                        labels,
                        meta,
                        install,
                        kind,
                    )
                )
        return out

    def _tpu_list_or_none(self, fn: Callable[[], list[Any]], zone: str) -> list[Any] | None:
        """A TPU list call where 404 (zone not served) and 501 (no such API) mean nothing."""
        return self._call_unless(fn, (404, 501), what=f"listing TPU resources in {zone}", zone=zone)

    def _owned(
        self,
        handle_id: str,
        zone: str,
        instance_type: str,
        nodes: int,
        market: MarketKind,
        labels: dict[str, str],
        meta: dict[str, str],
        install: str,
        kind: str,
    ) -> OwnedWorkload:
        job_id = meta.get(META_JOB) or labels.get(LABEL_JOB, "")
        try:
            attempt = int(meta.get(META_ATTEMPT) or labels.get(LABEL_ATTEMPT, ""))
        except ValueError:
            # Attempts count from 1: an unreadable tag is owned by no attempt and gets swept.
            attempt = 0
        handle = Handle(
            provider=self.fleet_name,
            id=handle_id,
            request_id="",
            region=_region_of(zone),
            zone=zone,
            instance_type=instance_type,
            nodes=nodes,
            market=market,
            job_id=job_id,
            extra=(("install", install), ("kind", kind)),
        )
        return OwnedWorkload(handle=handle, job_id=job_id, attempt=attempt)
