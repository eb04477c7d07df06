"""Plan a small workload against AWS: the real adapter's offers when credentials exist.

Run: ``.venv/bin/python examples/aws_plan.py [region-glob ...]`` (default: ``us-*``)

With AWS credentials (environment, profile, SSO, IRSA/Pod Identity, instance profile), the
fleet entry uses the ``aws`` adapter (``pip install ./adapters/aws``): catalog prices narrowed by
what each zone really offers, plus the account's capacity reservations and Capacity Blocks.
Planning only reads (``offers``); nothing is launched. Without credentials — or without the
adapter installed — it says so and plans the very same jobs against the ``sim`` provider priced
from the shipped catalog, so the script always runs and the job file never changes.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from multicloud.errors import ProviderError, ProviderNotFoundError
from multicloud.fleet import plan_fleet
from multicloud.models import Fleet
from multicloud.specs import check_against_fleet, parse_fleet, parse_jobs

JOBS = """
jobs:
  - name: finetune-8b
    kind: training
    priority: 50
    resources: {accelerator: H100, count: 8, nodes: 2}
    duration_hours: 12
    run:
      image: ghcr.io/example/trainer:2026.11
      command: python -m train --config configs/8b.yaml
      secrets: [prod/wandb-api-key]
  - name: eval-sweep
    kind: training
    priority: 20
    resources: {accelerator: L4, count: 1, nodes: 4}
    duration_hours: 3
"""


def _fleet(adapter: str, regions: Sequence[str]) -> Fleet:
    extra = "    catalog: builtin\n" if adapter == "sim" else ""
    text = (
        f"providers:\n  aws:\n    adapter: {adapter}\n    regions: [{', '.join(regions)}]\n{extra}"
    )
    return parse_fleet(text, "<aws_plan>")


def _credentials_problem() -> str | None:
    """Say why the real adapter cannot be used here, or None when it can."""
    try:
        import boto3
    except ImportError:
        return "boto3 is not installed (pip install ./adapters/aws)"
    try:
        if boto3.Session().get_credentials() is None:
            return "no AWS credentials found in the standard chain"
    except Exception as exc:  # a broken profile is a reason to fall back, not to crash
        return f"AWS credentials unusable: {exc}"
    return None


def main(argv: Sequence[str]) -> None:
    """Plan the jobs on AWS, or on the simulated AWS when AWS cannot be reached.

    Args:
        argv: Region globs (default ``us-*``).
    """
    regions = list(argv) or ["us-*"]
    jobs = parse_jobs(JOBS, "<aws_plan jobs>")
    problem = _credentials_problem()
    plan = None
    source = "real AWS adapter (live offerings)"
    if problem is None:
        fleet = _fleet("aws", regions)
        try:
            check_against_fleet(jobs, fleet)
            plan = plan_fleet(jobs, fleet)
        except (ProviderError, ProviderNotFoundError) as exc:
            problem = f"the aws adapter could not list offers: {exc}"
    if plan is None:
        print(f"NOTE: {problem}; planning against the simulated 'sim' AWS instead.")
        source = "sim provider (shipped catalog prices)"
        fleet = _fleet("sim", regions)
        check_against_fleet(jobs, fleet)
        plan = plan_fleet(jobs, fleet)

    print(f"Planned {len(jobs)} jobs on {source}, regions {', '.join(regions)}:")
    for a in plan.placements:
        where = f"{a.offer.region}/{a.offer.zone or '-'}"
        print(
            f"  {a.job:<14} {where:<24} {a.offer.instance_type:<18} {a.nodes:>2} node(s) "
            f"{a.market.value:<9} ${a.cost:>10,.2f}  catalog {a.offer.catalog_version}"
        )
    for u in plan.unplaced:
        print(f"  {u.job:<14} QUEUED: {u.reason}")
    print(f"  {'total':<14} ${plan.total_cost:,.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
