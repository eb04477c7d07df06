"""The ``multicloud`` command line: readable tables for people, ``--json`` for machines.

Every command either succeeds or exits with status 2 and one ``error: ...`` message on
stderr naming the file and field at fault (DESIGN.md §7). Tracebacks are for bugs, not for
bad input.
"""

from __future__ import annotations

import fnmatch
import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from multicloud import __version__
from multicloud import providers as registry
from multicloud.accelerators import canonical, suggest
from multicloud.catalog import CatalogRow, load_catalog
from multicloud.errors import MulticloudError, ProviderNotFoundError, SpecError
from multicloud.fleet import check_reservations, plan_fleet
from multicloud.models import Fleet, Job, Kind
from multicloud.planner import Assignment, Plan
from multicloud.provider import Provider
from multicloud.specs import check_against_fleet, load_fleet, load_jobs

__all__ = ["app", "main"]

app = typer.Typer(
    name="multicloud",
    help="Contract-aware scheduler that places AI training and inference jobs across clouds.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Tables are wide; when the output is not a terminal (a pipe, a file, a test) rich would
# otherwise fold them into 80 columns and make them unreadable.
_PIPE_WIDTH = 200


class _Exit2(Exception):
    """Bad input the CLI reports as one message and exit status 2."""


def _console(stderr: bool = False) -> Console:
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=stderr, highlight=False, width=_PIPE_WIDTH)
    return console


@contextmanager
def _reported() -> Iterator[None]:
    """Turn the errors bad input causes into ``error: ...`` on stderr and exit status 2."""
    try:
        yield
    except SpecError as err:
        _die(err.render())
    except (_Exit2, MulticloudError) as err:
        _die(str(err))


def _die(message: str) -> None:
    # Plain stderr write: rich markup in a user's file name must not be interpreted.
    sys.stderr.write(f"error: {message}\n")
    raise typer.Exit(2)


def _money(value: float | None) -> str:
    return "—" if value is None else f"${value:,.2f}"


def _parse_now(value: str | None) -> datetime:
    if value is None:
        return datetime.now(timezone.utc)
    text = value.strip()
    # Python 3.10's fromisoformat does not accept the "Z" suffix people usually write.
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise _Exit2(
            f"--now: not an ISO 8601 date-time: {value!r} (e.g. 2026-12-01T09:00:00Z)"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def _check_adapters(fleet: Fleet, source: str) -> dict[str, Provider]:
    """Build every provider of the fleet once, so that a bad entry names the fleet file.

    Args:
        fleet: The parsed fleet.
        source: The fleet file, for messages.

    Returns:
        The built providers, by fleet name (reused for planning).

    Raises:
        SpecError: If an entry's adapter is unknown or not installed, or its settings do
            not fit the adapter.
    """
    built: dict[str, Provider] = {}
    for name, cfg in fleet.providers.items():
        field = f"providers.{name}.adapter" if cfg.adapter else f"providers.{name}"
        try:
            built[name] = registry.from_fleet(fleet, name)
        except ProviderNotFoundError as err:
            raise SpecError(source, [(field, str(err))]) from None
        except SpecError as err:
            # The registry does not know the file name; re-home its problems here.
            raise SpecError(source, err.problems) from None
        except (TypeError, ValueError) as err:
            raise SpecError(source, [(f"providers.{name}", str(err))]) from None
    return built


def _load(
    jobs_file: Path, fleet_file: Path | None
) -> tuple[list[Job], Fleet, dict[str, Provider]]:
    from multicloud.demo import demo_paths

    fleet_path = fleet_file if fleet_file is not None else demo_paths()[1]
    jobs = load_jobs(jobs_file)
    fleet = load_fleet(fleet_path)
    check_against_fleet(jobs, fleet, str(jobs_file))
    providers = _check_adapters(fleet, str(fleet_path))
    check_reservations(fleet, providers, str(fleet_path))
    return jobs, fleet, providers


# ---- plan ------------------------------------------------------------------------------------


def _where(a: Assignment) -> str:
    o = a.offer
    if o.zone is None:
        return o.region
    # GCP zones already spell their region (us-central1-a); AWS zone ids do not (use1-az2).
    return o.zone if o.zone.startswith(o.region) else f"{o.region}/{o.zone}"


def _rofr_cell(a: Assignment) -> Text:
    if a.rofr is None:
        return Text("—", style="dim")
    style = "green" if a.rofr.outcome == "accepted" else "yellow"
    return Text(f"{a.rofr.outcome} ({a.rofr.holder})", style=style)


def _replicas_cell(a: Assignment, kinds: dict[str, Kind]) -> str:
    return str(a.replicas) if kinds.get(a.job) is Kind.INFERENCE else "—"


def _placements_table(plan: Plan, jobs: Sequence[Job]) -> Table:
    kinds = {j.name: j.kind for j in jobs}
    table = Table(title="Placements", title_justify="left", show_lines=False)
    for header, justify in (
        ("job", "left"),
        ("provider", "left"),
        ("region/zone", "left"),
        ("instance type", "left"),
        ("accel", "left"),
        ("nodes", "right"),
        ("replicas", "right"),
        ("market", "left"),
        ("$/h", "right"),
        ("cost", "right"),
        ("ROFR", "left"),
    ):
        table.add_column(header, justify=justify)  # type: ignore[arg-type]
    for a in plan.placements:
        o = a.offer
        table.add_row(
            a.job,
            o.provider,
            _where(a),
            o.instance_type,
            f"{o.accelerator}×{o.count}",
            str(a.nodes),
            _replicas_cell(a, kinds),
            a.market.value,
            _money(a.price_per_hour),
            _money(a.cost),
            _rofr_cell(a),
        )
    return table


def _unplaced_table(plan: Plan, explain: bool) -> Table:
    table = Table(title="Queued (not placed)", title_justify="left")
    table.add_column("job")
    table.add_column("reason")
    for u in plan.unplaced:
        reason = u.reason
        if explain and u.details:
            reason += "".join(f"\n  · {d}" for d in u.details)
        # Text, not str: planner reasons are data, never rich markup.
        table.add_row(u.job, Text(reason))
    return table


def _audit_table(plan: Plan, fleet: Fleet) -> Table:
    rofr = fleet.contracts.rofr
    title = "ROFR audit"
    if rofr is not None:
        terms = "match" if rofr.match else f"tolerance {rofr.tolerance:.0%}"
        title += f" (holders: {', '.join(rofr.holders)}; {terms}; scope {rofr.scope})"
    table = Table(title=title, title_justify="left")
    for header, justify in (
        ("job", "left"),
        ("holder", "left"),
        ("outside P $/h", "right"),
        ("holder $/h", "right"),
        ("answer", "left"),
        ("billed $/h", "right"),
        ("reason", "left"),
    ):
        table.add_column(header, justify=justify)  # type: ignore[arg-type]
    for e in plan.audit:
        style = "green" if e.answer == "accepted" else "yellow"
        table.add_row(
            e.job,
            e.holder,
            _money(e.outside_price_per_hour),
            _money(e.holder_price_per_hour),
            Text(e.answer, style=style),
            _money(e.billed_price_per_hour),
            Text(e.reason),
        )
    return table


def _summary(plan: Plan, jobs: Sequence[Job]) -> str:
    placed = len({a.job for a in plan.placements})
    stats = plan.stats
    if stats.path == "fast":
        how = "fast path (no contended capacity)"
    else:
        quality = "optimal" if stats.optimal else f"within {stats.mip_gap:.2%} of optimal"
        how = f"optimiser ({stats.optimizer_jobs} contended jobs, {quality})"
    return (
        f"[bold]Total cost: {_money(plan.total_cost)}[/bold]  ·  {placed} of {len(jobs)} jobs "
        f"placed, {len(plan.unplaced)} queued  ·  planned by the {how}"
    )


def _print_plan(
    console: Console, plan: Plan, jobs: Sequence[Job], fleet: Fleet, *, explain: bool
) -> None:
    console.print(_placements_table(plan, jobs))
    console.print()
    if explain:
        console.print("[bold]Why[/bold]")
        for a in plan.placements:
            head = f"{a.job} → {a.offer.provider}/{_where(a)} {a.offer.instance_type}"
            console.print(f"  {head}", markup=False)
            for reason in a.reasons:
                console.print(f"    · {reason}", markup=False)
        console.print()
    if plan.unplaced:
        console.print(_unplaced_table(plan, explain))
        console.print()
    if plan.audit:
        console.print(_audit_table(plan, fleet))
        console.print()
    elif fleet.contracts.rofr is None:
        console.print("[dim]No right of first refusal in this fleet: no ROFR audit.[/dim]")
    console.print(_summary(plan, jobs))
    console.print()


@app.command()
def plan(
    jobs_file: Annotated[
        Path,
        typer.Argument(
            metavar="JOBS.yaml",
            help="One job, a multi-document YAML of jobs, or a file with a top-level jobs: list.",
        ),
    ],
    fleet_file: Annotated[
        Path | None,
        typer.Option(
            "--fleet", "-f", metavar="FLEET.yaml", help="Fleet file (default: the demo fleet)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    explain: Annotated[
        bool, typer.Option("--explain", help="Show the reasons behind every decision.")
    ] = False,
    now: Annotated[
        str | None,
        typer.Option("--now", metavar="ISO8601", help="Plan as of this time (default: now, UTC)."),
    ] = None,
) -> None:
    """Plan jobs against a fleet offline and show where each one would go and why."""
    with _reported():
        when = _parse_now(now)
        jobs, fleet, providers = _load(jobs_file, fleet_file)
        result = plan_fleet(jobs, fleet, now=when, providers=providers)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    _print_plan(_console(), result, jobs, fleet, explain=explain)


# ---- offers ----------------------------------------------------------------------------------


def _per_accel(price: float | None, count: int) -> float | None:
    return None if price is None else price / count


def _offer_order(row: CatalogRow) -> tuple[Any, ...]:
    od = _per_accel(row.price, row.count)
    spot = _per_accel(row.spot_price, row.count)
    inf = float("inf")
    # Rows sold only on spot sort after every on-demand row, cheapest spot first among them.
    return (
        od is None,
        inf if od is None else od,
        inf if spot is None else spot,
        row.provider,
        row.region,
        row.zone or "",
        row.instance_type,
    )


def _offer_dict(row: CatalogRow) -> dict[str, Any]:
    per = _per_accel(row.price, row.count)
    return {
        "provider": row.provider,
        "region": row.region,
        "zone": row.zone,
        "instance_type": row.instance_type,
        "accelerator": row.accelerator,
        "count": row.count,
        "price": row.price,
        "spot_price": row.spot_price,
        "price_per_accelerator_hour": None if per is None else round(per, 4),
    }


@app.command()
def offers(
    accelerator: Annotated[
        str | None, typer.Option("--accelerator", "-a", help="Only this accelerator (any alias).")
    ] = None,
    provider: Annotated[
        str | None, typer.Option("--provider", "-p", help="Only this cloud (aws, gcp, azure, ...).")
    ] = None,
    region: Annotated[
        str | None, typer.Option("--region", "-r", metavar="GLOB", help="Region glob, e.g. 'us-*'.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", min=1, help="Show at most N offers.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the offers as JSON.")] = False,
) -> None:
    """List the shipped catalog's offers, cheapest per accelerator-hour first."""
    catalog = load_catalog()
    with _reported():
        wanted = None
        if accelerator is not None:
            try:
                wanted = canonical(accelerator)
            except ValueError as err:
                raise _Exit2(f"--accelerator: {err}") from None
        if provider is not None and provider not in catalog.providers():
            hint = suggest(provider, catalog.providers())
            tail = f"; did you mean '{hint}'?" if hint else ""
            raise _Exit2(
                f"--provider: no offers from '{provider}' in catalog {catalog.version}{tail} "
                f"(known: {', '.join(catalog.providers())})"
            )
    glob = region.lower() if region else None
    rows = [
        row
        for row in catalog.rows
        if (wanted is None or row.accelerator == wanted)
        and (provider is None or row.provider == provider)
        # Case-insensitive: CoreWeave spells its regions in capitals (US-EAST-04).
        and (glob is None or fnmatch.fnmatchcase(row.region.lower(), glob))
    ]
    rows.sort(key=_offer_order)
    matched = len(rows)
    if limit is not None:
        rows = rows[:limit]
    if as_json:
        typer.echo(json.dumps([_offer_dict(r) for r in rows], indent=2))
        return
    title = (
        f"Catalog {catalog.version} ({catalog.date}): {len(rows)} of {matched} matching offers, "
        "cheapest per accelerator-hour first"
    )
    table = Table(title=title, title_justify="left")
    for header, justify in (
        ("provider", "left"),
        ("region", "left"),
        ("zone", "left"),
        ("instance type", "left"),
        ("accel", "left"),
        ("count", "right"),
        ("$/h", "right"),
        ("spot $/h", "right"),
        ("$/accel-h", "right"),
    ):
        table.add_column(header, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(
            row.provider,
            row.region,
            row.zone or "—",
            row.instance_type,
            row.accelerator,
            str(row.count),
            _money(row.price),
            _money(row.spot_price),
            _money(_per_accel(row.price, row.count)),
        )
    _console().print(table)


# ---- schema, providers, version -------------------------------------------------------------


class SchemaKind(str, Enum):
    """Which file's JSON Schema to print."""

    JOB = "job"
    FLEET = "fleet"


@app.command()
def schema(
    kind: Annotated[SchemaKind, typer.Argument(help="job or fleet")],
) -> None:
    """Print the JSON Schema of a job spec or a fleet file (for editor validation)."""
    model = Job if kind is SchemaKind.JOB else Fleet
    typer.echo(json.dumps(model.model_json_schema(), indent=2))


@app.command("providers")
def providers_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """List the provider adapters this installation knows."""
    known = registry.available()
    if as_json:
        out = []
        for name, target in known.items():
            missing = target.startswith("not installed")
            out.append(
                {
                    "name": name,
                    "installed": not missing,
                    "target": None if missing else target,
                    "install": target.partition(": ")[2] if missing else None,
                }
            )
        typer.echo(json.dumps(out, indent=2))
        return
    table = Table(title="Provider adapters", title_justify="left")
    table.add_column("name")
    table.add_column("status")
    table.add_column("loaded from / install with")
    for name, target in known.items():
        if target.startswith("not installed"):
            table.add_row(name, Text("not installed", style="dim"), target.partition(": ")[2])
        else:
            table.add_row(name, Text("available", style="green"), target)
    _console().print(table)


@app.command()
def version() -> None:
    """Print the multicloud version and the shipped catalog's version."""
    catalog = load_catalog()
    typer.echo(f"multicloud {__version__} (catalog {catalog.version}, {catalog.date})")


# ---- demo ------------------------------------------------------------------------------------


@app.command()
def demo(
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    plan_only: Annotated[
        bool,
        typer.Option(
            "--plan-only", help="Only plan the demo workload (no Ray, a few seconds)."
        ),
    ] = False,
    address: Annotated[
        str | None,
        typer.Option("--address", help="Run on this Ray cluster (HOST:PORT) instead."),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for the demo jobs.")
    ] = 150.0,
) -> None:
    """Run the whole service on this machine: local Ray, the scheduler, four simulated clouds.

    Submits a week of a lab's queue (training gangs, inference services, small jobs that
    really run on the local Ray cluster), shows live progress with a capacity error and
    spot preemptions along the way, then the placements, the ROFR ledger and the cost
    against each cloud alone. No credentials, no network. ``--plan-only`` just plans.
    """
    if not plan_only:
        _live_demo(as_json=as_json, address=address, timeout=timeout)
        return
    from multicloud.demo import DEMO_NOW, demo_paths, single_cloud_baselines

    with _reported():
        jobs_path, fleet_path = demo_paths()
        jobs, fleet, providers = _load(jobs_path, fleet_path)
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

    console = _console()
    rofr = fleet.contracts.rofr
    console.print(
        f"[bold]multicloud demo[/bold]: {len(jobs)} jobs on {len(fleet.providers)} simulated "
        f"clouds ({', '.join(fleet.providers)}), catalog {load_catalog().version}, "
        f"planned as of {DEMO_NOW:%Y-%m-%d %H:%M} UTC (fixed demo time)"
    )
    if rofr is not None:
        terms = "matching" if rofr.match else f"within {rofr.tolerance:.0%}"
        console.print(
            f"Contracts: ROFR held by {', '.join(rofr.holders)} ({terms}), "
            f"{len(fleet.contracts.reservations)} reservation(s), "
            f"{len(fleet.contracts.commitments)} commitment(s)."
        )
    console.print(Text(f"Jobs: {jobs_path}\nFleet: {fleet_path}\n", style="dim"))
    _print_plan(console, result, jobs, fleet, explain=False)

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
        _money(result.total_cost),
        "—",
    )
    for b in baselines:
        table.add_row(
            f"{b.provider} only",
            f"{b.placed}/{len(jobs)}",
            _money(b.total_cost),
            _money(same_cost[b.provider]),
        )
    console.print(table)
    console.print(
        "[dim]A baseline that places fewer jobs is not comparable on total cost alone: compare "
        "its cost with the last column. Inference services with serving.spread ≥ 2 cannot be "
        "placed on one cloud at all.[/dim]"
    )


def _live_demo(*, as_json: bool, address: str | None, timeout: float) -> None:
    from multicloud.demo.live import live_fleet, print_live_report, run_live_demo

    console = _console(stderr=as_json)
    with _reported():
        result = run_live_demo(console, address=address, timeout=timeout)
    if as_json:
        doc = {
            "seconds": round(result.seconds, 2),
            "all_succeeded": result.ok,
            "jobs": result.jobs,
            "audit": result.audit,
            "logs": result.logs,
        }
        typer.echo(json.dumps(doc, indent=2))
    else:
        print_live_report(console, result, live_fleet())
    raise typer.Exit(0 if result.ok else 1)


# The service verbs register themselves on `app`; imported last because they use it.
from multicloud import cli_service  # noqa: E402, F401


def main() -> None:
    """Run the CLI (the ``multicloud`` console script)."""
    app()


if __name__ == "__main__":
    main()
