"""Service benchmark: writes bench/results/service.json.

Measures the scheduler service end to end on this machine: a local Ray head (token auth),
the scheduler actor, simulated clouds priced from the shipped catalog, and a client in this
process that submits trace-shaped jobs (``bench.workload.make_jobs``) through
:class:`multicloud.service.client.Client`. Every mode runs its own scheduler actor on its
own fresh store (a SQLite file, or a new PostgreSQL database dropped afterwards):

* ``paced``: a steady rate (default 1,000 submissions/s for 60 s, in 20 batches a second)
  against ample capacity; submit → placed per job (p50/p95/p99/max), also per 10-s window;
* ``burst``: 10,000 jobs sent as fast as the actor accepts them; how long until every one
  is placed, and the latencies;
* ``idle``: 100,000 jobs queued where no cloud has capacity (and no reservation); once all
  were planned, what a tick costs when nothing is new, and the scheduler's memory;
* ``quality``: contended batches submitted at once (the planner benchmark's 1,000 jobs on
  catalog pools of 0–48 nodes with Azure holding the ROFR, and a trace-shaped batch on the
  demo fleet's clouds about 1.4× short of capacity): placed jobs per priority tier and cost,
  service against offline ``plan()`` on the same snapshot;
* ``launchers``: ``paced`` for 30 s with each launcher (threads, actors), SQLite;
* ``cycle`` (no Ray, no store, not part of ``all``): the scheduler's plan step alone in a
  cycle-like loop: small batches of new jobs planned against the demo fleet's offers, the
  capacities moving by what each plan placed and ``now`` by the batch interval; the CPU
  time per job, with and without the job shapes' options kept across plans
  (``multicloud.planner.ShapeCache``), and that both give the same plans.

submit → placed is the job's PLACED time in the store's events minus the client's send
time of its batch (both wall clock, same machine).

Run: ``.venv/bin/python -m bench.service [--mode all] [--store postgresql://HOST/DB]``.
With a PostgreSQL URL, each mode creates a database next to the one named and drops it.
Results go under the store backend's key (``sqlite``, ``postgresql``), ``launchers`` and
``cycle``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.workload import make_jobs

RESULTS = Path(__file__).resolve().parent / "results" / "service.json"

# The demo fleet's regions (multicloud/demo/fleet.yaml): four clouds, US and EU.
_REGIONS: dict[str, list[str]] = {
    "aws": ["us-east-1", "us-west-2", "eu-north-1"],
    "gcp": ["us-central1", "us-east4", "europe-west1", "europe-west4"],
    "azure": ["eastus", "eastus2", "westus3"],
    "coreweave": ["US-EAST-04", "US-CENTRAL-03"],
}
_CONTRACTS: dict[str, Any] = {
    "rofr": {"holders": ["azure"], "scope": "new-capacity", "tolerance": 0.10},
    "reservations": [
        {
            "name": "aws-p5-use1-block",
            "provider": "aws",
            "region": "us-east-1",
            "zone": "use1-az2",
            "instance_type": "p5.48xlarge",
            "nodes": 16,
        }
    ],
    "commitments": [
        {
            "name": "aws-7y-commit",
            "provider": "aws",
            "total_usd": 38_000_000_000,
            "spent_usd": 4_900_000_000,
            "start": "2025-11-03T00:00:00Z",
            "end": "2032-11-03T00:00:00Z",
            "tolerance": 0.15,
        }
    ],
}


def _pools(cloud: str) -> list[Any]:
    from multicloud.catalog import load_catalog

    return [o for o in load_catalog().offers(cloud) if o.region in _REGIONS[cloud]]


def fleet_doc(
    time_scale: float,
    capacity: dict[str, dict[str, int]] | None = None,
    *,
    reservation: bool = True,
) -> dict[str, Any]:
    """The demo fleet's clouds, regions and contracts, priced from the catalog.

    Args:
        time_scale: Wall seconds per simulated hour.
        capacity: Per cloud, nodes per ``instance_type`` or ``zone/instance_type``
            (default: 4,096 nodes of every instance type: ample).
        reservation: Keep the demo fleet's 16-node prepaid block. Free capacity that jobs
            compete for, it sends every plan of a steady stream to the optimiser.

    Returns:
        A fleet document.
    """
    if capacity is None:
        capacity = {c: {o.instance_type: 4096 for o in _pools(c)} for c in _REGIONS}
    return {
        "providers": {
            cloud: {
                "adapter": "sim",
                "catalog": "builtin",
                "regions": _REGIONS[cloud],
                "capacity": capacity[cloud],
            }
            for cloud in _REGIONS
        },
        "contracts": _CONTRACTS
        if reservation
        else {k: v for k, v in _CONTRACTS.items() if k != "reservations"},
        "time_scale": time_scale,
    }


def _offers(fleet: Any) -> list[Any]:
    from multicloud.provider import ResourceRequest
    from multicloud.providers import from_fleet

    return [
        o for name in fleet.providers for o in from_fleet(fleet, name).offers(ResourceRequest())
    ]


def feasible_jobs(fleet: Any, n: int, seed: int) -> tuple[list[Any], dict[str, int]]:
    """The first ``n`` trace-shaped jobs that some offer of the fleet can ever run.

    A job no offer fits (an EU-only TPU gang in a fleet without EU TPUs) stays pending for
    ever and has no submit-to-placed time; it is left out, and counted.
    """
    from multicloud import fleet as fleet_mod
    from multicloud.models import Contracts
    from multicloud.planner import plan

    offers = [replace(o, capacity=None) for o in _offers(fleet)]
    pool = make_jobs(int(n * 1.2) + 10, seed=seed)
    open_market = fleet.model_copy(update={"contracts": Contracts()})
    snap = fleet_mod.snapshot(
        pool, open_market, offers, now=datetime.now(timezone.utc), job_ids=[j.name for j in pool]
    )
    dropped = {u.job: u.reason for u in plan(snap).unplaced}
    jobs = [j for j in pool if j.name not in dropped][:n]
    last = jobs[-1].name if jobs else ""
    reasons = Counter(r.split(":")[0] for name, r in dropped.items() if name <= last)
    return jobs, dict(reasons.most_common())


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank; bench/planner.py's rule)."""
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def summary_ms(values: list[float]) -> dict[str, float | int]:
    """p50/p95/p99/max/mean of seconds, in milliseconds."""
    if not values:
        return {"samples": 0}
    ms = [v * 1e3 for v in values]
    return {
        "samples": len(ms),
        "p50": round(pct(ms, 0.50), 2),
        "p95": round(pct(ms, 0.95), 2),
        "p99": round(pct(ms, 0.99), 2),
        "max": round(max(ms), 2),
        "mean": round(sum(ms) / len(ms), 2),
    }


def _submit(
    client: Any, docs: list[dict[str, Any]], batch: int, inflight: int, rate: float
) -> tuple[list[tuple[list[str], float, float]], float]:
    """Send ``docs`` in pipelined batches at ``rate`` jobs/s (0: as fast as accepted).

    Returns:
        Per batch ``(ids, sent_at, acked_at)`` (wall clock), and the phase's seconds.
    """
    import concurrent.futures as cf

    window: deque[tuple[cf.Future[list[str]], float, list[float]]] = deque()
    out: list[tuple[list[str], float, float]] = []

    def settle() -> None:
        fut, sent_at, acked = window.popleft()
        out.append((fut.result(), sent_at, acked[0]))

    interval = batch / rate if rate > 0 else 0.0
    started = time.monotonic()
    for k, start in enumerate(range(0, len(docs), batch)):
        while window and (len(window) >= inflight or window[0][0].done()):
            settle()
        delay = started + k * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sent_at = time.time()
        fut: cf.Future[list[str]] = client.submit_async(docs[start : start + batch]).future()
        acked: list[float] = []
        # Stamped when the answer arrives, whatever this loop is doing then.
        fut.add_done_callback(lambda _, acked=acked: acked.append(time.time()))
        window.append((fut, sent_at, acked))
    while window:
        settle()
    return out, time.monotonic() - started


# ------------------------------------------------------------------ the service under test


class Bench:
    """One Ray cluster; each mode gets a scheduler actor and a store of its own."""

    def __init__(self, args: argparse.Namespace, home: Path) -> None:
        from multicloud.service.runtime import connect_ray, start_local_ray

        self.args = args
        self.home = home
        self.record = start_local_ray(num_cpus=args.num_cpus)
        connect_ray(str(self.record["gcs_address"]), "mc-bench")

    @contextmanager
    def service(
        self, mode: str, doc: dict[str, Any], **config: Any
    ) -> Iterator[tuple[Any, str, Any]]:
        """A scheduler actor on a fresh store; yields (client, store URL, fleet)."""
        import ray

        from multicloud.models import Fleet
        from multicloud.service.client import Client
        from multicloud.service.config import ServiceConfig
        from multicloud.service.control import start

        fleet = Fleet.model_validate(doc)
        work = self.home / mode
        work.mkdir(parents=True, exist_ok=True)
        with self._store(mode, work) as url:
            cfg = ServiceConfig.build(
                fleet,
                fleet_source=f"bench/service.py {mode}",
                store_url=url,
                sim_state=str(work / "sim.jsonl"),
                local_logs=str(work / "logs"),
                settings=dict(self.args.setting),
                **config,
            )
            namespace = f"mcb-{mode}-{uuid.uuid4().hex[:6]}"
            start(cfg, address=str(self.record["gcs_address"]), namespace=namespace)
            actor = ray.get_actor("scheduler", namespace=namespace)
            try:
                yield Client(actor), url, fleet
            finally:
                try:
                    ray.get(actor.shutdown.remote(), timeout=10)
                except Exception as exc:  # the actor is killed just below anyway
                    print(f"shutdown of {mode}: {exc}", file=sys.stderr)
                ray.kill(actor, no_restart=True)

    @contextmanager
    def _store(self, mode: str, work: Path) -> Iterator[str]:
        if not self.args.store:
            yield f"sqlite:///{work / 'store.db'}"
            return
        import psycopg
        import sqlalchemy as sa
        from psycopg import sql

        admin = sa.make_url(self.args.store)
        name = f"mcb_{mode}_{uuid.uuid4().hex[:8]}"
        plain = admin.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield admin.set(database=name).render_as_string(hide_password=False)
        finally:
            with psycopg.connect(plain, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )

    def stop(self) -> None:
        """Stop the cluster."""
        import ray

        from multicloud.service.runtime import stop_local_ray

        ray.shutdown()
        stop_local_ray(timeout=5)


def _wait(client: Any, done: Any, timeout: float, every: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done(client.ping()):
            return True
        time.sleep(every)
    return False


def _latencies(url: str, batches: list[tuple[list[str], float, float]]) -> dict[str, Any]:
    from multicloud.lifecycle import JobState
    from multicloud.store import Store

    sent = {i: sent_at for ids, sent_at, _ in batches for i in ids}
    with Store.open(url) as store:
        times = store.state_times(list(sent))
    pairs = [
        (sent[i], times[i][JobState.PLACED].timestamp())
        for i in sent
        if JobState.PLACED in times.get(i, {})
    ]
    lat = [placed - at for at, placed in pairs]
    first = min(sent.values()) if sent else 0.0
    windows: dict[str, Any] = {}
    for w in range(0, int(max((at - first for at, _ in pairs), default=0)) + 1, 10):
        chunk = [p - a for a, p in pairs if w <= a - first < w + 10]
        if chunk:
            windows[f"{w}-{w + 10}s"] = {
                "p50": summary_ms(chunk)["p50"],
                "p99": summary_ms(chunk)["p99"],
            }
    return {
        "submit_to_placed_ms": summary_ms(lat),
        "placed": len(pairs),
        "never_placed": len(sent) - len(pairs),
        "all_placed_after_s": round(max(p for _, p in pairs) - first, 3) if pairs else None,
        "by_10s_window": windows,
    }


def _ping_keys(info: dict[str, Any]) -> dict[str, Any]:
    keys = ("cycles", "plans", "launches", "launch_errors", "cycle_errors", "last_error")
    out = {k: info.get(k) for k in keys}
    out.update({k: info[k] for k in ("plan_jobs", "plan_ms", "record_ms", "rss_mb") if k in info})
    return out


# ------------------------------------------------------------------ modes


def run_paced(
    bench: Bench,
    rate: float,
    seconds: float,
    launcher: str = "threads",
    *,
    reservation: bool = True,
) -> dict[str, Any]:
    """Submit at ``rate`` jobs/s for ``seconds`` against ample capacity."""
    args = bench.args
    batch = max(1, int(rate / 20))
    doc = fleet_doc(args.time_scale, reservation=reservation)
    with bench.service(f"paced-{launcher}", doc, launcher=launcher) as (
        client,
        url,
        fleet,
    ):
        jobs, dropped = feasible_jobs(fleet, int(rate * seconds) + 10, args.seed)
        warmup, jobs = jobs[:10], jobs[10:]
        client.wait(client.submit_many(warmup), timeout=60)
        docs = [j.model_dump(mode="json") for j in jobs]
        batches, spent = _submit(client, docs, batch, args.inflight, rate)
        _wait(client, lambda p: not p["active_jobs"].get("pending"), args.timeout)
        info = client.ping()
        # Read while the store exists: a PostgreSQL one is dropped with the service.
        latencies = _latencies(url, batches)
    accepted = sum(len(ids) for ids, _, _ in batches)
    return {
        "offered_rate_per_s": rate,
        "seconds": seconds,
        "launcher": launcher,
        "fleet": "the demo fleet's four clouds and regions, catalog prices, 4,096 nodes per "
        "instance type, azure holding the ROFR, a commitment behind schedule"
        + (", and a 16-node prepaid reservation" if reservation else ", no reservation"),
        "how": f"batches of {batch} jobs, {rate / batch:g} a second, up to {args.inflight} "
        "calls in flight (Client.submit_async)",
        "accepted": accepted,
        "achieved_rate_per_s": round(accepted / spent, 1),
        "jobs_left_out_as_infeasible": dropped,
        **latencies,
        "scheduler": _ping_keys(info),
    }


def run_burst(bench: Bench) -> dict[str, Any]:
    """Send ``--jobs`` jobs as fast as the actor accepts them."""
    args = bench.args
    with bench.service("burst", fleet_doc(args.time_scale)) as (client, url, fleet):
        jobs, dropped = feasible_jobs(fleet, args.jobs + 10, args.seed)
        warmup, jobs = jobs[:10], jobs[10:]
        client.wait(client.submit_many(warmup), timeout=60)
        docs = [j.model_dump(mode="json") for j in jobs]
        batches, spent = _submit(client, docs, args.batch, args.inflight, 0.0)
        _wait(client, lambda p: not p["active_jobs"].get("pending"), args.timeout)
        info = client.ping()
        result = _latencies(url, batches)
    accepted = sum(len(ids) for ids, _, _ in batches)
    return {
        "jobs": accepted,
        "how": f"batches of {args.batch} jobs, up to {args.inflight} calls in flight, unpaced",
        "submissions_per_s": round(accepted / spent, 1),
        "submit_seconds": round(spent, 3),
        **result,
        "placements_per_s": (
            round(result["placed"] / result["all_placed_after_s"], 1)
            if result["all_placed_after_s"]
            else None
        ),
        "jobs_left_out_as_infeasible": dropped,
        "scheduler": _ping_keys(info),
    }


def run_idle(bench: Bench) -> dict[str, Any]:
    """Queue ``--idle-jobs`` jobs where nothing has capacity; measure a quiet tick."""
    args = bench.args
    zero = {c: {o.instance_type: 0 for o in _pools(c)} for c in _REGIONS}
    # No reservation either: its 16 free nodes would run jobs whose ends keep freeing
    # capacity, and the queue would not be unchanged.
    doc = fleet_doc(args.time_scale, zero, reservation=False)
    with bench.service("idle", doc) as (client, _, fleet):
        jobs, _ = feasible_jobs(fleet, args.idle_jobs, args.seed)
        docs = [j.model_dump(mode="json") for j in jobs]
        before = client.ping()["rss_mb"]
        t0 = time.monotonic()
        batches, spent = _submit(client, docs, 1000, args.inflight, 0.0)
        n = sum(len(ids) for ids, _, _ in batches)
        settled = _wait(client, lambda p: p["queue"]["stuck"] >= n, args.timeout, every=1.0)
        planned_s = time.monotonic() - t0
        time.sleep(args.idle_window)
        ticks = client._call("tick_stats", args.idle_window)
        info = client.ping()
    return {
        "jobs_queued": n,
        "all_planned": settled,
        "submit_seconds": round(spent, 1),
        "queued_and_planned_after_s": round(planned_s, 1),
        "ticks_after_that": ticks,
        "scheduler_rss_mb": {"before": before, "with_queue": info["rss_mb"]},
        "plans": info["plans"],
        "queue": info["queue"],
    }


def _tiers(jobs: list[Any], placed: set[str]) -> dict[str, int]:
    return {
        str(k): v for k, v in sorted(Counter(j.priority for j in jobs if j.name in placed).items())
    }


def _quality(bench: Bench, label: str, doc: dict[str, Any], jobs: list[Any]) -> dict[str, Any]:
    from multicloud import fleet as fleet_mod
    from multicloud.lifecycle import JobState
    from multicloud.planner import plan
    from multicloud.store import Store

    with bench.service(f"quality-{label}", doc) as (client, url, fleet):
        offers = _offers(fleet)  # what the clouds offer before anything runs
        now = datetime.now(timezone.utc)
        snap = fleet_mod.snapshot(jobs, fleet, offers, now=now, job_ids=[j.name for j in jobs])
        t = time.perf_counter()
        offline = plan(snap)
        offline_s = time.perf_counter() - t
        t = time.monotonic()
        ids = client.submit_many(jobs)
        _wait(
            client,
            lambda p: p["plans"] >= 1 and not p["queue"]["fresh"] and not p["in_flight_launches"],
            args_timeout(bench),
        )
        service_s = time.monotonic() - t
        info = client.ping()
        with Store.open(url) as store:
            records = store.list_jobs()
    name_of = dict(zip(ids, (j.name for j in jobs), strict=True))
    placed = {name_of[r.id] for r in records if r.state is not JobState.PENDING}
    duration = {j.name: j.duration_hours for j in jobs}
    cost = sum(
        a.place.price_per_hour * duration[name_of[r.id]] for r in records for a in r.attempts
    )
    offline_placed = {a.job for a in offline.placements}
    return {
        "jobs": len(jobs),
        "offers": len(offers),
        "service": {
            "placed_per_tier": _tiers(jobs, placed),
            "cost": round(cost, 2),
            "plans": info["plans"],
            "plan_jobs": info.get("plan_jobs"),
            "placed_after_s": round(service_s, 2),
        },
        "offline_plan": {
            "placed_per_tier": _tiers(jobs, offline_placed),
            "cost": round(offline.total_cost, 2),
            "path": offline.stats.path,
            "optimal": offline.stats.optimal,
            "seconds": round(offline_s, 2),
        },
        "same_placed_per_tier": _tiers(jobs, placed) == _tiers(jobs, offline_placed),
        "cost_gap": round((cost - offline.total_cost) / offline.total_cost, 5)
        if offline.total_cost
        else None,
    }


def args_timeout(bench: Bench) -> float:
    """The benchmark's wait limit."""
    return float(bench.args.timeout)


def run_quality(bench: Bench) -> dict[str, Any]:
    """Contended batches at once: the service against offline ``plan()``."""
    from bench.planner import catalog_offers

    # The planner benchmark's moderate batch: 1,000 jobs, catalog pools of 0..48 nodes,
    # Azure holding the ROFR; here as simulated clouds with those capacities.
    capacity: dict[str, dict[str, int]] = {c: {} for c in ("aws", "gcp", "azure", "coreweave")}
    for o in catalog_offers(48, seed=5):
        capacity[o.provider][f"{o.zone or o.region}/{o.instance_type}"] = int(o.capacity or 0)
    planner_doc = {
        "providers": {
            c: {"adapter": "sim", "catalog": "builtin", "capacity": capacity[c]} for c in capacity
        },
        "contracts": {"rofr": {"holders": ["azure"], "tolerance": 0.1}},
        "time_scale": 3600.0,
    }
    out = {
        "planner_benchmark_batch": _quality(bench, "planner", planner_doc, make_jobs(1000, seed=4))
    }

    # A trace-shaped busy window on the demo fleet's clouds, about 1.4x short of capacity.
    jobs = make_jobs(900, seed=11)
    demand: Counter[str] = Counter()
    for j in jobs:
        nodes = j.resources.nodes * (j.serving.replicas if j.serving else 1)
        for accel in j.resources.accelerator[:1]:
            demand[accel] += nodes
    short: dict[str, dict[str, int]] = {c: {} for c in _REGIONS}
    pools = {c: _pools(c) for c in _REGIONS}
    per_accel = Counter(o.accelerator for c in pools for o in pools[c])
    for c, offers in pools.items():
        for o in offers:
            share = demand[o.accelerator] / 1.4 / max(per_accel[o.accelerator], 1)
            short[c][f"{o.zone or o.region}/{o.instance_type}"] = math.ceil(share)
    out["trace_batch_1_4x_short"] = _quality(bench, "trace", fleet_doc(3600.0, short), jobs)
    return out


# ------------------------------------------------------------------ main


def _machine() -> dict[str, Any]:
    import ray

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "ray": str(ray.__version__),
    }


def main() -> None:
    """Parse arguments, run the modes in one throwaway Ray cluster, write the results."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--mode",
        default="all",
        choices=["all", "paced", "burst", "idle", "quality", "launchers", "cycle"],
    )
    ap.add_argument("--store", help="PostgreSQL URL whose server hosts the per-mode databases")
    ap.add_argument("--rate", type=float, default=1000.0, help="paced: jobs/s")
    ap.add_argument("--seconds", type=float, default=60.0, help="paced: seconds")
    ap.add_argument("--jobs", type=int, default=10_000, help="burst: jobs")
    ap.add_argument("--idle-jobs", type=int, default=100_000, help="idle: jobs queued")
    ap.add_argument("--idle-window", type=float, default=10.0, help="idle: seconds measured")
    ap.add_argument("--batch", type=int, default=100, help="burst: jobs per actor call")
    ap.add_argument("--inflight", type=int, default=4, help="actor calls outstanding")
    ap.add_argument("--time-scale", type=float, default=0.05, help="wall seconds per sim hour")
    ap.add_argument("--num-cpus", type=int, default=2, help="CPUs the Ray head offers")
    ap.add_argument("--seed", type=int, default=10)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--setting", type=_setting, action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--cycle-jobs", type=int, default=6000, help="cycle: jobs planned")
    ap.add_argument("--cycle-batch", type=int, default=50, help="cycle: jobs per plan")
    args = ap.parse_args()
    if args.mode == "cycle":
        _write_cycle(args)
        return

    names = ("MULTICLOUD_HOME", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")
    saved = {name: os.environ.get(name) for name in names}
    home = Path(tempfile.mkdtemp(prefix="mcb-", dir="/tmp"))
    os.environ["MULTICLOUD_HOME"] = str(home)
    for name in names[1:]:
        os.environ.pop(name, None)
    backend = "postgresql" if args.store else "sqlite"
    result: dict[str, Any] = {}
    bench = Bench(args, home)
    try:
        modes = ["paced", "burst", "idle", "quality"] if args.mode == "all" else [args.mode]
        for mode in modes:
            t = time.monotonic()
            load_before = _load()
            keys_before = set(result)
            if mode == "paced":
                result["paced"] = run_paced(bench, args.rate, args.seconds)
                result["paced_no_reservation"] = run_paced(
                    bench, args.rate, args.seconds, reservation=False
                )
            elif mode == "burst":
                result["burst"] = run_burst(bench)
            elif mode == "idle":
                result["idle"] = run_idle(bench)
            elif mode == "quality":
                result["quality"] = run_quality(bench)
            elif mode == "launchers":
                result["launchers"] = {
                    launcher: run_paced(bench, args.rate, args.seconds, launcher)
                    for launcher in ("threads", "actors")
                }
            # The machine is shared: what else ran meanwhile is part of every figure.
            for key in set(result) - keys_before:
                result[key]["machine_load"] = {"before": load_before, "after": _load()}
                result[key]["measured_at"] = _now()
            print(f"{mode}: {time.monotonic() - t:.0f} s", file=sys.stderr)
            print(json.dumps(result.get(mode), indent=2), file=sys.stderr)
    finally:
        bench.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(home, ignore_errors=True)
    print(json.dumps(result, indent=2))
    if args.no_write:
        return
    doc: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    doc["machine"] = _machine()
    if args.mode == "launchers":
        doc["launchers"] = result["launchers"]
    else:
        # Modes run one at a time merge into what earlier runs wrote; the verdicts cover all.
        merged = doc.setdefault(backend, {})
        merged.update(result)
        merged["targets"] = _targets(merged)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")


def run_cycle(jobs_n: int, batch: int, rate: float, seed: int) -> dict[str, Any]:
    """The plan step of the scheduler cycle alone, with and without a shape cache.

    Each run starts from the demo fleet's offers (4,096 nodes per instance type, the
    prepaid block, Azure's ROFR, AWS's commitment) and plans ``batch`` new jobs at a time,
    as a scheduler round does at ``rate`` submissions/s, on the offers of the accelerators
    the batch accepts (what a round asks the clouds for): what a plan placed comes off the
    capacities (or the block) before the next, and ``now`` moves by the batch interval.

    Returns:
        Per run: CPU ms per job (process time), plan wall-time percentiles, and for the
        cached run its hits and misses; whether both runs made the same plans.
    """
    from datetime import timedelta

    from multicloud import fleet as fleet_mod
    from multicloud.models import Fleet
    from multicloud.planner import ShapeCache, plan
    from multicloud.planner.options import shape_key

    fleet = Fleet.model_validate(fleet_doc(0.05))
    base = _offers(fleet)
    jobs, _ = feasible_jobs(fleet, jobs_n, seed)
    start = datetime.now(timezone.utc)
    out: dict[str, Any] = {
        "jobs": len(jobs),
        "batch": batch,
        "offers": len(base),
        "shapes_in_jobs": len({shape_key(j) for j in jobs}),
    }
    decisions: dict[str, list[Any]] = {}
    for label, cache in (("uncached", None), ("cached", ShapeCache())):
        capacity = {o.key: o.capacity for o in base}
        used: Counter[str] = Counter()
        now = start
        walls: list[float] = []
        seen: list[Any] = []
        cpu = 0.0
        for first in range(0, len(jobs), batch):
            chunk = jobs[first : first + batch]
            # A round asks the clouds only for the accelerators its jobs accept.
            wanted = {a for j in chunk for a in j.resources.accelerator}
            offers = [replace(o, capacity=capacity[o.key]) for o in base if o.accelerator in wanted]
            snap = fleet_mod.snapshot(
                chunk,
                fleet,
                offers,
                now=now,
                job_ids=[j.name for j in chunk],
                reservation_used=dict(used),
            )
            c0, w0 = time.process_time(), time.perf_counter()
            result = plan(snap, shapes=cache)
            cpu += time.process_time() - c0
            walls.append(time.perf_counter() - w0)
            for a in result.placements:
                taken = a.nodes * a.replicas
                if a.offer.reservation is not None:
                    used[a.offer.reservation] += taken
                elif capacity.get(a.offer.key) is not None:
                    capacity[a.offer.key] = max(0, (capacity[a.offer.key] or 0) - taken)
            seen.append((result.placements, result.unplaced, result.audit))
            now += timedelta(seconds=len(chunk) / rate)
        decisions[label] = seen
        run: dict[str, Any] = {
            "cpu_ms_per_job": round(cpu * 1e3 / len(jobs), 4),
            "plans": len(walls),
            "plan_ms": summary_ms(walls),
            "placed": sum(len(p) for p, _, _ in seen),
        }
        if cache is not None:
            run["shape_cache"] = {"hits": cache.hits, "misses": cache.misses}
        out[label] = run
    out["same_plans"] = decisions["uncached"] == decisions["cached"]
    out["cpu_speedup"] = round(
        out["uncached"]["cpu_ms_per_job"] / max(out["cached"]["cpu_ms_per_job"], 1e-9), 2
    )
    return out


def _write_cycle(args: argparse.Namespace) -> None:
    load_before = _load()
    result = run_cycle(args.cycle_jobs, args.cycle_batch, args.rate, args.seed)
    result["machine_load"] = {"before": load_before, "after": _load()}
    result["measured_at"] = _now()
    print(json.dumps(result, indent=2))
    if args.no_write:
        return
    doc: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    doc["cycle"] = result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _load() -> dict[str, float]:
    """The 1/5/15-minute load averages (2 CPUs: above 2 means work was waiting)."""
    one, five, fifteen = os.getloadavg()
    return {"1m": round(one, 2), "5m": round(five, 2), "15m": round(fifteen, 2)}


def _targets(result: dict[str, Any]) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for key in ("paced", "paced_no_reservation"):
        if key in result:
            p = result[key]
            out[f"{key}_p99_submit_to_placed_ms<=50"] = bool(
                p["submit_to_placed_ms"].get("p99", math.inf) <= 50 and p["never_placed"] == 0
            )
    if "burst" in result:
        b = result["burst"]
        out["burst_all_placed_s<=5"] = bool(
            b["never_placed"] == 0 and (b["all_placed_after_s"] or math.inf) <= 5.0
        )
    if "idle" in result:
        ticks = result["idle"]["ticks_after_that"]
        out["idle_tick_p99_ms<=10"] = bool(ticks.get("all", {}).get("p99", math.inf) <= 10.0)
    if "quality" in result:
        # Each batch's result is a dict with its gap; the mode's load and time sit beside.
        batches = {k: v for k, v in result["quality"].items() if "cost_gap" in v}
        for name, q in batches.items():
            gap = q["cost_gap"]
            out[f"quality_{name}_same_tiers_cost_within_0.5pct"] = bool(
                q["same_placed_per_tier"] and gap is not None and abs(gap) <= 0.005
            )
    return out


def _setting(text: str) -> tuple[str, int | float]:
    name, _, value = text.partition("=")
    if not name or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    number = float(value)
    return name, int(number) if number.is_integer() and "." not in value else number


if __name__ == "__main__":
    main()
