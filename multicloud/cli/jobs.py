"""The verbs that read and steer jobs: ``status``, ``wait``, ``cancel``, ``explain``,
``audit``, ``logs``. They print the service's typed views as tables, or their JSON form."""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, Annotated

import typer

from multicloud.cli.app import (
    Address,
    AsJson,
    Namespace,
    app,
    client,
    console,
    reported,
)

if TYPE_CHECKING:
    # The views pull in the store (SQLAlchemy): half a second that `plan` need not pay.
    from multicloud.service.views import JobView

__all__: list[str] = []


def _tally(states: dict[str, str]) -> str:
    """``3 running, 2 succeeded``: how many jobs are in each state."""
    counts = Counter(states.values())
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


def _where(job: JobView) -> str:
    last = job.last
    if last is None:
        return "—"
    return f"{last.provider}/{last.region}"


def _accelerators(job: JobView) -> str:
    last = job.last
    return "—" if last is None else f"{last.accelerator}×{last.count}"


@app.command()
def status(
    job: Annotated[str | None, typer.Argument(help="A job id (default: all jobs).")] = None,
    address: Address = "auto",
    namespace: Namespace = "multicloud",
    as_json: AsJson = False,
) -> None:
    """Show jobs: state, where they run, attempts; and who holds the store's lease."""
    from rich.table import Table
    from rich.text import Text

    with reported():
        service = client(address, namespace)
        jobs = service.status(job)
        lease = service.lease()
    if as_json:
        doc = {"jobs": [j.to_json() for j in jobs], "lease": lease.to_json()}
        typer.echo(json.dumps(doc, indent=2))
        return
    from multicloud.service.views import STATE_STYLE

    console().print(lease.describe(), markup=False)
    table = Table(title=f"{len(jobs)} job(s)", title_justify="left")
    columns = ("id", "name", "state", "where", "instance type", "accel", "attempts", "submitted")
    for column in columns:
        table.add_column(column)
    for j in jobs:
        table.add_row(
            j.id,
            j.name,
            Text(j.state, style=STATE_STYLE.get(j.state, "")),
            _where(j),
            j.instance_type or "—",
            _accelerators(j),
            str(len({a.attempt for a in j.attempts})),
            f"{j.submitted_at:%Y-%m-%d %H:%M:%S}",
        )
    console().print(table)


@app.command()
def wait(
    jobs: Annotated[list[str] | None, typer.Argument(help="Job ids (default: every job).")] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Give up after this many seconds.")
    ] = None,
    address: Address = "auto",
    namespace: Namespace = "multicloud",
    as_json: AsJson = False,
) -> None:
    """Wait for jobs to finish; exit 0 only if all succeeded (1 otherwise, or on timeout)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from multicloud.service.client import TERMINAL

    with reported():
        service = client(address, namespace)
        err = console(stderr=True)
        with Progress(
            TextColumn("[bold]waiting"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
            disable=as_json or not err.is_terminal,
        ) as progress:
            task = progress.add_task("", total=None)

            def update(states: dict[str, str]) -> None:
                done = sum(1 for s in states.values() if s in TERMINAL)
                progress.update(task, total=len(states), completed=done, description=_tally(states))

            states = service.wait(jobs or None, timeout=timeout, on_poll=update)
    ok = bool(states) and all(s == "succeeded" for s in states.values())
    if as_json:
        typer.echo(json.dumps({"jobs": states, "all_succeeded": ok}, indent=2))
    else:
        typer.echo(_tally(states) or "no jobs")
    raise typer.Exit(0 if ok else 1)


@app.command()
def cancel(
    job: Annotated[str, typer.Argument(help="The job id.")],
    address: Address = "auto",
    namespace: Namespace = "multicloud",
) -> None:
    """Cancel a job and terminate what it runs."""
    with reported():
        state = client(address, namespace).cancel(job)
    typer.echo(f"{job}: {state}")


@app.command()
def explain(
    job: Annotated[str, typer.Argument(help="The job id.")],
    address: Address = "auto",
    namespace: Namespace = "multicloud",
    as_json: AsJson = False,
) -> None:
    """Say why a job is where it is: decisions, lifecycle events, ROFR answers."""
    from rich.text import Text

    with reported():
        doc = client(address, namespace).explain(job)
    if as_json:
        typer.echo(json.dumps(doc.to_json(), indent=2))
        return
    out = console()
    j = doc.job
    out.print(f"[bold]{j.id}[/bold] {j.name}: {j.state} ({_where(j)})")
    for a in j.attempts:
        out.print(
            Text(
                f"  attempt {a.attempt}: {a.provider}/{a.region} {a.instance_type} "
                f"{a.accelerator}×{a.count} ×{a.nodes} {a.market} ${a.price_per_hour:,.2f}/h "
                f"(catalog {a.catalog_version or 'unknown'}) → {a.outcome or 'live'}"
            )
        )
    for d in doc.decisions:
        placed = (
            ", ".join(
                f"{p.provider}/{p.region} {p.instance_type} {p.accelerator}×{p.nodes}"
                for p in d.placement
            )
            or "not placed"
        )
        out.print(Text(f"  decision {d.at:%Y-%m-%d %H:%M:%S}: {placed}"))
        for reason in d.reasons:
            out.print(Text(f"    - {reason}", style="dim"))
    for e in doc.audit:
        out.print(
            Text(f"  ROFR {e.holder}: {e.answer} ({e.reason}); P = {e.outside_price_per_hour}")
        )
    for ev in doc.events:
        out.print(
            Text(f"  {ev.at:%Y-%m-%d %H:%M:%S} {ev.from_state or '—'} → {ev.to_state}: {ev.reason}")
        )


@app.command()
def audit(
    job: Annotated[str | None, typer.Option("--job", help="Only this job.")] = None,
    holder: Annotated[str | None, typer.Option("--holder", help="Only this holder.")] = None,
    address: Address = "auto",
    namespace: Namespace = "multicloud",
    as_json: AsJson = False,
) -> None:
    """Show the ROFR audit ledger: every offer to a holder and its answer."""
    from rich.table import Table
    from rich.text import Text

    with reported():
        lines = client(address, namespace).audit(job, holder)
    if as_json:
        typer.echo(json.dumps({"audit": [e.to_dict() for e in lines]}, indent=2))
        return
    table = Table(title=f"ROFR ledger: {len(lines)} offer(s)", title_justify="left")
    for column in ("at", "job", "holder", "P ($/h)", "holder ($/h)", "answer", "reason"):
        table.add_column(column)
    for e in lines:
        table.add_row(
            f"{e.at:%Y-%m-%d %H:%M:%S}" if e.at else "—",
            e.job,
            e.holder,
            "—" if e.outside_price_per_hour is None else f"{e.outside_price_per_hour:.2f}",
            "—" if e.holder_price_per_hour is None else f"{e.holder_price_per_hour:.2f}",
            Text(e.answer, style="green" if e.answer == "accepted" else "yellow"),
            Text(e.reason),
        )
    console().print(table)


@app.command()
def logs(
    job: Annotated[str, typer.Argument(help="The job id.")],
    address: Address = "auto",
    namespace: Namespace = "multicloud",
) -> None:
    """Print a job's output (kept by the local provider; clouds keep their own)."""
    with reported():
        text = client(address, namespace).logs(job)
    typer.echo(text, nl=False)
