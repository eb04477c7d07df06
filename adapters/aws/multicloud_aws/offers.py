"""Offers: the catalog's AWS rows narrowed by what EC2 sells now, plus owned reservations.

A region's live view (zones, ``DescribeInstanceTypeOfferings`` by zone id, optional spot
prices, active capacity reservations and Capacity Blocks owned by the account) is read once
per ``offers_ttl``; on-demand prices from the Price List API once a day. docs/providers/aws.md
("Offers") describes the result.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from multicloud.adapterkit import region_matches
from multicloud.errors import ProviderError
from multicloud.provider import Offer, ResourceRequest
from multicloud_aws.session import Clients

__all__ = ["Offers"]

log = logging.getLogger(__name__)

_PRICES = tuple[dict[tuple[str, str], float], str]


@dataclass(frozen=True)
class _Live:
    """What EC2 said about one region."""

    zone_names: Mapping[str, str]  # zone id → zone name
    offered: frozenset[tuple[str, str]]  # (instance type, zone id)
    spot: Mapping[tuple[str, str], float]  # (instance type, zone id) → spot price
    reservations: tuple[Offer, ...]


def _today() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")


class Offers:
    """Reads and caches the live offer data of a fleet entry's regions.

    Args:
        aws: The entry's clients.
        base: The catalog's offers of the entry's regions.
        live_spot: Read spot prices from ``DescribeSpotPriceHistory``.
        live_pricing: Read on-demand prices from the Price List API.
        ttl: Seconds a region's live view is reused.
        clock: Time source.
    """

    def __init__(
        self,
        aws: Clients,
        base: Sequence[Offer],
        *,
        live_spot: bool,
        live_pricing: bool,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.aws = aws
        self.base = list(base)
        self.regions = sorted({o.region for o in self.base})
        self._live_spot = live_spot
        self._live_pricing = live_pricing
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._live: dict[str, tuple[float, _Live]] = {}
        self._zones: dict[str, dict[str, str]] = {}
        self._prices: tuple[float, _PRICES] | None = None

    def __call__(self, request: ResourceRequest) -> list[Offer]:
        """Return the offers matching ``request``: catalog rows per zone, then reservations."""
        wanted = set(request.accelerators)

        def keep(o: Offer) -> bool:
            return (
                (not wanted or o.accelerator in wanted)
                and o.count >= request.count
                and region_matches(request.regions, o.region)
            )

        prices = None
        if self._live_pricing:
            try:
                prices = self._price_list()
            except ProviderError as exc:
                log.warning("%s: live prices unavailable: %s", self.aws.errors.provider, exc)
        regions = [r for r in self.regions if any(keep(o) for o in self.base if o.region == r)]
        # Regions are independent: a cold read of every region one after the other takes
        # seconds.
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(regions)))) as pool:
            lives = dict(zip(regions, pool.map(self.live, regions), strict=True))
        out: list[Offer] = []
        reserved: list[Offer] = []
        for region in regions:
            live = lives[region]
            for offer in self.base:
                if offer.region == region and keep(offer):
                    out.extend(self._narrow(offer, live, prices))
            reserved.extend(o for o in live.reservations if keep(o))
        return out + reserved

    def zones(self, region: str) -> dict[str, str]:
        """Return the region's zone ids → this account's zone names (read once)."""
        with self._lock:
            if region in self._zones:
                return self._zones[region]
        with self.aws.errors(region=region):
            answer = self.aws("ec2", region).describe_availability_zones(
                Filters=[{"Name": "zone-type", "Values": ["availability-zone"]}]
            )
        names = {str(z["ZoneId"]): str(z["ZoneName"]) for z in answer["AvailabilityZones"]}
        with self._lock:
            self._zones[region] = names
        return names

    def live(self, region: str) -> _Live:
        """Return the region's live view, read again after the TTL."""
        now = self._clock()
        with self._lock:
            cached = self._live.get(region)
            if cached is not None and now - cached[0] < self._ttl:
                return cached[1]
        zone_names = self.zones(region)
        types = sorted({o.instance_type for o in self.base if o.region == region})
        ec2 = self.aws("ec2", region)
        with self.aws.errors(region=region):
            pages = ec2.get_paginator("describe_instance_type_offerings").paginate(
                LocationType="availability-zone-id",
                Filters=[{"Name": "instance-type", "Values": types}],
            )
            offered = frozenset(
                (str(i["InstanceType"]), str(i["Location"]))
                for page in pages
                for i in page.get("InstanceTypeOfferings", [])
            )
        spot = self._spot(region, types, zone_names) if self._live_spot else {}
        live = _Live(zone_names, offered, spot, tuple(self._reservations(region, zone_names)))
        with self._lock:
            self._live[region] = (now, live)
        return live

    def forget(self, region: str) -> None:
        """Drop the region's live view (a reservation's free count changed)."""
        with self._lock:
            self._live.pop(region, None)

    def _narrow(self, offer: Offer, live: _Live, prices: _PRICES | None) -> list[Offer]:
        # A regional row becomes one offer per zone selling the type, so that a zonal
        # CapacityError blocks that zone's offer only.
        zones = [offer.zone] if offer.zone else sorted(live.zone_names)
        base = offer
        live_price = prices[0].get((offer.region, offer.instance_type)) if prices else None
        if prices and live_price is not None:
            version = f"{offer.catalog_version}+{prices[1]}"
            base = dataclasses.replace(offer, price=live_price, catalog_version=version)
        out: list[Offer] = []
        for zone in zones:
            if (offer.instance_type, zone) not in live.offered:
                continue
            changes: dict[str, Any] = {"zone": zone}
            spot = live.spot.get((offer.instance_type, str(zone)))
            if spot is not None:
                changes["spot_price"] = spot
                changes["catalog_version"] = f"{base.catalog_version}+aws-spot-{_today()}"
            out.append(dataclasses.replace(base, **changes))
        return out

    def _spot(
        self, region: str, types: list[str], zone_names: Mapping[str, str]
    ) -> dict[tuple[str, str], float]:
        ids = {name: zid for zid, name in zone_names.items()}
        latest: dict[tuple[str, str], tuple[dt.datetime, float]] = {}
        oldest = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
        try:
            with self.aws.errors(region=region):
                pages = (
                    self.aws("ec2", region)
                    .get_paginator("describe_spot_price_history")
                    .paginate(
                        InstanceTypes=types,
                        ProductDescriptions=["Linux/UNIX", "Linux/UNIX (Amazon VPC)"],
                        StartTime=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=6),
                    )
                )
                for item in (i for page in pages for i in page.get("SpotPriceHistory", [])):
                    zone = str(
                        item.get("AvailabilityZoneId")
                        or ids.get(str(item.get("AvailabilityZone")), "")
                    )
                    key = (str(item["InstanceType"]), zone)
                    stamp = item.get("Timestamp") or oldest
                    if zone and (key not in latest or stamp >= latest[key][0]):
                        latest[key] = (stamp, float(item["SpotPrice"]))
        except ProviderError as exc:
            # Spot prices only refine the catalog's; without them the catalog's stand.
            log.warning(
                "%s: live spot prices unavailable in %s: %s", self.aws.errors.provider, region, exc
            )
            return {}
        return {k: v[1] for k, v in latest.items()}

    def _reservations(self, region: str, zone_names: Mapping[str, str]) -> list[Offer]:
        ids = {name: zid for zid, name in zone_names.items()}
        cheapest: dict[str, Offer] = {}
        for o in self.base:
            if o.region == region and o.price is not None:
                best = cheapest.get(o.instance_type)
                if best is None or (best.price is not None and o.price < best.price):
                    cheapest[o.instance_type] = o
        try:
            account = self.aws.account(region)
            with self.aws.errors(region=region):
                pages = (
                    self.aws("ec2", region)
                    .get_paginator("describe_capacity_reservations")
                    .paginate(Filters=[{"Name": "state", "Values": ["active"]}])
                )
                items = [r for page in pages for r in page.get("CapacityReservations", [])]
        except ProviderError as exc:
            # A missing permission for reservations must not hide the on-demand offers.
            log.warning(
                "%s: capacity reservations unreadable in %s: %s",
                self.aws.errors.provider,
                region,
                exc,
            )
            return []
        out: list[Offer] = []
        for r in sorted(items, key=lambda r: str(r.get("CapacityReservationId"))):
            base = cheapest.get(str(r.get("InstanceType")))
            zone = str(r.get("AvailabilityZoneId") or ids.get(str(r.get("AvailabilityZone")), ""))
            if (
                base is None
                or not zone
                or str(r.get("OwnerId", account)) != account
                or not str(r.get("InstancePlatform", "Linux/UNIX")).startswith("Linux/UNIX")
            ):
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

    def _price_list(self) -> _PRICES:
        now = self._clock()
        with self._lock:
            if self._prices is not None and now - self._prices[0] < 86400.0:
                return self._prices[1]
        pricing = self.aws("pricing", "us-east-1")
        wanted = {(o.region, o.instance_type) for o in self.base}
        found: dict[tuple[str, str], float] = {}
        with self.aws.errors(region="us-east-1"):
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
                for raw in (r for page in pages for r in page.get("PriceList", [])):
                    parsed = _parse_price(raw)
                    if parsed is not None and (parsed[0], instance_type) in wanted:
                        found[(parsed[0], instance_type)] = parsed[1]
        prices: _PRICES = (found, f"aws-live-{_today()}")
        with self._lock:
            self._prices = (now, prices)
        return prices


def _parse_price(raw: str | Mapping[str, Any]) -> tuple[str, float] | None:
    """Read (region, on-demand USD per hour) from one Price List API product."""
    doc = json.loads(raw) if isinstance(raw, str) else raw
    region = doc.get("product", {}).get("attributes", {}).get("regionCode")
    for term in doc.get("terms", {}).get("OnDemand", {}).values() if region else ():
        for dim in term.get("priceDimensions", {}).values():
            usd = dim.get("pricePerUnit", {}).get("USD")
            if usd is not None and float(usd) > 0:
                return str(region), float(usd)
    return None
