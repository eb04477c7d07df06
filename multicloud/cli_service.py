"""The service verbs of the CLI: start, stop, submit, status, wait, cancel, explain, audit, logs.

Registered on the app of :mod:`multicloud.cli`; kept apart because they talk to a running
scheduler on Ray while the planning verbs there work offline.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from multicloud.cli import _check_adapters, _console, _reported, app
from multicloud.fleet import check_reservations
from multicloud.specs import load_fleet, load_jobs

__all__: list[str] = []

Address = Annotated[
    str,
    typer.Option(
        "--address",
        envvar="MULTICLOUD_ADDRESS",
        help="Ray GCS address HOST:PORT; 'auto' = inside a Ray job, or the local cluster "
        "`multicloud start` started.",
    ),
]
Namespace = Annotated[
    str, typer.Option("--namespace", help="Ray namespace of the scheduler actor.")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]

_STYLE = {
    "pending": "yellow",
    "placed": "cyan",
    "provisioning": "cyan",
    "running": "blue",
    "preempted": "magenta",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "dim",
}


def _client(address: str, namespace: str) -> Any:
    from multicloud.service.client import connect

    return connect(address, namespace=namespace)


@app.command()
def start(
    fleet: Annotated[
        Path | None,
        typer.Option(
            "--fleet", help="Fleet file (default: the last started one, else the demo fleet)."
        ),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            help="Store URL: sqlite:///PATH or postgresql://… (default: SQLite in "
            "$MULTICLOUD_HOME).",
        ),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option("--address", help="Existing Ray cluster HOST:PORT (default: a local one)."),
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", help="Serve Prometheus /metrics here.")
    ] = None,
    metrics_host: Annotated[
        str,
        typer.Option(
            "--metrics-host",
            help="Address /metrics binds (default loopback; 0.0.0.0 in a pod behind a "
            "NetworkPolicy).",
        ),
    ] = "127.0.0.1",
    namespace: Namespace = "multicloud",
    num_cpus: Annotated[
        int | None, typer.Option("--num-cpus", help="CPUs of a local Ray head started here.")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Start the scheduler as a detached Ray actor (and a local Ray if none runs).

    A no-op that says so when it already runs; after it died, brings it back on the same
    store.
    """
    from multicloud.service.client import start as start_service
    from multicloud.service.config import (
        ServiceConfig,
        default_store_url,
        store_password_warning,
    )

    with _reported():
        config = None
        if fleet is not None or store is not None or metrics_port is not None:
            saved = ServiceConfig.load_saved()
            fleet_path = fleet
            if fleet_path is None and saved is None:
                from multicloud.demo import demo_paths

                fleet_path = demo_paths()[1]
            if fleet_path is not None:
                parsed = load_fleet(fleet_path)
                source = str(fleet_path)
                check_reservations(parsed, _check_adapters(parsed, source), source)
            else:
                assert saved is not None
                parsed, source = saved.fleet_model(), saved.fleet_source
            warning = store_password_warning(store) if store else None
            if warning:
                _console(stderr=True).print(f"[yellow]warning:[/] {warning}")
            config = ServiceConfig.build(
                parsed,
                fleet_source=source,
                store_url=store or (saved.store_url if saved else default_store_url()),
                metrics_port=metrics_port,
                metrics_host=metrics_host,
            )
        elif ServiceConfig.load_saved() is None:
            from multicloud.demo import demo_paths

            fleet_path = demo_paths()[1]
            config = ServiceConfig.build(load_fleet(fleet_path), fleet_source=str(fleet_path))
        result = start_service(config, address=address, namespace=namespace, num_cpus=num_cpus)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "address": result.address,
                    "dashboard_url": result.dashboard_url,
                    "started_ray": result.started_ray,
                    "started_scheduler": result.started_actor,
                    "scheduler": result.info,
                    "env": result.env,
                },
                indent=2,
            )
        )
        return
    console = _console()
    if result.started_ray:
        console.print(f"Ray: started a local cluster at {result.address} (token auth on)")
    else:
        console.print(f"Ray: using the cluster at {result.address}")
    info = result.info
    verb = "started" if result.started_actor else "already running"
    console.print(
        f"Scheduler: {verb} in namespace '{namespace}' — store {info['store']}, fleet "
        f"{info['fleet']} ({', '.join(info['providers'])})"
    )
    if info.get("metrics_port"):
        host = info.get("metrics_host") or "127.0.0.1"
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        console.print(f"Metrics: http://{shown}:{info['metrics_port']}/metrics")
    if result.dashboard_url:
        env = " ".join(f"{k}={v}" for k, v in result.env.items())
        console.print(
            Text(
                f"Submit through the Ray Jobs API with:\n  {env} ray job submit --address "
                f"{result.dashboard_url} -- multicloud submit JOB.yaml",
                style="dim",
            )
        )


@app.command()
def stop(
    namespace: Namespace = "multicloud",
    keep_ray: Annotated[
        bool, typer.Option("--keep-ray", help="Leave the local Ray cluster running.")
    ] = False,
) -> None:
    """Stop the scheduler actor, and the local Ray cluster `start` started."""
    from multicloud.service.client import stop as stop_service

    with _reported():
        result = stop_service(namespace=namespace, keep_ray=keep_ray)
    console = _console()
    console.print("Scheduler: stopped" if result["actor"] else "Scheduler: was not running")
    if not keep_ray:
        console.print("Ray: stopped" if result["ray"] else "Ray: no local cluster to stop")


@app.command()
def submit(
    files: Annotated[list[Path], typer.Argument(help="Job files (the same as for `plan`).")],
    client_key: Annotated[
        str | None,
        typer.Option(
            "--client-key",
            help="Idempotency key: resubmitting with the same key returns the same job ids "
            "(job i of the files gets KEY/i).",
        ),
    ] = None,
    address: Address = "auto",
    namespace: Namespace = "multicloud",
    as_json: AsJson = False,
) -> None:
    """Submit jobs to the running scheduler; prints the new job ids, one per line."""
    with _reported():
        jobs = [job for path in files for job in load_jobs(path)]
        client = _client(address, namespace)
        keys = [f"{client_key}/{i}" for i in range(len(jobs))] if client_key is not None else None
        ids = client.submit_many(jobs, client_keys=keys)
    if as_json:
        typer.echo(
            json.dumps(
                {"jobs": [{"id": i, "name": j.name} for i, j in zip(ids, jobs, strict=True)]}
            )
        )
        return
    for job_id in ids:
        typer.echo(job_id)


def _tally(states: dict[str, str]) -> str:
    """``3 running, 2 succeeded``: how many jobs are in each state."""
    counts = Counter(states.values())
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


def _where(job: dict[str, Any]) -> str:
    if not job.get("provider"):
        return "—"
    return f"{job['provider']}/{job['region']}"


@app.command()
def status(
    job: Annotated[str | None, typer.Argument(help="A job id (default: all jobs).")] = None,
    address: Address = "auto",
    namespace: Namespace = "multicloud",
    as_json: AsJson = False,
) -> None:
    """Show jobs: state, where they run, attempts."""
    with _reported():
        jobs = _client(address, namespace).status(job)
    if as_json:
        typer.echo(json.dumps({"jobs": jobs}, indent=2))
        return
    table = Table(title=f"{len(jobs)} job(s)", title_justify="left")
    for column in ("id", "name", "state", "where", "instance type", "attempts", "submitted"):
        table.add_column(column)
    for j in jobs:
        table.add_row(
            j["id"],
            j["name"],
            Text(j["state"], style=_STYLE.get(j["state"], "")),
            _where(j),
            j.get("instance_type") or "—",
            str(len({a["attempt"] for a in j["attempts"]})),
            j["submitted_at"][:19].replace("T", " "),
        )
    _console().print(table)


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
    from multicloud.service.client import TERMINAL

    with _reported():
        client = _client(address, namespace)
        console = _console(stderr=True)
        with Progress(
            TextColumn("[bold]waiting"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=as_json or not console.is_terminal,
        ) as progress:
            task = progress.add_task("", total=None)

            def update(states: dict[str, str]) -> None:
                done = sum(1 for s in states.values() if s in TERMINAL)
                progress.update(task, total=len(states), completed=done, description=_tally(states))

            states = client.wait(jobs or None, timeout=timeout, on_poll=update)
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
    with _reported():
        state = _client(address, namespace).cancel(job)
    typer.echo(f"{job}: {state}")


@app.command()
def explain(
    job: Annotated[str, typer.Argument(help="The job id.")],
    address: Address = "auto",
    namespace: Namespace = "multicloud",
    as_json: AsJson = False,
) -> None:
    """Say why a job is where it is: decisions, lifecycle events, ROFR answers."""
    with _reported():
        doc = _client(address, namespace).explain(job)
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    console = _console()
    j = doc["job"]
    console.print(f"[bold]{j['id']}[/bold] {j['name']}: {j['state']} ({_where(j)})")
    for d in doc["decisions"]:
        placed = (
            ", ".join(
                f"{p['provider']}/{p['region']} {p['instance_type']}×{p['nodes']}"
                for p in d["placement"]
            )
            or "not placed"
        )
        console.print(f"  decision {d['at'][:19]}: {placed}")
        for reason in d["reasons"]:
            console.print(Text(f"    - {reason}", style="dim"))
    for e in doc["audit"]:
        console.print(
            f"  ROFR {e['holder']}: {e['answer']} ({e['reason']}); P = "
            f"{e['outside_price_per_hour']}"
        )
    for e in doc["events"]:
        console.print(
            Text(f"  {e['at'][:19]} {e['from_state'] or '—'} → {e['to_state']}: {e['reason']}")
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
    with _reported():
        lines = _client(address, namespace).audit(job, holder)
    if as_json:
        typer.echo(json.dumps({"audit": lines}, indent=2))
        return
    table = Table(title=f"ROFR ledger: {len(lines)} offer(s)", title_justify="left")
    for column in ("at", "job", "holder", "P ($/h)", "holder ($/h)", "answer", "reason"):
        table.add_column(column)
    for e in lines:
        table.add_row(
            str(e["at"])[:19],
            e["job"],
            e["holder"],
            "—" if e["outside_price_per_hour"] is None else f"{e['outside_price_per_hour']:.2f}",
            "—" if e["holder_price_per_hour"] is None else f"{e['holder_price_per_hour']:.2f}",
            Text(e["answer"], style="green" if e["answer"] == "accepted" else "yellow"),
            e["reason"],
        )
    _console().print(table)


@app.command()
def logs(
    job: Annotated[str, typer.Argument(help="The job id.")],
    address: Address = "auto",
    namespace: Namespace = "multicloud",
) -> None:
    """Print a job's output (kept by the local provider; clouds keep their own)."""
    with _reported():
        text = _client(address, namespace).logs(job)
    typer.echo(text, nl=False)
