"""``multicloud demo``: the whole service on this machine, or just its plan."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from multicloud.catalog import load_catalog
from multicloud.cli.app import app, console, load, money, reported
from multicloud.cli.plan import print_plan
from multicloud.fleet import plan_fleet

__all__: list[str] = []


@app.command()
def demo(
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    plan_only: Annotated[
        bool,
        typer.Option("--plan-only", help="Only plan the demo workload (no Ray, a few seconds)."),
    ] = False,
    address: Annotated[
        str | None,
        typer.Option("--address", help="Run on this Ray cluster (HOST:PORT) instead."),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for the demo jobs.")
    ] = 150.0,
) -> None:
    """Run the whole service on this machine: local Ray, the scheduler, five simulated clouds.

    Submits a week of a lab's queue (training gangs, inference services, small jobs that
    really run on the local Ray cluster), shows live progress with a capacity error and
    spot preemptions along the way, then the placements, the ROFR ledger and the cost
    against each cloud alone. No credentials, no network. ``--plan-only`` just plans.
    """
    from rich.table import Table
    from rich.text import Text

    if not plan_only:
        _live_demo(as_json=as_json, address=address, timeout=timeout)
        return
    from multicloud.demo import DEMO_NOW, demo_paths, single_cloud_baselines

    with reported():
        jobs_path, fleet_path = demo_paths()
        jobs, fleet, providers = load(jobs_path, fleet_path)
        result = plan_fleet(jobs, fleet, now=DEMO_NOW, providers=providers)
        baselines = single_cloud_baselines(jobs, fleet, now=DEMO_NOW)
    cost_by_job: dict[str, float] = {}
    for a in result.placements:
        cost_by_job[a.job] = cost_by_job.get(a.job, 0.0) + a.cost
    placed = len(cost_by_job)
    # What the multicloud plan pays for the very jobs a baseline placed: the one cost figure
    # that compares like with like when the baseline placed fewer jobs.
    same_cost = {
        b.provider: sum(cost_by_job.get(j, 0.0) for j in {a.job for a in b.plan.placements})
        for b in baselines
    }
    rows = [
        {
            "provider": b.provider,
            "placed": b.placed,
            "unplaced": b.unplaced,
            "total_cost": round(b.total_cost, 4),
            "multicloud_cost_same_jobs": round(same_cost[b.provider], 4),
        }
        for b in baselines
    ]
    if as_json:
        doc = {
            "now": DEMO_NOW.isoformat(),
            "jobs": len(jobs),
            "plan": result.to_dict(),
            "baselines": rows,
        }
        typer.echo(json.dumps(doc, indent=2))
        return

    out = console()
    rofr = fleet.contracts.rofr
    out.print(
        f"[bold]multicloud demo[/bold]: {len(jobs)} jobs on {len(fleet.providers)} simulated "
        f"clouds ({', '.join(fleet.providers)}), catalog {load_catalog().version}, "
        f"planned as of {DEMO_NOW:%Y-%m-%d %H:%M} UTC (fixed demo time)"
    )
    if rofr is not None:
        terms = "matching" if rofr.match else f"within {rofr.tolerance:.0%}"
        out.print(
            f"Contracts: ROFR held by {', '.join(rofr.holders)} ({terms}), "
            f"{len(fleet.contracts.reservations)} reservation(s), "
            f"{len(fleet.contracts.commitments)} commitment(s)."
        )
    out.print(Text(f"Jobs: {jobs_path}\nFleet: {fleet_path}\n", style="dim"))
    print_plan(out, result, jobs, fleet, explain=False)

    table = Table(
        title="Cost against a single-cloud baseline (same jobs, same capacity, no ROFR)",
        title_justify="left",
    )
    table.add_column("plan")
    table.add_column("jobs placed", justify="right")
    table.add_column("total cost", justify="right")
    table.add_column("multicloud cost of the same jobs", justify="right")
    table.add_row(
        Text(f"multicloud (all {len(fleet.providers)})", style="bold"),
        f"{placed}/{len(jobs)}",
        money(result.total_cost),
        "—",
    )
    for b in baselines:
        table.add_row(
            f"{b.provider} only",
            f"{b.placed}/{len(jobs)}",
            money(b.total_cost),
            money(same_cost[b.provider]),
        )
    out.print(table)
    out.print(
        "[dim]A baseline that places fewer jobs is not comparable on total cost alone: compare "
        "its cost with the last column. Inference services with serving.spread ≥ 2 cannot be "
        "placed on one cloud at all.[/dim]"
    )


def _live_demo(*, as_json: bool, address: str | None, timeout: float) -> None:
    from multicloud.demo.live import live_fleet, print_live_report, run_live_demo

    out = console(stderr=as_json)
    with reported():
        result = run_live_demo(out, address=address, timeout=timeout)
    if as_json:
        doc = {
            "seconds": round(result.seconds, 2),
            "all_succeeded": result.ok,
            "jobs": [j.to_json() for j in result.jobs],
            "audit": [e.to_dict() for e in result.audit],
            "logs": result.logs,
        }
        typer.echo(json.dumps(doc, indent=2))
    else:
        print_live_report(out, result, live_fleet())
    raise typer.Exit(0 if result.ok else 1)


# The service verbs register themselves on `app`; imported last because they use it.
