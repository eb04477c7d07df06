"""``AWSProvider``: EC2 GPU, Trainium and Inferentia instances behind the Provider protocol.

Offers
    The shipped catalog's AWS rows (prices) for the configured regions, kept only where a
    live ``DescribeInstanceTypeOfferings`` (location type ``availability-zone-id``) says the
    zone really offers the instance type; a regional row becomes one offer per such zone.
    With ``live_spot_prices`` the spot price of each zone comes from
    ``DescribeSpotPriceHistory``; with ``live_pricing`` the on-demand price from the Price List
    API (``pricing:GetProducts`` in us-east-1). Active capacity reservations and Capacity Blocks
    owned by the account (``DescribeCapacityReservations``) become ``reserved`` offers whose
    capacity is the reservation's available instance count. Live answers are cached per region
    for ``offers_ttl`` seconds. ``Offer.catalog_version`` records which live data was used
    (``<catalog>+aws-live-<date>`` and/or ``+aws-spot-<date>``).

Launch
    ``RunInstances`` with ``ClientToken`` = request id, ``MinCount = MaxCount = nodes`` in the
    offer's zone, a cluster placement group for gangs, spot through ``InstanceMarketOptions``,
    a reservation through ``CapacityReservationSpecification``, the workload through user-data
    (see :mod:`multicloud_aws.userdata`) and tags ``multicloud:job``, ``multicloud:attempt``,
    ``multicloud:install``, ``multicloud:request`` and ``multicloud:spec``. Before the call, the
    Service Quotas limit of the instance family is checked (cached for ``quota_ttl``), so a
    region without quota fails fast with ``QuotaError`` and no ``RunInstances``.

Status, terminate, sweep
    One ``DescribeInstances`` per region, filtered by the request tags; ``multicloud:exit``
    gives SUCCEEDED/FAILED, a spot interruption PREEMPTED, a host that powered itself off
    without that tag FAILED (it ran; it must not be re-run as lost). ``terminate`` ends the
    gang's live instances (no call for unknown or finished ones) and deletes the gang's
    placement group when EC2 allows it (best effort). ``owned`` lists live instances by
    the install tag (``SupportsSweep``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fnmatch
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError

from multicloud.catalog import Catalog, load_catalog
from multicloud.errors import (
    AuthError,
    CapacityError,
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
)
from multicloud_aws.errors import aws_errors
from multicloud_aws.userdata import EXIT_TAG, REQUEST_TAG, render_user_data

__all__ = [
    "DEFAULT_IMAGE_PARAMETER",
    "QUOTA_CODES",
    "TAG_ATTEMPT",
    "TAG_INSTALL",
    "TAG_JOB",
    "TAG_SPEC",
    "AWSProvider",
    "quota_code",
]

log = logging.getLogger(__name__)

TAG_JOB = "multicloud:job"
TAG_ATTEMPT = "multicloud:attempt"
TAG_INSTALL = "multicloud:install"
TAG_SPEC = "multicloud:spec"

DEFAULT_IMAGE_PARAMETER = (
    "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
)
"""SSM public parameter naming the current Deep Learning Base AMI (NVIDIA driver + Docker)."""

QUOTA_CODES: dict[str, tuple[str, str]] = {
    "p": ("L-417A185B", "L-7212CCBC"),  # Running On-Demand P / All P Spot Instance Requests
    "g": ("L-DB2E81BA", "L-3819A6DF"),  # Running On-Demand G and VT / All G and VT Spot
    "vt": ("L-DB2E81BA", "L-3819A6DF"),
    "inf": ("L-1945791B", "L-B5D1601B"),  # Running On-Demand Inf / All Inf Spot
    "trn": ("L-2C3B7624", "L-6B0D517C"),  # Running On-Demand Trn / All Trn Spot
}
"""Instance family → (on-demand vCPU quota code, spot vCPU quota code), service code ``ec2``."""

_PREEMPT_REASONS = frozenset(
    {
        "Server.SpotInstanceTermination",
        "Server.SpotInstanceShutdown",
        "Server.SpotInstanceHibernation",
    }
)
_LIVE_STATES = ("pending", "running", "stopping", "stopped")
_ENDED_STATES = ("shutting-down", "terminated", "stopping", "stopped")
_SELF_SHUTDOWN = "Client.InstanceInitiatedShutdown"
"""``StateReason`` of an instance that powered itself off (the boot script's last step)."""
_FILTER_CHUNK = 200  # EC2 accepts at most 200 values in one filter.
_RESERVATION_ID = re.compile(r"^cr-[0-9a-f]{8,17}$")


def quota_code(instance_type: str, market: MarketKind) -> str | None:
    """Return the Service Quotas code limiting an instance type's vCPUs in a market.

    Args:
        instance_type: EC2 instance type (``p5.48xlarge``, ``trn1.32xlarge``).
        market: On-demand or spot (reserved launches use the on-demand quota).

    Returns:
        The quota code, or None for a family without a known accelerator quota.
    """
    family = re.match(r"^[a-z]+", instance_type)
    if family is None:
        return None
    codes = QUOTA_CODES.get(family.group(0))
    if codes is None:
        return None
    return codes[1] if market is MarketKind.SPOT else codes[0]


def _spec_digest(spec: LaunchSpec, offer: Offer) -> str:
    # What makes two launches "the same" for idempotency: EC2 refuses a reused ClientToken
    # with other parameters (IdempotentParameterMismatch) and so does the adapter.
    doc = json.dumps(
        [
            dataclasses.asdict(spec),
            offer.region,
            offer.zone,
            offer.instance_type,
            offer.reservation,
        ],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


def _matches(globs: Sequence[str], region: str) -> bool:
    return not globs or any(fnmatch.fnmatchcase(region, g) for g in globs)


def _tags(item: Mapping[str, Any]) -> dict[str, str]:
    return {str(t["Key"]): str(t.get("Value", "")) for t in item.get("Tags", []) or []}


def _per_region(value: Any, region: str) -> Any:
    """Pick a per-region setting: a mapping by region (``"*"`` = default) or one value."""
    if isinstance(value, Mapping):
        return value.get(region, value.get("*"))
    return value


@dataclass(frozen=True)
class _RegionLive:
    """What the live EC2 API said about one region, cached for ``offers_ttl``."""

    zone_names: Mapping[str, str]  # zone id → zone name
    offered: frozenset[tuple[str, str]]  # (instance type, zone id)
    spot: Mapping[tuple[str, str], float]  # (instance type, zone id) → live spot price
    reservations: tuple[Offer, ...]


class AWSProvider:
    """The AWS adapter (EC2), built from a fleet entry's options.

    Args:
        fleet_name: Fleet provider name stamped on offers and handles.
        regions: Region globs to use (empty = every AWS region of the catalog).
        profile: Named profile of the shared AWS config; None uses the standard chain
            (environment, web identity / IRSA, Pod Identity, SSO, instance profile).
        credentials_file: Shared credentials file to read ``profile`` from instead of
            ``~/.aws/credentials`` (e.g. a mounted Kubernetes Secret). A path, never keys:
            the fleet file holds no secret.
        endpoint_url: Send every API call there (a moto server in tests); None for AWS.
        image_id: AMI to boot, one id or a mapping region → id (``"*"`` = default). None
            resolves ``image_parameter`` from SSM in the launch region.
        image_parameter: SSM parameter naming the AMI when ``image_id`` is not set.
        subnet_ids: Subnets to launch in (one per zone is enough), a list or a mapping region →
            list. None lets EC2 use the default VPC's subnet of the zone.
        security_group_ids: Security groups, a list or a mapping region → list.
        key_name: EC2 key pair for SSH, if any.
        instance_profile: Instance profile (name or ARN) the hosts run as; it must allow the
            host to tag itself and read the job's secrets (docs/providers/aws.md).
        root_volume_gb: Size of the root EBS volume (images and checkpoints need room).
        live_spot_prices: Replace the catalog's spot prices with ``DescribeSpotPriceHistory``.
        live_pricing: Refresh on-demand prices from the Price List API (us-east-1).
        quota_check: Check Service Quotas before each launch.
        quota_ttl: Seconds a quota answer is reused.
        offers_ttl: Seconds the live offer data of a region is reused.
        install_id: Install id tagged when a spec does not carry one.
        max_attempts: Attempts per call, the first included (botocore standard retry mode).
        connect_timeout: Seconds to connect to an AWS endpoint.
        read_timeout: Seconds to wait for an answer.
        catalog: Price catalog (default: the shipped one).
        _session: A ``boto3.Session`` to use instead of building one (tests hook event
            handlers on it).
        _clock: Time source (tests).

    Raises:
        InvalidRequestError: If no catalog region matches ``regions``.
        AuthError: If the credential set-up fails, e.g. ``profile`` names no profile
            (scope: the fleet name).
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
        image_parameter: str = DEFAULT_IMAGE_PARAMETER,
        subnet_ids: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
        security_group_ids: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
        key_name: str | None = None,
        instance_profile: str | None = None,
        root_volume_gb: int = 200,
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
        self._catalog = catalog or load_catalog()
        self._globs = tuple(regions)
        self._endpoint_url = endpoint_url
        self._image_id = image_id
        self._image_parameter = image_parameter
        self._subnet_ids = subnet_ids
        self._security_group_ids = security_group_ids
        self._key_name = key_name
        self._instance_profile = instance_profile
        self._root_volume_gb = int(root_volume_gb)
        self._live_spot = bool(live_spot_prices)
        self._live_pricing = bool(live_pricing)
        self._quota_check = bool(quota_check)
        self._quota_ttl = float(quota_ttl)
        self._offers_ttl = float(offers_ttl)
        self._clock = _clock
        if _session is None:
            try:
                core = botocore.session.get_session()
                if credentials_file:
                    core.set_config_variable(
                        "credentials_file", os.path.expanduser(credentials_file)
                    )
                _session = boto3.Session(botocore_session=core, profile_name=profile)
            except BotoCoreError as exc:
                # A mistyped profile (ProfileNotFound) or an unreadable shared config: the
                # fleet entry cannot get credentials, which is an auth problem of the fleet.
                raise AuthError(
                    f"cannot set up AWS credentials for {fleet_name}: {exc}",
                    provider=fleet_name,
                    scope=fleet_name,
                ) from exc
        self._session = _session
        self._config = Config(
            retries={"total_max_attempts": int(max_attempts), "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            user_agent_extra="multicloud-aws",
        )
        self._lock = threading.RLock()
        self._clients: dict[tuple[str, str], Any] = {}
        self._live: dict[str, tuple[float, _RegionLive]] = {}
        self._quotas: dict[tuple[str, str], tuple[float, float | None]] = {}
        self._vcpus: dict[str, int] = {}
        self._images: dict[str, str] = {}
        self._account: str | None = None
        self._prices: tuple[float, dict[tuple[str, str], float], str] | None = None
        self._base: list[Offer] = [
            o
            for o in self._catalog.offers("aws", fleet_name=fleet_name)
            if _matches(self._globs, o.region)
        ]
        if not self._base:
            raise InvalidRequestError(
                f"no AWS region of catalog {self._catalog.version} matches {list(self._globs)}",
                provider=fleet_name,
            )
        self._known = {(o.region, o.instance_type) for o in self._base}
        self._regions = sorted({o.region for o in self._base})

    # -- clients --------------------------------------------------------------------------

    def _client(self, service: str, region: str) -> Any:
        with self._lock:
            key = (service, region)
            client = self._clients.get(key)
            if client is None:
                with aws_errors(self.fleet_name, region):
                    client = self._session.client(
                        service,
                        region_name=region,
                        endpoint_url=self._endpoint_url,
                        config=self._config,
                    )
                self._clients[key] = client
            return client

    def _ec2(self, region: str) -> Any:
        return self._client("ec2", region)

    # -- the Provider protocol --------------------------------------------------------------

    def check(self) -> None:
        """Probe credentials with ``sts:GetCallerIdentity`` (no EC2 side effects).

        Raises:
            AuthError: If the credentials are missing, expired or refused.
            TransientError: If AWS cannot be reached.
        """
        self._account_id()

    def offers(self, request: ResourceRequest) -> list[Offer]:
        """Return the catalog offers that the live API confirms, plus owned reservations.

        Args:
            request: Accelerators, minimum accelerators per node and region globs.

        Returns:
            Matching offers: catalog offers narrowed by live instance-type offerings, one per
            zone (with live prices when enabled), then reserved offers.

        Raises:
            ProviderError: If a region's offerings cannot be read (translated SDK error).
        """
        wanted = set(request.accelerators)

        def keep(o: Offer) -> bool:
            return (
                (not wanted or o.accelerator in wanted)
                and o.count >= request.count
                and _matches(request.regions, o.region)
            )

        regions = [r for r in self._regions if _matches(request.regions, r)]
        prices = None
        if self._live_pricing:
            try:
                prices = self._live_prices()
            except ProviderError as exc:
                # Live prices refine the catalog's; without them the catalog's stand.
                log.warning("%s: live prices unavailable: %s", self.fleet_name, exc)
        regions = [r for r in regions if any(keep(o) for o in self._base if o.region == r)]
        # Regions are independent: read them side by side (a cold read of every AWS region one
        # after the other takes seconds); cached regions return at once.
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(regions)))) as pool:
            lives = dict(zip(regions, pool.map(self._region_live, regions), strict=True))
        out: list[Offer] = []
        reserved: list[Offer] = []
        for region in regions:
            live = lives[region]
            for offer in self._base:
                if offer.region != region or not keep(offer):
                    continue
                out.extend(self._narrow(offer, live, prices))
            reserved.extend(o for o in live.reservations if keep(o))
        return out + reserved

    def launch(self, offer: Offer, spec: LaunchSpec, *, request_id: str) -> Handle:
        """Launch the gang of ``spec`` on ``offer``; idempotent by ``request_id``.

        Args:
            offer: One of this adapter's offers.
            spec: What to run.
            request_id: Idempotency key (the ``ClientToken``).

        Returns:
            The gang's handle (id: its instance ids, comma-separated).

        Raises:
            InvalidRequestError: For a foreign offer, spot without a spot market, a reserved
                market without a reservation, a bad spec, or a reused request id.
            QuotaError: If the region's quota cannot hold the gang (before ``RunInstances``),
                or EC2 says so.
            CapacityError: If the zone (or the reservation) has no room.
            AuthError: If the credentials cannot launch.
            TransientError: On throttling, 5xx and network trouble.
        """
        region = offer.region
        self._validate(offer, spec)
        digest = _spec_digest(spec, offer)
        existing = self._find(region, [request_id])
        if existing.get(request_id):
            return self._reuse(existing[request_id], offer, spec, request_id, digest)

        live = self._region_live(region)
        reservation = self._reservation(offer, spec.nodes, live)
        # A reservation lives in one zone: launch there, whatever zone the offer named.
        zone_id = _zone_of(reservation, live) if reservation else self._launch_zone(offer, live)
        zone_name = live.zone_names.get(zone_id)
        if zone_name is None:
            raise InvalidRequestError(
                f"zone {zone_id} is not a zone of {region} for this account",
                provider=self.fleet_name,
                scope=error_scope(self.fleet_name, region),
            )
        if offer.reservation is None:
            self._check_quota(region, offer.instance_type, spec.market, spec.nodes)
        group = self._placement_group(region, spec, request_id) if spec.nodes > 1 else None
        params = self._run_params(offer, spec, request_id, digest, zone_name, group, reservation)
        with aws_errors(self.fleet_name, region, zone_id):
            answer = self._ec2(region).run_instances(**params)
        instances = answer.get("Instances", [])
        if reservation is not None:
            self._forget(region)  # the reservation's free count just changed
        return self._handle(offer.region, zone_id, offer, spec, request_id, instances, group)

    def status(self, handles: Sequence[Handle]) -> dict[str, WorkloadStatus]:
        """Report every handle in one ``DescribeInstances`` per region.

        Args:
            handles: Handles to look up.

        Returns:
            Status per distinct ``Handle.id``; UNKNOWN for gangs AWS no longer knows.

        Raises:
            ProviderError: If a region cannot be read (translated SDK error).
        """
        by_region: dict[str, list[Handle]] = defaultdict(list)
        for h in handles:
            by_region[h.region].append(h)
        out: dict[str, WorkloadStatus] = {}
        for region, group in by_region.items():
            found = self._find(region, sorted({h.request_id for h in group}))
            for h in group:
                if h.id in out:
                    continue
                ids = set(h.id.split(","))
                members = [i for i in found.get(h.request_id, []) if i["InstanceId"] in ids]
                out[h.id] = _gang_status(members)
        return out

    def terminate(self, handle: Handle, *, request_id: str) -> None:
        """Terminate the gang's live instances, then delete its placement group (best effort).

        Unknown or finished instances need no call. The placement group named in
        ``handle.extra`` is deleted when EC2 allows it: a group still in use (instances shutting
        down) or refused otherwise is logged and left for a later ``terminate``; one already
        gone is fine.

        Args:
            handle: The workload.
            request_id: Idempotency key of the termination (``TerminateInstances`` is
                idempotent by nature).

        Raises:
            ProviderError: If AWS refuses (translated SDK error).
        """
        ids = set(handle.id.split(","))
        found = self._find(handle.region, [handle.request_id]).get(handle.request_id, [])
        live = sorted(
            i["InstanceId"]
            for i in found
            if i["InstanceId"] in ids and i["State"]["Name"] in _LIVE_STATES
        )
        if live:
            try:
                with aws_errors(self.fleet_name, handle.region):
                    self._ec2(handle.region).terminate_instances(InstanceIds=live)
            except InvalidRequestError as exc:
                # Terminated between the look-up and the call: that is what we wanted.
                if "InvalidInstanceID.NotFound" not in str(exc):
                    raise
        extra = dict(handle.extra)
        if extra.get("placement_group"):
            self._delete_placement_group(handle.region, extra["placement_group"])
        if live and extra.get("reservation"):
            self._forget(handle.region)  # instances went back to the reservation

    # -- the orphan sweep (SupportsSweep) ---------------------------------------------------

    def owned(self, install_id: str) -> list[OwnedWorkload]:
        """List the live gangs ``install_id`` launched, in every configured region.

        Args:
            install_id: Install id the instances are tagged with.

        Returns:
            One entry per live gang, with the job and attempt of its tags.

        Raises:
            ProviderError: If a region cannot be read (translated SDK error).
        """
        out: list[OwnedWorkload] = []
        for region in self._regions:
            instances = self._describe(
                region,
                [
                    {"Name": f"tag:{TAG_INSTALL}", "Values": [install_id]},
                    {"Name": "instance-state-name", "Values": list(_LIVE_STATES)},
                ],
            )
            gangs: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for inst in instances:
                key = _tags(inst).get(REQUEST_TAG)
                if key:
                    gangs[key].append(inst)
            for key, members in sorted(gangs.items()):
                tags = _tags(members[0])
                try:
                    attempt = int(tags.get(TAG_ATTEMPT, ""))
                except ValueError:
                    attempt = 0  # no live attempt owns it, so the sweep ends it
                handle = self._handle_from_instances(region, key, members)
                out.append(OwnedWorkload(handle, tags.get(TAG_JOB, handle.job_id), attempt))
        return out

    # -- offers internals -------------------------------------------------------------------

    def _narrow(
        self,
        offer: Offer,
        live: _RegionLive,
        prices: tuple[Mapping[tuple[str, str], float], str] | None,
    ) -> list[Offer]:
        """Return the offer in each zone that sells its type now (zonal: itself, or none).

        A regional catalog row becomes one offer per zone offering the type, so that an offer
        names the zone its launch goes to: a zonal ``CapacityError`` then blocks that zone's
        offer only, and the planner fails over to the next zone.
        """
        zones = [offer.zone] if offer.zone else sorted(live.zone_names)
        offered = [z for z in zones if (offer.instance_type, z) in live.offered]
        base = offer
        if prices is not None:
            live_price = prices[0].get((offer.region, offer.instance_type))
            if live_price is not None:
                base = dataclasses.replace(
                    offer,
                    price=live_price,
                    catalog_version=f"{offer.catalog_version}+{prices[1]}",
                )
        out: list[Offer] = []
        for zone in offered:
            changes: dict[str, Any] = {}
            if zone != base.zone:
                changes["zone"] = zone
            spot = live.spot.get((offer.instance_type, zone)) if self._live_spot else None
            if spot is not None:
                changes["spot_price"] = spot
                changes["catalog_version"] = f"{base.catalog_version}+aws-spot-{_today()}"
            out.append(dataclasses.replace(base, **changes) if changes else base)
        return out

    def _region_live(self, region: str) -> _RegionLive:
        now = self._clock()
        with self._lock:
            cached = self._live.get(region)
            if cached is not None and now - cached[0] < self._offers_ttl:
                return cached[1]
        live = self._read_region(region)
        with self._lock:
            self._live[region] = (now, live)
        return live

    def _forget(self, region: str) -> None:
        with self._lock:
            self._live.pop(region, None)

    def _read_region(self, region: str) -> _RegionLive:
        ec2 = self._ec2(region)
        types = sorted({o.instance_type for o in self._base if o.region == region})
        with aws_errors(self.fleet_name, region):
            zones = ec2.describe_availability_zones(
                Filters=[{"Name": "zone-type", "Values": ["availability-zone"]}]
            )["AvailabilityZones"]
            zone_names = {str(z["ZoneId"]): str(z["ZoneName"]) for z in zones}
            offered: set[tuple[str, str]] = set()
            pages = ec2.get_paginator("describe_instance_type_offerings").paginate(
                LocationType="availability-zone-id",
                Filters=[{"Name": "instance-type", "Values": types}],
            )
            for page in pages:
                for item in page.get("InstanceTypeOfferings", []):
                    offered.add((str(item["InstanceType"]), str(item["Location"])))
        spot = self._read_spot(region, types, zone_names) if self._live_spot else {}
        reservations = self._read_reservations(region, zone_names)
        return _RegionLive(zone_names, frozenset(offered), spot, tuple(reservations))

    def _read_spot(
        self, region: str, types: list[str], zone_names: Mapping[str, str]
    ) -> dict[tuple[str, str], float]:
        ids = {name: zid for zid, name in zone_names.items()}
        latest: dict[tuple[str, str], tuple[dt.datetime, float]] = {}
        try:
            with aws_errors(self.fleet_name, region):
                pages = (
                    self._ec2(region)
                    .get_paginator("describe_spot_price_history")
                    .paginate(
                        InstanceTypes=types,
                        ProductDescriptions=["Linux/UNIX", "Linux/UNIX (Amazon VPC)"],
                        StartTime=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=6),
                    )
                )
                for page in pages:
                    for item in page.get("SpotPriceHistory", []):
                        zone = str(
                            item.get("AvailabilityZoneId")
                            or ids.get(str(item.get("AvailabilityZone")), "")
                        )
                        if not zone:
                            continue
                        key = (str(item["InstanceType"]), zone)
                        stamp = item.get("Timestamp") or dt.datetime.min.replace(
                            tzinfo=dt.timezone.utc
                        )
                        if key not in latest or stamp >= latest[key][0]:
                            latest[key] = (stamp, float(item["SpotPrice"]))
        except ProviderError as exc:
            # Spot prices only refine the catalog's; without them the catalog's stand.
            log.warning("%s: live spot prices unavailable in %s: %s", self.fleet_name, region, exc)
            return {}
        return {k: v[1] for k, v in latest.items()}

    def _read_reservations(self, region: str, zone_names: Mapping[str, str]) -> list[Offer]:
        ids = {name: zid for zid, name in zone_names.items()}
        by_type: dict[str, Offer] = {}
        for o in self._base:
            if o.region == region and o.price is not None:
                best = by_type.get(o.instance_type)
                if best is None or (best.price is not None and o.price < best.price):
                    by_type[o.instance_type] = o
        try:
            account = self._account_id()
            with aws_errors(self.fleet_name, region):
                pages = (
                    self._ec2(region)
                    .get_paginator("describe_capacity_reservations")
                    .paginate(Filters=[{"Name": "state", "Values": ["active"]}])
                )
                items = [r for page in pages for r in page.get("CapacityReservations", [])]
        except ProviderError as exc:
            # A missing permission for reservations must not hide the on-demand offers.
            log.warning(
                "%s: capacity reservations unreadable in %s: %s", self.fleet_name, region, exc
            )
            return []
        out: list[Offer] = []
        for r in sorted(items, key=lambda r: str(r.get("CapacityReservationId"))):
            base = by_type.get(str(r.get("InstanceType")))
            if base is None or str(r.get("OwnerId", account)) != account:
                continue
            if not str(r.get("InstancePlatform", "Linux/UNIX")).startswith("Linux/UNIX"):
                continue
            zone = str(r.get("AvailabilityZoneId") or ids.get(str(r.get("AvailabilityZone")), ""))
            if not zone:
                continue
            out.append(
                dataclasses.replace(
                    base,
                    zone=zone,
                    spot_price=None,
                    capacity=max(0, int(r.get("AvailableInstanceCount", 0))),
                    reservation=str(r["CapacityReservationId"]),
                )
            )
        return out

    def _live_prices(self) -> tuple[dict[tuple[str, str], float], str]:
        now = self._clock()
        with self._lock:
            if self._prices is not None and now - self._prices[0] < 86400.0:
                return self._prices[1], self._prices[2]
        pricing = self._client("pricing", "us-east-1")
        found: dict[tuple[str, str], float] = {}
        wanted = {(o.region, o.instance_type) for o in self._base}
        with aws_errors(self.fleet_name, "us-east-1"):
            for instance_type in sorted({t for _, t in wanted}):
                pages = pricing.get_paginator("get_products").paginate(
                    ServiceCode="AmazonEC2",
                    Filters=[
                        {"Type": "TERM_MATCH", "Field": f, "Value": v}
                        for f, v in (
                            ("instanceType", instance_type),
                            ("operatingSystem", "Linux"),
                            ("tenancy", "Shared"),
                            ("preInstalledSw", "NA"),
                            ("capacitystatus", "Used"),
                        )
                    ],
                )
                for page in pages:
                    for raw in page.get("PriceList", []):
                        parsed = _parse_price(raw)
                        if parsed is not None and (parsed[0], instance_type) in wanted:
                            found[(parsed[0], instance_type)] = parsed[1]
        version = f"aws-live-{_today()}"
        with self._lock:
            self._prices = (now, found, version)
        return found, version

    # -- launch internals -------------------------------------------------------------------

    def _validate(self, offer: Offer, spec: LaunchSpec) -> None:
        where = offer.zone or offer.region
        if offer.provider != self.fleet_name or (offer.region, offer.instance_type) not in (
            self._known
        ):
            raise InvalidRequestError(
                f"{self.fleet_name} has no offer {offer.instance_type} in {where}",
                provider=self.fleet_name,
            )
        if spec.nodes < 1:
            raise InvalidRequestError(
                f"nodes must be at least 1, got {spec.nodes}", provider=self.fleet_name
            )
        if spec.market is MarketKind.SPOT and (
            offer.spot_price is None or offer.reservation is not None
        ):
            raise InvalidRequestError(
                f"{offer.instance_type} in {where} has no spot market in this offer",
                provider=self.fleet_name,
            )
        if spec.market is MarketKind.RESERVED and offer.reservation is None:
            raise InvalidRequestError(
                "a reserved launch needs an offer drawn from a reservation",
                provider=self.fleet_name,
            )

    def _launch_zone(self, offer: Offer, live: _RegionLive) -> str:
        if offer.zone:
            return offer.zone
        for zone in sorted(live.zone_names):
            if (offer.instance_type, zone) in live.offered:
                return zone
        raise CapacityError(
            f"no zone of {offer.region} offers {offer.instance_type}",
            provider=self.fleet_name,
            scope=error_scope(self.fleet_name, offer.region),
        )

    def _check_quota(self, region: str, instance_type: str, market: MarketKind, nodes: int) -> None:
        if not self._quota_check:
            return
        code = quota_code(instance_type, market)
        if code is None:
            return
        limit = self._quota(region, code)
        if limit is None:
            return
        needed = self._vcpus_of(region, instance_type) * nodes
        if needed > limit:
            raise QuotaError(
                f"quota {code} allows {limit:g} vCPUs in {region}; {nodes} x {instance_type} "
                f"needs {needed}",
                provider=self.fleet_name,
                scope=error_scope(self.fleet_name, region),
            )

    def _quota(self, region: str, code: str) -> float | None:
        now = self._clock()
        with self._lock:
            cached = self._quotas.get((region, code))
            if cached is not None and now - cached[0] < self._quota_ttl:
                return cached[1]
        value: float | None
        try:
            with aws_errors(self.fleet_name, region):
                answer = self._client("service-quotas", region).get_service_quota(
                    ServiceCode="ec2", QuotaCode=code
                )
            value = float(answer["Quota"]["Value"])
        except ProviderError as exc:
            # An unreadable quota (no permission, not published) must not block launches:
            # EC2 itself still refuses with VcpuLimitExceeded, which becomes a QuotaError.
            log.info("%s: quota %s unreadable in %s: %s", self.fleet_name, code, region, exc)
            value = None
        with self._lock:
            self._quotas[(region, code)] = (now, value)
        return value

    def _vcpus_of(self, region: str, instance_type: str) -> int:
        with self._lock:
            if instance_type in self._vcpus:
                return self._vcpus[instance_type]
        with aws_errors(self.fleet_name, region):
            info = self._ec2(region).describe_instance_types(InstanceTypes=[instance_type])
        vcpus = int(info["InstanceTypes"][0]["VCpuInfo"]["DefaultVCpus"])
        with self._lock:
            self._vcpus[instance_type] = vcpus
        return vcpus

    def _reservation(self, offer: Offer, nodes: int, live: _RegionLive) -> dict[str, Any] | None:
        """Return the offer's active reservation with room for ``nodes``, or None.

        Raises:
            InvalidRequestError: If the reservation is unknown or not active.
            CapacityError: If it has fewer than ``nodes`` instances free.
        """
        if offer.reservation is None:
            return None
        region = offer.region
        ref = offer.reservation
        # Adapter offers carry the cr- id; a fleet's own contract names its reservation, which
        # is looked up by the reservation's Name tag.
        kwargs: dict[str, Any] = (
            {"CapacityReservationIds": [ref]}
            if _RESERVATION_ID.match(ref)
            else {"Filters": [{"Name": "tag:Name", "Values": [ref]}]}
        )
        with aws_errors(self.fleet_name, region, offer.zone):
            items = (
                self._ec2(region)
                .describe_capacity_reservations(**kwargs)
                .get("CapacityReservations", [])
            )
        active = [r for r in items if r.get("State") == "active"]
        if not active:
            raise InvalidRequestError(
                f"capacity reservation {ref} is not active in {region}",
                provider=self.fleet_name,
                scope=error_scope(self.fleet_name, region),
            )
        chosen: dict[str, Any] = active[0]
        free = int(chosen.get("AvailableInstanceCount", 0))
        if free < nodes:
            raise CapacityError(
                f"capacity reservation {ref} has {free} instance(s) free, {nodes} asked",
                provider=self.fleet_name,
                scope=error_scope(self.fleet_name, region, _zone_of(chosen, live)),
            )
        return chosen

    def _placement_group(self, region: str, spec: LaunchSpec, request_id: str) -> str:
        # One group per gang, named after the request id: a retried launch finds its own group.
        name = f"multicloud-{request_id}"
        tags = [
            {"Key": TAG_JOB, "Value": spec.job_id},
            {"Key": TAG_INSTALL, "Value": self._install(spec)},
            {"Key": REQUEST_TAG, "Value": request_id},
        ]
        try:
            with aws_errors(self.fleet_name, region):
                self._ec2(region).create_placement_group(
                    GroupName=name,
                    Strategy="cluster",
                    TagSpecifications=[{"ResourceType": "placement-group", "Tags": tags}],
                )
        except InvalidRequestError as exc:
            # Created by an earlier try of the same launch: idempotent by its name.
            if "InvalidPlacementGroup.Duplicate" not in str(exc):
                raise
        return name

    def _delete_placement_group(self, region: str, name: str) -> None:
        """Delete a gang's placement group; best effort, never fails the termination.

        EC2 refuses while the group's instances are still shutting down
        (``InvalidPlacementGroup.InUse``): a later ``terminate`` of the same handle, once they
        are terminated, deletes it then. A group already gone (``InvalidPlacementGroup.Unknown``)
        is what we wanted.
        """
        try:
            with aws_errors(self.fleet_name, region):
                self._ec2(region).delete_placement_group(GroupName=name)
        except ProviderError as exc:
            if "InvalidPlacementGroup.Unknown" in str(exc):
                return
            level = logging.INFO if "InvalidPlacementGroup.InUse" in str(exc) else logging.WARNING
            log.log(
                level,
                "%s: placement group %s in %s not deleted (left for later): %s",
                self.fleet_name,
                name,
                region,
                exc,
            )

    def _image(self, region: str) -> str:
        chosen = _per_region(self._image_id, region)
        if chosen:
            return str(chosen)
        with self._lock:
            if region in self._images:
                return self._images[region]
        with aws_errors(self.fleet_name, region):
            value = self._client("ssm", region).get_parameter(Name=self._image_parameter)
        image = str(value["Parameter"]["Value"])
        with self._lock:
            self._images[region] = image
        return image

    def _subnet(self, region: str, zone_name: str) -> str | None:
        subnets = _per_region(self._subnet_ids, region)
        if not subnets:
            return None
        if isinstance(subnets, str):
            subnets = [subnets]
        with aws_errors(self.fleet_name, region):
            found = self._ec2(region).describe_subnets(SubnetIds=list(subnets))["Subnets"]
        for s in found:
            if s.get("AvailabilityZone") == zone_name:
                return str(s["SubnetId"])
        raise InvalidRequestError(
            f"none of subnets {list(subnets)} is in {zone_name}; add one per zone",
            provider=self.fleet_name,
            scope=error_scope(self.fleet_name, region),
        )

    def _install(self, spec: LaunchSpec) -> str:
        return spec.install_id if spec.install_id != "default" else self.install_id

    def _run_params(
        self,
        offer: Offer,
        spec: LaunchSpec,
        request_id: str,
        digest: str,
        zone_name: str,
        group: str | None,
        reservation: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        region = offer.region
        try:
            user_data = render_user_data(
                image=spec.image,
                command=spec.command,
                env=spec.env,
                secrets=spec.secrets,
                request_id=request_id,
                job_id=spec.job_id,
                nodes=spec.nodes,
                neuron=offer.instance_type.startswith(("trn", "inf")),
            )
        except ValueError as exc:
            raise InvalidRequestError(str(exc), provider=self.fleet_name) from exc
        tags = [
            {"Key": TAG_JOB, "Value": spec.job_id},
            {"Key": TAG_ATTEMPT, "Value": str(spec.attempt)},
            {"Key": TAG_INSTALL, "Value": self._install(spec)},
            {"Key": REQUEST_TAG, "Value": request_id},
            {"Key": TAG_SPEC, "Value": digest},
            {"Key": "Name", "Value": f"multicloud-{spec.job_name}"[:255]},
        ]
        placement: dict[str, Any] = {"AvailabilityZone": zone_name}
        if group is not None:
            placement["GroupName"] = group
        params: dict[str, Any] = {
            "ClientToken": request_id,
            "ImageId": self._image(region),
            "InstanceType": offer.instance_type,
            "MinCount": spec.nodes,
            "MaxCount": spec.nodes,
            "Placement": placement,
            "UserData": user_data,
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
                {"ResourceType": "instance", "Tags": tags},
                {"ResourceType": "volume", "Tags": tags[:4]},
            ],
        }
        subnet = self._subnet(region, zone_name)
        groups = _per_region(self._security_group_ids, region)
        if subnet is not None:
            params["SubnetId"] = subnet
        if groups:
            params["SecurityGroupIds"] = [groups] if isinstance(groups, str) else list(groups)
        if self._key_name:
            params["KeyName"] = self._key_name
        if self._instance_profile:
            key = "Arn" if self._instance_profile.startswith("arn:") else "Name"
            params["IamInstanceProfile"] = {key: self._instance_profile}
        if reservation is not None:
            params["CapacityReservationSpecification"] = {
                "CapacityReservationTarget": {
                    "CapacityReservationId": str(reservation["CapacityReservationId"])
                }
            }
            if reservation.get("ReservationType") == "capacity-block":
                # EC2 only launches into a Capacity Block with this market type.
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

    def _reuse(
        self,
        instances: list[dict[str, Any]],
        offer: Offer,
        spec: LaunchSpec,
        request_id: str,
        digest: str,
    ) -> Handle:
        tags = _tags(instances[0])
        if tags.get(TAG_SPEC) != digest:
            # EC2 answers a reused ClientToken with other parameters the same way.
            raise InvalidRequestError(
                f"request id {request_id!r} was already used for another launch "
                "(IdempotentParameterMismatch)",
                provider=self.fleet_name,
                scope=error_scope(self.fleet_name, offer.region),
            )
        zone = instances[0].get("Placement", {}).get("AvailabilityZone", "")
        live = self._region_live(offer.region)
        zone_id = {n: z for z, n in live.zone_names.items()}.get(zone, offer.zone or "")
        # Named after the request id, so the retry names the same group as the first try.
        group = f"multicloud-{request_id}" if spec.nodes > 1 else None
        return self._handle(offer.region, zone_id, offer, spec, request_id, instances, group)

    def _handle(
        self,
        region: str,
        zone_id: str | None,
        offer: Offer,
        spec: LaunchSpec,
        request_id: str,
        instances: Iterable[Mapping[str, Any]],
        group: str | None,
    ) -> Handle:
        ids = sorted(str(i["InstanceId"]) for i in instances)
        extra: list[tuple[str, str]] = []
        if group:
            extra.append(("placement_group", group))
        if offer.reservation:
            extra.append(("reservation", offer.reservation))
        return Handle(
            provider=self.fleet_name,
            id=",".join(ids),
            request_id=request_id,
            region=region,
            zone=zone_id or offer.zone,
            instance_type=offer.instance_type,
            nodes=spec.nodes,
            market=spec.market,
            job_id=spec.job_id,
            extra=tuple(extra),
        )

    def _handle_from_instances(
        self, region: str, request_id: str, members: list[dict[str, Any]]
    ) -> Handle:
        first = members[0]
        tags = _tags(first)
        live = self._region_live(region)
        names = {n: z for z, n in live.zone_names.items()}
        zone_name = str(first.get("Placement", {}).get("AvailabilityZone", ""))
        if first.get("CapacityReservationId"):
            market = MarketKind.RESERVED
        elif first.get("InstanceLifecycle") == "spot":
            market = MarketKind.SPOT
        else:
            market = MarketKind.ON_DEMAND
        # Gangs get a placement group named after the request id (see launch), so that the
        # sweep's terminate deletes it too.
        group = (("placement_group", f"multicloud-{request_id}"),) if len(members) > 1 else ()
        return Handle(
            provider=self.fleet_name,
            id=",".join(sorted(str(i["InstanceId"]) for i in members)),
            request_id=request_id,
            region=region,
            zone=names.get(zone_name),
            instance_type=str(first.get("InstanceType", "")),
            nodes=len(members),
            market=market,
            job_id=tags.get(TAG_JOB, ""),
            extra=group,
        )

    # -- look-ups ---------------------------------------------------------------------------

    def _describe(self, region: str, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        with aws_errors(self.fleet_name, region):
            pages = self._ec2(region).get_paginator("describe_instances").paginate(Filters=filters)
            for page in pages:
                for reservation in page.get("Reservations", []):
                    out.extend(reservation.get("Instances", []))
        return out

    def _find(self, region: str, request_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """Return the instances of each request id, in one call per 200 ids."""
        found: dict[str, list[dict[str, Any]]] = defaultdict(list)
        keys = list(request_ids)
        for start in range(0, len(keys), _FILTER_CHUNK):
            chunk = keys[start : start + _FILTER_CHUNK]
            for inst in self._describe(region, [{"Name": f"tag:{REQUEST_TAG}", "Values": chunk}]):
                key = _tags(inst).get(REQUEST_TAG)
                if key is not None:
                    found[key].append(inst)
        return found

    def _account_id(self) -> str:
        with self._lock:
            if self._account is not None:
                return self._account
        region = self._regions[0]
        with aws_errors(self.fleet_name, region):
            account = str(self._client("sts", region).get_caller_identity()["Account"])
        with self._lock:
            self._account = account
        return account


def _zone_of(reservation: Mapping[str, Any], live: _RegionLive) -> str:
    """Return the zone id of a capacity reservation."""
    zone_id = reservation.get("AvailabilityZoneId")
    if zone_id:
        return str(zone_id)
    ids = {name: zid for zid, name in live.zone_names.items()}
    return ids.get(str(reservation.get("AvailabilityZone")), "")


def _gang_status(members: list[dict[str, Any]]) -> WorkloadStatus:
    """Fold the states of a gang's instances into the workload's status."""
    if not members:
        return WorkloadStatus(WorkloadState.UNKNOWN, "no such instances (gone or never made)")
    codes: list[int] = []
    preempted = gone = pending = unreported = 0
    for inst in members:
        tags = _tags(inst)
        state = str(inst.get("State", {}).get("Name", ""))
        reason = str((inst.get("StateReason") or {}).get("Code", ""))
        if EXIT_TAG in tags:
            try:
                codes.append(int(tags[EXIT_TAG]))
            except ValueError:
                codes.append(1)
        elif reason in _PREEMPT_REASONS:
            preempted += 1
        elif state in _ENDED_STATES and reason == _SELF_SHUTDOWN:
            # The host powered itself off (the end of the boot script) without its exit tag:
            # the workload ran and ended, so it must not be re-run as if it were lost.
            unreported += 1
        elif state in _ENDED_STATES:
            gone += 1
        elif state == "pending":
            pending += 1
    failed = [c for c in codes if c != 0]
    if failed:
        return WorkloadStatus(WorkloadState.FAILED, f"a node exited {failed[0]}", failed[0])
    if preempted:
        return WorkloadStatus(WorkloadState.PREEMPTED, f"{preempted} spot node(s) reclaimed by EC2")
    if unreported:
        return WorkloadStatus(
            WorkloadState.FAILED,
            "host ended without reporting an exit code (instance profile allowed to tag?): "
            f"{unreported} node(s) powered off without the {EXIT_TAG} tag",
        )
    if len(codes) == len(members):
        return WorkloadStatus(WorkloadState.SUCCEEDED, "every node exited 0", 0)
    if gone:
        return WorkloadStatus(WorkloadState.TERMINATED, f"{gone} node(s) terminated")
    if pending:
        return WorkloadStatus(WorkloadState.PROVISIONING, f"{pending} node(s) pending")
    return WorkloadStatus(WorkloadState.RUNNING, "running")


def _parse_price(raw: str | Mapping[str, Any]) -> tuple[str, float] | None:
    """Read (region, on-demand USD per hour) from one Price List API product."""
    doc = json.loads(raw) if isinstance(raw, str) else raw
    region = doc.get("product", {}).get("attributes", {}).get("regionCode")
    if not region:
        return None
    for term in doc.get("terms", {}).get("OnDemand", {}).values():
        for dim in term.get("priceDimensions", {}).values():
            usd = dim.get("pricePerUnit", {}).get("USD")
            if usd is not None and float(usd) > 0:
                return str(region), float(usd)
    return None


def _today() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
