"""Small builders for tests: a job, an offer or a fleet in one line, defaults for the rest."""

from __future__ import annotations

from typing import Any

from multicloud.models import Fleet, Job
from multicloud.provider import Offer


def job(name: str = "j", **fields: Any) -> Job:
    """Build a job; keyword arguments override the defaults (1×H100, on-demand, 1 h).

    Shortcuts: ``accelerator``, ``count`` and ``nodes`` go into ``resources``; ``providers``,
    ``regions`` and ``residency`` go into ``placement``.

    Args:
        name: Job name.
        **fields: Job fields or shortcuts.

    Returns:
        The validated job.
    """
    resources = dict(fields.pop("resources", {}))
    for key in ("accelerator", "count", "nodes"):
        if key in fields:
            resources[key] = fields.pop(key)
    resources.setdefault("accelerator", "H100")
    placement = dict(fields.pop("placement", {}))
    for key in ("providers", "regions", "residency"):
        if key in fields:
            placement[key] = fields.pop(key)
    return Job.model_validate(
        {"name": name, "resources": resources, "placement": placement, **fields}
    )


def offer(provider: str = "aws", region: str = "us-east-1", **fields: Any) -> Offer:
    """Build an offer; defaults: one H100 node type at $10/h, unlimited capacity, US.

    Args:
        provider: Fleet provider name.
        region: Region.
        **fields: Offer fields to override.

    Returns:
        The offer.
    """
    values: dict[str, Any] = {
        "zone": None,
        "instance_type": f"{provider}-h100",
        "accelerator": "H100",
        "count": 8,
        "price": 10.0,
        "spot_price": None,
        "capacity": None,
        "jurisdiction": "US",
        "catalog_version": "test",
    }
    values.update(fields)
    return Offer(provider=provider, region=region, **values)


def fleet(*providers: str, **fields: Any) -> Fleet:
    """Build a fleet of empty ``sim`` providers plus the given fields.

    Args:
        *providers: Fleet provider names.
        **fields: Fleet fields (``contracts``, ``budgets``, ...).

    Returns:
        The validated fleet.
    """
    return Fleet.model_validate(
        {"providers": {p: {"adapter": "sim"} for p in providers}, **fields}
    )
