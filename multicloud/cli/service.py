"""The verbs that run the service: ``start``, ``stop``, ``submit``."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from multicloud.cli.app import (
    Address,
    AsJson,
    Namespace,
    app,
    check_adapters,
    client,
    console,
    reported,
)
from multicloud.fleet import check_reservations
from multicloud.specs import load_fleet, load_jobs

if TYPE_CHECKING:
    from multicloud.service.views import LeaseView

__all__: list[str] = []


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
    standby: Annotated[
        bool,
        typer.Option(
            "--standby",
            help="If a scheduler elsewhere holds the store's lease, wait as its standby and "
            "take over when the lease expires (default: refuse, exit 3).",
        ),
    ] = False,
    standby_timeout: Annotated[
        float | None,
        typer.Option("--standby-timeout", help="Seconds a standby waits at most (exit 3)."),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Start the scheduler as a detached Ray actor (and a local Ray if none runs).

    A no-op that says so when it already runs; after it died, brings it back on the same
    store. One scheduler per store: if a live scheduler of another installation holds the
    store's lease, says who and exits 3 (or, with --standby, waits to take over).
    """
    from multicloud.service.config import (
        ServiceConfig,
        default_store_url,
        store_password_warning,
    )
    from multicloud.service.control import start as start_service

    with reported(), lease_refusal():
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
                check_reservations(parsed, check_adapters(parsed, source), source)
            else:
                assert saved is not None
                parsed, source = saved.fleet_model(), saved.fleet_source
            warning = store_password_warning(store) if store else None
            if warning:
                console(stderr=True).print(f"[yellow]warning:[/] {warning}")
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
        result = start_service(
            config,
            address=address,
            namespace=namespace,
            num_cpus=num_cpus,
            standby=standby,
            standby_timeout=standby_timeout,
            on_wait=_standby_progress(),
        )
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
    out = console()
    from rich.text import Text

    if result.started_ray:
        out.print(f"Ray: started a local cluster at {result.address} (token auth on)")
    else:
        out.print(f"Ray: using the cluster at {result.address}")
    info = result.info
    verb = "started" if result.started_actor else "already running"
    out.print(
        f"Scheduler: {verb} in namespace '{namespace}' — store {info['store']}, fleet "
        f"{info['fleet']} ({', '.join(info['providers'])}), lease epoch {info.get('lease_epoch')}"
    )
    if info.get("metrics_port"):
        host = info.get("metrics_host") or "127.0.0.1"
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        out.print(f"Metrics: http://{shown}:{info['metrics_port']}/metrics")
    if result.dashboard_url:
        env = " ".join(f"{k}={v}" for k, v in result.env.items())
        out.print(
            Text(
                f"Submit through the Ray Jobs API with:\n  {env} ray job submit --address "
                f"{result.dashboard_url} -- multicloud submit JOB.yaml",
                style="dim",
            )
        )


LEASE_HELD_EXIT = 3
"""Exit status of ``start`` when another installation's scheduler holds the store's lease."""


@contextmanager
def lease_refusal() -> Iterator[None]:
    """Report a store whose lease another scheduler holds: who, and exit status 3."""
    from multicloud.service.standby import StandbyTimeoutError
    from multicloud.store import LeaseHeldError

    try:
        yield
    except (LeaseHeldError, StandbyTimeoutError) as err:
        sys.stderr.write(
            f"error: {err}\n"
            "One scheduler per store: stop that one first, or start this one with "
            "--standby to wait and take over when its lease expires.\n"
        )
        raise typer.Exit(LEASE_HELD_EXIT) from None


def _standby_progress() -> Callable[[LeaseView], None]:
    """Print what a standby waits for when the holder changes, and every 30 s."""
    shown: dict[str, Any] = {"key": None, "at": 0.0}

    def show(lease: LeaseView) -> None:
        key = (lease.epoch, (lease.holder or {}).get("owner"))
        if key == shown["key"] and time.monotonic() - shown["at"] < 30.0:
            return
        shown.update(key=key, at=time.monotonic())
        console(stderr=True).print(f"standby: waiting — {lease.describe()}", markup=False)

    return show


@app.command()
def stop(
    namespace: Namespace = "multicloud",
    keep_ray: Annotated[
        bool, typer.Option("--keep-ray", help="Leave the local Ray cluster running.")
    ] = False,
) -> None:
    """Stop the scheduler actor, and the local Ray cluster `start` started."""
    from multicloud.service.control import stop as stop_service

    with reported():
        result = stop_service(namespace=namespace, keep_ray=keep_ray)
    out = console()
    out.print("Scheduler: stopped" if result["actor"] else "Scheduler: was not running")
    if not keep_ray:
        out.print("Ray: stopped" if result["ray"] else "Ray: no local cluster to stop")


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
    with reported():
        jobs = [job for path in files for job in load_jobs(path)]
        service = client(address, namespace)
        keys = [f"{client_key}/{i}" for i in range(len(jobs))] if client_key is not None else None
        ids = service.submit_many(jobs, client_keys=keys)
    if as_json:
        typer.echo(
            json.dumps(
                {"jobs": [{"id": i, "name": j.name} for i, j in zip(ids, jobs, strict=True)]}
            )
        )
        return
    for job_id in ids:
        typer.echo(job_id)
