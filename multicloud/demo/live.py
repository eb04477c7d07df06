"""``multicloud demo``: the whole service, end to end, on this machine.

A local Ray cluster, the scheduler actor, five simulated clouds priced from the shipped
catalog (with capacity limits, one injected capacity error and spot preemptions) and the
``local`` provider, which really runs a few small jobs. One simulated hour lasts half a
second, so a week of a lab's queue plays out in about a minute.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from multicloud.demo import demo_paths, single_cloud_baselines
from multicloud.models import Fault, FaultKind, Fleet, Job, ProviderConfig
from multicloud.service.views import STATE_STYLE, JobView
from multicloud.specs import load_fleet, load_jobs

if TYPE_CHECKING:
    from multicloud.planner.types import AuditEntry

__all__ = ["DEMO_TIME_SCALE", "LiveDemoResult", "live_fleet", "live_jobs", "run_live_demo"]

DEMO_TIME_SCALE = 0.5
"""Wall seconds per simulated hour in the live demo."""

_TERMINAL = {"succeeded", "failed", "cancelled"}


def live_fleet() -> Fleet:
    """The demo fleet, set up to show what the scheduler copes with.

    Returns:
        The shipped demo fleet with simulated time (1 h = 0.5 s), a capacity error on AWS
        us-west-2, one spot preemption on each of AWS, GCP and CoreWeave, and the ``local``
        provider.
    """
    fleet = load_fleet(demo_paths()[1])
    providers = dict(fleet.providers)
    providers["aws"] = providers["aws"].model_copy(
        update={
            "faults": (
                Fault(kind=FaultKind.CAPACITY, region="us-west-2", times=1),
                Fault(kind=FaultKind.PREEMPTION, times=1, after_hours=1.0),
            )
        }
    )
    providers["gcp"] = providers["gcp"].model_copy(
        update={"faults": (Fault(kind=FaultKind.PREEMPTION, times=1, after_hours=1.0),)}
    )
    providers["coreweave"] = providers["coreweave"].model_copy(
        update={"faults": (Fault(kind=FaultKind.PREEMPTION, times=1, after_hours=1.0),)}
    )
    providers["local"] = ProviderConfig(adapter="local", options={"slots": 2})
    return fleet.model_copy(update={"providers": providers, "time_scale": DEMO_TIME_SCALE})


def live_jobs() -> list[Job]:
    """The demo workload plus the small jobs the local provider really runs."""
    jobs_path = demo_paths()[0]
    return [*load_jobs(jobs_path), *load_jobs(jobs_path.with_name("local-jobs.yaml"))]


@dataclass
class LiveDemoResult:
    """What the live demo ended with.

    Attributes:
        jobs: Every job, as ``status`` shows it.
        audit: ROFR ledger lines.
        logs: Output of the local jobs, by job name.
        seconds: Wall time from submission to the last job's end.
        ok: Every job succeeded.
    """

    jobs: list[JobView]
    audit: list[AuditEntry]
    logs: dict[str, str]
    seconds: float
    ok: bool


def _progress(jobs: list[JobView], started: float) -> Group:
    counts = Counter(j.state for j in jobs)
    head = Text(f"{time.monotonic() - started:5.1f} s  ", style="bold")
    for state in ("pending", "placed", "provisioning", "running", "succeeded", "failed"):
        if counts.get(state):
            head.append(f"{counts[state]} {state}  ", style=STATE_STYLE[state])
    table = Table(box=None, pad_edge=False, show_header=True, header_style="dim")
    for column in ("job", "state", "where", "history"):
        table.add_column(column)
    for j in jobs:
        table.add_row(
            j.name,
            Text(j.state, style=STATE_STYLE.get(j.state, "")),
            f"{j.provider}/{j.region} {j.instance_type}" if j.provider else "—",
            _history(j),
        )
    return Group(head, table)


def _history(job: JobView) -> str:
    by_attempt: dict[int, str] = {}
    for a in job.attempts:
        by_attempt[a.attempt] = a.outcome or "live"
    return " → ".join(by_attempt.values())


def run_live_demo(
    console: Console,
    *,
    address: str | None = None,
    timeout: float = 150.0,
) -> LiveDemoResult:
    """Run the live demo and print it.

    Args:
        console: Where to print.
        address: A Ray cluster to use (None: the local one ``multicloud start`` left
            running, else a new local one, stopped at the end).
        timeout: Seconds to wait for the jobs.

    Returns:
        The result.
    """
    import ray

    from multicloud.service.client import Client
    from multicloud.service.config import ServiceConfig
    from multicloud.service.control import start
    from multicloud.service.runtime import cluster_record, start_local_ray, stop_local_ray

    fleet = live_fleet()
    jobs = live_jobs()
    work = Path(tempfile.mkdtemp(prefix="multicloud-demo-"))
    namespace = f"multicloud-demo-{uuid.uuid4().hex[:6]}"
    started_ray = False
    actor = None
    try:
        if address is None:
            record = cluster_record()
            if record is None:
                with console.status("Starting a local Ray cluster (token auth on)…"):
                    record = start_local_ray()
                started_ray = True
            address = str(record["gcs_address"])
        config = ServiceConfig.build(
            fleet,
            fleet_source="demo fleet (+ faults, local provider, 1 h = 0.5 s)",
            store_url=f"sqlite:///{work / 'store.db'}",
            sim_state=str(work / "sim.jsonl"),
            local_logs=str(work / "logs"),
            settings={"status_interval_s": 0.25, "blocked_ttl_s": 10.0},
        )
        with console.status("Starting the scheduler actor…"):
            result = start(config, address=address, namespace=namespace)
        actor = ray.get_actor("scheduler", namespace=namespace)
        client = Client(actor)
        console.print(
            f"Ray at {result.address}; scheduler on {result.info['store']}; clouds: "
            f"{', '.join(fleet.providers)}; {len(jobs)} jobs "
            f"(1 simulated hour = {DEMO_TIME_SCALE} s)"
        )
        ids = client.submit_many(jobs)
        started = time.monotonic()
        deadline = started + timeout
        views = client.status()
        with Live(_progress(views, started), console=console, refresh_per_second=4) as live:
            while True:
                views = client.status()
                live.update(_progress(views, started))
                if all(v.state in _TERMINAL for v in views):
                    break
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.25)
        console.print()
        seconds = time.monotonic() - started
        by_id = {v.id: v for v in views}
        logs = {
            by_id[i].name: client.logs(i)
            for i, j in zip(ids, jobs, strict=True)
            if j.resources.accelerator == ("CPU",)
        }
        audit = client.audit()
        ok = all(v.state == "succeeded" for v in views)
        return LiveDemoResult(views, audit, logs, seconds, ok)
    finally:
        if actor is not None:
            ray.kill(actor, no_restart=True)
        if started_ray:
            ray.shutdown()
            with console.status("Stopping the local Ray cluster…"):
                stop_local_ray(timeout=5)
        shutil.rmtree(work, ignore_errors=True)


def print_live_report(console: Console, result: LiveDemoResult, fleet: Fleet) -> None:
    """Print what happened: placements, the incidents, the ROFR ledger, cost vs baselines.

    Args:
        console: Where to print.
        result: The live demo's result.
        fleet: The live fleet.
    """
    jobs = result.jobs
    durations = {j.name: j.duration_hours for j in live_jobs()}
    table = Table(title="Where each job ran", title_justify="left")
    for column in ("job", "kind", "state", "ran on", "market", "$/h", "cost", "attempts"):
        table.add_column(column, justify="right" if column in ("$/h", "cost") else "left")
    total = 0.0
    cost_by_name: dict[str, float] = {}
    for j in jobs:
        last = max((x.attempt for x in j.attempts), default=0)
        final = [a for a in j.attempts if a.attempt == last]
        rate = sum(a.price_per_hour for a in final)
        duration = durations.get(j.name, 0.0)
        cost = rate * duration
        cost_by_name[j.name] = cost
        total += cost if j.state == "succeeded" else 0.0
        where = (
            ", ".join(f"{a.provider}/{a.region} {a.instance_type}×{a.nodes}" for a in final) or "—"
        )
        markets = ", ".join(sorted({a.market for a in final})) or "—"
        table.add_row(
            j.name,
            j.kind,
            Text(j.state, style=STATE_STYLE.get(j.state, "")),
            where,
            markets,
            f"{rate:,.2f}",
            f"${cost:,.0f}",
            _history(j),
        )
    console.print(table)

    incidents = [
        (j.name, a) for j in jobs for a in j.attempts if a.outcome not in (None, "succeeded")
    ]
    if incidents:
        console.print("[bold]Along the way[/bold]")
        for name, a in incidents:
            console.print(
                f"  {name}: attempt {a.attempt} on {a.provider}/{a.region} ended "
                f"[magenta]{a.outcome}[/magenta] → re-placed"
            )

    audit = Table(title=f"ROFR ledger: {len(result.audit)} offer(s)", title_justify="left")
    for column in ("job", "holder", "P ($/h)", "holder ($/h)", "answer", "reason"):
        audit.add_column(column)
    names = {j.id: j.name for j in jobs}
    for e in result.audit:
        audit.add_row(
            names.get(e.job, e.job),
            e.holder,
            _price(e.outside_price_per_hour),
            _price(e.holder_price_per_hour),
            Text(e.answer, style="green" if e.answer == "accepted" else "yellow"),
            Text(e.reason),
        )
    console.print(audit)

    cloud_jobs = [j for j in live_jobs() if j.resources.accelerator != ("CPU",)]
    cloud_fleet = fleet.model_copy(
        update={"providers": {k: v for k, v in fleet.providers.items() if k != "local"}}
    )
    baselines = single_cloud_baselines(cloud_jobs, cloud_fleet, now=datetime.now(timezone.utc))
    base = Table(
        title="Cost against a single-cloud baseline (same jobs, same capacity, no ROFR)",
        title_justify="left",
    )
    for column in ("plan", "jobs placed", "total cost", "multicloud cost of the same jobs"):
        base.add_column(column, justify="left" if column == "plan" else "right")
    placed = sum(
        1 for j in jobs if j.state == "succeeded" and j.name in {c.name for c in cloud_jobs}
    )
    base.add_row(
        Text(f"multicloud (ran, {len(cloud_fleet.providers)} clouds)", style="bold"),
        f"{placed}/{len(cloud_jobs)}",
        f"${total:,.0f}",
        "—",
    )
    for b in baselines:
        same = sum(cost_by_name.get(name, 0.0) for name in {a.job for a in b.plan.placements})
        base.add_row(
            f"{b.provider} only",
            f"{b.placed}/{len(cloud_jobs)}",
            f"${b.total_cost:,.0f}",
            f"${same:,.0f}",
        )
    console.print(base)
    for name, text in result.logs.items():
        console.print(f"[bold]logs of {name}[/bold] (ran for real on the local Ray cluster):")
        console.print(Text(text.rstrip() or "(no output)", style="dim"))
    verdict = "all succeeded" if result.ok else "NOT all succeeded"
    console.print(
        f"{len(jobs)} jobs, {verdict}, in {result.seconds:.1f} s of wall time "
        f"({result.seconds / DEMO_TIME_SCALE:.0f} simulated hours)."
    )


def _price(value: float | None) -> str:
    return "—" if value is None else f"{value:,.2f}"
