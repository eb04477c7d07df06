"""Service benchmark (issue item 10): writes bench/results/service.json.

Measures the scheduler service end to end, on this machine: a local Ray head (token auth),
the scheduler actor, simulated clouds priced from the shipped catalog (every offer of the
four clouds, large but finite capacity, Azure holding the ROFR, a reservation and a
commitment), and a client in this process that submits trace-shaped jobs
(``bench.workload.make_jobs``) through :class:`multicloud.service.client.Client`:

* sustained submissions/s: jobs accepted ÷ wall time of the submission phase (first send
  to last acknowledgement);
* submit→placed latency per job: from the moment the client sent the job's batch to the
  job's PLACED time in the store's events (``Store.state_times``; both wall-clock UTC on
  the same machine), p50/p95/p99/max;
* what the scheduler reports in ``ping()``: cycles, plans, planner and record times.

Throughput comes from batching *and* pipelining: the client sends ``--batch`` jobs per
actor call (one store transaction each) and keeps up to ``--inflight`` calls outstanding
(``Client.submit_async``), so Ray's per-call round trip overlaps the actor's work.

Run: ``.venv/bin/python -m bench.service [--jobs 10000] [--batch 100] [--inflight 4]
[--store postgresql://127.0.0.1/DB]``. Each run is stored under its store backend's key
(``sqlite`` or ``postgresql``) in the results file, next to the other backend's last run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import Counter, deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.workload import make_jobs

RESULTS = Path(__file__).resolve().parent / "results" / "service.json"
# What ping() says about recent plans (``phases``: only from an instrumented scheduler).
_PING_KEYS = ("recent_plans", "plan_jobs", "plan_ms", "record_ms", "phases")
NAMESPACE = "mc-bench"

# The demo fleet's regions (multicloud/demo/fleet.yaml): four clouds, US and EU.
_REGIONS: dict[str, list[str]] = {
    "aws": ["us-east-1", "us-west-2", "eu-north-1"],
    "gcp": ["us-central1", "us-east4", "europe-west1", "europe-west4"],
    "azure": ["eastus", "eastus2", "westus3"],
    "coreweave": ["US-EAST-04", "US-CENTRAL-03"],
}

# Per-pool node limits (a bare instance type caps it in every region/zone that sells it);
# types not listed are unlimited. Large, so that capacity is not what limits the benchmark,
# and finite, so that it is still accounted for on every plan.
_CAPACITY: dict[str, dict[str, int]] = {
    "aws": {
        "p5.48xlarge": 1024,
        "p5en.48xlarge": 512,
        "p4de.24xlarge": 512,
        "p6-b200.48xlarge": 512,
        "p5.4xlarge": 2048,
        "g6.xlarge": 2048,
        "g4dn.xlarge": 2048,
    },
    "gcp": {
        "a3-highgpu-8g": 1024,
        "a3-megagpu-8g": 512,
        "a3-ultragpu-8g": 512,
        "a2-ultragpu-8g": 512,
        "a3-highgpu-1g": 2048,
        "a2-ultragpu-1g": 2048,
        "g2-standard-4": 2048,
    },
    "azure": {
        "Standard_ND96isr_H100_v5": 1024,
        "Standard_ND96amsr_A100_v4": 512,
        "Standard_NC40ads_H100_v5": 2048,
        "Standard_NC24ads_A100_v4": 2048,
    },
    "coreweave": {
        "cw-hgx-h100-8x": 1024,
        "cw-hgx-h200-8x": 512,
        "cw-a100-80gb-8x": 512,
        "cw-l40s-8x": 512,
    },
}


def fleet_doc(time_scale: float) -> dict[str, Any]:
    """The benchmark fleet: the demo fleet's clouds, regions and contracts, large capacity.

    Args:
        time_scale: Wall seconds per simulated hour.

    Returns:
        A fleet document.
    """
    return {
        "providers": {
            cloud: {
                "adapter": "sim",
                "catalog": "builtin",
                "regions": _REGIONS[cloud],
                "capacity": _CAPACITY[cloud],
            }
            for cloud in _REGIONS
        },
        "contracts": {
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
        },
        "time_scale": time_scale,
    }


def feasible_jobs(fleet: Any, n: int, seed: int) -> tuple[list[Any], dict[str, int]]:
    """The first ``n`` trace-shaped jobs that some offer of the fleet can ever run.

    A job no offer fits (say an EU-only TPU gang in a fleet without EU TPUs) stays pending
    for ever and has no submit-to-placed time; it is left out, and counted.

    Args:
        fleet: The fleet.
        n: Jobs wanted.
        seed: Workload seed.

    Returns:
        The jobs and, per reason, how many generated jobs were left out.
    """
    from dataclasses import replace

    from multicloud import fleet as fleet_mod
    from multicloud.models import Contracts
    from multicloud.planner import plan
    from multicloud.provider import ResourceRequest
    from multicloud.providers import from_fleet

    offers = [
        replace(o, capacity=None)
        for name in fleet.providers
        for o in from_fleet(fleet, name).offers(ResourceRequest(accelerators=()))
    ]
    pool = make_jobs(int(n * 1.2) + 10, seed=seed)
    # Contracts never make a job impossible (a holder's decline leaves the outside offers),
    # and without them nothing is contended: the plan stays on the fast path.
    open_market = fleet.model_copy(update={"contracts": Contracts()})
    snap = fleet_mod.snapshot(
        pool, open_market, offers, now=datetime.now(timezone.utc), job_ids=[j.name for j in pool]
    )
    result = plan(snap)
    dropped = {u.job: u.reason for u in result.unplaced}
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


def _parse_setting(text: str) -> tuple[str, int | float]:
    name, _, value = text.partition("=")
    if not name or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    number = float(value)
    return name, int(number) if number.is_integer() and "." not in value else number


def _submit(
    client: Any, docs: list[dict[str, Any]], batch: int, inflight: int, rate: float
) -> tuple[list[tuple[list[str], float, float]], float, float]:
    """Send ``docs`` in pipelined batches, at ``rate`` jobs/s (0: as fast as accepted).

    Returns:
        Per batch ``(ids, sent_at, acked_at)`` (wall clock), and the phase's start and end
        on the monotonic clock.
    """
    import concurrent.futures as cf

    window: deque[tuple[cf.Future[list[str]], float, list[float]]] = deque()
    out: list[tuple[list[str], float, float]] = []

    def settle() -> None:
        fut, sent_at, acked = window.popleft()
        ids = fut.result()
        out.append((ids, sent_at, acked[0]))

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
    return out, started, time.monotonic()


def _cpu_seconds() -> dict[int, float]:
    import psutil

    out: dict[int, float] = {}
    for proc in psutil.process_iter(["cpu_times"]):
        times = proc.info["cpu_times"]
        if times is not None:
            out[proc.pid] = times.user + times.system
    return out


def _ours(temp_dir: str) -> set[int]:
    """This process and every process of the benchmark's Ray cluster."""
    import psutil

    from multicloud.service.runtime import _cluster_pids

    roots = [os.getpid(), *_cluster_pids(Path(temp_dir))]
    pids = set(roots)
    for pid in roots:
        try:
            pids.update(c.pid for c in psutil.Process(pid).children(recursive=True))
        except psutil.Error:
            continue
    return pids


def _interference(before: dict[int, float], seconds: float, temp_dir: str) -> dict[str, Any]:
    """CPU that processes outside the benchmark used while it measured (shared machines)."""
    after = _cpu_seconds()
    ours = _ours(temp_dir)
    used = {pid: after[pid] - before.get(pid, 0.0) for pid in after}
    mine = sum(v for pid, v in used.items() if pid in ours)
    other = sum(v for pid, v in used.items() if pid not in ours)
    return {
        "benchmark_cpu_pct": round(100 * mine / seconds, 1),
        "other_processes_cpu_pct": round(100 * other / seconds, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def run(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    """Start Ray and the service, submit, wait, measure; the caller stops Ray."""
    from multicloud.models import Fleet
    from multicloud.service.client import Client, start
    from multicloud.service.config import ServiceConfig
    from multicloud.service.runtime import connect_ray, start_local_ray
    from multicloud.store import Store

    store_url = args.store or f"sqlite:///{home / 'store.db'}"
    fleet = Fleet.model_validate(fleet_doc(args.time_scale))
    config = ServiceConfig.build(
        fleet,
        fleet_source="bench/service.py",
        store_url=store_url,
        sim_state=str(home / "sim.jsonl"),
        local_logs=str(home / "logs"),
        settings=dict(args.setting),
    )
    t = time.monotonic()
    record = start_local_ray(num_cpus=args.num_cpus)
    connect_ray(str(record["gcs_address"]), NAMESPACE)
    start(config, address=str(record["gcs_address"]), namespace=NAMESPACE)
    import ray

    client = Client(ray.get_actor("scheduler", namespace=NAMESPACE))
    startup_s = time.monotonic() - t

    jobs, dropped = feasible_jobs(fleet, args.jobs + 10, args.seed)
    warmup, jobs = jobs[:10], jobs[10:]
    docs = [j.model_dump(mode="json") for j in jobs]
    # A few jobs first: Ray starts the launch workers and the actor warms its caches, which
    # is start-up, not sustained throughput.
    client.wait(client.submit_many(warmup), timeout=60)
    before = client.ping()

    cpu_before = _cpu_seconds()
    batches, t0, t1 = _submit(client, docs, args.batch, args.inflight, args.rate)
    submit_s = t1 - t0
    accepted = sum(len(ids) for ids, _, _ in batches)
    ids = [i for b, _, _ in batches for i in b]
    sent = {i: sent_at for b, sent_at, _ in batches for i in b}
    acks = [acked - sent_at for _, sent_at, acked in batches]

    # Placement: wait until no submitted job is pending (or the deadline passes; a job no
    # offer can ever fit stays pending and is reported as such).
    deadline = time.monotonic() + args.timeout
    # Polled from the scheduler's memory (ping), not the store: asking for the states of
    # thousands of jobs five times a second would load the actor being measured.
    while client.ping()["active_jobs"].get("pending", 0) and time.monotonic() < deadline:
        time.sleep(0.2)
    placed_wait_s = time.monotonic() - t0
    interference = _interference(cpu_before, placed_wait_s, str(record["temp_dir"]))
    after_submit = client.ping()

    # Drain: every workload runs to its end (a short simulated hour), so the lifecycle
    # (launch, status, finish) is measured as well.
    while client.ping()["active_jobs"] and time.monotonic() < deadline:
        time.sleep(0.5)
    states = client.states(ids)
    drained_s = time.monotonic() - t0
    final = client.ping()

    with Store.open(store_url) as store:
        times = store.state_times(ids)
    latencies: list[float] = []
    placed_at: list[float] = []
    for job_id in ids:
        at = times.get(job_id, {}).get("placed")
        if at is None:
            continue
        when = datetime.fromisoformat(at).timestamp()
        placed_at.append(when)
        latencies.append(when - sent[job_id])
    first_sent = min(sent.values())

    def delta(key: str) -> int:
        return int(final[key]) - int(before[key])

    return {
        "store": store.backend,
        "parameters": {
            "jobs": args.jobs,
            "batch": args.batch,
            "inflight": args.inflight,
            "offered_rate_per_s": args.rate or "unpaced",
            "seed": args.seed,
            "time_scale_s_per_hour": args.time_scale,
            "ray_num_cpus": args.num_cpus,
            "settings_overrides": dict(args.setting),
            "offers": _offer_count(fleet),
            "jobs_left_out_as_infeasible": dropped,
            "fleet": "the demo fleet's clouds and regions priced from the catalog, with "
            "large capacity; azure holds the ROFR (10%); a 16-node p5 reservation; a "
            "commitment behind schedule",
        },
        "startup_s": round(startup_s, 2),
        "submission": {
            "accepted": accepted,
            "seconds": round(submit_s, 3),
            "submissions_per_s": round(accepted / submit_s, 1),
            "batches": len(batches),
            "call_round_trip_ms": summary_ms(acks),
            "how": f"batches of {args.batch} jobs per actor call, up to {args.inflight} "
            "calls in flight (Client.submit_async)"
            + (f", paced at {args.rate:g} jobs/s" if args.rate else ", unpaced"),
        },
        "submit_to_placed_ms": {
            **summary_ms(latencies),
            "what": "PLACED event time (store) minus the client's send time of the job's "
            "batch; wall clock, same machine",
        },
        "placement": {
            "placed": len(latencies),
            "never_placed": accepted - len(latencies),
            "never_placed_reasons": _unplaced_reasons(client, ids, times),
            "placed_per_s": (
                round(len(placed_at) / (max(placed_at) - first_sent), 1) if placed_at else None
            ),
            "wait_s": round(placed_wait_s, 2),
        },
        "machine_load_while_placing": interference,
        "lifecycle": {
            "final_states": dict(Counter(states.values())),
            "drained_s": round(drained_s, 2),
        },
        "scheduler": {
            "cycles": delta("cycles"),
            "plans": delta("plans"),
            "launches": delta("launches"),
            "launch_errors": final["launch_errors"],
            "preemptions": delta("preemptions"),
            "cycle_errors": delta("cycle_errors"),
            "last_error": final["last_error"],
            "during_placement": {k: after_submit[k] for k in _PING_KEYS if k in after_submit},
            "whole_run": {k: final[k] for k in _PING_KEYS if k in final},
        },
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _offer_count(fleet: Any) -> int:
    from multicloud.providers import from_fleet

    total = 0
    for name in fleet.providers:
        provider: Any = from_fleet(fleet, name)
        total += len(provider._pools)
    return total


def _unplaced_reasons(client: Any, ids: list[str], times: dict[str, Any]) -> dict[str, int]:
    reasons: Counter[str] = Counter()
    for job_id in ids:
        if "placed" in times.get(job_id, {}):
            continue
        decisions = client.explain(job_id)["decisions"]
        reason = decisions[-1]["reasons"][0] if decisions else "never planned"
        reasons[reason.split(":")[0]] += 1
    return dict(reasons.most_common(10))


def main() -> None:
    """Parse arguments, run the benchmark in a throwaway Ray cluster, write the results."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=100, help="jobs per actor call")
    ap.add_argument("--inflight", type=int, default=4, help="actor calls outstanding")
    ap.add_argument(
        "--rate", type=float, default=0.0, help="jobs/s to offer (0: as fast as accepted)"
    )
    ap.add_argument("--store", help="store URL (default: SQLite in a temporary home)")
    ap.add_argument("--time-scale", type=float, default=0.05, help="wall seconds per sim hour")
    ap.add_argument("--num-cpus", type=int, default=2, help="CPUs the Ray head offers")
    ap.add_argument("--seed", type=int, default=10)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument(
        "--setting",
        type=_parse_setting,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a scheduler Settings field",
    )
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()

    # A fresh, short multicloud home (Ray's socket paths must stay short) and no inherited
    # cluster or token: the benchmark starts and stops its own.
    names = ("MULTICLOUD_HOME", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")
    saved = {name: os.environ.get(name) for name in names}
    home = Path(tempfile.mkdtemp(prefix="mcb-", dir="/tmp"))
    os.environ["MULTICLOUD_HOME"] = str(home)
    for name in names[1:]:
        os.environ.pop(name, None)
    try:
        result = run(args, home)
    finally:
        import ray

        from multicloud.service.runtime import stop_local_ray

        ray.shutdown()
        stop_local_ray(timeout=5)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(home, ignore_errors=True)

    targets = {
        "submissions_per_s>=1000": result["submission"]["submissions_per_s"] >= 1000,
        "p99_submit_to_placed_ms<=50": bool(
            result["submit_to_placed_ms"].get("p99", float("inf")) <= 50
            and result["placement"]["never_placed"] == 0
        ),
    }
    result["targets"] = targets
    print(json.dumps(result, indent=2))
    if args.no_write:
        return
    doc: dict[str, Any] = {}
    if args.out.exists():
        doc = json.loads(args.out.read_text())
    doc["machine"] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "ray": _ray_version(),
    }
    doc[result["store"]] = result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")


def _ray_version() -> str:
    import ray

    return str(ray.__version__)


if __name__ == "__main__":
    main()
