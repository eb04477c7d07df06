"""Offers: the shipped catalog's Azure rows, narrowed by what the subscription can create.

A size the region's resource SKUs do not list, or list with a ``Location`` restriction
(``NotAvailableForSubscription``, ``QuotaId``), is dropped; with ``zonal`` every zone the SKU
is not restricted in gets its own offer (``eastus-1`` …). Live retail prices, when given,
replace the catalog's where they exist.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from multicloud.catalog import CatalogRow
from multicloud.provider import Offer
from multicloud_azure.arm import Sku
from multicloud_azure.pricing import LivePrice

__all__ = ["narrow"]


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
