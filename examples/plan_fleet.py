"""Plan the shipped demo workload from Python, with no credentials and no network.

Run: ``.venv/bin/python examples/plan_fleet.py``

It loads the demo job and fleet files, plans them with :func:`multicloud.fleet.plan_fleet`
(simulated clouds priced from the shipped catalog) and prints where each job goes, what it
costs, and how the spend splits across clouds.
"""

from __future__ import annotations

from collections import defaultdict

from multicloud.demo import DEMO_NOW, demo_paths
from multicloud.fleet import plan_fleet
from multicloud.specs import check_against_fleet, load_fleet, load_jobs


def main() -> None:
    """Plan the demo workload and print a summary."""
    jobs_path, fleet_path = demo_paths()
    jobs = load_jobs(jobs_path)
    fleet = load_fleet(fleet_path)
    check_against_fleet(jobs, fleet, str(jobs_path))

    # The demo fleet's reservation and commitment are dated, so plan at the demo's fixed time.
    plan = plan_fleet(jobs, fleet, now=DEMO_NOW)

    print(f"{len(jobs)} jobs, {len(fleet.providers)} simulated clouds, as of {DEMO_NOW:%Y-%m-%d}")
    print()
    for a in plan.placements:
        where = f"{a.offer.provider}/{a.offer.zone or a.offer.region}"
        rofr = f"  [ROFR {a.rofr.outcome} by {a.rofr.holder}]" if a.rofr else ""
        print(
            f"  {a.job:<22} {where:<28} {a.offer.instance_type:<26} {a.nodes:>3} node(s) "
            f"{a.market.value:<9} ${a.cost:>11,.2f}{rofr}"
        )
    for u in plan.unplaced:
        print(f"  {u.job:<22} QUEUED: {u.reason}")

    spend: dict[str, float] = defaultdict(float)
    for a in plan.placements:
        spend[a.offer.provider] += a.cost
    print()
    print("Spend by cloud:")
    for provider, cost in sorted(spend.items(), key=lambda kv: -kv[1]):
        share = cost / plan.total_cost if plan.total_cost else 0.0
        print(f"  {provider:<10} ${cost:>11,.2f}  {share:6.1%}")
    print(f"  {'total':<10} ${plan.total_cost:>11,.2f}")
    accepted = sum(1 for e in plan.audit if e.answer == "accepted")
    print(f"ROFR: {len(plan.audit)} offers to holders, {accepted} accepted")


if __name__ == "__main__":
    main()
