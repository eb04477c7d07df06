"""Live GPU VM prices from the Cloud Billing Catalog API (off by default).

``GET {endpoint}/v1/services/6F81-5844-456A/skus`` (Compute Engine) lists public SKUs with
``description``, ``category.resourceGroup`` / ``usageType``, ``serviceRegions`` and
``pricingInfo[].pricingExpression.tieredRates[].unitPrice``. An accelerator-optimized VM's
hourly price is the sum of its parts, so a machine type is re-priced as::

    accelerators × GPU SKU + vCPUs × "<FAMILY> Instance Core" SKU + GiB × "<FAMILY> Instance Ram"

with vCPUs and memory taken from the live machine-type listing. A row whose parts are not all
found keeps its catalog price. TPU slices keep their catalog prices (the TPU SKUs are per
chip-hour under another service and are left to a later change).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "COMPUTE_SERVICE",
    "GPU_SKU_PATTERNS",
    "LivePrices",
    "fetch_skus",
    "parse_skus",
]

COMPUTE_SERVICE = "6F81-5844-456A"
"""Service id of Compute Engine in the Cloud Billing Catalog."""

GPU_SKU_PATTERNS: dict[str, str] = {
    "A100": r"\bA100 GPU\b",
    "A100-80GB": r"\bA100 80GB GPU\b",
    "H100": r"\bH100 80GB GPU\b",
    "H100-MEGA": r"\bH100 80GB Mega GPU\b",
    "H200": r"\bH200 141GB GPU\b",
    "B200": r"\bB200 GPU\b",
    "L4": r"\bL4 GPU\b",
}
"""SKU description pattern of each GPU model (Mega is its own SKU)."""

_MAX_PAGES = 50


@dataclass(frozen=True)
class LivePrices:
    """Unit prices per hour, keyed by ``(region, part, spot)``.

    ``part`` is a GPU key of :data:`GPU_SKU_PATTERNS`, or ``"<FAMILY>-core"`` /
    ``"<FAMILY>-ram"`` (per vCPU-hour / per GiB-hour) for a machine family such as ``A3``.

    Attributes:
        units: The unit prices.
        date: Date of the fetch (ISO 8601), recorded in the catalog version.
    """

    units: Mapping[tuple[str, str, bool], float]
    date: str

    def machine_price(
        self,
        *,
        region: str,
        instance_type: str,
        gpu: str,
        gpus: int,
        vcpus: int,
        memory_gib: float,
        spot: bool,
    ) -> float | None:
        """Return the live hourly price of one machine, or None if a part is missing."""
        family = instance_type.split("-", 1)[0].upper()
        parts = [
            (gpu, gpus),
            (f"{family}-core", vcpus),
            (f"{family}-ram", memory_gib),
        ]
        total = 0.0
        for part, amount in parts:
            unit = self.units.get((region, part, spot))
            if unit is None:
                return None
            total += unit * amount
        return round(total, 5)


def _unit_price(sku: Mapping[str, Any]) -> float | None:
    for info in sku.get("pricingInfo", ()) or ():
        rates = (info.get("pricingExpression") or {}).get("tieredRates") or []
        # The last tier is the price beyond any free tier.
        for rate in reversed(rates):
            money = rate.get("unitPrice") or {}
            units = float(money.get("units") or 0)
            nanos = float(money.get("nanos") or 0)
            if units or nanos:
                return units + nanos / 1e9
    return None


def _part(description: str, group: str) -> str | None:
    if group == "GPU":
        # Longest patterns first, so "H100 80GB Mega GPU" is not taken for "H100 80GB GPU".
        for key, pattern in sorted(GPU_SKU_PATTERNS.items(), key=lambda kv: -len(kv[1])):
            if re.search(pattern, description):
                return key
        return None
    match = re.search(r"\b([A-Z]\d) Instance (Core|Ram)\b", description)
    if match:
        return f"{match.group(1)}-{'core' if match.group(2) == 'Core' else 'ram'}"
    return None


def parse_skus(skus: Iterable[Mapping[str, Any]], date: str) -> LivePrices:
    """Turn Billing Catalog SKUs into unit prices.

    Args:
        skus: SKU objects as the API returns them.
        date: Date of the fetch.

    Returns:
        The unit prices found (on-demand ``OnDemand`` and spot ``Preemptible`` usage).
    """
    units: dict[tuple[str, str, bool], float] = {}
    for sku in skus:
        category = sku.get("category") or {}
        usage = category.get("usageType")
        if usage not in ("OnDemand", "Preemptible"):
            continue
        description = str(sku.get("description", ""))
        part = _part(description, str(category.get("resourceGroup", "")))
        price = _unit_price(sku)
        if part is None or price is None:
            continue
        for region in sku.get("serviceRegions", ()) or ():
            units[(str(region), part, usage == "Preemptible")] = price
    return LivePrices(units=units, date=date)


def fetch_skus(session: Any, endpoint: str, *, today: dt.date | None = None) -> LivePrices:
    """Fetch and parse every Compute Engine SKU, following pages (bounded).

    Args:
        session: A ``requests``-like session (an ``AuthorizedSession`` for real credentials).
        endpoint: Billing API base URL, e.g. ``https://cloudbilling.googleapis.com``.
        today: Date recorded on the prices (default: today, UTC).

    Returns:
        The unit prices.

    Raises:
        requests.HTTPError: If a page cannot be fetched (the caller translates it).
    """
    skus: list[Mapping[str, Any]] = []
    token = ""
    for _ in range(_MAX_PAGES):
        params = {"pageSize": "5000", **({"pageToken": token} if token else {})}
        response = session.get(
            f"{endpoint.rstrip('/')}/v1/services/{COMPUTE_SERVICE}/skus",
            params=params,
            timeout=30,
        )
        response.raise_for_status()
        body = response.json()
        skus.extend(body.get("skus", ()))
        token = body.get("nextPageToken") or ""
        if not token:
            break
    date = (today or dt.datetime.now(dt.timezone.utc).date()).isoformat()
    return parse_skus(skus, date)
