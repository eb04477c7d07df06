"""What a cloud sells and what a plan chose: offers, places, markets, capabilities.

The planner handles hundreds of thousands of these per second, so they are plain frozen
dataclasses with slots, not pydantic models (docs/architecture.md, "The planner").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any


class Capability(str, Enum):
    """What an adapter can do beyond the basics."""

    SPOT = "spot"
    TPU = "tpu"
    MULTI_NODE = "multi-node"
    RESERVED = "reserved"
    LIVE_PRICES = "live-prices"
    QUOTA_PROBE = "quota-probe"
    FAULT_INJECTION = "fault-injection"


class MarketKind(str, Enum):
    """The market a placement is billed in."""

    ON_DEMAND = "on-demand"
    SPOT = "spot"
    RESERVED = "reserved"


@dataclass(frozen=True, slots=True)
class Offer:
    """One kind of node a provider can run, where, at what price, and how many.

    Attributes:
        provider: Fleet provider name (the key in the fleet file).
        region: Region.
        zone: Zone when the offer is zonal (a gang stays in one zone).
        instance_type: Instance type, VM size, TPU slice or node pool.
        accelerator: Canonical accelerator name.
        count: Accelerators per node.
        price: On-demand price per node-hour in USD; None if not sold on demand.
        spot_price: Spot price per node-hour; None if there is no spot market.
        capacity: Nodes available now; None means no known limit.
        reservation: Name of the prepaid reservation this offer draws from, if any.
        jurisdiction: Legal jurisdiction of the region (None when unknown).
        catalog_version: Version of the price data behind the offer.
    """

    provider: str
    region: str
    zone: str | None
    instance_type: str
    accelerator: str
    count: int
    price: float | None
    spot_price: float | None = None
    capacity: int | None = None
    reservation: str | None = None
    jurisdiction: str | None = None
    catalog_version: str = ""

    @property
    def key(self) -> str:
        """Identity of the capacity pool this offer draws from."""
        base = f"{self.provider}/{self.zone or self.region}/{self.instance_type}"
        return f"{base}#{self.reservation}" if self.reservation else base

    def to_json(self) -> dict[str, Any]:
        """Return the offer as a JSON-ready dict (every field, by name)."""
        return {name: getattr(self, name) for name in _OFFER_FIELDS}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Offer:
        """Rebuild an offer written by :meth:`to_json`.

        Args:
            data: The dict.

        Returns:
            The offer, field for field.

        Raises:
            KeyError: If a required field is missing.
        """
        return cls(**{name: data[name] for name in _OFFER_FIELDS if name in data})


_OFFER_FIELDS: tuple[str, ...] = tuple(Offer.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class Place:
    """Where one gang of a job runs: the offer exactly as planned, and how it is used.

    The planner's choice travels as this one value from the plan into the store, to the
    adapter's ``launch``, to status and ``explain``; nothing downstream rebuilds or guesses
    any part of it (which accelerator of ``[H100, H200]``, the spot price, the catalog
    version).

    Attributes:
        offer: The offer as the planner saw it (accelerator, count per node, prices,
            reservation, catalog version).
        nodes: Nodes of the gang on this offer.
        market: Market the gang is billed in.
        price_per_hour: Billed price of all its nodes per hour (after a ROFR match; 0 on
            a reservation).
    """

    offer: Offer
    nodes: int
    market: MarketKind
    price_per_hour: float

    @property
    def provider(self) -> str:
        """Fleet provider name."""
        return self.offer.provider

    @property
    def region(self) -> str:
        """Region."""
        return self.offer.region

    @property
    def zone(self) -> str | None:
        """Zone, when the offer is zonal."""
        return self.offer.zone

    @property
    def instance_type(self) -> str:
        """Instance type, VM size, TPU slice or node pool."""
        return self.offer.instance_type

    @property
    def reservation(self) -> str | None:
        """Prepaid reservation drawn on, if any."""
        return self.offer.reservation

    @property
    def key(self) -> str:
        """Provider, region, zone and instance type: one launch of an attempt.

        An inference job may use two offers of one region in one attempt (even two
        providers' regions of the same name); each launch needs its own key.
        """
        o = self.offer
        return f"{o.provider}/{o.region}/{o.zone or '-'}/{o.instance_type}"

    @property
    def pool(self) -> str:
        """The capacity pool the gang holds while its launch is not yet confirmed."""
        o = self.offer
        return f"{o.provider}/{o.zone or o.region}/{o.instance_type}"

    def to_json(self) -> dict[str, Any]:
        """Return the place as a JSON-ready dict."""
        return {
            "offer": self.offer.to_json(),
            "nodes": self.nodes,
            "market": self.market.value,
            "price_per_hour": self.price_per_hour,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Place:
        """Rebuild a place written by :meth:`to_json`.

        Args:
            data: The dict.

        Returns:
            The place.

        Raises:
            KeyError: If a field is missing.
            ValueError: If the market is not a known one.
        """
        return cls(
            offer=Offer.from_json(data["offer"]),
            nodes=int(data["nodes"]),
            market=MarketKind(data["market"]),
            price_per_hour=float(data["price_per_hour"]),
        )
