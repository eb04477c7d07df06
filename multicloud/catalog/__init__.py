"""The shipped price catalog: offers, region jurisdictions and estimated region latencies.

The data is ``data/catalog.json`` inside this package, built by ``tools/build_catalog.py`` from
public price tables; nothing outside the installed package is read at run time.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import Any

from multicloud.accelerators import suggest
from multicloud.provider import Offer

__all__ = ["Catalog", "CatalogRow", "RegionInfo", "estimate_rtt_ms", "load_catalog"]

# Parameters of the latency model documented in the JSON's "latency_model" field.
_FIBRE_KM_PER_MS = 200.0
_PATH_INFLATION = 1.5
_FLOOR_MS = 2.0
_EARTH_RADIUS_KM = 6371.0


@dataclass(frozen=True, slots=True)
class CatalogRow:
    """One priced node type in one place.

    Attributes:
        provider: Cloud name (``aws``, ``gcp``, ``azure``, ``coreweave``).
        region: Region name.
        zone: Zone (AWS zone id or GCP zone) when the price is zonal, else None.
        instance_type: Instance type, VM size or TPU slice.
        accelerator: Canonical accelerator name.
        count: Accelerators per node.
        price: On-demand USD per node-hour; None when not sold on demand.
        spot_price: Spot USD per node-hour; None when there is no known spot price.
        source: Where the price comes from.
    """

    provider: str
    region: str
    zone: str | None
    instance_type: str
    accelerator: str
    count: int
    price: float | None
    spot_price: float | None
    source: str


@dataclass(frozen=True, slots=True)
class RegionInfo:
    """Where a region is and whose law applies there.

    Attributes:
        name: Region name.
        provider: Cloud the region belongs to.
        jurisdiction: One of ``multicloud.models.JURISDICTIONS``.
        lat: Approximate latitude of the region's metro.
        lon: Approximate longitude of the region's metro.
    """

    name: str
    provider: str
    jurisdiction: str
    lat: float
    lon: float


@functools.lru_cache(maxsize=65536)
def _rtt_between(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1 = map(math.radians, a)
    lat2, lon2 = map(math.radians, b)
    # Haversine stays accurate for the short distances where the floor matters most.
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    distance_km = 2 * _EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))
    return round(2 * distance_km * _PATH_INFLATION / _FIBRE_KM_PER_MS + _FLOOR_MS, 1)


def estimate_rtt_ms(a: RegionInfo, b: RegionInfo) -> float:
    """Estimate the round-trip time between two regions from their distance.

    Args:
        a: One region.
        b: The other region.

    Returns:
        ``round(2 * km * 1.5 / 200 + 2, 1)`` milliseconds; an estimate, not a measurement.
    """
    # Ordering the pair makes the result exactly symmetric and halves the cache.
    first, second = sorted(((a.lat, a.lon), (b.lat, b.lon)))
    return _rtt_between(first, second)


@dataclass(frozen=True)
class Catalog:
    """The shipped price catalog.

    Attributes:
        version: Catalog version, recorded on every offer and audit entry.
        date: Date the catalog was built (ISO 8601).
        rows: Every priced row, sorted by provider, region, zone and instance type.
        regions: Region table keyed by region name.
    """

    version: str
    date: str
    rows: tuple[CatalogRow, ...]
    regions: Mapping[str, RegionInfo]

    def jurisdiction(self, region: str) -> str | None:
        """Return the jurisdiction of a region.

        Args:
            region: Region name.

        Returns:
            The jurisdiction code, or None for a region the catalog does not know.
        """
        info = self.regions.get(region)
        return info.jurisdiction if info else None

    def latency_ms(self, a: str, b: str) -> float | None:
        """Return the estimated round-trip time between two regions.

        Args:
            a: One region name.
            b: The other region name.

        Returns:
            Milliseconds (2.0 within one region), or None if either region is unknown.
        """
        first, second = self.regions.get(a), self.regions.get(b)
        if first is None or second is None:
            return None
        return estimate_rtt_ms(first, second)

    def providers(self) -> tuple[str, ...]:
        """Return the clouds that have rows, sorted."""
        return tuple(sorted({row.provider for row in self.rows}))

    def offers(
        self,
        cloud: str,
        *,
        fleet_name: str | None = None,
        capacity: Mapping[str, int] | None = None,
    ) -> list[Offer]:
        """Turn the rows of one cloud into offers.

        Args:
            cloud: Cloud whose rows to use (see ``providers()``).
            fleet_name: Provider name to put on the offers (default: ``cloud``).
            capacity: Nodes available, keyed by ``zone/instance_type``,
                ``region/instance_type`` or ``instance_type``; the most specific key wins and
                an offer matching no key has no known limit (None).

        Returns:
            One offer per row, in catalog order.

        Raises:
            ValueError: If the catalog has no rows for ``cloud``.
        """
        known = self.providers()
        if cloud not in known:
            hint = suggest(cloud, known)
            tail = f"; did you mean '{hint}'?" if hint else f"; known: {', '.join(known)}"
            raise ValueError(f"unknown cloud '{cloud}' in catalog {self.version}{tail}")
        limits = capacity or {}
        name = fleet_name or cloud
        out: list[Offer] = []
        for row in self.rows:
            if row.provider != cloud:
                continue
            out.append(
                Offer(
                    provider=name,
                    region=row.region,
                    zone=row.zone,
                    instance_type=row.instance_type,
                    accelerator=row.accelerator,
                    count=row.count,
                    price=row.price,
                    spot_price=row.spot_price,
                    capacity=_capacity_for(row, limits),
                    jurisdiction=self.jurisdiction(row.region),
                    catalog_version=self.version,
                )
            )
        return out


def _capacity_for(row: CatalogRow, limits: Mapping[str, int]) -> int | None:
    keys = [f"{row.region}/{row.instance_type}", row.instance_type]
    if row.zone:
        keys.insert(0, f"{row.zone}/{row.instance_type}")
    for key in keys:
        if key in limits:
            return limits[key]
    return None


COLUMNS: tuple[str, ...] = (
    "provider",
    "region",
    "zone",
    "instance_type",
    "accelerator",
    "count",
    "price",
    "spot_price",
    "source",
)
"""The order of a row's fields in the data file (the build script writes it)."""


def _parse(raw: Mapping[str, Any]) -> Catalog:
    columns = list(raw["columns"])
    expected = list(COLUMNS)
    if columns != expected:
        raise ValueError(f"catalog columns {columns} do not match {expected}")
    rows = tuple(
        CatalogRow(
            provider=str(r[0]),
            region=str(r[1]),
            zone=None if r[2] is None else str(r[2]),
            instance_type=str(r[3]),
            accelerator=str(r[4]),
            count=int(r[5]),
            price=None if r[6] is None else float(r[6]),
            spot_price=None if r[7] is None else float(r[7]),
            source=str(r[8]),
        )
        for r in raw["rows"]
    )
    regions = {
        name: RegionInfo(
            name=name,
            provider=str(info["provider"]),
            jurisdiction=str(info["jurisdiction"]),
            lat=float(info["lat"]),
            lon=float(info["lon"]),
        )
        for name, info in raw["regions"].items()
    }
    return Catalog(
        version=str(raw["version"]),
        date=str(raw["date"]),
        rows=rows,
        regions=MappingProxyType(regions),
    )


@functools.cache
def load_catalog() -> Catalog:
    """Load the catalog shipped with the package (parsed once per process).

    Returns:
        The catalog.

    Raises:
        FileNotFoundError: If the package was installed without its data file.
        ValueError: If the data file does not have the expected columns.
    """
    text = resources.files(__name__).joinpath("data").joinpath("catalog.json").read_text("utf-8")
    return _parse(json.loads(text))
