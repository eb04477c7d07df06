"""The Azure adapter: ND/NC GPU VMs through Azure Resource Manager (``azure-mgmt-compute``).

One workload is a gang of VMs, one per node, named ``mc-<hash>-<rank>`` where ``<hash>`` is
derived from the fleet name and the launch's request id: a re-sent launch finds the same VMs
and PUTs nothing. What the adapter creates, per launch: the VMs (each with its NIC and OS disk
created *inside* the VM's PUT through ``networkInterfaceConfigurations`` with
``deleteOption: Delete``, so they live and die with the VM and no network client is needed)
and, for gangs of more than one node, a proximity placement group. What it takes as options:
the subscription, the resource group, the subnet, the VM image and, optionally, a user-assigned
identity and a Key Vault for the workload's secrets.

See ``docs/providers/azure.md`` for credentials, permissions and every option.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fnmatch
import hashlib
import ipaddress
import json
import logging
import os
import secrets
import threading
import time
import urllib.parse
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from azure.core.credentials import AccessToken, TokenCredential
from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.core.pipeline import PipelineRequest
from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.core.polling import LROPoller
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute.models import AvailabilitySet, ProximityPlacementGroup, VirtualMachine

from multicloud.catalog import CatalogRow, load_catalog
from multicloud.errors import (
    AuthError,
    InvalidRequestError,
    ProviderError,
    QuotaError,
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
    handle_extra,
)
from multicloud_azure import pricing
from multicloud_azure.errors import lost_place_scope, translate
from multicloud_azure.workload import EXIT_TAG, WorkloadConfig, custom_data, program

__all__ = [
    "ARM_SCOPE",
    "CREDENTIALS",
    "TAG_ATTEMPT",
    "TAG_FLEET",
    "TAG_INSTALL",
    "TAG_JOB",
    "TAG_REQUEST",
    "AzureProvider",
    "StaticTokenCredential",
]

log = logging.getLogger(__name__)

TAG_JOB = "multicloud:job"
TAG_ATTEMPT = "multicloud:attempt"
TAG_INSTALL = "multicloud:install"
TAG_REQUEST = "multicloud:request"
TAG_FLEET = "multicloud:fleet"
_TAG_SPEC = "multicloud:spec"
_TAG_GANG = "multicloud:gang"
_TAG_RANK = "multicloud:rank"
_TAG_NODES = "multicloud:nodes"
_TAG_MARKET = "multicloud:market"

ARM_SCOPE = "https://management.azure.com/.default"
"""Token scope of Azure Resource Manager (public cloud)."""

CREDENTIALS: tuple[str, ...] = (
    "default",
    "environment",
    "managed-identity",
    "workload-identity",
    "cli",
    "static",
)
"""Names the ``credential`` option accepts."""

_DEFAULT_IMAGE = "microsoft-dsvm:ubuntu-hpc:2204:latest"
_SPOT_QUOTA = "lowPriorityCores"
_REGIONAL_QUOTA = "cores"
# How long deleting a gang's availability set or placement group is retried while ARM still
# answers 409 "in use" (its VMs finishing their delete), before it is logged and left.
_IN_USE_RETRY_S = 15.0

T = TypeVar("T")


class StaticTokenCredential:
    """A credential that always hands out the same token; for fakes on 127.0.0.1 only.

    Args:
        token: The bearer token.
    """

    def __init__(self, token: str = "multicloud-fake-token") -> None:
        self._token = token

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        """Return the token, valid for an hour from now."""
        return AccessToken(self._token, int(time.time()) + 3600)


class _LoopbackBearerPolicy(SansIOHTTPPolicy[Any, Any]):
    """Adds the bearer token without azure-core's TLS check; only ever used on loopback http.

    azure-core's BearerTokenCredentialPolicy refuses to send a token over plain http, which is
    right for real endpoints and the only obstacle to pointing the real client at a fake ARM.
    """

    def __init__(self, credential: TokenCredential, scope: str) -> None:
        super().__init__()
        self._credential = credential
        self._scope = scope

    def on_request(self, request: PipelineRequest[Any]) -> None:
        token = self._credential.get_token(self._scope)
        request.http_request.headers["Authorization"] = f"Bearer {token.token}"


def _is_loopback_http(url: str | None) -> bool:
    if not url:
        return False
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme != "http" or not parsed.hostname:
        return False
    if parsed.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parsed.hostname).is_loopback
    except ValueError:
        return False


def _matches(globs: Sequence[str], region: str) -> bool:
    return not globs or any(fnmatch.fnmatchcase(region, g) for g in globs)


def _spec_digest(spec: LaunchSpec) -> str:
    text = json.dumps(dataclasses.asdict(spec), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _as_dict(obj: Any) -> dict[str, Any]:
    """Return an SDK model (or a mapping) as its REST-shaped dict."""
    if isinstance(obj, dict):
        return obj
    as_dict = getattr(obj, "as_dict", None)
    if callable(as_dict):
        out = as_dict()
        if isinstance(out, dict):
            return out
    return dict(obj)


def _resource_group_of(resource_id: str) -> str:
    parts = resource_id.split("/")
    for i, part in enumerate(parts[:-1]):
        if part.lower() == "resourcegroups":
            return parts[i + 1]
    return ""


@dataclass(frozen=True, slots=True)
class _Sku:
    """What the adapter needs from one ``resourceSkus`` entry in one region."""

    family: str
    vcpus: int
    zones: tuple[str, ...]
    restricted: bool
    zonal_region: bool = False


@dataclass
class _Cached:
    expires: float
    value: Any


@dataclass(frozen=True, slots=True)
class _Vm:
    """One VM as the status and sweep paths see it."""

    name: str
    resource_group: str
    location: str
    zone: str | None
    size: str
    tags: Mapping[str, str]
    provisioning: str
    power: str | None
    failure: str
    failure_code: str = ""
    failure_message: str = ""


def _vm_from(raw: Mapping[str, Any]) -> _Vm:
    props = raw.get("properties") or {}
    view = props.get("instanceView") or {}
    power: str | None = None
    failure = failure_code = failure_message = ""
    for status in view.get("statuses") or []:
        code = str(status.get("code", ""))
        if code.startswith("PowerState/"):
            power = code.split("/", 1)[1].lower()
        elif code.lower().startswith("provisioningstate/failed"):
            failure_message = str(status.get("message", "") or "")
            failure = f"{code}: {failure_message}".strip()
            # "ProvisioningState/failed/AllocationFailed": the last part is ARM's error code.
            parts = code.split("/", 2)
            failure_code = parts[2] if len(parts) == 3 else ""
    zones = raw.get("zones") or []
    return _Vm(
        name=str(raw.get("name", "")),
        resource_group=_resource_group_of(str(raw.get("id", ""))),
        location=str(raw.get("location", "")),
        zone=str(zones[0]) if zones else None,
        size=str((props.get("hardwareProfile") or {}).get("vmSize", "")),
        tags={str(k): str(v) for k, v in (raw.get("tags") or {}).items()},
        provisioning=str(props.get("provisioningState", "")).lower(),
        power=power,
        failure=failure,
        failure_code=failure_code,
        failure_message=failure_message,
    )


def _node_status(vm: _Vm) -> WorkloadStatus:
    exit_tag = vm.tags.get(EXIT_TAG)
    if exit_tag is not None:
        try:
            code = int(exit_tag)
        except ValueError:
            return WorkloadStatus(WorkloadState.FAILED, f"{vm.name}: bad exit tag {exit_tag!r}")
        if code == 0:
            return WorkloadStatus(WorkloadState.SUCCEEDED, "exited with code 0", exit_code=0)
        return WorkloadStatus(
            WorkloadState.FAILED, f"{vm.name} exited with code {code}", exit_code=code
        )
    if vm.provisioning == "failed":
        return WorkloadStatus(WorkloadState.FAILED, f"{vm.name}: {vm.failure or 'failed'}")
    if vm.provisioning == "deleting":
        return WorkloadStatus(WorkloadState.TERMINATED, f"{vm.name} is being deleted")
    if vm.power in ("stopped", "stopping", "deallocated", "deallocating"):
        return WorkloadStatus(
            WorkloadState.FAILED, f"{vm.name} is {vm.power} without reporting an exit code"
        )
    if vm.provisioning == "succeeded" and vm.power == "running":
        return WorkloadStatus(WorkloadState.RUNNING, "running")
    return WorkloadStatus(WorkloadState.PROVISIONING, f"{vm.name}: {vm.provisioning or 'creating'}")


class AzureProvider:
    """Runs workloads on Azure GPU VMs, one VM per node.

    Args:
        fleet_name: Fleet provider name; stamped on offers, handles and tags.
        regions: Region globs from the fleet entry (empty = every catalog region).
        subscription_id: Subscription (default: ``$AZURE_SUBSCRIPTION_ID``).
        resource_group: Resource group of the VMs; ``{region}`` is replaced by the region,
            for one group per region. It must exist.
        base_url: Resource Manager endpoint (default: the public cloud's). A loopback
            ``http://`` URL (a fake) is the only case where the token is sent without TLS.
        credential: ``default`` (DefaultAzureCredential), ``environment``,
            ``managed-identity``, ``workload-identity``, ``cli``, ``static`` (a fixed fake
            token; loopback ``base_url`` only), or a ``TokenCredential`` object.
        subnet_id: Resource id of the subnet the VMs' NICs join (``{region}`` is replaced);
            required to launch.
        image: VM image: a marketplace URN ``publisher:offer:sku:version`` or an image
            resource id. It must have Docker and the NVIDIA container toolkit.
        admin_username: Admin user of the VMs.
        ssh_public_key: Public key for the admin user; without one a random password, never
            stored, is set (Azure requires one of the two).
        identity_id: Resource id of a user-assigned identity given to the VMs, used to tag
            and deallocate themselves at the end and to read Key Vault secrets.
        identity_client_id: Client id of that identity (for IMDS token requests).
        key_vault: Key Vault name the workload's secrets are read from on the VM.
        os_disk_gb: OS disk size.
        zonal: Offer one offer per availability zone the SKU is not restricted in, instead of
            one regional offer.
        availability_set: Also put a multi-node gang in its own availability set (in its
            placement group): on ND-series sizes, VMs share an InfiniBand fabric only within
            one availability set or scale set. Not with ``zonal``.
        live_pricing: Refresh prices from the Azure Retail Prices API (off by default).
        retail_prices_url: Endpoint of the Retail Prices API.
        pricing_ttl_s: How long live prices are reused.
        quota_check: Check vCPU quota (``usage.list``) before launching.
        quota_ttl_s: How long a region's usages are reused.
        sku_ttl_s: How long a region's resource SKUs are reused.
        launch_wait_s: How long ``launch`` waits for the VMs' creation to finish (failures
            inside that time raise typed errors; later ones show in ``status``).
        terminate_wait_s: How long ``terminate`` waits for the deletes to finish (a gang's
            placement group can only go once its VMs are gone).
        polling_interval: Seconds between polls of long-running operations (default: the
            SDK's, or the service's Retry-After).
        retries: SDK retries of throttled or failed calls (default: the SDK's).
        install_id: Install id tagged when the spec does not carry one.
        tags: Extra tags on every resource.

    Raises:
        ValueError: If an option is invalid (unknown credential name, static credential
            against a real endpoint, bad sizes).
    """

    name: ClassVar[str] = "azure"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.SPOT, Capability.MULTI_NODE, Capability.LIVE_PRICES, Capability.QUOTA_PROBE}
    )

    def __init__(
        self,
        *,
        fleet_name: str = "azure",
        regions: Sequence[str] = (),
        subscription_id: str | None = None,
        resource_group: str = "multicloud",
        base_url: str | None = None,
        credential: str | TokenCredential = "default",
        subnet_id: str | None = None,
        image: str = _DEFAULT_IMAGE,
        admin_username: str = "azureuser",
        ssh_public_key: str | None = None,
        identity_id: str | None = None,
        identity_client_id: str | None = None,
        key_vault: str | None = None,
        os_disk_gb: int = 256,
        zonal: bool = False,
        availability_set: bool = False,
        live_pricing: bool = False,
        retail_prices_url: str = pricing.DEFAULT_RETAIL_PRICES_URL,
        pricing_ttl_s: float = 3600.0,
        quota_check: bool = True,
        quota_ttl_s: float = 30.0,
        sku_ttl_s: float = 600.0,
        launch_wait_s: float = 300.0,
        terminate_wait_s: float = 180.0,
        polling_interval: float | None = None,
        retries: int | None = None,
        install_id: str = "default",
        tags: Mapping[str, str] | None = None,
    ) -> None:
        if isinstance(credential, str) and credential not in CREDENTIALS:
            raise ValueError(
                f"credential must be one of {', '.join(CREDENTIALS)}, got {credential!r}"
            )
        if credential == "static" and not _is_loopback_http(base_url):
            # A fixed token only makes sense against a fake; never send it anywhere else.
            raise ValueError("credential 'static' needs a loopback http base_url (a fake ARM)")
        if availability_set and zonal:
            raise ValueError("availability_set and zonal cannot be combined (Azure refuses both)")
        if os_disk_gb < 30:
            raise ValueError(f"os_disk_gb must be >= 30, got {os_disk_gb}")
        if launch_wait_s < 0:
            raise ValueError(f"launch_wait_s must be >= 0, got {launch_wait_s}")
        self.fleet_name = fleet_name
        self.subscription_id = subscription_id or os.environ.get("AZURE_SUBSCRIPTION_ID", "")
        self.resource_group = resource_group
        self.base_url = base_url
        self.subnet_id = subnet_id
        self.image = image
        self.admin_username = admin_username
        self.ssh_public_key = ssh_public_key
        self.identity_id = identity_id
        self.key_vault = key_vault
        self.os_disk_gb = int(os_disk_gb)
        self.zonal = bool(zonal)
        self.availability_set = bool(availability_set)
        self.live_pricing = bool(live_pricing)
        self.retail_prices_url = retail_prices_url
        self.quota_check = bool(quota_check)
        self.launch_wait_s = float(launch_wait_s)
        self.terminate_wait_s = float(terminate_wait_s)
        self.install_id = install_id
        self._regions = tuple(regions)
        self._credential_choice = credential
        self._polling_interval = polling_interval
        self._retries = retries
        self._pricing_ttl_s = float(pricing_ttl_s)
        self._quota_ttl_s = float(quota_ttl_s)
        self._sku_ttl_s = float(sku_ttl_s)
        self._extra_tags = dict(tags or {})
        self._workload = WorkloadConfig(
            key_vault=key_vault,
            identity_client_id=identity_client_id,
            arm_endpoint=(base_url or "https://management.azure.com"),
        )
        self._catalog = load_catalog()
        self._rows: dict[tuple[str, str], CatalogRow] = {
            (r.region, r.instance_type): r for r in self._catalog.rows if r.provider == "azure"
        }
        self._lock = threading.Lock()
        self._client: ComputeManagementClient | None = None
        self._skus: dict[str, _Cached] = {}
        self._usages: dict[str, _Cached] = {}
        self._prices: _Cached | None = None
        # Handles this process terminated: a spot VM that vanished otherwise was evicted.
        self._terminated: set[str] = set()
        self._in_use_retry_s = _IN_USE_RETRY_S

    # -- clients ---------------------------------------------------------------------------

    def _make_credential(self) -> TokenCredential:
        choice = self._credential_choice
        if not isinstance(choice, str):
            return choice
        if choice == "static":
            return StaticTokenCredential()
        # Imported here: azure-identity pulls in msal, which offers() on a fake never needs.
        from azure import identity

        if choice == "environment":
            return identity.EnvironmentCredential()
        if choice == "managed-identity":
            return identity.ManagedIdentityCredential()
        if choice == "workload-identity":
            return identity.WorkloadIdentityCredential()
        if choice == "cli":
            return identity.AzureCliCredential()
        return identity.DefaultAzureCredential()

    @property
    def compute(self) -> ComputeManagementClient:
        """The management client (built on first use; building it makes no call)."""
        with self._lock:
            if self._client is None:
                if not self.subscription_id:
                    raise InvalidRequestError(
                        "no Azure subscription: set the subscription_id option or "
                        "$AZURE_SUBSCRIPTION_ID",
                        provider=self.fleet_name,
                    )
                try:
                    credential = self._make_credential()
                except ValueError as exc:
                    # e.g. workload identity without its environment variables.
                    raise AuthError(
                        f"cannot build the {self._credential_choice} credential: {exc}",
                        provider=self.fleet_name,
                    ) from exc
                kwargs: dict[str, Any] = {}
                if self.base_url:
                    kwargs["base_url"] = self.base_url
                if _is_loopback_http(self.base_url):
                    kwargs["authentication_policy"] = _LoopbackBearerPolicy(credential, ARM_SCOPE)
                if self._polling_interval is not None:
                    kwargs["polling_interval"] = self._polling_interval
                if self._retries is not None:
                    kwargs["retry_total"] = self._retries
                self._client = ComputeManagementClient(credential, self.subscription_id, **kwargs)
            return self._client

    @contextmanager
    def _boundary(
        self, doing: str, region: str | None = None, zone: str | None = None
    ) -> Iterator[None]:
        """Translate whatever the SDK raises inside the block; nothing Azure leaks out."""
        try:
            yield
        except ProviderError:
            raise
        except (AzureError, OSError) as exc:
            raise translate(
                exc, provider=self.fleet_name, region=region, zone=zone, doing=doing
            ) from exc

    # -- the Provider protocol -------------------------------------------------------------

    def check(self) -> None:
        """Probe credentials and the subscription with one cheap read (usages of a region).

        Raises:
            AuthError: If the credential is missing or lacks permission.
            ProviderError: Any other typed failure.
        """
        region = next(iter(self._regions_in_scope(())), None)
        if region is None:
            raise InvalidRequestError(
                f"no catalog region matches {list(self._regions)}", provider=self.fleet_name
            )
        self._usages_in(region, fresh=True)

    def offers(self, request: ResourceRequest) -> list[Offer]:
        """Return the catalog's Azure offers this subscription can use now.

        Catalog rows are narrowed by the region's resource SKUs: a size the region does not
        list, or lists with a ``Location`` restriction (e.g. ``NotAvailableForSubscription``),
        is dropped; with ``zonal`` every unrestricted zone gets its own offer. With
        ``live_pricing``, prices come from the Retail Prices API where it has them.

        Args:
            request: Accelerators, accelerators per node and region globs.

        Returns:
            The offers, in catalog order.

        Raises:
            ProviderError: If the resource SKUs cannot be read.
        """
        rows = [
            r
            for (region, _), r in self._rows.items()
            if _matches(self._regions, region)
            and _matches(request.regions, region)
            and (not request.accelerators or r.accelerator in request.accelerators)
            and r.count >= request.count
        ]
        prices, version = self._live_prices(rows)
        skus = self._skus_by_region(sorted({r.region for r in rows}))
        out: list[Offer] = []
        for row in rows:
            sku = skus.get(row.region, {}).get(row.instance_type.lower())
            if sku is None or sku.restricted:
                continue
            live = prices.get((row.region, row.instance_type))
            price = live.price if live and live.price is not None else row.price
            spot = live.spot_price if live and live.spot_price is not None else row.spot_price
            if price is None and spot is None:
                continue
            zones: Sequence[str | None] = [None]
            if self.zonal and sku.zonal_region:
                # Zones the SKU is restricted in are gone; none left, no offer.
                zones = [f"{row.region}-{z}" for z in sku.zones]
            for zone in zones:
                out.append(
                    Offer(
                        provider=self.fleet_name,
                        region=row.region,
                        zone=zone,
                        instance_type=row.instance_type,
                        accelerator=row.accelerator,
                        count=row.count,
                        price=price,
                        spot_price=spot,
                        capacity=None,
                        jurisdiction=self._catalog.jurisdiction(row.region),
                        catalog_version=version,
                    )
                )
        return out

    def launch(self, offer: Offer, spec: LaunchSpec, *, request_id: str) -> Handle:
        """Create one VM per node; the same ``request_id`` finds the same VMs.

        Args:
            offer: One of this adapter's offers.
            spec: What to run.
            request_id: Idempotency key; the VM names derive from it.

        Returns:
            The workload's handle (its id is the gang name).

        Raises:
            InvalidRequestError: If the offer is not this adapter's, the market is not sold,
                the request id was used for another spec, an option is missing or the spec
                cannot be encoded.
            QuotaError: If the region's vCPU quota cannot hold the gang (no VM is created).
            CapacityError: If Azure has no room (the gang's VMs are deleted first).
            AuthError, TransientError: As translated from Azure.
        """
        row = self._check_offer(offer, spec)
        zone = self._zone_number(offer)
        gang = self._gang_name(request_id)
        group = self._group(offer.region)
        names = [f"{gang}-{rank}" for rank in range(spec.nodes)]
        handle = Handle(
            provider=self.fleet_name,
            id=gang,
            request_id=request_id,
            region=offer.region,
            zone=offer.zone,
            instance_type=offer.instance_type,
            nodes=spec.nodes,
            market=spec.market,
            job_id=spec.job_id,
            extra=(("resource_group", group),),
        )
        digest = _spec_digest(spec)
        missing = self._missing_nodes(group, names, request_id, digest, offer)
        if not missing:
            return handle  # a re-send: every VM exists already
        sku = self._skus_in(offer.region).get(offer.instance_type.lower())
        if sku is None or sku.restricted:
            raise InvalidRequestError(
                f"{offer.instance_type} is not offered to this subscription in {offer.region}",
                provider=self.fleet_name,
            )
        if not self.subnet_id:
            raise InvalidRequestError(
                "the azure adapter needs the subnet_id option to launch VMs",
                provider=self.fleet_name,
            )
        # Everything that can refuse the spec comes before anything is created.
        data: dict[int, str] = {}
        for rank in missing:
            vm_id = (
                f"/subscriptions/{self.subscription_id}/resourceGroups/{group}/providers/"
                f"Microsoft.Compute/virtualMachines/{names[rank]}"
            )
            try:
                text = program(spec, rank=rank, head=names[0], config=self._workload, vm_id=vm_id)
                data[rank] = custom_data(text)
            except ValueError as exc:
                raise InvalidRequestError(str(exc), provider=self.fleet_name) from exc
        if self.quota_check:
            self._check_quota(offer.region, sku, len(missing), spec.market)
        install = spec.install_id if spec.install_id != "default" else self.install_id
        tags = {
            **self._extra_tags,
            TAG_JOB: spec.job_id,
            TAG_ATTEMPT: str(spec.attempt),
            TAG_INSTALL: install,
            TAG_REQUEST: request_id,
            TAG_FLEET: self.fleet_name,
            _TAG_SPEC: digest,
            _TAG_GANG: gang,
            _TAG_NODES: str(spec.nodes),
            _TAG_MARKET: spec.market.value,
        }
        ppg_id = avset_id = None
        if spec.nodes > 1:
            ppg_id = self._placement_group(group, gang, offer.region, zone, tags)
            if self.availability_set:
                try:
                    avset_id = self._availability_set(group, gang, offer.region, ppg_id, tags)
                except ProviderError:
                    self._delete_gang_groups(group, gang)  # the placement group just made
                    raise
        bodies = {
            rank: self._vm_body(
                names[rank],
                offer,
                row,
                zone,
                spec.market,
                data[rank],
                {**tags, _TAG_RANK: str(rank)},
                ppg_id,
                avset_id,
            )
            for rank in missing
        }
        self._create(group, names, bodies, offer, zone)
        return handle

    def status(self, handles: Sequence[Handle]) -> dict[str, WorkloadStatus]:
        """Return each handle's status from one VM listing per resource group.

        Node 0's exit tag is the workload's end; a node that vanished from a spot gang this
        process did not terminate was evicted (``PREEMPTED``).

        Args:
            handles: Handles to look up.

        Returns:
            One status per distinct handle id.

        Raises:
            ProviderError: If a listing fails.
        """
        by_group: dict[str, list[Handle]] = defaultdict(list)
        for handle in handles:
            by_group[self._group_of(handle)].append(handle)
        out: dict[str, WorkloadStatus] = {}
        for group, members in by_group.items():
            region = members[0].region
            with self._boundary(f"listing VMs of {group}", region):
                listed = self.compute.virtual_machines.list(group, expand="instanceView")
                vms = {vm.name: vm for vm in (_vm_from(_as_dict(v)) for v in listed)}
            for handle in members:
                if handle.id not in out:
                    out[handle.id] = self._gang_status(handle, vms)
        return out

    def terminate(self, handle: Handle, *, request_id: str) -> None:
        """Delete the gang's VMs, then its availability set and placement group.

        Unknown or already deleted resources are a no-op. The set and group are deleted once
        the VMs' deletes are done (or ``terminate_wait_s`` ran out), retrying ARM's 409 "in
        use" for a few seconds; if they still cannot go they are logged and left.

        Args:
            handle: The workload.
            request_id: Idempotency key of the termination (deletes are idempotent anyway).

        Raises:
            ProviderError: If a delete fails for another reason than "not found".
        """
        group = self._group_of(handle)
        pollers: list[LROPoller[None]] = []
        with self._boundary(f"deleting {handle.id}", handle.region):
            for rank in range(handle.nodes):
                try:
                    pollers.append(
                        self.compute.virtual_machines.begin_delete(group, f"{handle.id}-{rank}")
                    )
                except ResourceNotFoundError:
                    continue
            deadline = time.monotonic() + self.terminate_wait_s
            for poller in pollers:
                self._wait(poller, deadline)
            self._terminated.add(handle.id)
        if handle.nodes > 1:
            # Only now that the VMs are gone (or going) can their groups go.
            self._delete_gang_groups(group, handle.id)

    def _delete_gang_groups(self, group: str, gang: str) -> None:
        """Delete a gang's availability set, then its placement group; never raises.

        Both refuse to go (409) while a VM still refers to them, so this runs after the VMs'
        deletes; a 409 is retried for ``_in_use_retry_s`` while those finish, then logged and
        left (an empty set or group costs nothing; a later terminate of the handle retries).

        Args:
            group: Resource group.
            gang: Gang name (the handle id).
        """
        deadline = time.monotonic() + self._in_use_retry_s
        # The availability set first: it refers to the placement group.
        if self._delete_in_use(
            self.compute.availability_sets.delete, group, f"{gang}-avset", deadline
        ):
            self._delete_in_use(
                self.compute.proximity_placement_groups.delete, group, f"{gang}-ppg", deadline
            )

    def _delete_in_use(
        self, delete: Callable[[str, str], object], group: str, name: str, deadline: float
    ) -> bool:
        """Delete one gang resource, retrying "in use" until ``deadline``; True once gone."""
        pause = 0.2
        while True:
            try:
                delete(group, name)
                return True
            except ResourceNotFoundError:
                return True
            except HttpResponseError as exc:
                if exc.status_code == 409 and time.monotonic() + pause < deadline:
                    time.sleep(pause)
                    pause = min(pause * 2, 2.0)
                    continue
                log.warning("%s in %s left behind, not deleted: %s", name, group, exc)
                return False
            except (AzureError, OSError) as exc:
                log.warning("%s in %s left behind, not deleted: %s", name, group, exc)
                return False

    # -- sweeping (SupportsSweep) ------------------------------------------------------------

    def owned(self, install_id: str) -> list[OwnedWorkload]:
        """Return the workloads of this fleet entry that ``install_id`` launched.

        One ``list_all`` over the subscription; VMs are grouped into gangs by their tags.
        Finished gangs (exit tag set, VM deallocated) are included, so the sweep deletes them
        once no live attempt owns them.

        Args:
            install_id: The install whose workloads to list.

        Returns:
            Workloads in gang-name order.

        Raises:
            ProviderError: If the listing fails.
        """
        gangs: dict[str, list[_Vm]] = defaultdict(list)
        with self._boundary("listing VMs of the subscription"):
            for raw in self.compute.virtual_machines.list_all():
                vm = _vm_from(_as_dict(raw))
                tags = vm.tags
                if tags.get(TAG_INSTALL) != install_id or tags.get(TAG_FLEET) != self.fleet_name:
                    continue
                if vm.provisioning == "deleting" or _TAG_GANG not in tags:
                    continue
                gangs[tags[_TAG_GANG]].append(vm)
        out: list[OwnedWorkload] = []
        for gang in sorted(gangs):
            first = min(gangs[gang], key=lambda v: v.name)
            tags = first.tags
            try:
                attempt = int(tags.get(TAG_ATTEMPT, "0"))
                nodes = int(tags.get(_TAG_NODES, "1"))
                market = MarketKind(tags.get(_TAG_MARKET, MarketKind.ON_DEMAND.value))
            except ValueError:
                log.warning("VM %s has unreadable multicloud tags; skipped", first.name)
                continue
            handle = Handle(
                provider=self.fleet_name,
                id=gang,
                request_id=tags.get(TAG_REQUEST, ""),
                region=first.location,
                zone=f"{first.location}-{first.zone}" if first.zone else None,
                instance_type=first.size,
                nodes=nodes,
                market=market,
                job_id=tags.get(TAG_JOB, ""),
                extra=(("resource_group", first.resource_group),),
            )
            out.append(OwnedWorkload(handle, handle.job_id, attempt))
        return out

    # -- internals: offers ---------------------------------------------------------------------

    def _regions_in_scope(self, request_globs: Sequence[str]) -> list[str]:
        return sorted(
            {
                region
                for region, _ in self._rows
                if _matches(self._regions, region) and _matches(request_globs, region)
            }
        )

    def _cached(
        self, cache: dict[str, _Cached], key: str, ttl: float, load: Callable[[], T], fresh: bool
    ) -> T:
        now = time.monotonic()
        with self._lock:
            hit = cache.get(key)
            if hit is not None and hit.expires > now and not fresh:
                return hit.value  # type: ignore[no-any-return]
        value = load()
        with self._lock:
            cache[key] = _Cached(now + ttl, value)
        return value

    def _skus_by_region(self, regions: Sequence[str]) -> dict[str, dict[str, _Sku]]:
        """Resource SKUs of several regions; one failing region does not hide the others."""
        out: dict[str, dict[str, _Sku]] = {}
        failure: ProviderError | None = None
        for region in regions:
            try:
                out[region] = self._skus_in(region)
            except AuthError:
                raise
            except ProviderError as exc:
                log.warning("no Azure offers in %s this time: %s", region, exc)
                failure = exc
        if failure is not None and not out:
            raise failure
        return out

    def _skus_in(self, region: str) -> dict[str, _Sku]:
        def load() -> dict[str, _Sku]:
            with self._boundary(f"listing resource SKUs of {region}", region):
                listed = self.compute.resource_skus.list(filter=f"location eq '{region}'")
                return _parse_skus(region, (_as_dict(s) for s in listed))

        return self._cached(self._skus, region, self._sku_ttl_s, load, fresh=False)

    def _usages_in(self, region: str, *, fresh: bool = False) -> dict[str, tuple[int, int]]:
        def load() -> dict[str, tuple[int, int]]:
            with self._boundary(f"reading vCPU usage of {region}", region):
                out: dict[str, tuple[int, int]] = {}
                for usage in self.compute.usage.list(region):
                    raw = _as_dict(usage)
                    name = str((raw.get("name") or {}).get("value", ""))
                    out[name.lower()] = (int(raw.get("currentValue", 0)), int(raw.get("limit", 0)))
                return out

        return self._cached(self._usages, region, self._quota_ttl_s, load, fresh=fresh)

    def _live_prices(
        self, rows: Sequence[CatalogRow]
    ) -> tuple[Mapping[tuple[str, str], pricing.LivePrice], str]:
        if not self.live_pricing:
            return {}, self._catalog.version
        now = time.monotonic()
        with self._lock:
            cached = self._prices
        if cached is None or cached.expires <= now:
            # Every in-scope row at once, so one refresh serves every later request.
            wanted: dict[str, set[str]] = defaultdict(set)
            for (region, size), _ in self._rows.items():
                if _matches(self._regions, region):
                    wanted[region].add(size)
            try:
                found = pricing.fetch_prices(wanted, url=self.retail_prices_url)
            except (OSError, ValueError) as exc:
                # Catalog prices are a fine fallback; the version says which ones were used.
                log.warning("Azure retail prices unavailable, using the catalog: %s", exc)
                found = None
            date = dt.datetime.now(dt.timezone.utc).date().isoformat()
            version = f"{self._catalog.version}+azure-live-{date}" if found else ""
            cached = _Cached(now + self._pricing_ttl_s, (found or {}, version))
            with self._lock:
                self._prices = cached
        prices, version = cached.value
        return prices, version or self._catalog.version

    # -- internals: launch ---------------------------------------------------------------------

    def _check_offer(self, offer: Offer, spec: LaunchSpec) -> CatalogRow:
        row = self._rows.get((offer.region, offer.instance_type))
        if (
            offer.provider != self.fleet_name
            or row is None
            or not _matches(self._regions, offer.region)
        ):
            raise InvalidRequestError(
                f"{self.fleet_name} has no offer {offer.instance_type} in "
                f"{offer.zone or offer.region}",
                provider=self.fleet_name,
            )
        if spec.nodes < 1:
            raise InvalidRequestError(
                f"nodes must be >= 1, got {spec.nodes}", provider=self.fleet_name
            )
        if spec.market is MarketKind.RESERVED:
            raise InvalidRequestError(
                "the azure adapter has no reserved offers", provider=self.fleet_name
            )
        if spec.market is MarketKind.SPOT and offer.spot_price is None:
            raise InvalidRequestError(
                f"{offer.instance_type} in {offer.region} has no spot market",
                provider=self.fleet_name,
            )
        if spec.market is MarketKind.ON_DEMAND and offer.price is None:
            raise InvalidRequestError(
                f"{offer.instance_type} in {offer.region} is not sold on demand",
                provider=self.fleet_name,
            )
        return row

    def _zone_number(self, offer: Offer) -> str | None:
        if offer.zone is None:
            return None
        prefix = f"{offer.region}-"
        number = offer.zone[len(prefix) :] if offer.zone.startswith(prefix) else ""
        if not number.isdigit():
            raise InvalidRequestError(
                f"zone {offer.zone!r} is not a zone of {offer.region} (expected {prefix}N)",
                provider=self.fleet_name,
            )
        return number

    def _gang_name(self, request_id: str) -> str:
        # The fleet name is in the hash so two fleet entries on one subscription never meet.
        digest = hashlib.sha256(f"{self.fleet_name}|{request_id}".encode()).hexdigest()
        return f"mc-{digest[:16]}"

    def _group(self, region: str) -> str:
        return self.resource_group.replace("{region}", region)

    def _group_of(self, handle: Handle) -> str:
        return str(handle_extra(handle).get("resource_group") or self._group(handle.region))

    def _missing_nodes(
        self, group: str, names: Sequence[str], request_id: str, digest: str, offer: Offer
    ) -> list[int]:
        missing: list[int] = []
        for rank, name in enumerate(names):
            with self._boundary(f"reading VM {name}", offer.region):
                try:
                    raw = _as_dict(self.compute.virtual_machines.get(group, name))
                except ResourceNotFoundError:
                    missing.append(rank)
                    continue
            tags = raw.get("tags") or {}
            if (tags.get(TAG_REQUEST), tags.get(_TAG_SPEC)) != (request_id, digest):
                raise InvalidRequestError(
                    f"request id {request_id!r} was already used for another launch "
                    f"(VM {name} belongs to job {tags.get(TAG_JOB)!r})",
                    provider=self.fleet_name,
                )
        return missing

    def _check_quota(self, region: str, sku: _Sku, nodes: int, market: MarketKind) -> None:
        usages = self._usages_in(region)
        needed = sku.vcpus * nodes
        names = [_SPOT_QUOTA] if market is MarketKind.SPOT else [sku.family, _REGIONAL_QUOTA]
        for name in names:
            current, limit = usages.get(name.lower(), (0, -1))
            if limit < 0:
                continue  # the region does not report this quota: let ARM decide
            if current + needed > limit:
                raise QuotaError(
                    f"quota {name} in {region}: {current} of {limit} vCPUs used, "
                    f"{needed} more needed",
                    provider=self.fleet_name,
                    scope=error_scope(self.fleet_name, region),
                )

    def _availability_set(
        self, group: str, gang: str, region: str, ppg_id: str, tags: Mapping[str, str]
    ) -> str:
        body: dict[str, Any] = {
            "location": region,
            "tags": dict(tags),
            "sku": {"name": "Aligned"},
            "properties": {
                "platformFaultDomainCount": 1,
                "platformUpdateDomainCount": 1,
                "proximityPlacementGroup": {"id": ppg_id},
            },
        }
        with self._boundary(f"creating availability set of {gang}", region):
            made = self.compute.availability_sets.create_or_update(
                group, f"{gang}-avset", AvailabilitySet(body)
            )
        return str(_as_dict(made).get("id", ""))

    def _placement_group(
        self, group: str, gang: str, region: str, zone: str | None, tags: Mapping[str, str]
    ) -> str:
        body: dict[str, Any] = {
            "location": region,
            "tags": dict(tags),
            "properties": {"proximityPlacementGroupType": "Standard"},
        }
        if zone:
            body["zones"] = [zone]
        with self._boundary(f"creating placement group of {gang}", region, zone):
            # A PUT: creating it again with the same body is a no-op, so re-sends are safe.
            made = self.compute.proximity_placement_groups.create_or_update(
                group, f"{gang}-ppg", ProximityPlacementGroup(body)
            )
        return str(_as_dict(made).get("id", ""))

    def _image_reference(self) -> dict[str, str]:
        if self.image.startswith("/"):
            return {"id": self.image}
        parts = self.image.split(":")
        if len(parts) != 4:
            raise InvalidRequestError(
                f"image {self.image!r} is neither publisher:offer:sku:version nor a resource id",
                provider=self.fleet_name,
            )
        publisher, offer, sku, version = parts
        return {"publisher": publisher, "offer": offer, "sku": sku, "version": version}

    def _vm_body(
        self,
        name: str,
        offer: Offer,
        row: CatalogRow,
        zone: str | None,
        market: MarketKind,
        data: str,
        tags: Mapping[str, str],
        ppg_id: str | None,
        avset_id: str | None,
    ) -> dict[str, Any]:
        subnet = (self.subnet_id or "").replace("{region}", offer.region)
        linux: dict[str, Any] = {"provisionVMAgent": True}
        os_profile: dict[str, Any] = {
            "computerName": name,
            "adminUsername": self.admin_username,
            "customData": data,
            "linuxConfiguration": linux,
        }
        if self.ssh_public_key:
            linux["disablePasswordAuthentication"] = True
            linux["ssh"] = {
                "publicKeys": [
                    {
                        "path": f"/home/{self.admin_username}/.ssh/authorized_keys",
                        "keyData": self.ssh_public_key,
                    }
                ]
            }
        else:
            # Azure insists on a key or a password; this one is never stored or shown.
            os_profile["adminPassword"] = secrets.token_urlsafe(24) + "aA1!"
        props: dict[str, Any] = {
            "hardwareProfile": {"vmSize": row.instance_type},
            "storageProfile": {
                "imageReference": self._image_reference(),
                "osDisk": {
                    "createOption": "FromImage",
                    "deleteOption": "Delete",
                    "diskSizeGB": self.os_disk_gb,
                    "managedDisk": {"storageAccountType": "Premium_LRS"},
                },
            },
            "osProfile": os_profile,
            "networkProfile": {
                # VM-managed NIC: created by this PUT, deleted with the VM.
                "networkApiVersion": "2020-11-01",
                "networkInterfaceConfigurations": [
                    {
                        "name": f"{name}-nic",
                        "properties": {
                            "primary": True,
                            "deleteOption": "Delete",
                            "enableAcceleratedNetworking": True,
                            "ipConfigurations": [
                                {"name": "ipconfig1", "properties": {"subnet": {"id": subnet}}}
                            ],
                        },
                    }
                ],
            },
        }
        if market is MarketKind.SPOT:
            props["priority"] = "Spot"
            props["evictionPolicy"] = "Delete"
            # -1: pay up to the on-demand price; eviction only for capacity, never for price.
            props["billingProfile"] = {"maxPrice": -1}
        else:
            props["priority"] = "Regular"
        if avset_id:
            # The set carries the placement group; a VM may not name both.
            props["availabilitySet"] = {"id": avset_id}
        elif ppg_id:
            props["proximityPlacementGroup"] = {"id": ppg_id}
        body: dict[str, Any] = {"location": offer.region, "tags": dict(tags), "properties": props}
        if zone:
            body["zones"] = [zone]
        if self.identity_id:
            body["identity"] = {
                "type": "UserAssigned",
                "userAssignedIdentities": {self.identity_id: {}},
            }
        return body

    def _wait(self, poller: LROPoller[Any], deadline: float) -> bool:
        remaining = max(0.0, deadline - time.monotonic())
        poller.wait(timeout=remaining)
        if poller.done():
            poller.result()  # raises the operation's error, if it failed
            return True
        return False

    def _create(
        self,
        group: str,
        names: Sequence[str],
        bodies: Mapping[int, dict[str, Any]],
        offer: Offer,
        zone: str | None,
    ) -> None:
        pollers: list[LROPoller[Any]] = []
        try:
            for rank, body in sorted(bodies.items()):
                pollers.append(
                    self.compute.virtual_machines.begin_create_or_update(
                        group, names[rank], VirtualMachine(body)
                    )
                )
            deadline = time.monotonic() + self.launch_wait_s
            for poller in pollers:
                if not self._wait(poller, deadline):
                    log.info(
                        "VMs of %s still provisioning after %.0fs", names[0], self.launch_wait_s
                    )
                    break
        except (AzureError, OSError) as exc:
            error = translate(
                exc,
                provider=self.fleet_name,
                region=offer.region,
                zone=offer.zone,
                doing=f"creating {names[0].rsplit('-', 1)[0]}",
            )
            # A half-made gang is useless and costs money: remove every node before failing
            # over, so that a re-send (or another region) starts clean.
            self._cleanup(group, names, offer.region)
            raise error from exc

    def _cleanup(self, group: str, names: Sequence[str], region: str) -> None:
        """Delete the VMs of a failed launch, then the gang's availability set and group."""
        pollers: list[LROPoller[None]] = []
        all_going = True
        for name in names:
            try:
                pollers.append(self.compute.virtual_machines.begin_delete(group, name))
            except ResourceNotFoundError:
                continue
            except (AzureError, OSError) as exc:
                all_going = False
                log.warning("could not delete %s after a failed launch: %s", name, exc)
        deadline = time.monotonic() + min(self.launch_wait_s, self.terminate_wait_s)
        for poller in pollers:
            try:
                self._wait(poller, deadline)
            except (AzureError, OSError) as exc:
                all_going = False
                log.warning("deleting a VM of a failed launch in %s failed: %s", region, exc)
        if len(names) > 1:
            gang = names[0].rsplit("-", 1)[0]
            if all_going:
                self._delete_gang_groups(group, gang)
            else:
                # A VM that stays still uses them; the sweep finds that VM by its tags, and
                # its terminate deletes them.
                log.warning("placement group of %s kept: a VM of it was not deleted", gang)

    # -- internals: status ---------------------------------------------------------------------

    def _gang_status(self, handle: Handle, vms: Mapping[str, _Vm]) -> WorkloadStatus:
        nodes = [vms.get(f"{handle.id}-{rank}") for rank in range(handle.nodes)]
        present = [vm for vm in nodes if vm is not None]
        if handle.id in self._terminated:
            return WorkloadStatus(WorkloadState.TERMINATED, "terminated")
        head = nodes[0]
        if head is not None and EXIT_TAG in head.tags:
            return _node_status(head)  # node 0's exit is the workload's end
        if len(present) < len(nodes):
            if handle.market is MarketKind.SPOT:
                return WorkloadStatus(
                    WorkloadState.PREEMPTED,
                    f"{len(nodes) - len(present)} of {len(nodes)} spot VM(s) evicted",
                )
            if not present:
                return WorkloadStatus(WorkloadState.UNKNOWN, "no such VM")
            return WorkloadStatus(
                WorkloadState.FAILED, f"{len(nodes) - len(present)} VM(s) of the gang vanished"
            )
        states = [_node_status(vm) for vm in present]
        # A worker that exited 0 has done its part while node 0 carries on; only node 0's
        # exit ends the workload.
        states = [
            WorkloadStatus(WorkloadState.RUNNING, "running")
            if i and s.state is WorkloadState.SUCCEEDED
            else s
            for i, s in enumerate(states)
        ]
        # A VM that ended Failed for want of capacity or quota after launch stopped waiting
        # (launch_wait_s): the gang lost its place, as a CapacityError at launch would have
        # said. PREEMPTED re-places the job; blocked_scope keeps the next plan away.
        for vm in present:
            if vm.provisioning != "failed" or EXIT_TAG in vm.tags:
                continue
            scope = lost_place_scope(
                vm.failure_code,
                vm.failure_message,
                provider=self.fleet_name,
                region=handle.region,
                zone=handle.zone,
            )
            if scope is not None:
                return WorkloadStatus(
                    WorkloadState.PREEMPTED,
                    f"{vm.name} could not be placed after launch: {vm.failure}",
                    blocked_scope=scope,
                )
        for wanted in (WorkloadState.FAILED, WorkloadState.TERMINATED):
            for status in states:
                if status.state is wanted:
                    return status
        if all(s.state is WorkloadState.RUNNING for s in states):
            return WorkloadStatus(WorkloadState.RUNNING, "running")
        return next(s for s in states if s.state is not WorkloadState.RUNNING)


def _parse_skus(region: str, listed: Iterator[dict[str, Any]]) -> dict[str, _Sku]:
    """Read the VM sizes of one region from ``resourceSkus`` entries.

    Args:
        region: The region asked for.
        listed: Entries as REST dicts.

    Returns:
        Lower-case VM size → what matters about it here.
    """
    out: dict[str, _Sku] = {}
    for raw in listed:
        if str(raw.get("resourceType", "")).lower() != "virtualmachines":
            continue
        locations = [str(x).lower() for x in raw.get("locations") or []]
        if locations and region.lower() not in locations:
            continue
        zones: set[str] = set()
        for info in raw.get("locationInfo") or []:
            if str(info.get("location", "")).lower() == region.lower():
                zones.update(str(z) for z in info.get("zones") or [])
        zonal_region = bool(zones)
        restricted = False
        for restriction in raw.get("restrictions") or []:
            kind = str(restriction.get("type", ""))
            info = restriction.get("restrictionInfo") or {}
            if kind == "Location":
                where = [
                    str(x).lower() for x in info.get("locations") or restriction.get("values") or []
                ]
                if not where or region.lower() in where:
                    restricted = True
            elif kind == "Zone":
                zones.difference_update(str(z) for z in info.get("zones") or [])
        vcpus = 0
        for capability in raw.get("capabilities") or []:
            if capability.get("name") == "vCPUs":
                try:
                    vcpus = int(capability.get("value", 0))
                except (TypeError, ValueError):
                    vcpus = 0
        out[str(raw.get("name", "")).lower()] = _Sku(
            family=str(raw.get("family", "")),
            vcpus=vcpus,
            zones=tuple(sorted(zones)),
            restricted=restricted,
            zonal_region=zonal_region,
        )
    return out
