"""The Google Cloud adapter: GPU VMs on Compute Engine and TPU VMs through the TPU API.

Built on the adapter kit (docs/architecture.md, "Adapters"): launch checks, names, the spec
digest, ownership labels, the error boundary and the node program are the kit's; this package
keeps what is Google's:

* :mod:`~multicloud_gcp.offers` — catalog rows narrowed by Google's listings; GPU quota;
* :mod:`~multicloud_gcp.compute` — GPU VM gangs (insert, wait, undo, status, sweep);
* :mod:`~multicloud_gcp.tpu` — TPU slices (queued resources or nodes);
* :mod:`~multicloud_gcp.workload` — the node binding, images and runtimes per family;
* :mod:`~multicloud_gcp.errors` — Google's error rows.

See docs/providers/gcp.md for credentials, permissions, options and the error table.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from multicloud.adapterkit import (
    GCP_LABELS,
    ErrorBoundary,
    Ownership,
    check_launch,
    region_matches,
)
from multicloud.errors import AuthError, InvalidRequestError, error_scope
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
from multicloud_gcp.clients import GCPClients, build_clients
from multicloud_gcp.compute import KIND_VM, VMs
from multicloud_gcp.errors import RULES, failure_from_exception
from multicloud_gcp.offers import Book, region_of
from multicloud_gcp.tpu import TPUs
from multicloud_gcp.workload import EXACT, Launch, is_tpu, label_value

__all__ = ["GCPProvider"]

T = TypeVar("T")


class GCPProvider:
    """Google Cloud behind the multicloud Provider protocol (GPU VMs and TPU VMs).

    Args:
        fleet_name: Fleet provider name; stamped on offers, handles, scopes and labels.
        regions: Region globs narrowing the offers (empty = every catalog region).
        project: Project id (default: the one named by the credentials).
        credentials_file: Service-account JSON key (default: Application Default
            Credentials: ``gcloud auth application-default login``, the metadata server,
            GKE Workload Identity).
        api_endpoint: Compute endpoint override (``http://127.0.0.1:PORT`` for the fake);
            implies anonymous credentials.
        tpu_api_endpoint: TPU endpoint override (defaults to ``api_endpoint``).
        billing_api_endpoint: Cloud Billing endpoint override for ``live_pricing``.
        network: VPC network of the VMs and TPUs.
        subnetwork: Subnetwork (required for custom-mode VPCs).
        rdma_subnetworks: Subnetworks of an RDMA-profile VPC; A3 Ultra / A4 VMs get one
            MRDMA (ConnectX-7) NIC in each, and the container ``/dev/infiniband``.
        image: Boot image of GPU VMs (default: ``workload.DEFAULT_GPU_IMAGE``).
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
        rdma_subnetworks: Sequence[str] = (),
        image: str | None = None,
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
        self.rdma_subnetworks = tuple(rdma_subnetworks)
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
        self._project = project
        self._clients = clients
        self._lock = threading.Lock()
        self.boundary = ErrorBoundary(fleet_name, RULES, failure_from_exception)
        self.book = Book(self)
        self.vms = VMs(self)
        self.tpus = TPUs(self)

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def clients(self) -> GCPClients:
        """The Google clients, built on first use (so a missing credential is an AuthError)."""
        with self._lock:
            if self._clients is None:
                self._clients = self.call(
                    lambda: build_clients(
                        credentials_file=self.credentials_file,
                        api_endpoint=self.api_endpoint,
                        tpu_api_endpoint=self.tpu_api_endpoint,
                    ),
                    doing="building Google Cloud clients",
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

    def call(
        self,
        fn: Callable[[], T],
        *,
        doing: str,
        zone: str | None = None,
        region: str | None = None,
    ) -> T:
        """Run SDK calls; every SDK exception leaves as a ``ProviderError`` (the kit's boundary).

        Args:
            fn: The calls.
            doing: What they do (for the message).
            zone: Zone of the calls (the scope of a zonal error).
            region: Region of the calls (default: the zone's).

        Returns:
            What ``fn`` returned.
        """
        with self.boundary(region=region or (zone and region_of(zone)), zone=zone, doing=doing):
            return fn()
        raise AssertionError("unreachable")  # the boundary never swallows an exception

    def call_or_none(
        self,
        fn: Callable[[], Any],
        *,
        doing: str,
        zone: str | None = None,
        region: str | None = None,
        on: Mapping[int, Any] | None = None,
    ) -> Any:
        """Like :meth:`call`, but an HTTP answer listed in ``on`` returns its value instead.

        Args:
            fn: The calls.
            doing: What they do.
            zone: Zone of the calls.
            region: Region of the calls.
            on: HTTP status -> value to return (default: 404, gone or never there -> None).

        Returns:
            What ``fn`` returned, or the value for the status Google answered.
        """
        answers = {404: None} if on is None else on
        try:
            return fn()
        except Exception as exc:
            code = getattr(exc, "code", None)
            if isinstance(code, int) and code in answers:
                return answers[code]
            raise self.boundary.translate(
                exc, region=region or (zone and region_of(zone)), zone=zone, doing=doing
            ) from exc

    def owned_workload(
        self,
        base: str,
        zone: str,
        instance_type: str,
        nodes: int,
        market: MarketKind,
        labels: dict[str, str],
        metadata: dict[str, str],
        kind: str,
    ) -> OwnedWorkload | None:
        """The sweep's view of one launch, from its exact metadata (else its labels).

        Returns:
            The workload, or None when it is another fleet entry's or carries no ownership.
        """
        owner = Ownership.parse(metadata, EXACT) or Ownership.parse(labels, GCP_LABELS)
        if owner is None or label_value(owner.fleet) != label_value(self.fleet_name):
            return None
        handle = Handle(
            provider=self.fleet_name,
            id=base,
            request_id=owner.request,
            region=region_of(zone),
            zone=zone,
            instance_type=instance_type,
            nodes=nodes,
            market=market,
            job_id=owner.job,
            extra=(("install", label_value(owner.install)), ("kind", kind)),
        )
        return owner.owned(handle)

    # -- the Provider protocol ----------------------------------------------------------------

    def check(self) -> None:
        """Probe credentials and the Compute API with one cheap regional read.

        Raises:
            AuthError: If credentials or the project are missing or lack permission.
            TransientError: If the API cannot be reached.
        """
        region = self.book.rows[0].region if self.book.rows else "us-central1"
        self.book.region_quotas(region, fresh=True)

    def offers(self, request: ResourceRequest) -> list[Offer]:
        """Return catalog-priced offers that Google's live listings confirm.

        Args:
            request: Accelerators, minimum accelerators per node and region globs.

        Returns:
            Matching offers (capacity unknown: None).
        """
        return self.book.offers(request)

    def refresh_prices(self) -> None:
        """Drop cached listings and live prices so the next ``offers`` fetches them again."""
        self.book.refresh()

    def launch(self, offer: Offer, spec: LaunchSpec, *, request_id: str) -> Handle:
        """Launch ``spec`` on the planned ``offer``; the same ``request_id`` finds the same launch.

        Args:
            offer: The offer exactly as planned (trusted: not looked up again).
            spec: What to launch.
            request_id: Idempotency key.

        Returns:
            The handle (id = the launch's base name).

        Raises:
            InvalidRequestError: A launch that cannot be right here (the kit's checks, a
                reservation, a TPU gang), or a request id reused for another launch.
            QuotaError: The region lacks GPU quota (checked before any insert).
            CapacityError: The zone has no capacity (stockout).
            AuthError: Credentials lack a permission.
            TransientError: Throttling, 5xx, timeouts.
        """
        check_launch(
            offer,
            spec,
            fleet_name=self.fleet_name,
            capabilities=self.capabilities,
            regions=self.regions,
        )
        problem = ""
        if offer.zone is None:
            problem = f"{offer.key} is not zonal; Google's VMs and TPUs live in a zone"
        elif offer.reservation is not None:
            problem = "reservations are not supported by the gcp adapter yet"
        elif is_tpu(offer.instance_type) and spec.nodes != 1:
            problem = f"a TPU slice is one node: ask for a larger slice than {offer.instance_type}"
        if problem:
            scope = error_scope(self.fleet_name, offer.region)
            raise InvalidRequestError(problem, provider=self.fleet_name, scope=scope)
        job = Launch.of(offer, spec, request_id, self.fleet_name)
        if is_tpu(offer.instance_type):
            kind = self.tpus.launch(job)
        else:
            self.vms.launch(job)
            kind = KIND_VM
        extra = {"install": label_value(spec.install_id), "kind": kind}
        return Handle.at(offer, spec, id=job.base, request_id=request_id, extra=extra)

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
            if handle.zone is None:
                out[handle.id] = WorkloadStatus(WorkloadState.UNKNOWN, "handle has no zone")
            elif handle.get("kind", KIND_VM) == KIND_VM:
                vm_groups[(handle.zone, handle.get("install") or "")].append(handle)
            else:
                tpu_groups[handle.zone].append(handle)
        for (zone, install), group in vm_groups.items():
            out.update(self.vms.status(zone, install, group))
        for zone, group in tpu_groups.items():
            out.update(self.tpus.status(zone, group))
        return out

    def terminate(self, handle: Handle, *, request_id: str) -> None:
        """Delete a workload's resources; nothing left (404) is a no-op.

        Args:
            handle: The workload.
            request_id: Idempotency key of the termination.
        """
        if handle.zone is None:
            return
        if handle.get("kind", KIND_VM) == KIND_VM:
            self.vms.terminate(handle, request_id=request_id)
        else:
            self.tpus.terminate(handle, request_id=request_id)

    def owned(self, install_id: str) -> list[OwnedWorkload]:
        """Return what ``install_id`` launched through this fleet entry and still exists.

        Finished VMs (stopped after reporting) are included: they still hold disks, and the
        sweep terminates whatever no live attempt owns.

        Args:
            install_id: Install id the resources are labelled with.

        Returns:
            One entry per launch (a gang is one entry), with its exact job and attempt.
        """
        vms = [
            w for w in self.vms.owned(install_id) if region_matches(self.regions, w.handle.region)
        ]
        return vms + self.tpus.owned(install_id)
