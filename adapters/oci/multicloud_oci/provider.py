"""The OCI adapter: bare-metal and VM GPU shapes on Oracle Cloud (``oci`` SDK, Compute API).

One workload is a gang of instances ``<base>-<rank>`` in one availability domain, where
``<base>`` derives from the fleet name and the launch's request id. A gang of a shape with
RDMA ports (the bare-metal GPU shapes) goes onto one **compute cluster** (an RDMA network
group) named ``<base>``. Each instance launch carries an ``opc-retry-token`` derived from the
request id, and a re-sent launch first finds what the earlier send created.

Offers are the shipped catalog's OCI rows (Oracle's single price list), narrowed per
availability domain to the shapes the tenancy may launch there (``ListShapes``), with the
capacity of a compute capacity report, plus capacity reservations at $0. Before a launch the
shape's GPU limit is read from the Limits service, so a region without quota is skipped
without launching.

See docs/providers/oci.md for credentials, IAM policies and every option.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import oci

from multicloud.adapterkit import (
    NodeShape,
    Ownership,
    check_launch,
    family_of,
    refuse_reuse,
    region_matches,
    resource_name,
)
from multicloud.catalog import load_catalog
from multicloud.errors import (
    AuthError,
    InvalidRequestError,
    ProviderError,
    SpecError,
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
    WorkloadStatus,
)
from multicloud_oci.clients import AUTH_MODES, Auth, Clients, list_all
from multicloud_oci.errors import boundary
from multicloud_oci.inventory import Inventory
from multicloud_oci.node import RANK_KEY, user_data
from multicloud_oci.workload import (
    CLUSTER_KEY,
    DEAD,
    OCI_TAGS,
    TAG_NODES,
    gang_status,
    owned_handle,
    rank_of,
)

__all__ = ["OCIProvider"]

log = logging.getLogger(__name__)
_M = oci.core.models


class OCIProvider:
    """Oracle Cloud Infrastructure GPU shapes behind the multicloud adapter interface.

    Args:
        fleet_name: Fleet provider name.
        regions: Region globs this fleet entry may use (empty: every region with a subnet).
        compartment_id: Compartment launched into (and listed for status and the sweep).
        subnets: Region → subnet OCID of the nodes' primary VNIC (a regional subnet with
            DNS enabled: rank 0 is found by its hostname).
        images: ``<region>``, ``<region>/<family>`` (``nvidia``, ``amd``) or
            ``<region>/<shape>`` → image OCID, the most specific winning. The image needs
            docker (with the NVIDIA container toolkit or ROCm) and the OCI CLI. A shape
            without an image gets no offers.
        vault_id: OCI Vault holding the jobs' secrets (by secret name).
        auth: ``api_key``, ``instance_principal`` or ``workload_identity``.
        config_file: OCI config file for ``api_key`` (default ``~/.oci/config``).
        profile: Profile of that file.
        config: Inline API-key configuration instead of the file.
        endpoint: Send every request to ``<endpoint>/<region>/<service>`` (a test fake).
        capacity_report: Read compute capacity reports for offers' capacity.
        cache_ttl_s: How long shape listings, capacity and reservations stay fresh.
        boot_volume_gb: Boot volume size (default: the image's).
        assign_public_ip: Give nodes a public IP (default: private subnet only).

    Raises:
        SpecError: If a required option is missing or malformed, naming it.
    """

    name: ClassVar[str] = "oci"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.SPOT, Capability.MULTI_NODE, Capability.RESERVED, Capability.QUOTA_PROBE}
    )

    def __init__(
        self,
        *,
        fleet_name: str = "oci",
        regions: Sequence[str] = (),
        compartment_id: str = "",
        subnets: Mapping[str, str] | None = None,
        images: Mapping[str, str] | None = None,
        vault_id: str | None = None,
        auth: Auth = "api_key",
        config_file: str | None = None,
        profile: str = "DEFAULT",
        config: Mapping[str, str] | None = None,
        endpoint: str | None = None,
        capacity_report: bool = True,
        cache_ttl_s: float = 300.0,
        boot_volume_gb: int | None = None,
        assign_public_ip: bool = False,
    ) -> None:
        problems = [
            (f"providers.{fleet_name}.options.{option}", message)
            for option, bad, message in (
                ("compartment_id", not compartment_id, "the compartment OCID to launch into"),
                ("subnets", not subnets, "a subnet OCID per region, e.g. {us-ashburn-1: ...}"),
                ("images", not images, "an image OCID per region (docker + OCI CLI on it)"),
                ("auth", auth not in AUTH_MODES, f"one of {', '.join(AUTH_MODES)}"),
            )
            if bad
        ]
        if problems:
            raise SpecError(source="fleet", problems=problems)
        self.fleet_name = fleet_name
        self.regions = tuple(regions)
        self.compartment_id = compartment_id
        self.subnets = dict(subnets or {})
        self.images = dict(images or {})
        self.vault_id = vault_id
        self.boot_volume_gb = boot_volume_gb
        self.assign_public_ip = assign_public_ip
        self._clients = Clients(
            auth=auth, config_file=config_file, profile=profile, config=config, endpoint=endpoint
        )
        self.inventory = Inventory(
            self._clients, compartment_id, ttl_s=cache_ttl_s, capacity_report=capacity_report
        )
        self._errors = boundary(fleet_name)
        # Oracle's price list as regional offers; offers() places them on the ADs.
        self._rows = load_catalog().offers("oci", fleet_name=fleet_name)

    # -- helpers ----------------------------------------------------------------------------

    def _in_scope(self) -> list[str]:
        """Regions with catalog rows, a subnet and an image, inside the fleet's globs."""
        return sorted(
            {
                r.region
                for r in self._rows
                if r.region in self.subnets and region_matches(self.regions, r.region)
            }
        )

    def _image(self, region: str, shape: str, accelerator: str) -> str | None:
        # Most specific first: a shape (GB200 hosts are Arm), a device family, the region.
        keys = (f"{region}/{shape}", f"{region}/{family_of(accelerator)}", region)
        return next((self.images[k] for k in keys if k in self.images), None)

    def _refuse(self, message: str, region: str) -> InvalidRequestError:
        return InvalidRequestError(
            message, provider=self.fleet_name, scope=error_scope(self.fleet_name, region)
        )

    def _members(self, region: str) -> dict[str, list[Any]]:
        """List the compartment's instances once; return this fleet entry's by request id."""
        found = list_all(
            self._clients.compute(region).list_instances, self.compartment_id
        )
        fleet = OCI_TAGS.value(self.fleet_name)
        out: dict[str, list[Any]] = defaultdict(list)
        for inst in found:
            tags = inst.freeform_tags or {}
            if tags.get(OCI_TAGS.key("fleet")) == fleet and OCI_TAGS.key("request") in tags:
                out[tags[OCI_TAGS.key("request")]].append(inst)
        return out

    # -- Provider ---------------------------------------------------------------------------

    def check(self) -> None:
        """List the availability domains of the first region in scope (credentials, reach).

        Raises:
            ProviderError: If the call fails (AuthError for missing credentials or policy).
        """
        regions = self._in_scope()
        if not regions:
            raise self._refuse("no region has both a subnet and catalog offers", "")
        with self._errors(region=regions[0], doing="checking credentials"):
            self.inventory.ads(regions[0])

    def offers(self, request: ResourceRequest) -> list[Offer]:
        """Return the catalog's OCI shapes the tenancy can launch, per availability domain.

        A region whose listing fails is skipped (logged), except for an AuthError, which
        concerns every region.

        Args:
            request: Accelerators, minimum count per node and region globs.

        Returns:
            On-demand / preemptible offers per availability domain (capacity from the
            compute capacity report, when readable) and reserved offers at $0.
        """
        rows = [
            r
            for r in self._rows
            if (not request.accelerators or r.accelerator in request.accelerators)
            and r.count >= request.count
            and region_matches(request.regions, r.region)
        ]
        out: list[Offer] = []
        for region in self._in_scope():
            here = [
                r
                for r in rows
                if r.region == region and self._image(region, r.instance_type, r.accelerator)
            ]
            if not here:
                continue
            try:
                with self._errors(region=region, doing="listing offers"):
                    out += self._region_offers(region, here)
            except AuthError:
                raise
            except ProviderError as exc:
                log.warning("OCI offers of %s skipped: %s", region, exc)
        return out

    def _region_offers(self, region: str, rows: list[Offer]) -> list[Offer]:
        pools = self.inventory.reservations(region)
        out: list[Offer] = []
        for ad in self.inventory.ads(region):
            shapes = self.inventory.shapes(region, ad)
            launchable = [r for r in rows if r.instance_type in shapes]
            capacity = self.inventory.capacity(region, ad, [r.instance_type for r in launchable])
            for row in launchable:
                offer = dataclasses.replace(row, zone=ad, capacity=capacity.get(row.instance_type))
                out.append(offer)
                out += [
                    dataclasses.replace(
                        offer, price=0.0, spot_price=None, capacity=p.free,
                        reservation=p.reservation,
                    )
                    for p in pools
                    if p.ad == ad and p.shape == row.instance_type
                ]
        return out

    def launch(self, offer: Offer, spec: LaunchSpec, *, request_id: str) -> Handle:
        """Launch the gang: one instance per node, on one compute cluster for RDMA shapes.

        Idempotent by ``request_id``: the instances it created are found by their tags, each
        instance launch carries an ``opc-retry-token``, and a request id met again with
        another spec is refused. A gang is all or nothing: when one node cannot launch, the
        nodes already launched are terminated before the error is raised.

        Args:
            offer: The planned offer (its zone is the availability domain).
            spec: The launch.
            request_id: The launch's idempotency key.

        Returns:
            The handle; its id is the launch's base name.

        Raises:
            InvalidRequestError: A launch that cannot be right (checks, options, reuse).
            QuotaError: The shape's GPU limit has no room (the region's scope when no
                availability domain of the region has room).
            CapacityError: Out of host capacity, or the reservation has no room.
            ProviderError: Any other failure, translated.
        """
        check_launch(
            offer, spec, fleet_name=self.fleet_name, capabilities=self.capabilities,
            regions=self.regions,
        )
        region = offer.region
        if spec.secrets and not self.vault_id:
            raise self._refuse("the job has secrets: set the vault_id option", region)
        subnet = self.subnets.get(region)
        image = self._image(region, offer.instance_type, offer.accelerator)
        if subnet is None or image is None:
            raise self._refuse(f"no subnet or image configured for {region}", region)
        base = resource_name(self.fleet_name, request_id)
        own = Ownership.of(spec, offer, request_id)
        with self._errors(region=region, zone=offer.zone, doing=f"launching {base}"):
            ad = offer.zone or next(
                (a for a in self.inventory.ads(region)
                 if offer.instance_type in self.inventory.shapes(region, a)),
                "",
            )
            facts = self.inventory.shapes(region, ad).get(offer.instance_type) if ad else None
            if facts is None:
                raise self._refuse(f"{offer.instance_type} cannot be launched in {ad}", region)
            offer = dataclasses.replace(offer, zone=ad)
            members = self._members(region).get(request_id, [])
            for inst in members:
                found = (inst.freeform_tags or {}).get(OCI_TAGS.key("spec"))
                refuse_reuse(self.fleet_name, request_id, found, own.spec,
                             what=f"instance {inst.display_name}", region=region)
            live = {rank_of(i): i for i in members if i.lifecycle_state not in DEAD}
            missing = [r for r in range(spec.nodes) if r not in live]
            cluster = next(
                (m for m in ((i.metadata or {}).get(CLUSTER_KEY) for i in live.values()) if m),
                None,
            )
            if missing:
                self.inventory.preflight(self.fleet_name, offer, facts, len(missing))
                if cluster is None and spec.nodes > 1 and facts.rdma:
                    cluster = self._cluster(region, ad, base, own, spec.nodes)
                shape = NodeShape.of(offer, rdma=facts.rdma)
                program = user_data(spec, offer, request_id, base, shape, self.vault_id)
                tokens = f"{len(members) - len(live)}"  # a fresh token after a cleaned-up try
                self._launch_nodes(offer, spec, own, missing, list(live.values()), {
                    "base": base, "subnet": subnet, "image": image, "cluster": cluster,
                    "user_data": program, "try": tokens,
                })
                self.inventory.forget(region, ad)
        extra = {"cluster": cluster} if cluster else {}
        return Handle.at(offer, spec, id=base, request_id=request_id, extra=extra)

    def _cluster(self, region: str, ad: str, base: str, own: Ownership, nodes: int) -> str:
        """Return the gang's compute cluster, creating it (idempotently) when absent."""
        compute = self._clients.compute(region)
        found = compute.list_compute_clusters(self.compartment_id, display_name=base).data
        for item in found.items or ():
            if item.lifecycle_state == "ACTIVE":
                return str(item.id)
        details = _M.CreateComputeClusterDetails(
            availability_domain=ad,
            compartment_id=self.compartment_id,
            display_name=base,
            freeform_tags={**own.labels(OCI_TAGS), TAG_NODES: str(nodes)},
        )
        return str(compute.create_compute_cluster(details, opc_retry_token=f"{base}-cc").data.id)

    def _launch_nodes(
        self,
        offer: Offer,
        spec: LaunchSpec,
        own: Ownership,
        ranks: list[int],
        live: list[Any],
        how: Mapping[str, Any],
    ) -> None:
        compute = self._clients.compute(offer.region)
        tags = {**own.labels(OCI_TAGS), TAG_NODES: str(spec.nodes)}
        preemptible = None
        if spec.market is MarketKind.SPOT:
            preemptible = _M.PreemptibleInstanceConfigDetails(
                preemption_action=_M.TerminatePreemptionAction(preserve_boot_volume=False)
            )
        created: list[Any] = []
        try:
            for rank in ranks:
                name = f"{how['base']}-{rank}"
                metadata = {"user_data": how["user_data"], RANK_KEY: str(rank)}
                if how["cluster"]:
                    metadata[CLUSTER_KEY] = how["cluster"]
                details = _M.LaunchInstanceDetails(
                    availability_domain=offer.zone,
                    compartment_id=self.compartment_id,
                    shape=offer.instance_type,
                    display_name=name,
                    freeform_tags=tags,
                    metadata=metadata,
                    create_vnic_details=_M.CreateVnicDetails(
                        subnet_id=how["subnet"], hostname_label=name,
                        assign_public_ip=self.assign_public_ip,
                    ),
                    source_details=_M.InstanceSourceViaImageDetails(
                        image_id=how["image"], boot_volume_size_in_gbs=self.boot_volume_gb
                    ),
                    compute_cluster_id=how["cluster"],
                    capacity_reservation_id=offer.reservation,
                    preemptible_instance_config=preemptible,
                )
                token = f"{name}-{how['try']}"
                created.append(compute.launch_instance(details, opc_retry_token=token).data)
        except Exception as exc:
            # All or nothing: no node of a gang that cannot form keeps billing. After a
            # transient failure the scheduler re-sends the same request id, which keeps them.
            if not isinstance(self._errors.translate(exc), TransientError):
                for inst in [*live, *created]:
                    self._terminate_quietly(compute, inst.id)
            raise

    @staticmethod
    def _terminate_quietly(compute: Any, instance_id: str) -> None:
        try:
            compute.terminate_instance(instance_id, preserve_boot_volume=False)
        except oci.exceptions.ServiceError as exc:
            if exc.status != 404:
                log.warning("could not terminate %s: %s %s", instance_id, exc.status, exc.code)

    def status(self, handles: Sequence[Handle]) -> dict[str, WorkloadStatus]:
        """Return each launch's status: one instance listing per region of the handles.

        Args:
            handles: Launches of this fleet entry.

        Returns:
            Status by handle id.

        Raises:
            ProviderError: If a region cannot be listed (the scheduler asks again later; an
                UNKNOWN answer would count the workload as lost).
        """
        by_region: dict[str, list[Handle]] = defaultdict(list)
        for handle in handles:
            by_region[handle.region].append(handle)
        out: dict[str, WorkloadStatus] = {}
        for region, group in by_region.items():
            with self._errors(region=region, doing="reading status"):
                members = self._members(region)
            for handle in group:
                out[handle.id] = gang_status(handle.nodes, members.get(handle.request_id, []))
        return out

    def terminate(self, handle: Handle, *, request_id: str) -> None:
        """Terminate every node of the launch and delete its compute cluster; idempotent.

        A compute cluster whose instances are still terminating is left for the orphan
        sweep (``owned`` lists it), which deletes it once they are gone.

        Args:
            handle: The launch.
            request_id: Idempotency key of the termination (OCI's delete is idempotent).

        Raises:
            ProviderError: If listing or terminating fails (translated).
        """
        region = handle.region
        with self._errors(region=region, zone=handle.zone, doing=f"terminating {handle.id}"):
            compute = self._clients.compute(region)
            for inst in self._members(region).get(handle.request_id, []):
                if inst.lifecycle_state not in DEAD:
                    self._terminate_quietly(compute, inst.id)
            cluster = handle.get("cluster")
            if cluster:
                try:
                    compute.delete_compute_cluster(cluster)
                except oci.exceptions.ServiceError as exc:
                    if exc.status not in (404, 409):
                        raise
            if handle.zone:
                self.inventory.forget(region, handle.zone)

    def owned(self, install_id: str) -> list[OwnedWorkload]:
        """Return this install's live launches (and compute clusters left behind) for the sweep.

        Args:
            install_id: The scheduler install.

        Returns:
            One workload per launch, with the job and attempt of its tags.
        """
        out: dict[str, OwnedWorkload] = {}
        for region in self._in_scope():
            with self._errors(region=region, doing="listing owned workloads"):
                compute = self._clients.compute(region)
                for instances in self._members(region).values():
                    live = [i for i in instances if i.lifecycle_state not in DEAD]
                    own = Ownership.parse(live[0].freeform_tags or {}, OCI_TAGS) if live else None
                    if own is not None and own.belongs_to(install_id, self.fleet_name, OCI_TAGS):
                        handle = owned_handle(self.fleet_name, region, live[0].freeform_tags,
                                              own, live[0])
                        out[handle.id] = own.owned(handle)
                clusters = compute.list_compute_clusters(self.compartment_id).data.items or ()
                for cc in clusters:
                    own = Ownership.parse(cc.freeform_tags or {}, OCI_TAGS)
                    if cc.lifecycle_state != "ACTIVE" or own is None:
                        continue
                    handle = owned_handle(self.fleet_name, region, cc.freeform_tags, own, None,
                                          cluster=cc.id)
                    if handle.id not in out and own.belongs_to(install_id, self.fleet_name,
                                                               OCI_TAGS):
                        out[handle.id] = own.owned(handle)
        return list(out.values())
