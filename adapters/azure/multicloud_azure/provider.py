"""The Azure adapter: ND/NC GPU VMs through Azure Resource Manager (``azure-mgmt-compute``).

One workload is a gang of VMs, one per node, named ``mc-<hash>-<rank>`` from the fleet name and
the request id (the kit's ``resource_name``): a re-sent launch finds the same VMs and PUTs only
the missing ones. A gang of more than one node also gets a proximity placement group (and, with
``availability_set``, an availability set, for InfiniBand). Every VM boots the kit's node
program (``multicloud_azure.node``) and reports its end by tagging and deallocating itself with
the fleet entry's user-assigned identity, which is why a fleet entry without ``identity_id`` is
refused. See docs/providers/azure.md and docs/node-contract.md.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import ClassVar

from azure.core.credentials import TokenCredential
from azure.mgmt.compute import ComputeManagementClient

from multicloud.adapterkit import (
    AZURE_TAGS,
    NodeShape,
    Ownership,
    check_launch,
    region_matches,
    render_node_program,
    resource_name,
)
from multicloud.catalog import load_catalog
from multicloud.errors import AuthError, InvalidRequestError, SpecError, error_scope
from multicloud.provider import (
    Capability,
    Handle,
    LaunchSpec,
    Offer,
    OwnedWorkload,
    ResourceRequest,
    WorkloadStatus,
)
from multicloud_azure import pricing
from multicloud_azure.arm import Vm, as_dict, make_client
from multicloud_azure.bodies import VmSettings, image_reference, vm_body
from multicloud_azure.errors import boundary
from multicloud_azure.gang import GangOps
from multicloud_azure.node import IMAGES, custom_data, has_infiniband, node_binding, secret_problem
from multicloud_azure.options import option_problems
from multicloud_azure.regions import RegionReads, narrow
from multicloud_azure.status import (
    TAG_ATTEMPT,
    TAG_FLEET,
    TAG_GANG,
    TAG_INSTALL,
    TAG_JOB,
    TAG_MARKET,
    TAG_NODES,
    TAG_RANK,
    TAG_REQUEST,
    gang_status,
    owned_gangs,
)

__all__ = ["TAG_ATTEMPT", "TAG_FLEET", "TAG_INSTALL", "TAG_JOB", "TAG_REQUEST", "AzureProvider"]

log = logging.getLogger(__name__)

_PUBLIC_ARM = "https://management.azure.com"


class AzureProvider:
    """Runs workloads on Azure GPU VMs, one VM per node.

    Args:
        fleet_name: Fleet provider name; stamped on offers, handles and tags.
        regions: Region globs from the fleet entry (empty = every catalog region).
        subscription_id: Subscription (default: ``$AZURE_SUBSCRIPTION_ID``).
        resource_group: Resource group of the VMs (``{region}`` is replaced); it must exist.
        base_url: Resource Manager endpoint (default: the public cloud's). A loopback
            ``http://`` URL (a fake) is the only case where the token is sent without TLS.
        credential: ``default``, ``environment``, ``managed-identity``, ``workload-identity``,
            ``cli``, ``static`` (a fixed token, loopback ``base_url`` only), or a
            ``TokenCredential``.
        subnet_id: Subnet of the VMs' NICs (``{region}`` is replaced).
        image: VM image (marketplace URN or image id); default per accelerator family.
        admin_username: Admin user of the VMs.
        ssh_public_key: Public key of the admin user (else a random, never stored password).
        identity_id: Resource id of the user-assigned identity given to the VMs: a node
            reports its end (tag, deallocate) and reads Key Vault secrets with it.
        identity_client_id: Client id of that identity (else IMDS is asked by resource id).
        key_vault: Key Vault name the nodes read the jobs' secrets from.
        os_disk_gb: OS disk size.
        zonal: One offer per availability zone the SKU is not restricted in.
        availability_set: Also put a gang in its own availability set (InfiniBand between
            ND VMs needs one set); not with ``zonal``.
        live_pricing: Refresh prices from the Azure Retail Prices API.
        retail_prices_url: Endpoint of that API.
        pricing_ttl_s: How long live prices are reused.
        quota_check: Check vCPU quota before launching.
        quota_ttl_s: How long a region's usages are reused.
        sku_ttl_s: How long a region's resource SKUs are reused.
        launch_wait_s: How long ``launch`` waits for the VMs' creation.
        terminate_wait_s: How long ``terminate`` waits for the deletes.
        polling_interval: Seconds between polls of long-running operations.
        retries: SDK retries of throttled or failed calls.
        install_id: Install id tagged when the spec does not carry one.
        tags: Extra tags on every resource.

    Raises:
        SpecError: Naming each option that is missing or wrong
            (``providers.<name>.options.<option>``), so ``multicloud start`` refuses the fleet.
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
        image: str | None = None,
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
        self.fleet_name = fleet_name
        self.subscription_id = subscription_id or os.environ.get("AZURE_SUBSCRIPTION_ID", "")
        problems = option_problems(
            subscription_id=self.subscription_id,
            credential=credential,
            base_url=base_url,
            subnet_id=subnet_id,
            identity_id=identity_id,
            key_vault=key_vault,
            image=image,
            os_disk_gb=os_disk_gb,
            zonal=zonal,
            availability_set=availability_set,
            launch_wait_s=launch_wait_s,
        )
        if problems:
            raise SpecError(
                "fleet",
                [(f"providers.{fleet_name}.options.{opt}", msg) for opt, msg in problems],
            )
        assert subnet_id is not None and identity_id is not None  # checked above
        self.resource_group = resource_group
        self.base_url = base_url
        self.subnet_id = subnet_id
        self.image = image
        self.identity_id = identity_id
        self.identity_client_id = identity_client_id
        self.key_vault = key_vault
        self.zonal = bool(zonal)
        self.live_pricing = bool(live_pricing)
        self.quota_check = bool(quota_check)
        self.install_id = install_id
        self._settings = (admin_username, ssh_public_key, int(os_disk_gb))
        self._regions = tuple(regions)
        self._client_args = (credential, polling_interval, retries)
        self._extra_tags = dict(tags or {})
        self._errors = boundary(fleet_name)
        self._catalog = load_catalog()
        self._rows = {
            (r.region, r.instance_type): r for r in self._catalog.rows if r.provider == "azure"
        }
        self._prices = pricing.LivePrices(retail_prices_url, pricing_ttl_s, self._catalog.version)
        self._client: ComputeManagementClient | None = None
        self._reads = RegionReads(
            lambda: self.compute, self._errors, sku_ttl_s=sku_ttl_s, quota_ttl_s=quota_ttl_s
        )
        self._gangs = GangOps(
            lambda: self.compute,
            self._errors,
            availability_set=bool(availability_set),
            launch_wait_s=float(launch_wait_s),
            terminate_wait_s=float(terminate_wait_s),
        )
        # Handles this process terminated: a Spot VM that vanished otherwise was evicted.
        self._terminated: set[str] = set()

    @property
    def compute(self) -> ComputeManagementClient:
        """The management client (built on first use; building it makes no call)."""
        if self._client is None:
            choice, polling, retries = self._client_args
            try:
                self._client = make_client(
                    choice,
                    self.subscription_id,
                    base_url=self.base_url,
                    polling_interval=polling,
                    retries=retries,
                )
            except ValueError as exc:
                raise AuthError(
                    f"cannot build the {choice} credential: {exc}", provider=self.fleet_name
                ) from exc
        return self._client

    # -- the Provider protocol -------------------------------------------------------------

    def check(self) -> None:
        """Probe credentials and the subscription with one cheap read (usages of a region).

        Raises:
            ProviderError: Typed (``AuthError`` for a missing or refused credential).
        """
        region = next(iter(self._regions_in_scope(())), None)
        if region is None:
            raise InvalidRequestError(
                f"no catalog region matches {list(self._regions)}", provider=self.fleet_name
            )
        self._reads.usages(region, fresh=True)

    def offers(self, request: ResourceRequest) -> list[Offer]:
        """Return the catalog's Azure offers this subscription can use now.

        Catalog rows are narrowed by each region's resource SKUs (a size not listed, or with
        a ``Location`` restriction, is dropped; with ``zonal`` every unrestricted zone gets
        its own offer); with ``live_pricing`` prices come from the Retail Prices API.

        Args:
            request: Accelerators, accelerators per node and region globs.

        Returns:
            The offers, in catalog order.

        Raises:
            ProviderError: If no region's resource SKUs can be read.
        """
        scope = set(self._regions_in_scope(request.regions))
        rows = [
            r
            for (region, _), r in self._rows.items()
            if region in scope
            and (not request.accelerators or r.accelerator in request.accelerators)
            and r.count >= request.count
        ]
        prices: Mapping[tuple[str, str], pricing.LivePrice] = {}
        version = self._catalog.version
        if self.live_pricing:
            wanted: dict[str, set[str]] = defaultdict(set)
            for region, size in self._rows:
                if region_matches(self._regions, region):
                    wanted[region].add(size)
            prices, version = self._prices.get(wanted)
        return narrow(
            rows,
            self._reads.skus_by_region(sorted({r.region for r in rows})),
            prices,
            fleet_name=self.fleet_name,
            zonal=self.zonal,
            version=version,
            jurisdiction=self._catalog.jurisdiction,
        )

    def launch(self, offer: Offer, spec: LaunchSpec, *, request_id: str) -> Handle:
        """Create one VM per node, each with its own node program; idempotent by request id.

        Args:
            offer: The planned offer, trusted as is (only the region's resource SKU is read:
                whether this subscription can create the size, and its vCPUs for quota).
            spec: What to run.
            request_id: Idempotency key; the VM names derive from it.

        Returns:
            The workload's handle (its id is the gang name).

        Raises:
            InvalidRequestError: A launch that cannot be right (the kit's checks, a size not
                offered here, secrets without ``key_vault``, a node program over Azure's
                custom-data limit, a request id already used for another spec).
            QuotaError: If the region's vCPU quota cannot hold the gang (nothing is created).
            CapacityError: If Azure has no room (the gang's VMs are deleted first).
            AuthError, TransientError: As translated from Azure.
        """
        if spec.install_id == "default":
            spec = dataclasses.replace(spec, install_id=self.install_id)
        check_launch(
            offer,
            spec,
            fleet_name=self.fleet_name,
            capabilities=self.capabilities,
            regions=self._regions,
        )
        shape = NodeShape.of(offer, rdma=has_infiniband(offer.instance_type))
        image = image_reference(self.image or IMAGES.get(shape.family, ""))
        if image is None:
            raise self._invalid(
                offer, f"no VM image for {shape.family} nodes: set the image option"
            )
        problem = secret_problem(spec.secrets, self.key_vault)
        if problem:
            raise self._invalid(offer, problem)
        zone = self._zone_number(offer)
        gang = resource_name(self.fleet_name, request_id)
        group = self._group(offer.region)
        names = [f"{gang}-{rank}" for rank in range(spec.nodes)]
        handle = Handle.at(
            offer, spec, id=gang, request_id=request_id, extra={"resource_group": group}
        )
        owner = Ownership.of(spec, offer, request_id)
        missing = self._gangs.missing(group, names, request_id, owner.spec, offer.region)
        if not missing:
            return handle  # a re-send: every VM exists already
        sku = self._reads.skus(offer.region).get(offer.instance_type.lower())
        if sku is None or sku.restricted:
            raise self._invalid(offer, f"{offer.instance_type} is not offered to this subscription")
        programs: dict[int, str] = {}
        for rank in missing:
            binding = node_binding(
                rank=rank,
                vm_id=self._vm_id(group, names[rank]),
                head=names[0],
                arm=self.base_url or _PUBLIC_ARM,
                identity_id=self.identity_id,
                identity_client_id=self.identity_client_id,
                key_vault=self.key_vault,
            )
            program = render_node_program(spec, offer, request_id, binding, shape=shape)
            try:
                programs[rank] = custom_data(program)
            except ValueError as exc:
                raise self._invalid(offer, str(exc)) from exc
        if self.quota_check:
            self._reads.check_quota(offer.region, sku, len(missing), spec.market)
        tags = {
            **self._extra_tags,
            **owner.labels(AZURE_TAGS),
            TAG_GANG: gang,
            TAG_NODES: str(spec.nodes),
            TAG_MARKET: spec.market.value,
        }
        ppg = avset = None
        if spec.nodes > 1:
            ppg, avset = self._gangs.groups(group, gang, offer.region, zone, tags)
        admin, key, disk = self._settings
        settings = VmSettings(self._subnet(offer.region), admin, key, self.identity_id, disk)
        bodies = {
            rank: vm_body(
                names[rank],
                size=offer.instance_type,
                region=offer.region,
                zone=zone,
                market=spec.market,
                image=image,
                custom_data=programs[rank],
                tags={**tags, TAG_RANK: str(rank)},
                settings=settings,
                placement_group=ppg,
                availability_set=avset,
            )
            for rank in missing
        }
        self._gangs.create(group, names, bodies, region=offer.region, zone=offer.zone)
        return handle

    def status(self, handles: Sequence[Handle]) -> dict[str, WorkloadStatus]:
        """Return each handle's status from one VM listing per resource group.

        Args:
            handles: Handles to look up.

        Returns:
            One status per distinct handle id (see ``multicloud_azure.status``).

        Raises:
            ProviderError: If a listing fails.
        """
        by_group: dict[str, list[Handle]] = defaultdict(list)
        for handle in handles:
            by_group[self._group_of(handle)].append(handle)
        out: dict[str, WorkloadStatus] = {}
        for group, members in by_group.items():
            with self._errors(region=members[0].region, doing=f"listing VMs of {group}"):
                listed = self.compute.virtual_machines.list(group, expand="instanceView")
                vms = {vm.name: vm for vm in (Vm.of(as_dict(v)) for v in listed)}
            for handle in members:
                out[handle.id] = gang_status(
                    handle, vms, terminated=handle.id in self._terminated, errors=self._errors
                )
        return out

    def terminate(self, handle: Handle, *, request_id: str) -> None:
        """Delete the gang's VMs, then its availability set and placement group.

        Unknown or already deleted resources are a no-op; the set and group, which ARM refuses
        to delete (409) while a VM still refers to them, are retried for a few seconds, then
        logged and left for a later ``terminate``.

        Args:
            handle: The workload.
            request_id: Idempotency key of the termination (deletes are idempotent anyway).

        Raises:
            ProviderError: If a delete fails for another reason than "not found".
        """
        group = self._group_of(handle)
        with self._errors(region=handle.region, doing=f"deleting {handle.id}"):
            names = [f"{handle.id}-{rank}" for rank in range(handle.nodes)]
            self._gangs.delete(group, names, self._gangs.terminate_wait_s)
            self._terminated.add(handle.id)
        if handle.nodes > 1:
            self._gangs.delete_groups(group, handle.id)

    def owned(self, install_id: str) -> list[OwnedWorkload]:
        """Return the gangs of this fleet entry that ``install_id`` launched (finished included).

        Args:
            install_id: The install whose workloads to list.

        Returns:
            Workloads in gang-name order, from one ``list_all`` over the subscription.

        Raises:
            ProviderError: If the listing fails.
        """
        with self._errors(doing="listing VMs of the subscription"):
            vms = [Vm.of(as_dict(raw)) for raw in self.compute.virtual_machines.list_all()]
        return owned_gangs(vms, install_id, self.fleet_name)

    # -- internals ---------------------------------------------------------------------------

    def _invalid(self, offer: Offer, message: str) -> InvalidRequestError:
        return InvalidRequestError(
            message, provider=self.fleet_name, scope=error_scope(self.fleet_name, offer.region)
        )

    def _regions_in_scope(self, request_globs: Sequence[str]) -> list[str]:
        return sorted(
            {
                region
                for region, _ in self._rows
                if region_matches(self._regions, region) and region_matches(request_globs, region)
            }
        )

    def _group(self, region: str) -> str:
        return self.resource_group.replace("{region}", region)

    def _group_of(self, handle: Handle) -> str:
        return handle.get("resource_group") or self._group(handle.region)

    def _subnet(self, region: str) -> str:
        return self.subnet_id.replace("{region}", region)

    def _vm_id(self, group: str, name: str) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{group}/providers/"
            f"Microsoft.Compute/virtualMachines/{name}"
        )

    def _zone_number(self, offer: Offer) -> str | None:
        if offer.zone is None:
            return None
        number = offer.zone.removeprefix(f"{offer.region}-")
        if not number.isdigit():
            raise self._invalid(offer, f"zone {offer.zone!r} is not a zone of {offer.region}")
        return number
