"""The offline verbs: ``plan``, ``offers``, ``schema``, ``providers``, ``version``."""

from __future__ import annotations

import fnmatch
import json
import os
import sys
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from multicloud import __version__, gcpause
from multicloud import providers as registry
from multicloud.accelerators import canonical, suggest
from multicloud.catalog import CatalogRow, load_catalog
from multicloud.cli.app import Exit2, app, console, leave, load, money, parse_now, reported
from multicloud.cli.plantext import plan_chunks, plan_json
from multicloud.fleet import plan_fleet
from multicloud.models import Fleet, Job, Kind
from multicloud.planner import Assignment, Plan

# rich is imported by the functions that print with it: `plan --json` prints none.
if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

__all__ = ["echo_plan_json", "plan_json", "print_plan"]


def _where(a: Assignment) -> str:
    o = a.offer
    if o.zone is None:
        return o.region
    # GCP zones already spell their region (us-central1-a); AWS zone ids do not (use1-az2).
    return o.zone if o.zone.startswith(o.region) else f"{o.region}/{o.zone}"


def _rofr_cell(a: Assignment) -> Text:
    from rich.text import Text

    if a.rofr is None:
        return Text("—", style="dim")
    style = "green" if a.rofr.outcome == "accepted" else "yellow"
    return Text(f"{a.rofr.outcome} ({a.rofr.holder})", style=style)


def _replicas_cell(a: Assignment, kinds: dict[str, Kind]) -> str:
    return str(a.replicas) if kinds.get(a.job) is Kind.INFERENCE else "—"


def _placements_table(plan: Plan, jobs: Sequence[Job]) -> Table:
    from rich.table import Table

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
            money(a.price_per_hour),
            money(a.cost),
            _rofr_cell(a),
        )
    return table


def _unplaced_table(plan: Plan, explain: bool) -> Table:
    from rich.table import Table
    from rich.text import Text

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
    from rich.table import Table
    from rich.text import Text

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
            money(e.outside_price_per_hour),
            money(e.holder_price_per_hour),
            Text(e.answer, style=style),
            money(e.billed_price_per_hour),
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
        f"[bold]Total cost: {money(plan.total_cost)}[/bold]  ·  {placed} of {len(jobs)} jobs "
        f"placed, {len(plan.unplaced)} queued  ·  planned by the {how}"
    )


def print_plan(
    out: Console, plan: Plan, jobs: Sequence[Job], fleet: Fleet, *, explain: bool
) -> None:
    out.print(_placements_table(plan, jobs))
    out.print()
    if explain:
        out.print("[bold]Why[/bold]")
        for a in plan.placements:
            head = f"{a.job} → {a.offer.provider}/{_where(a)} {a.offer.instance_type}"
            out.print(f"  {head}", markup=False)
            for reason in a.reasons:
                out.print(f"    · {reason}", markup=False)
        out.print()
    if plan.unplaced:
        out.print(_unplaced_table(plan, explain))
        out.print()
    if plan.audit:
        out.print(_audit_table(plan, fleet))
        out.print()
    elif fleet.contracts.rofr is None:
        out.print("[dim]No right of first refusal in this fleet: no ROFR audit.[/dim]")
    out.print(_summary(plan, jobs))
    out.print()


def _is_os_stream(stream: Any) -> bool:
    """Whether ``stream`` writes to a file descriptor (not an in-memory capture)."""
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return False
    return True


def echo_plan_json(plan: Plan) -> None:
    """Print the plan as ``multicloud plan --json`` does (see :mod:`.plantext`).

    Args:
        plan: The plan.
    """
    # The rows and the text are built, printed and dropped: nothing for the collector
    # to find in them, and a 20,000-job plan has 40,000 rows. Bytes go to the binary
    # stream as they are (JSON is UTF-8 whatever the terminal's locale), piece by piece:
    # joined whole, 17 MB would be copied twice more.
    if sys.stdout is None:  # stdout closed: nothing to print to (as click's echo does)
        return
    with gcpause.paused():
        chunks = plan_chunks(plan)
        out = getattr(sys.stdout, "buffer", None)
        if out is None or not _is_os_stream(sys.stdout):
            # A stdout of the process itself (redirected in-process: a StringIO, or a test
            # runner's capture, whose combined output sees only what goes through the text
            # layer) gets the text.
            sys.stdout.write(b"".join(chunks).decode("utf-8") + "\n")
            return
        try:
            sys.stdout.flush()
            out.writelines(chunks)
            out.write(b"\n")
            out.flush()
        except BrokenPipeError:
            # The reader stopped (``| head``): not an error, as with the echo before.
            # Python's exit flushes stdout again; pointed at devnull it has nothing to
            # write (the way the Python docs give for a closed pipe).
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


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
    with reported():
        when = parse_now(now)
        jobs, fleet, providers = load(jobs_file, fleet_file)
        # logging and the status line: imported here, not by every command line
        from multicloud.cli.progress import progress

        with progress(len(jobs)):
            result = plan_fleet(jobs, fleet, now=when, providers=providers)
    if as_json:
        echo_plan_json(result)
    else:
        print_plan(console(), result, jobs, fleet, explain=explain)
    # Printed: the jobs and the plan need not be freed one by one (a tenth of a second
    # for 20,000 jobs), nor the rest of the process.
    leave(0)


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
    from rich.table import Table

    catalog = load_catalog()
    with reported():
        wanted = None
        if accelerator is not None:
            try:
                wanted = canonical(accelerator)
            except ValueError as err:
                raise Exit2(f"--accelerator: {err}") from None
        if provider is not None and provider not in catalog.providers():
            hint = suggest(provider, catalog.providers())
            tail = f"; did you mean '{hint}'?" if hint else ""
            raise Exit2(
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
            money(row.price),
            money(row.spot_price),
            money(_per_accel(row.price, row.count)),
        )
    console().print(table)


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
    from rich.table import Table
    from rich.text import Text

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
    console().print(table)


@app.command()
def version() -> None:
    """Print the multicloud version and the shipped catalog's version."""
    catalog = load_catalog()
    typer.echo(f"multicloud {__version__} (catalog {catalog.version}, {catalog.date})")
