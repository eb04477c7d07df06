"""What does the right of first refusal cost? Plan the same jobs under three ROFR terms.

Run: ``.venv/bin/python examples/rofr_what_if.py``

The demo fleet gives Azure a right of first refusal. This plans the demo workload with the
holder accepting only when its price is no higher than the best outside offer (tolerance 0),
within 10% of it (the demo's terms), and when it must match the outside price (match: true),
then prints who hosts what and the total cost under each.
"""

from __future__ import annotations

from multicloud.demo import DEMO_NOW, demo_paths
from multicloud.fleet import plan_fleet
from multicloud.models import Fleet, Rofr
from multicloud.planner import Plan
from multicloud.specs import load_fleet, load_jobs


def with_terms(fleet: Fleet, *, tolerance: float, match: bool) -> Fleet:
    """Return the fleet with its ROFR terms replaced.

    Args:
        fleet: A fleet with a ROFR.
        tolerance: New price tolerance.
        match: Whether the holder matches the outside price.

    Returns:
        The changed fleet.

    Raises:
        ValueError: If the fleet has no ROFR.
    """
    rofr = fleet.contracts.rofr
    if rofr is None:
        raise ValueError("the fleet has no right of first refusal")
    terms = Rofr.model_validate({**rofr.model_dump(), "tolerance": tolerance, "match": match})
    contracts = fleet.contracts.model_copy(update={"rofr": terms})
    return fleet.model_copy(update={"contracts": contracts})


def who_got_what(plan: Plan) -> dict[str, str]:
    """Map each job to the providers hosting it (``a+b`` for a service on two clouds)."""
    out: dict[str, list[str]] = {}
    for a in plan.placements:
        hosts = out.setdefault(a.job, [])
        if a.offer.provider not in hosts:
            hosts.append(a.offer.provider)
    return {job: "+".join(hosts) for job, hosts in out.items()}


def main() -> None:
    """Plan the demo workload under three ROFR terms and compare."""
    jobs_path, fleet_path = demo_paths()
    jobs = load_jobs(jobs_path)
    fleet = load_fleet(fleet_path)
    variants = {
        "tolerance 0": with_terms(fleet, tolerance=0.0, match=False),
        "tolerance 10%": with_terms(fleet, tolerance=0.10, match=False),
        "match": with_terms(fleet, tolerance=0.0, match=True),
    }
    plans = {name: plan_fleet(jobs, f, now=DEMO_NOW) for name, f in variants.items()}
    hosts = {name: who_got_what(p) for name, p in plans.items()}

    width = max(len(j.name) for j in jobs)
    print(f"{'job':<{width}}  " + "  ".join(f"{name:<24}" for name in variants))
    for job in jobs:
        cells = [hosts[name].get(job.name, "(queued)") for name in variants]
        print(f"{job.name:<{width}}  " + "  ".join(f"{c:<24}" for c in cells))
    print()
    for name, plan in plans.items():
        holder_cost = sum(
            a.cost for a in plan.placements if a.rofr and a.offer.provider == a.rofr.holder
        )
        accepted = sum(1 for e in plan.audit if e.answer == "accepted")
        print(
            f"{name:<14} total ${plan.total_cost:>11,.2f}   holder accepted {accepted:>2} of "
            f"{len(plan.audit):>2} offers, billed ${holder_cost:>11,.2f}"
        )


if __name__ == "__main__":
    main()
