"""What a node pool costs: the fleet's price card, else a preset's list prices; never a silent $0.

A Kubernetes cluster publishes no prices. The fleet entry's ``price_card`` says what a node
of a pool costs per hour, keyed by the pool's instance type, its label value or its
accelerator:

* a number: USD per node-hour — a rented cluster's contract price, or ``0`` written out for
  capacity whose cost the fleet does not want counted;
* ``{cost_usd, years, running_usd_per_hour}``: owned capacity at its amortised cost — the
  purchase price of one node spread over its service life (8,760 hours a year), plus what a
  node-hour of power, cooling and support costs.

A pool the card does not price takes the preset's list prices (CoreWeave's), else it is
left out of the offers with a logged reason: an unknown price is never read as free.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from multicloud.catalog import load_catalog
from multicloud_kubernetes.pools import NodePool

__all__ = ["PRICE_CARD", "parse_price_card", "price_of"]

PRICE_CARD = "price-card"
"""Catalog version of an offer priced from the fleet's price card."""
HOURS_PER_YEAR = 8760.0
_AMORTISED = frozenset({"cost_usd", "years", "running_usd_per_hour"})


def _number(key: str, field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"price_card[{key!r}]{field} must be a number of USD >= 0, got {value!r}")
    return float(value)


def parse_price_card(card: Mapping[str, Any] | None) -> dict[str, float]:
    """Validate the ``price_card`` option and reduce it to USD per node-hour by key.

    Args:
        card: Key → a number (USD per node-hour, 0 allowed) or ``{cost_usd, years,
            running_usd_per_hour}`` (owned capacity, amortised).

    Returns:
        Key → USD per node-hour.

    Raises:
        ValueError: A negative or non-numeric price, an unknown field, no service life.
    """
    out = {}
    for key, value in (card or {}).items():
        if isinstance(value, Mapping):
            unknown = set(value) - _AMORTISED
            if unknown or "cost_usd" not in value or "years" not in value:
                raise ValueError(f"price_card[{key!r}] takes cost_usd, years and optionally "
                                 f"running_usd_per_hour, got {sorted(value)}")
            cost = _number(key, ".cost_usd", value["cost_usd"])
            years = _number(key, ".years", value["years"])
            if years == 0:
                raise ValueError(f"price_card[{key!r}].years must be > 0")
            running = _number(key, ".running_usd_per_hour", value.get("running_usd_per_hour", 0))
            out[str(key)] = round(cost / (years * HOURS_PER_YEAR) + running, 4)
        else:
            out[str(key)] = _number(key, "", value)
    return out


def price_of(
    pool: NodePool, card: Mapping[str, float], list_prices: str | None
) -> tuple[float, str] | None:
    """Return a pool's USD per node-hour and the version of that price.

    Args:
        pool: The pool.
        card: The parsed price card, by instance type, label value or accelerator.
        list_prices: Catalog provider whose list prices apply to pools not on the card
            (per GPU × GPUs per node), or None.

    Returns:
        ``(price, version)``, or None when nothing prices the pool (it is then not
        offered: never at $0).
    """
    for key in (pool.instance_type, pool.value, pool.accelerator):
        if key in card:
            return card[key], PRICE_CARD
    if list_prices is None:
        return None
    catalog = load_catalog()
    rows = [
        r
        for r in catalog.rows
        if r.provider == list_prices and r.accelerator == pool.accelerator and r.price
    ]
    if not rows:
        return None
    # The pool's own region first; list prices are usually the same everywhere.
    row = next((r for r in rows if r.region == pool.region), rows[0])
    assert row.price is not None
    return round(row.price / row.count * pool.gpus, 4), catalog.version
