"""Small builders for tests: a job, an offer, a launch spec or a fleet in one line.

Defaults stand for every field a test does not name.
"""

from __future__ import annotations

from typing import Any

from multicloud.models import Fleet, Job
from multicloud.provider import LaunchSpec, MarketKind, Offer


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


def launch_spec(
    job: str = "job-1",
    *,
    nodes: int = 1,
    market: MarketKind = MarketKind.ON_DEMAND,
    **fields: Any,
) -> LaunchSpec:
    """Build what an adapter is asked to launch; defaults: attempt 1, an image and a command.

    Args:
        job: Job id, also the job's name unless ``job_name`` is given.
        nodes: Nodes in the gang.
        market: Market to launch in.
        **fields: Other :class:`~multicloud.provider.LaunchSpec` fields (``install_id``,
            ``command``, ``env``, ``secrets``, ...).

    Returns:
        The launch spec.
    """
    values: dict[str, Any] = {
        "job_name": job,
        "attempt": 1,
        "image": "ghcr.io/acme/train:1",
        "command": "python train.py",
    }
    values.update(fields)
    return LaunchSpec(job_id=job, nodes=nodes, market=market, **values)


def fleet(*providers: str, **fields: Any) -> Fleet:
    """Build a fleet of empty ``sim`` providers plus the given fields.

    Args:
        *providers: Fleet provider names.
        **fields: Fleet fields (``contracts``, ``budgets``, ...).

    Returns:
        The validated fleet.
    """
    return Fleet.model_validate({"providers": {p: {"adapter": "sim"} for p in providers}, **fields})


def commitment(provider: str = "aws", *, spent_usd: float = 0.0, **fields: Any) -> dict[str, Any]:
    """A committed-spend contract of $1M over 2026 at 5 % tolerance, as a ``contracts`` doc.

    With nothing spent it is behind its linear schedule all year, so ``provider``'s offers
    rank 5 % under their price (they are still billed at the price).

    Args:
        provider: The committed provider.
        spent_usd: Spent so far (near $1M: on schedule, no preference).
        **fields: Other fields of the commitment (``tolerance``, ``start``, ...).

    Returns:
        ``{"commitments": [...]}``, for a snapshot's or fleet's ``contracts``.
    """
    return {
        "commitments": [
            {
                "name": "c",
                "provider": provider,
                "total_usd": 1e6,
                "spent_usd": spent_usd,
                "start": "2026-01-01T00:00:00Z",
                "end": "2027-01-01T00:00:00Z",
                "tolerance": 0.05,
                **fields,
            }
        ]
    }


def one_offer_fleet_doc(time_scale: float, capacity: int = 4) -> dict[str, Any]:
    """The document of a fleet of one simulated cloud selling one H100×8 type in one region.

    What the service's tests run jobs on: ``cloud``, region ``r1``, ``h100x8`` at $10/h.

    Args:
        time_scale: Seconds one hour of a job's duration takes.
        capacity: Nodes the region has.

    Returns:
        The fleet document (as a fleet file holds it).
    """
    h100 = {"region": "r1", "instance_type": "h100x8", "accelerator": "H100", "count": 8}
    offers = [{**h100, "price": 10.0, "capacity": capacity}]
    return {"providers": {"cloud": {"adapter": "sim", "offers": offers}}, "time_scale": time_scale}
