"""``AWSProvider``: EC2 GPU, Trainium and Inferentia instances behind the Provider protocol.

* ``offers``: the catalog narrowed by what EC2 sells now, plus owned reservations
  (:mod:`multicloud_aws.offers`).
* ``launch``: one ``RunInstances`` per gang (``MinCount = MaxCount = nodes``), idempotent by
  its ``ClientToken`` (the request id): EC2 answers a repeated token with the first launch's
  instances, and a repeated token with other parameters with ``IdempotentParameterMismatch``.
  Every node boots the kit's node program (:mod:`multicloud_aws.node`); cloud facts,
  placement and EFA come from :mod:`multicloud_aws.launch`.
* ``status``: one ``DescribeInstances`` per region, read by :mod:`multicloud_aws.status`.
* ``terminate`` / ``owned``: the gang's instances by their ownership tags.

docs/providers/aws.md is the user's guide; docs/architecture.md ("Adapters") the design.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from multicloud.adapterkit import AWS_TAGS, Ownership, check_launch, region_matches
from multicloud.catalog import Catalog, load_catalog
from multicloud.errors import InvalidRequestError, error_scope
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
from multicloud_aws.errors import aws_code
from multicloud_aws.launch import Launcher, group_name, quota_code
from multicloud_aws.node import node_program
from multicloud_aws.offers import Offers
from multicloud_aws.session import Clients
from multicloud_aws.status import LIVE_STATES, gang_status, tags_of

__all__ = ["TAG_ATTEMPT", "TAG_INSTALL", "TAG_JOB", "TAG_REQUEST", "AWSProvider", "quota_code"]

TAG_JOB = AWS_TAGS.key("job")
TAG_ATTEMPT = AWS_TAGS.key("attempt")
TAG_INSTALL = AWS_TAGS.key("install")
TAG_REQUEST = AWS_TAGS.key("request")

_FILTER_CHUNK = 200  # EC2 accepts at most 200 values in one filter.


class AWSProvider:
    """The AWS adapter (EC2), built from a fleet entry's options.

    Args:
        fleet_name: Fleet provider name stamped on offers and handles.
        regions: Region globs to use (empty = every AWS region of the catalog).
        profile: Named profile of the shared AWS config; None uses the standard chain.
        credentials_file: Shared credentials file to read ``profile`` from (a path, never keys).
        endpoint_url: Send every API call there (a fake in tests); None for AWS.
        image_id: AMI to boot, one id or a mapping region → id (``"*"`` = default); None picks
            the image of the accelerator family from SSM.
        image_parameter: One SSM parameter naming the AMI for every family, or a mapping
            family kind (``nvidia``, ``nvidia-proprietary``, ``neuron``) → parameter.
        subnet_ids: Subnets (one per zone), a list or a mapping region → list.
        security_group_ids: Security groups, a list or a mapping region → list.
        key_name: EC2 key pair for SSH, if any.
        instance_profile: Instance profile (name or ARN) the nodes run as; it lets a node
            tag itself, find rank 0 and read the job's secrets (docs/providers/aws.md).
        root_volume_gb: Size of the root EBS volume.
        efa: Attach EFA interfaces to gangs on types that have EFA.
        live_spot_prices: Spot prices from ``DescribeSpotPriceHistory``.
        live_pricing: On-demand prices from the Price List API (us-east-1).
        quota_check: Check Service Quotas before each launch.
        quota_ttl: Seconds a quota answer is reused.
        offers_ttl: Seconds the live offer data of a region is reused.
        install_id: Install id tagged when a spec does not carry one.
        max_attempts: Attempts per call, the first included (botocore standard retries).
        connect_timeout: Seconds to connect to an AWS endpoint.
        read_timeout: Seconds to wait for an answer.
        catalog: Price catalog (default: the shipped one).
        _session: A ``boto3.Session`` to use instead of building one (tests).
        _clock: Time source (tests).

    Raises:
        InvalidRequestError: If no catalog region matches ``regions``.
        AuthError: If the credential set-up fails (scope: the fleet name).
    """

    name: ClassVar[str] = "aws"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.SPOT,
            Capability.MULTI_NODE,
            Capability.RESERVED,
            Capability.LIVE_PRICES,
            Capability.QUOTA_PROBE,
        }
    )

    def __init__(
        self,
        *,
        fleet_name: str = "aws",
        regions: Sequence[str] = (),
        profile: str | None = None,
        credentials_file: str | None = None,
        endpoint_url: str | None = None,
        image_id: str | Mapping[str, str] | None = None,
        image_parameter: str | Mapping[str, str] | None = None,
        subnet_ids: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
        security_group_ids: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
        key_name: str | None = None,
        instance_profile: str | None = None,
        root_volume_gb: int = 200,
        efa: bool = True,
        live_spot_prices: bool = False,
        live_pricing: bool = False,
        quota_check: bool = True,
        quota_ttl: float = 300.0,
        offers_ttl: float = 120.0,
        install_id: str = "default",
        max_attempts: int = 3,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        catalog: Catalog | None = None,
        _session: Any = None,
        _clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fleet_name = fleet_name
        self.install_id = install_id
        self._globs = tuple(regions)
        self._key_name = key_name
        self._instance_profile = instance_profile
        self._root_volume_gb = int(root_volume_gb)
        self._efa = bool(efa)
        catalog = catalog or load_catalog()
        base = [
            o
            for o in catalog.offers("aws", fleet_name=fleet_name)
            if region_matches(self._globs, o.region)
        ]
        if not base:
            raise InvalidRequestError(
                f"no AWS region of catalog {catalog.version} matches {list(self._globs)}",
                provider=fleet_name,
            )
        self._aws = Clients(
            fleet_name,
            profile=profile,
            credentials_file=credentials_file,
            endpoint_url=endpoint_url,
            max_attempts=max_attempts,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            session=_session,
        )
        self._errors = self._aws.errors
        self._offers = Offers(
            self._aws,
            base,
            live_spot=bool(live_spot_prices),
            live_pricing=bool(live_pricing),
            ttl=float(offers_ttl),
            clock=_clock,
        )
        self._launcher = Launcher(
            self._aws,
            image_id=image_id,
            image_parameter=image_parameter,
            subnet_ids=subnet_ids,
            security_group_ids=security_group_ids,
            quota_check=bool(quota_check),
            quota_ttl=float(quota_ttl),
            clock=_clock,
        )

    # -- the Provider protocol --------------------------------------------------------------

    def check(self) -> None:
        """Probe credentials with ``sts:GetCallerIdentity`` (no EC2 side effects).

        Raises:
            AuthError: If the credentials are missing, expired or refused.
            TransientError: If AWS cannot be reached.
        """
        self._aws.account(self._offers.regions[0])

    def offers(self, request: ResourceRequest) -> list[Offer]:
        """Return the catalog offers EC2 confirms, one per zone, then owned reservations.

        Raises:
            ProviderError: If a region's offerings cannot be read.
        """
        return self._offers(request)

    def launch(self, offer: Offer, spec: LaunchSpec, *, request_id: str) -> Handle:
        """Launch the gang of ``spec`` on the planned ``offer``; idempotent by ``request_id``.

        Args:
            offer: The offer exactly as planned.
            spec: What to run.
            request_id: Idempotency key (the ``ClientToken``).

        Returns:
            The gang's handle (id: its instance ids, comma-separated).

        Raises:
            InvalidRequestError: For a launch that can never be right (kit checks), an unknown
                zone or reservation, or a request id reused for another launch.
            QuotaError: If the region's quota cannot hold the gang, or EC2 says so.
            CapacityError: If the zone (or the reservation) has no room.
            AuthError: If the credentials cannot launch.
            TransientError: On throttling, 5xx and network trouble.
        """
        check_launch(
            offer,
            spec,
            fleet_name=self.fleet_name,
            capabilities=self.capabilities,
            regions=self._globs,
        )
        region, zone_id = offer.region, offer.zone
        reservation = self._launcher.reservation(offer, spec.nodes) if offer.reservation else None
        if reservation is not None:  # a reservation lives in one zone
            zone_id = str(reservation.get("AvailabilityZoneId") or zone_id or "") or None
        zone_name = self._offers.zones(region).get(zone_id) if zone_id else None
        if zone_id and zone_name is None:
            raise InvalidRequestError(
                f"zone {zone_id} is not a zone of {region} for this account",
                provider=self.fleet_name,
                scope=error_scope(self.fleet_name, region),
            )
        self._launcher.check_quota(offer, spec.market, spec.nodes)
        own = Ownership.of(spec, offer, request_id)
        if own.install == "default":
            own = dataclasses.replace(own, install=self.install_id)
        tags = [{"Key": k, "Value": v} for k, v in own.labels(AWS_TAGS).items()]
        efa = 0
        if spec.nodes > 1 and self._efa:
            efa = self._launcher.facts(region, offer.instance_type).efa
        placement: dict[str, Any] = {"AvailabilityZone": zone_name} if zone_name else {}
        created = None
        if reservation is not None:
            # Only the group the reservation was created in (if any): a new one would not
            # be served by the reservation.
            arn = str(reservation.get("PlacementGroupArn") or "")
            if arn:
                placement["GroupName"] = arn.rsplit("/", 1)[-1]
        elif spec.nodes > 1:
            created = placement["GroupName"] = self._launcher.create_group(region, request_id, tags)
        params = self._run_params(offer, spec, request_id, tags, placement, reservation, efa)
        params.update(self._launcher.network(region, zone_name, efa))
        with self._errors(region=region, zone=zone_id):
            answer = self._aws("ec2", region).run_instances(**params)
        if reservation is not None:
            self._offers.forget(region)  # the reservation's free count changed
        extra = {"placement_group": created} if created else {}
        if reservation is not None:
            extra["reservation"] = str(reservation["CapacityReservationId"])
        return Handle.at(
            dataclasses.replace(offer, zone=zone_id),
            spec,
            id=",".join(sorted(str(i["InstanceId"]) for i in answer.get("Instances", []))),
            request_id=request_id,
            extra=extra,
        )

    def status(self, handles: Sequence[Handle]) -> dict[str, WorkloadStatus]:
        """Report every handle with one ``DescribeInstances`` per region.

        Returns:
            Status per distinct ``Handle.id``; UNKNOWN for gangs AWS no longer lists.

        Raises:
            ProviderError: If a region cannot be read.
        """
        by_region: dict[str, list[Handle]] = defaultdict(list)
        for h in handles:
            by_region[h.region].append(h)
        out: dict[str, WorkloadStatus] = {}
        for region, group in by_region.items():
            found = self._find(region, sorted({h.request_id for h in group}))
            for h in group:
                ids = set(h.id.split(","))
                members = [i for i in found.get(h.request_id, []) if i["InstanceId"] in ids]
                out[h.id] = gang_status(members)
        return out

    def terminate(self, handle: Handle, *, request_id: str) -> None:
        """Terminate the gang's live instances, then delete its placement group (best effort).

        Args:
            handle: The workload; unknown or finished instances need no call.
            request_id: Idempotency key of the termination (``TerminateInstances`` is
                idempotent by nature).

        Raises:
            ProviderError: If AWS refuses.
        """
        ids = set(handle.id.split(","))
        found = self._find(handle.region, [handle.request_id]).get(handle.request_id, [])
        live = sorted(
            i["InstanceId"]
            for i in found
            if i["InstanceId"] in ids and i["State"]["Name"] in LIVE_STATES
        )
        if live:
            try:
                with self._errors(region=handle.region):
                    self._aws("ec2", handle.region).terminate_instances(InstanceIds=live)
            except InvalidRequestError as exc:
                if aws_code(exc) != "InvalidInstanceID.NotFound":  # gone meanwhile: fine
                    raise
        group = handle.get("placement_group")
        if group:
            self._launcher.delete_group(handle.region, group)
        if live and handle.get("reservation"):
            self._offers.forget(handle.region)  # instances went back to the reservation

    def owned(self, install_id: str) -> list[OwnedWorkload]:
        """List the live gangs ``install_id`` launched through this fleet entry.

        Raises:
            ProviderError: If a region cannot be read.
        """
        key, value = Ownership.selector(AWS_TAGS, install_id)
        out: list[OwnedWorkload] = []
        for region in self._offers.regions:
            gangs: dict[str, list[dict[str, Any]]] = defaultdict(list)
            filters = [
                {"Name": f"tag:{key}", "Values": [value]},
                {"Name": "instance-state-name", "Values": list(LIVE_STATES)},
            ]
            for inst in self._describe(region, filters):
                gangs[tags_of(inst).get(TAG_REQUEST, "")].append(inst)
            for request, members in sorted(gangs.items()):
                own = Ownership.parse(tags_of(members[0]), AWS_TAGS)
                if not request or own is None:
                    continue
                if own.belongs_to(install_id, self.fleet_name, AWS_TAGS):
                    out.append(own.owned(self._owned_handle(region, own, members)))
        return out

    # -- internals --------------------------------------------------------------------------

    def _run_params(
        self,
        offer: Offer,
        spec: LaunchSpec,
        request_id: str,
        tags: list[dict[str, str]],
        placement: dict[str, Any],
        reservation: Mapping[str, Any] | None,
        efa: int,
    ) -> dict[str, Any]:
        program = node_program(spec, offer, request_id, rdma=efa > 0)
        name = {"Key": "Name", "Value": f"multicloud-{spec.job_name}"[:255]}
        params: dict[str, Any] = {
            "ClientToken": request_id,
            "ImageId": self._launcher.image(offer.region, offer.accelerator),
            "InstanceType": offer.instance_type,
            "MinCount": spec.nodes,
            "MaxCount": spec.nodes,
            "Placement": placement,
            "UserData": program,  # botocore base64-encodes it
            "InstanceInitiatedShutdownBehavior": "terminate",
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
            "BlockDeviceMappings": [
                {
                    "DeviceName": "/dev/sda1",
                    "Ebs": {
                        "VolumeSize": self._root_volume_gb,
                        "VolumeType": "gp3",
                        "DeleteOnTermination": True,
                    },
                }
            ],
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": [*tags, name]},
                {"ResourceType": "volume", "Tags": tags},
            ],
        }
        if self._key_name:
            params["KeyName"] = self._key_name
        if self._instance_profile:
            key = "Arn" if self._instance_profile.startswith("arn:") else "Name"
            params["IamInstanceProfile"] = {key: self._instance_profile}
        if reservation is not None:
            target = {"CapacityReservationId": str(reservation["CapacityReservationId"])}
            params["CapacityReservationSpecification"] = {"CapacityReservationTarget": target}
            if reservation.get("ReservationType") == "capacity-block":
                # EC2 launches into a Capacity Block only with this market type.
                params["InstanceMarketOptions"] = {"MarketType": "capacity-block"}
        elif spec.market is MarketKind.SPOT:
            params["InstanceMarketOptions"] = {
                "MarketType": "spot",
                "SpotOptions": {
                    "SpotInstanceType": "one-time",
                    "InstanceInterruptionBehavior": "terminate",
                },
            }
        return params

    def _owned_handle(self, region: str, own: Ownership, members: list[dict[str, Any]]) -> Handle:
        first = members[0]
        names = {n: z for z, n in self._offers.zones(region).items()}
        if first.get("CapacityReservationId"):
            market = MarketKind.RESERVED
        elif first.get("InstanceLifecycle") == "spot":
            market = MarketKind.SPOT
        else:
            market = MarketKind.ON_DEMAND
        # A gang not drawn from a reservation made its own group, named after the request
        # id: the sweep's terminate deletes it too.
        solo = len(members) == 1 or first.get("CapacityReservationId")
        return Handle(
            provider=self.fleet_name,
            id=",".join(sorted(str(i["InstanceId"]) for i in members)),
            request_id=own.request,
            region=region,
            zone=names.get(str((first.get("Placement") or {}).get("AvailabilityZone", ""))),
            instance_type=str(first.get("InstanceType", "")),
            nodes=len(members),
            market=market,
            job_id=own.job,
            extra=() if solo else (("placement_group", group_name(own.request)),),
        )

    def _describe(self, region: str, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        with self._errors(region=region):
            pages = (
                self._aws("ec2", region)
                .get_paginator("describe_instances")
                .paginate(Filters=filters)
            )
            return [
                i
                for page in pages
                for r in page.get("Reservations", [])
                for i in r.get("Instances", [])
            ]

    def _find(self, region: str, request_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """Return the instances of each request id, in one call per 200 ids."""
        found: dict[str, list[dict[str, Any]]] = defaultdict(list)
        keys = list(request_ids)
        for start in range(0, len(keys), _FILTER_CHUNK):
            chunk = keys[start : start + _FILTER_CHUNK]
            for inst in self._describe(region, [{"Name": f"tag:{TAG_REQUEST}", "Values": chunk}]):
                found[tags_of(inst).get(TAG_REQUEST, "")].append(inst)
        return found
