"""Lease benchmark: writes bench/results/lease.json.

What one scheduler per store costs (``docs/architecture.md``, "One scheduler per store"),
on SQLite and on PostgreSQL:

* **fence cost**: wall time of a one-job ``Store.submit_many`` (one write transaction) on a
  store that holds the lease (every write begins with the fence check: the lease row read
  ``FOR SHARE`` on PostgreSQL) against the same on an unfenced store; and of
  ``Store.lease.check()``, the no-op fenced transaction the launcher runs before each
  launch batch and each termination. Medians and 90th percentiles of ``--writes`` calls,
  interleaved so that machine load hits both alike.
* **takeover**: a holder acquires with ``--ttl`` and then stops renewing (as a paused
  process would); a standby polls every ``--poll`` seconds. Seconds from the holder's last
  renewal (its lease's ``renewed_at``, database time) to the standby's ``started_at``,
  over ``--takeovers`` rounds: the TTL plus at most one poll is expected.

PostgreSQL is used when reachable at ``MULTICLOUD_TEST_POSTGRES`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``): a database of its own is created and
dropped.

Run: ``.venv/bin/python -m bench.lease [--writes 400] [--ttl 1.0] [--poll 0.05]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from multicloud.models import Job
from multicloud.store import Holder, LeaseHeldError, Store

RESULTS = Path(__file__).resolve().parent / "results" / "lease.json"
ADMIN = os.environ.get(
    "MULTICLOUD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)


@contextmanager
def _postgresql() -> Iterator[str | None]:
    """A fresh database's URL (None if PostgreSQL is not reachable); dropped afterwards."""
    try:
        admin = psycopg.connect(ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError:
        yield None
        return
    name = f"mc_bench_lease_{uuid.uuid4().hex[:10]}"
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        admin.execute(drop.format(sql.Identifier(name)))
        admin.close()


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) * 1e3, 3),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))] * 1e3, 3),
        "samples": len(ordered),
    }


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def fence_cost(url: str, writes: int) -> dict[str, Any]:
    """Time one-job submissions and fence checks, fenced and not, interleaved."""
    job = Job.model_validate({"name": "bench", "resources": {"accelerator": "H100"}})
    fenced, plain = Store.open(url), Store.open(url)
    try:
        fenced.lease.acquire(Holder("bench"), 3600.0)
        times: dict[str, list[float]] = {"fenced": [], "unfenced": [], "check": []}
        for i in range(writes):
            pair = [("fenced", fenced), ("unfenced", plain)]
            for kind, store in pair if i % 2 else pair[::-1]:
                started = time.perf_counter()
                store.submit_many([(job, None)], now=NOW)
                times[kind].append(time.perf_counter() - started)
            times["check"].append(_timed(fenced.lease.check))
        out: dict[str, Any] = {
            "submit_one_fenced": _stats(times["fenced"]),
            "submit_one_unfenced": _stats(times["unfenced"]),
            "lease_check": _stats(times["check"]),
        }
        extra = out["submit_one_fenced"]["median_ms"] - out["submit_one_unfenced"]["median_ms"]
        out["fence_overhead_median_ms"] = round(extra, 3)
        return out
    finally:
        fenced.lease.release()
        fenced.close()
        plain.close()


def takeover(url: str, ttl: float, poll: float, rounds: int) -> dict[str, Any]:
    """Seconds from a holder's last renewal to a polling standby's takeover."""
    gaps: list[float] = []
    for i in range(rounds):
        holder, standby = Store.open(url), Store.open(url)
        try:
            held = holder.lease.acquire(Holder(f"holder-{i}"), ttl)
            while True:
                try:
                    standby.lease.acquire(Holder(f"standby-{i}"), ttl)
                    break
                except LeaseHeldError:
                    time.sleep(poll)
            taken = standby.lease.read()
            assert taken.started_at is not None and held.renewed_at is not None
            gaps.append((taken.started_at - held.renewed_at).total_seconds())
            standby.lease.release()
        finally:
            holder.close()
            standby.close()
    return {
        "ttl_s": ttl,
        "poll_s": poll,
        "rounds": rounds,
        "seconds_after_last_renewal": {
            "min": round(min(gaps), 3),
            "median": round(statistics.median(gaps), 3),
            "max": round(max(gaps), 3),
        },
    }


def main() -> None:
    """Parse arguments, run on SQLite and PostgreSQL, write the results file."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--writes", type=int, default=400)
    ap.add_argument("--ttl", type=float, default=1.0)
    ap.add_argument("--poll", type=float, default=0.05)
    ap.add_argument("--takeovers", type=int, default=5)
    args = ap.parse_args()
    backends: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, _postgresql() as pg:
        urls = {"sqlite": f"sqlite:///{tmp}/bench.db", "postgresql": pg}
        for name, url in urls.items():
            if url is None:
                backends[name] = {"skipped": "PostgreSQL not reachable"}
                continue
            backends[name] = {
                "fence": fence_cost(url, args.writes),
                "takeover": takeover(url, args.ttl, args.poll, args.takeovers),
            }
    doc = {
        "benchmark": "lease",
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_1m": os.getloadavg()[0],
        "args": vars(args),
        "backends": backends,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
