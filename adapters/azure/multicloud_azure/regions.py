"""What the adapter reads about a region — resource SKUs and vCPU usage, cached — the offers
it makes of them, and the quota check a launch makes before it creates anything.

Offers are the shipped catalog's Azure rows, narrowed by what the subscription can create: a
size the region's resource SKUs do not list, or list with a ``Location`` restriction
(``NotAvailableForSubscription``, ``QuotaId``), is dropped; with ``zonal`` every zone the SKU
is not restricted in gets its own offer (``eastus-1`` …). Live retail prices, when given,
replace the catalog's where they exist.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence

from azure.mgmt.compute import ComputeManagementClient

from multicloud.adapterkit import ErrorBoundary
from multicloud.catalog import CatalogRow
from multicloud.errors import AuthError, ProviderError, QuotaError, error_scope
from multicloud.provider import MarketKind, Offer
from multicloud_azure.arm import Sku, TtlCache, as_dict, parse_skus
from multicloud_azure.pricing import LivePrice

__all__ = ["RegionReads", "narrow"]

log = logging.getLogger(__name__)


class RegionReads:
    """Resource SKUs and usages per region, each cached for its own time.

    Args:
        compute: Returns the compute client.
        errors: The fleet entry's error boundary.
        sku_ttl_s: How long a region's resource SKUs are reused.
        quota_ttl_s: How long a region's usages are reused.
    """

    def __init__(
        self,
        compute: Callable[[], ComputeManagementClient],
        errors: ErrorBoundary,
        *,
        sku_ttl_s: float,
        quota_ttl_s: float,
    ) -> None:
        self._compute = compute
        self._errors = errors
        self._skus: TtlCache[dict[str, Sku]] = TtlCache(sku_ttl_s)
        self._usages: TtlCache[dict[str, tuple[int, int]]] = TtlCache(quota_ttl_s)

    def skus(self, region: str) -> dict[str, Sku]:
        """Return the region's VM sizes (lower case) → SKU facts."""

        def load() -> dict[str, Sku]:
            with self._errors(region=region, doing=f"listing resource SKUs of {region}"):
                listed = self._compute().resource_skus.list(filter=f"location eq '{region}'")
                return parse_skus(region, (as_dict(s) for s in listed))

        return self._skus.get(region, load)

    def skus_by_region(self, regions: Sequence[str]) -> dict[str, dict[str, Sku]]:
        """Return the SKUs of several regions; one failing region does not hide the others.

        Raises:
            AuthError: At once (no region will do better).
            ProviderError: If every region failed.
        """
        out: dict[str, dict[str, Sku]] = {}
        failure: ProviderError | None = None
        for region in regions:
            try:
                out[region] = self.skus(region)
            except AuthError:
                raise
            except ProviderError as exc:
                log.warning("no Azure offers in %s this time: %s", region, exc)
                failure = exc
        if failure is not None and not out:
            raise failure
        return out

    def usages(self, region: str, *, fresh: bool = False) -> dict[str, tuple[int, int]]:
        """Return usage name (lower case) → ``(current, limit)`` vCPUs in the region."""

        def load() -> dict[str, tuple[int, int]]:
            with self._errors(region=region, doing=f"reading vCPU usage of {region}"):
                return {
                    str((u.get("name") or {}).get("value", "")).lower(): (
                        int(u.get("currentValue", 0)),
                        int(u.get("limit", 0)),
                    )
                    for u in (as_dict(x) for x in self._compute().usage.list(region))
                }

        return self._usages.get(region, load, fresh=fresh)

    def check_quota(self, region: str, sku: Sku, nodes: int, market: MarketKind) -> None:
        """Refuse a gang the region's vCPU quota cannot hold: its family and the regional
        total on demand, ``lowPriorityCores`` for Spot.

        Raises:
            QuotaError: Scoped to the region, naming the quota.
        """
        usages, needed = self.usages(region), sku.vcpus * nodes
        names = ["lowPriorityCores"] if market is MarketKind.SPOT else [sku.family, "cores"]
        for name in names:
            current, limit = usages.get(name.lower(), (0, -1))
            if limit >= 0 and current + needed > limit:  # a quota not reported: ARM decides
                raise QuotaError(
                    f"quota {name} in {region}: {current} of {limit} vCPUs used, "
                    f"{needed} more needed",
                    provider=self._errors.provider,
                    scope=error_scope(self._errors.provider, region),
                )


def narrow(
    rows: Iterable[CatalogRow],
    skus: Mapping[str, Mapping[str, Sku]],
    prices: Mapping[tuple[str, str], LivePrice],
    *,
    fleet_name: str,
    zonal: bool,
    version: str,
    jurisdiction: Callable[[str], str | None],
) -> list[Offer]:
    """Return the offers of catalog rows the subscription can create.

    Args:
        rows: Catalog rows in scope.
        skus: Region → lower-case size → SKU facts.
        prices: Live prices by ``(region, size)``.
        fleet_name: Fleet provider name.
        zonal: One offer per unrestricted zone instead of one per region.
        version: Catalog version the offers carry.
        jurisdiction: Region → jurisdiction.

    Returns:
        The offers, in row order.
    """
    out: list[Offer] = []
    for row in rows:
        sku = skus.get(row.region, {}).get(row.instance_type.lower())
        live = prices.get((row.region, row.instance_type))
        price = live.price if live and live.price is not None else row.price
        spot = live.spot_price if live and live.spot_price is not None else row.spot_price
        if sku is None or sku.restricted or (price is None and spot is None):
            continue
        zones: Sequence[str | None] = [None]
        if zonal and sku.zonal_region:
            zones = [f"{row.region}-{z}" for z in sku.zones]
        out += [
            Offer(
                provider=fleet_name,
                region=row.region,
                zone=zone,
                instance_type=row.instance_type,
                accelerator=row.accelerator,
                count=row.count,
                price=price,
                spot_price=spot,
                jurisdiction=jurisdiction(row.region),
                catalog_version=version,
            )
            for zone in zones
        ]
    return out
