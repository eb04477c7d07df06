"""Live VM prices from the Azure Retail Prices API (public, unauthenticated REST).

``GET https://prices.azure.com/api/retail/prices?$filter=...`` answers
``{"Items": [...], "NextPageLink": "..." | null}``; each item is one meter, e.g.
``{"armSkuName": "Standard_ND96isr_H100_v5", "armRegionName": "eastus", "retailPrice": 98.32,
"unitOfMeasure": "1 Hour", "type": "Consumption", "skuName": "ND96isr H100 v5 Spot",
"productName": "NDsr H100 v5 Series"}``. Windows meters, Low Priority meters, meters priced at
zero or less and anything not billed per hour are ignored; Spot meters give the spot price.

Only the standard library is used, so the adapter adds no HTTP dependency for this.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from multicloud_azure.arm import TtlCache

__all__ = ["DEFAULT_RETAIL_PRICES_URL", "LivePrice", "LivePrices", "fetch_prices"]

log = logging.getLogger(__name__)

DEFAULT_RETAIL_PRICES_URL = "https://prices.azure.com/api/retail/prices"
"""The public endpoint of the Azure Retail Prices API."""

_MAX_PAGES = 50
# Keeps each $filter well under URL length limits.
_SKUS_PER_QUERY = 15


@dataclass(frozen=True, slots=True)
class LivePrice:
    """Hourly prices of one VM size in one region.

    Attributes:
        price: Pay-as-you-go USD per hour (Linux), None when no meter was found.
        spot_price: Spot USD per hour (Linux), None when no meter was found.
    """

    price: float | None = None
    spot_price: float | None = None


def _odata_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _filter(region: str, skus: Iterable[str], currency: str) -> str:
    names = " or ".join(f"armSkuName eq {_odata_quote(s)}" for s in skus)
    return (
        "serviceName eq 'Virtual Machines' and priceType eq 'Consumption' "
        f"and armRegionName eq {_odata_quote(region)} and ({names})"
    )


def _get_json(url: str, timeout: float) -> Mapping[str, Any]:
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https"):
        raise ValueError(f"retail prices URL must be http(s), got {url!r}")
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        doc = json.loads(response.read().decode("utf-8"))
    if not isinstance(doc, Mapping):
        raise ValueError("retail prices answer is not a JSON object")
    return doc


def _apply(item: Mapping[str, Any], found: dict[tuple[str, str], LivePrice]) -> None:
    if str(item.get("unitOfMeasure", "")) != "1 Hour":
        return
    if str(item.get("type", "Consumption")) != "Consumption":
        return
    sku_name = str(item.get("skuName", ""))
    product = str(item.get("productName", ""))
    if "Windows" in product or "Low Priority" in sku_name:
        return
    try:
        value = float(item["retailPrice"])
    except (KeyError, TypeError, ValueError):
        return
    if not math.isfinite(value) or value <= 0:
        # A $0 meter (a promotion, a placeholder for a size not yet billed) is no price: an
        # offer at 0 would win every plan. Leave it out, so the catalog price stays.
        return
    key = (str(item.get("armRegionName", "")), str(item.get("armSkuName", "")))
    old = found.get(key, LivePrice())
    if sku_name.endswith("Spot"):
        found[key] = LivePrice(old.price, value)
    else:
        found[key] = LivePrice(value, old.spot_price)


def fetch_prices(
    wanted: Mapping[str, Iterable[str]],
    *,
    url: str = DEFAULT_RETAIL_PRICES_URL,
    currency: str = "USD",
    timeout: float = 20.0,
) -> dict[tuple[str, str], LivePrice]:
    """Fetch the hourly Linux prices of some VM sizes.

    Args:
        wanted: VM size names by region.
        url: Endpoint of the Retail Prices API.
        currency: ISO currency code the prices are asked in.
        timeout: Seconds per HTTP request.

    Returns:
        ``(region, vm_size)`` → prices, for the sizes the API knows.

    Raises:
        OSError: If the endpoint cannot be reached (``urllib.error.URLError`` included).
        ValueError: If an answer is not the expected JSON.
    """
    found: dict[tuple[str, str], LivePrice] = {}
    for region, skus in sorted(wanted.items()):
        names = sorted(set(skus))
        for start in range(0, len(names), _SKUS_PER_QUERY):
            query = urllib.parse.urlencode(
                {
                    "currencyCode": currency,
                    "$filter": _filter(region, names[start : start + _SKUS_PER_QUERY], currency),
                }
            )
            next_url: str | None = f"{url}?{query}"
            pages = 0
            while next_url and pages < _MAX_PAGES:
                doc = _get_json(next_url, timeout)
                pages += 1
                items = doc.get("Items") or []
                if not isinstance(items, list):
                    raise ValueError("retail prices answer has no Items list")
                for item in items:
                    if isinstance(item, Mapping):
                        _apply(item, found)
                link = doc.get("NextPageLink")
                next_url = str(link) if link else None
    return found


class LivePrices:
    """Retail prices of the in-scope sizes, fetched at most once per ``ttl_s``, versioned.

    Args:
        url: Endpoint of the Retail Prices API.
        ttl_s: How long one fetch is reused.
        catalog_version: Version of the shipped catalog (the fallback prices).
    """

    def __init__(self, url: str, ttl_s: float, catalog_version: str) -> None:
        self.url = url
        self._catalog_version = catalog_version
        self._cache: TtlCache[tuple[dict[tuple[str, str], LivePrice], str]] = TtlCache(ttl_s)

    def get(
        self, wanted: Mapping[str, Iterable[str]]
    ) -> tuple[Mapping[tuple[str, str], LivePrice], str]:
        """Return ``(region, size)`` → prices, and the version the offers carry.

        Args:
            wanted: Every in-scope size by region (one fetch then serves every request).

        Returns:
            The prices (empty when the API could not be read: catalog prices are a fine
            fallback) and ``<catalog>+azure-live-<date>`` (or the catalog's version).
        """

        def load() -> tuple[dict[tuple[str, str], LivePrice], str]:
            try:
                found = fetch_prices(wanted, url=self.url)
            except (OSError, ValueError) as exc:
                log.warning("Azure retail prices unavailable, using the catalog: %s", exc)
                return {}, self._catalog_version
            date = dt.datetime.now(dt.timezone.utc).date().isoformat()
            return found, f"{self._catalog_version}+azure-live-{date}" if found else ""

        prices, version = self._cache.get("prices", load)
        return prices, version or self._catalog_version
