"""The shipped demo: a fleet of five simulated clouds and a realistic mixed workload.

``multicloud demo``, ``multicloud plan`` without ``--fleet`` and the examples use these
files; they need no credentials and no network, only the price catalog shipped in the
package.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

from multicloud.fleet import plan_fleet
from multicloud.models import Contracts, Fleet, Job
from multicloud.planner import Plan

__all__ = [
    "DEMO_NOW",
    "Baseline",
    "demo_paths",
    "single_cloud_baselines",
    "single_cloud_fleet",
]

DEMO_NOW = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
"""The demo's fixed planning time.

The demo fleet's reservation has a validity window and its commitment a spend schedule,
both read against "now"; a fixed time keeps the demo's output the same on every run.
"""


def demo_paths() -> tuple[Path, Path]:
    """Return the paths of the shipped demo job file and fleet file.

    Returns:
        ``(jobs.yaml, fleet.yaml)`` inside the installed package.

    Raises:
        FileNotFoundError: If the package was installed without its demo data.
    """
    root = resources.files(__name__)
    paths = (Path(str(root.joinpath("jobs.yaml"))), Path(str(root.joinpath("fleet.yaml"))))
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"demo file missing from the installed package: {path}")
    return paths


@dataclass(frozen=True)
class Baseline:
    """The same jobs planned on one cloud alone.

    Attributes:
        provider: The fleet provider kept.
        placed: Jobs placed.
        unplaced: Jobs that could not be placed on that cloud alone.
        total_cost: Total cost of the placed jobs.
        plan: The full plan.
    """

    provider: str
    placed: int
    unplaced: int
    total_cost: float
    plan: Plan


def single_cloud_fleet(fleet: Fleet, provider: str) -> Fleet:
    """Cut a fleet down to one provider, with that provider's own contracts but no ROFR.

    The provider keeps its capacity, its reservations and its commitments: a lab that only
    used that cloud would still have them. A right of first refusal makes no sense with
    only one cloud, so it is dropped.

    Args:
        fleet: The full fleet.
        provider: The fleet provider to keep.

    Returns:
        The single-cloud fleet.

    Raises:
        KeyError: If ``provider`` is not in the fleet.
    """
    if provider not in fleet.providers:
        raise KeyError(provider)
    contracts = Contracts(
        rofr=None,
        reservations=tuple(r for r in fleet.contracts.reservations if r.provider == provider),
        commitments=tuple(c for c in fleet.contracts.commitments if c.provider == provider),
    )
    return fleet.model_copy(
        update={"providers": {provider: fleet.providers[provider]}, "contracts": contracts}
    )


def single_cloud_baselines(
    jobs: Sequence[Job], fleet: Fleet, *, now: datetime | None = None
) -> list[Baseline]:
    """Plan the same jobs once per provider of the fleet, each on that provider alone.

    Args:
        jobs: Jobs in submission order.
        fleet: The full fleet.
        now: Planning time.

    Returns:
        One baseline per fleet provider, in fleet order.
    """
    out: list[Baseline] = []
    for name in fleet.providers:
        plan = plan_fleet(jobs, single_cloud_fleet(fleet, name), now=now)
        placed = len({a.job for a in plan.placements})
        out.append(Baseline(name, placed, len(plan.unplaced), plan.total_cost, plan))
    return out
