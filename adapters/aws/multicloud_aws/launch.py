"""Everything one ``RunInstances`` needs besides the planned offer: cloud facts and parameters.

* **Facts** of an instance type (vCPUs for the quota check; EFA interfaces and network cards
  for a gang) from ``DescribeInstanceTypes``, once per type.
* **Quota**: the family's Service Quotas vCPU limit, before any launch.
* **Image** per accelerator family (``multicloud_aws.node.IMAGE_PARAMETERS``), unless given.
* **Reservation**: the offer's capacity reservation or Capacity Block — its zone, free count,
  kind and the cluster placement group it was created in (``PlacementGroupArn``).
* **Placement**: a gang gets its own cluster placement group, except a gang drawn from a
  reservation, which launches into the reservation's own group or none (a reservation serves
  only launches in the group it was created in: EC2 User Guide, "Capacity Reservations for
  cluster placement groups").
* **EFA**: a gang on a type with EFA gets one EFA interface per network card, so that
  ``/dev/infiniband`` exists on its nodes (EC2 User Guide, "Elastic Fabric Adapter").
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from multicloud.errors import (
    CapacityError,
    InvalidRequestError,
    ProviderError,
    QuotaError,
    error_scope,
)
from multicloud.provider import MarketKind, Offer
from multicloud_aws.errors import aws_code
from multicloud_aws.node import IMAGE_PARAMETERS, image_kind
from multicloud_aws.session import Clients

__all__ = ["QUOTA_CODES", "Facts", "Launcher", "group_name", "per_region", "quota_code"]

log = logging.getLogger(__name__)

QUOTA_CODES: dict[str, tuple[str, str]] = {
    "p": ("L-417A185B", "L-7212CCBC"),  # Running On-Demand P / All P Spot Instance Requests
    "g": ("L-DB2E81BA", "L-3819A6DF"),  # Running On-Demand G and VT / All G and VT Spot
    "vt": ("L-DB2E81BA", "L-3819A6DF"),
    "inf": ("L-1945791B", "L-B5D1601B"),  # Running On-Demand Inf / All Inf Spot
    "trn": ("L-2C3B7624", "L-6B0D517C"),  # Running On-Demand Trn / All Trn Spot
}
"""Instance family → (on-demand vCPU quota code, spot vCPU quota code), service ``ec2``."""

_RESERVATION_ID = re.compile(r"^cr-[0-9a-f]{8,17}$")


def quota_code(instance_type: str, market: MarketKind) -> str | None:
    """Return the Service Quotas code limiting an instance type's vCPUs in a market.

    Args:
        instance_type: EC2 instance type (``p5.48xlarge``).
        market: On-demand or spot (reserved launches use the on-demand quota).

    Returns:
        The quota code, or None for a family without a known accelerator quota.
    """
    family = re.match(r"^[a-z]+", instance_type)
    codes = QUOTA_CODES.get(family.group(0)) if family else None
    if codes is None:
        return None
    return codes[1] if market is MarketKind.SPOT else codes[0]


def per_region(value: Any, region: str) -> Any:
    """Pick a per-region option: a mapping by region (``"*"`` = default) or one value."""
    if isinstance(value, Mapping):
        return value.get(region, value.get("*"))
    return value


def group_name(request_id: str) -> str:
    """Return the name of the cluster placement group a gang creates for itself."""
    return f"multicloud-{request_id}"


@dataclass(frozen=True)
class Facts:
    """What EC2 says about an instance type.

    Attributes:
        vcpus: Default vCPUs.
        efa: EFA interfaces a node can take, one per network card (0: no EFA).
    """

    vcpus: int
    efa: int


class Launcher:
    """Cloud facts and launch parameters, cached per fleet entry.

    Args:
        aws: The entry's clients.
        image_id: AMI, one id or a mapping region → id; None resolves an SSM parameter.
        image_parameter: One SSM parameter for every image kind, or a mapping kind →
            parameter over :data:`~multicloud_aws.node.IMAGE_PARAMETERS`.
        subnet_ids: Subnets, a list or a mapping region → list.
        security_group_ids: Security groups, a list or a mapping region → list.
        quota_check: Check Service Quotas before a launch.
        quota_ttl: Seconds a quota answer is reused.
        clock: Time source.
    """

    def __init__(
        self,
        aws: Clients,
        *,
        image_id: str | Mapping[str, str] | None,
        image_parameter: str | Mapping[str, str] | None,
        subnet_ids: Sequence[str] | Mapping[str, Sequence[str]] | None,
        security_group_ids: Sequence[str] | Mapping[str, Sequence[str]] | None,
        quota_check: bool,
        quota_ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.aws = aws
        self._image_id = image_id
        if isinstance(image_parameter, str):
            self._parameters = dict.fromkeys(IMAGE_PARAMETERS, image_parameter)
        else:
            self._parameters = {**IMAGE_PARAMETERS, **(image_parameter or {})}
        self._subnet_ids = subnet_ids
        self._security_group_ids = security_group_ids
        self._quota_check = quota_check
        self._quota_ttl = quota_ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._facts: dict[str, Facts] = {}
        self._quotas: dict[tuple[str, str], tuple[float, float | None]] = {}
        self._images: dict[tuple[str, str], str] = {}

    @property
    def provider(self) -> str:
        """Fleet provider name."""
        return self.aws.errors.provider

    def _refuse(self, region: str, message: str) -> InvalidRequestError:
        scope = error_scope(self.provider, region)
        return InvalidRequestError(message, provider=self.provider, scope=scope)

    def facts(self, region: str, instance_type: str) -> Facts:
        """Return the instance type's facts (``DescribeInstanceTypes``, once per type)."""
        with self._lock:
            if instance_type in self._facts:
                return self._facts[instance_type]
        with self.aws.errors(region=region):
            answer = self.aws("ec2", region).describe_instance_types(InstanceTypes=[instance_type])
        info = answer["InstanceTypes"][0]
        network = info.get("NetworkInfo") or {}
        efa = 0
        if network.get("EfaSupported"):
            efa = min(
                int((network.get("EfaInfo") or {}).get("MaximumEfaInterfaces", 1)),
                int(network.get("MaximumNetworkCards", 1)),
            )
        facts = Facts(int(info["VCpuInfo"]["DefaultVCpus"]), max(efa, 0))
        with self._lock:
            self._facts[instance_type] = facts
        return facts

    def check_quota(self, offer: Offer, market: MarketKind, nodes: int) -> None:
        """Refuse a gang larger than the family's vCPU quota in the region.

        Raises:
            QuotaError: If ``vCPUs × nodes`` exceeds the quota (no ``RunInstances`` follows).
        """
        code = quota_code(offer.instance_type, market)
        if not self._quota_check or offer.reservation is not None or code is None:
            return
        limit = self._quota(offer.region, code)
        needed = self.facts(offer.region, offer.instance_type).vcpus * nodes
        if limit is not None and needed > limit:
            raise QuotaError(
                f"quota {code} allows {limit:g} vCPUs in {offer.region}; {nodes} x "
                f"{offer.instance_type} needs {needed}",
                provider=self.provider,
                scope=error_scope(self.provider, offer.region),
            )

    def _quota(self, region: str, code: str) -> float | None:
        now = self._clock()
        with self._lock:
            cached = self._quotas.get((region, code))
            if cached is not None and now - cached[0] < self._quota_ttl:
                return cached[1]
        value: float | None
        try:
            with self.aws.errors(region=region):
                answer = self.aws("service-quotas", region).get_service_quota(
                    ServiceCode="ec2", QuotaCode=code
                )
            value = float(answer["Quota"]["Value"])
        except ProviderError as exc:
            # An unreadable quota must not block launches: EC2's own VcpuLimitExceeded still
            # becomes a QuotaError.
            log.info("%s: quota %s unreadable in %s: %s", self.provider, code, region, exc)
            value = None
        with self._lock:
            self._quotas[(region, code)] = (now, value)
        return value

    def image(self, region: str, accelerator: str) -> str:
        """Return the AMI for an accelerator family in a region (the option, else SSM)."""
        chosen = per_region(self._image_id, region)
        if chosen:
            return str(chosen)
        name = self._parameters[image_kind(accelerator)]
        with self._lock:
            if (region, name) in self._images:
                return self._images[(region, name)]
        with self.aws.errors(region=region, doing=f"reading SSM parameter {name}"):
            value = str(self.aws("ssm", region).get_parameter(Name=name)["Parameter"]["Value"])
        with self._lock:
            self._images[(region, name)] = value
        return value

    def reservation(self, offer: Offer, nodes: int) -> dict[str, Any]:
        """Return the offer's active reservation with room for the gang.

        An adapter offer names the ``cr-…`` id; a fleet's own contract names the reservation,
        found by its ``Name`` tag.

        Raises:
            InvalidRequestError: If it is unknown or not active.
            CapacityError: If it has fewer than ``nodes`` instances free.
        """
        ref = str(offer.reservation)
        kwargs: dict[str, Any] = (
            {"CapacityReservationIds": [ref]}
            if _RESERVATION_ID.match(ref)
            else {"Filters": [{"Name": "tag:Name", "Values": [ref]}]}
        )
        with self.aws.errors(region=offer.region, zone=offer.zone):
            items = self.aws("ec2", offer.region).describe_capacity_reservations(**kwargs)
        active = [r for r in items.get("CapacityReservations", []) if r.get("State") == "active"]
        if not active:
            raise self._refuse(offer.region, f"capacity reservation {ref} is not active")
        chosen: dict[str, Any] = active[0]
        free = int(chosen.get("AvailableInstanceCount", 0))
        if free < nodes:
            raise CapacityError(
                f"capacity reservation {ref} has {free} instance(s) free, {nodes} asked",
                provider=self.provider,
                scope=error_scope(self.provider, offer.region, chosen.get("AvailabilityZoneId")),
            )
        return chosen

    def create_group(self, region: str, request_id: str, tags: list[dict[str, str]]) -> str:
        """Create the gang's cluster placement group (idempotent by its name)."""
        name = group_name(request_id)
        try:
            with self.aws.errors(region=region):
                self.aws("ec2", region).create_placement_group(
                    GroupName=name,
                    Strategy="cluster",
                    TagSpecifications=[{"ResourceType": "placement-group", "Tags": tags}],
                )
        except InvalidRequestError as exc:
            if aws_code(exc) != "InvalidPlacementGroup.Duplicate":  # an earlier try's group
                raise
        return name

    def delete_group(self, region: str, name: str) -> None:
        """Delete a gang's placement group; best effort, never fails a termination.

        EC2 refuses while the group's instances are still shutting down
        (``InvalidPlacementGroup.InUse``): a later ``terminate`` deletes it then.
        """
        try:
            with self.aws.errors(region=region):
                self.aws("ec2", region).delete_placement_group(GroupName=name)
        except ProviderError as exc:
            code = aws_code(exc)
            if code != "InvalidPlacementGroup.Unknown":
                level = logging.INFO if code == "InvalidPlacementGroup.InUse" else logging.WARNING
                log.log(
                    level,
                    "%s: placement group %s in %s left for later: %s",
                    self.provider,
                    name,
                    region,
                    exc,
                )

    def network(self, region: str, zone_name: str | None, efa: int) -> dict[str, Any]:
        """Return the subnet, security group and EFA interface parameters of a launch.

        Args:
            region: Region.
            zone_name: Zone (name) of the launch, when known.
            efa: EFA interfaces per node (0: the default network interface only).

        Raises:
            InvalidRequestError: If no configured subnet is in the zone.
        """
        subnet = self._subnet(region, zone_name)
        groups = per_region(self._security_group_ids, region)
        groups = [groups] if isinstance(groups, str) else list(groups or [])
        if not efa:
            params: dict[str, Any] = {"SubnetId": subnet} if subnet else {}
            return {**params, "SecurityGroupIds": groups} if groups else params
        # Interfaces carry the subnet and groups themselves; without a configured subnet,
        # the default VPC's subnet of the zone (EFA needs one subnet for all interfaces).
        subnet = subnet or self._default_subnet(region, zone_name)
        interfaces = []
        for card in range(efa):
            nic: dict[str, Any] = {
                "NetworkCardIndex": card,
                "DeviceIndex": 0 if card == 0 else 1,
                "InterfaceType": "efa",
                "DeleteOnTermination": True,
            }
            if subnet:
                nic["SubnetId"] = subnet
            if groups:
                nic["Groups"] = groups
            interfaces.append(nic)
        return {"NetworkInterfaces": interfaces}

    def _subnet(self, region: str, zone_name: str | None) -> str | None:
        subnets = per_region(self._subnet_ids, region)
        if not subnets:
            return None
        subnets = [subnets] if isinstance(subnets, str) else list(subnets)
        with self.aws.errors(region=region):
            found = self.aws("ec2", region).describe_subnets(SubnetIds=subnets)["Subnets"]
        for s in found:
            if zone_name is None or s.get("AvailabilityZone") == zone_name:
                return str(s["SubnetId"])
        raise self._refuse(region, f"none of subnets {subnets} is in {zone_name}; add one per zone")

    def _default_subnet(self, region: str, zone_name: str | None) -> str | None:
        if zone_name is None:
            return None
        with self.aws.errors(region=region):
            found = self.aws("ec2", region).describe_subnets(
                Filters=[
                    {"Name": "availability-zone", "Values": [zone_name]},
                    {"Name": "default-for-az", "Values": ["true"]},
                ]
            )["Subnets"]
        return str(found[0]["SubnetId"]) if found else None
