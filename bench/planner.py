"""Planner benchmark (issues #2 and #11): writes bench/results/planner.json.

Measures, on this machine, against the shipped catalog (all four clouds, every offer):

* the fast path: 100,000 jobs with no contended capacity, decisions/s;
* per-decision latency (p50/p99): a scheduling cycle with one pending job;
* contended batches of 1,000 jobs (pools of 0..48 and 0..12 nodes; trace-shaped and
  synthetic workloads; several seeds) and a busy window of the public Alibaba GPU trace:
  time, placed jobs per tier and cost against the proven optimum, which the benchmark
  computes itself (``Policy(prove=True)``) and records with its time;
* 10,000 contended jobs: time and the gap to the LP bound (a bound on the gap to the
  optimum; proving that optimum takes too long to repeat here);
* a 20,000-job file (YAML, and the same jobs as JSON) to the printed JSON plan:
  ``multicloud plan FILE --json`` as a process against the demo fleet, each of its steps
  timed inside it (bench/planfile.py: imports, read and validate, plan, encode).

Run: ``.venv/bin/python -m bench.planner [--quick] [--only PART]`` (under
``flock /tmp/mc-heavy.lock``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.planfile import plan_file
from bench.workload import make_jobs, trace_batch
from multicloud.catalog import load_catalog
from multicloud.models import Contracts, Job
from multicloud.planner import Plan, Policy, Snapshot, plan
from multicloud.planner.parallel import workers
from multicloud.provider import Offer

RESULTS = Path(__file__).resolve().parent / "results" / "planner.json"
NOW = datetime(2026, 11, 23, tzinfo=timezone.utc)
ROFR = Contracts.model_validate({"rofr": {"holders": ["azure"], "tolerance": 0.1}})


def reference_loop_seconds() -> float:
    """Seconds this machine takes for a fixed pure-Python loop (best of three).

    Machines of the same kind differ in speed (one session's machine took 1.8x another's
    for the same plans), so each part of the results records this beside its times: a
    figure is comparable across runs only against it.
    """
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        total = 0
        for i in range(5_000_000):
            total += i
        best = min(best, time.perf_counter() - t0)
    return round(best, 3)


def machine() -> dict[str, Any]:
    """The machine a figure was measured on: Python, platform, cores and its speed."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "reference_loop_seconds": reference_loop_seconds(),
    }


def fast_path(n: int) -> dict[str, Any]:
    """The fast path: ``n`` jobs against every catalog offer, no capacity limits."""
    jobs = make_jobs(n, seed=1)
    snap = snapshot(jobs, catalog_offers(None), ROFR)
    p, secs = timed(snap)
    return {
        "jobs": n,
        "seconds": round(secs, 3),
        "decisions_per_s": round(n / secs),
        "path": p.stats.path,
        "placed": n - len(p.unplaced),
        "rofr_offers": len(p.audit),
    }


def catalog_offers(capacity: int | None, seed: int = 3) -> list[Offer]:
    """Every catalog offer of the four clouds; ``capacity`` caps nodes (random 0..cap)."""
    cat = load_catalog()
    rng = random.Random(seed)
    out: list[Offer] = []
    for cloud in ("aws", "gcp", "azure", "coreweave"):
        for o in cat.offers(cloud):
            cap = None if capacity is None else rng.randint(0, capacity)
            out.append(replace(o, capacity=cap))
    return out


def timed(snap: Snapshot, policy: Policy | None = None) -> tuple[Plan, float]:
    t0 = time.perf_counter()
    p = plan(snap, policy)
    return p, time.perf_counter() - t0


def snapshot(jobs: list[Job], offers: list[Offer], contracts: Contracts | None = None) -> Snapshot:
    cat = load_catalog()
    return Snapshot(
        jobs=jobs,
        offers=offers,
        contracts=contracts or Contracts(),
        now=NOW,
        latency=cat.latency_ms,
        catalog_version=cat.version,
    )


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def tier_counts(p: Plan, jobs: list[Job]) -> dict[str, int]:
    """Placed jobs per priority tier (as JSON keys)."""
    placed = {a.job for a in p.placements}
    out: dict[str, int] = {}
    for j in jobs:
        if j.name in placed:
            out[str(j.priority)] = out.get(str(j.priority), 0) + 1
    return dict(sorted(out.items()))


def trace_offers(jobs: list[Job], seed: int, pressure: float = 1.4) -> list[Offer]:
    """Catalog offers with capacity such that the batch asks for ``pressure`` × the nodes.

    Every offer some job of the batch can use gets a random capacity in 0..c nodes, with c
    set so that the expected total is ``len(jobs) / pressure`` (each job is one node).
    """
    offers = catalog_offers(None)
    usable = [
        i
        for i, o in enumerate(offers)
        if any(
            o.accelerator in j.resources.accelerator and o.count >= j.resources.count for j in jobs
        )
    ]
    top = max(1, round(2 * len(jobs) / (pressure * len(usable))))
    rng = random.Random(seed)
    caps = {i: rng.randint(0, top) for i in usable}
    return [replace(o, capacity=caps.get(i, 0)) for i, o in enumerate(offers)]


def contended(
    label: str, jobs: list[Job], offers: list[Offer], *, reference: bool = True
) -> dict[str, Any]:
    """Plan one contended batch, and (optionally) its proven optimum for reference."""
    snap = snapshot(jobs, offers, ROFR)
    t0 = time.process_time()
    p, secs = timed(snap)
    cpu = time.process_time() - t0
    out: dict[str, Any] = {
        "batch": label,
        "jobs": len(jobs),
        "plan_seconds": round(secs, 3),
        "plan_cpu_seconds": round(cpu, 3),
        # Components are searched side by side: wall time is on this many threads, CPU
        # time is all of them together.
        "optimizer_threads": workers(Policy()),
        "optimizer_jobs": p.stats.optimizer_jobs,
        "optimizer_variables": p.stats.optimizer_variables,
        "work": p.stats.work,
        "timed_out": p.stats.timed_out,
        "counts_proven": p.stats.counts_optimal,
        "gap_to_lp_bound": p.to_dict()["stats"]["lp_bound_gap"],
        "placed_per_tier": tier_counts(p, jobs),
        "total_cost": round(p.total_cost, 2),
    }
    if reference:
        # The same snapshot solved to proven optimality: every stage's whole model, no
        # node limit, a long ceiling, and a gap of 1e-6 (the default 1e-3 let a "proven"
        # reference sit 0.04 % above the optimum).
        ref, ref_secs = timed(snap, Policy(prove=True, time_limit_s=1800, mip_rel_gap=1e-6))
        out["reference_optimum"] = {
            "seconds": round(ref_secs, 1),
            "proven_optimal": ref.stats.optimal and not ref.stats.timed_out,
            "total_cost": round(ref.total_cost, 2),
            "placed_per_tier": tier_counts(ref, jobs),
        }
        out["tiers_equal_optimum"] = (
            out["placed_per_tier"] == out["reference_optimum"]["placed_per_tier"]
        )
        out["cost_gap_to_optimum"] = round((p.total_cost - ref.total_cost) / ref.total_cost, 6)
    return out


def batches_1000(quick: bool) -> list[dict[str, Any]]:
    """The contended 1,000-job batches and the Alibaba window, each with its optimum."""
    seeds = (4,) if quick else (4, 7, 8)
    batches: list[dict[str, Any]] = []
    for workload in ("trace", "synthetic"):
        for label, cap in (("moderate", 48), ("heavy", 12)):
            for seed in seeds:
                jobs = make_jobs(1_000, seed=seed, synthetic=workload == "synthetic")
                name = f"{workload} {label} (pools 0..{cap} nodes) seed {seed}"
                batches.append(contended(name, jobs, catalog_offers(cap, seed=seed + 1)))
    trace = trace_batch()
    if trace is not None:
        for seed in seeds:
            name = f"Alibaba busy window ({len(trace)} pods, demand 1.4x supply) seed {seed}"
            batches.append(contended(name, trace, trace_offers(trace, seed)))
    return batches


def batches_10000(quick: bool) -> list[dict[str, Any]]:
    """The 10,000-job contended batches (gap to the LP bound; no reference optimum).

    Several seeds of each workload, as for the 1,000-job batches: one tuned case proves
    nothing about the next.
    """
    large = []
    for workload in ("trace", "synthetic"):
        for seed in (3,) if quick else (3, 7, 8):
            n = 2_000 if quick else 10_000
            jobs = make_jobs(n, seed=seed, synthetic=workload == "synthetic")
            name = f"{workload} moderate (pools 0..48 nodes), {len(jobs)} jobs, seed {seed}"
            large.append(contended(name, jobs, catalog_offers(48, seed=seed), reference=False))
    return large


def contended_targets(
    batches: list[dict[str, Any]], large: list[dict[str, Any]]
) -> dict[str, dict[str, bool]]:
    """Which contended batches meet issue 11's targets."""

    def ok(b: dict[str, Any]) -> bool:
        return bool(
            b["plan_seconds"] <= 2.0
            and b["tiers_equal_optimum"]
            and b["cost_gap_to_optimum"] <= 0.01
        )

    return {
        "contended_1000_within_1pct_in_2s_tiers_equal": {b["batch"]: ok(b) for b in batches},
        # The LP bound is at most the optimum: a gap to it bounds the gap to the optimum.
        "contended_10000_within_2pct_of_lp_bound_in_10s": {
            b["batch"]: bool(
                b["plan_seconds"] <= 10.0
                and b["gap_to_lp_bound"] is not None
                and b["gap_to_lp_bound"] <= 0.02
            )
            for b in large
        },
    }


def plan_file_target(got: dict[str, Any]) -> dict[str, bool]:
    """Whether each job file (YAML, JSON) reached its printed plan within issue 11's 2 s."""
    return {kind: got[kind]["process_seconds"] <= 2.0 for kind in ("yaml", "json")}


def run(quick: bool) -> dict[str, Any]:
    n_fast = 20_000 if quick else 100_000
    # The machine is shared: the load average is recorded beside the figures.
    load_before = os.getloadavg()
    unlimited = catalog_offers(None)
    out: dict[str, Any] = {
        "machine": machine(),
        "offers": len(unlimited),
        "catalog_version": load_catalog().version,
    }
    out["fast_path"] = fast_path(n_fast)

    limited = catalog_offers(48)
    singles = make_jobs(2_000, seed=2)
    lat = []
    for j in singles:
        _, s = timed(snapshot([j], limited, ROFR))
        lat.append(s * 1e3)
    out["per_decision_ms"] = {
        "samples": len(lat),
        "p50": round(pct(lat, 0.5), 3),
        "p99": round(pct(lat, 0.99), 3),
        "what": "one scheduling cycle with one pending job against every catalog offer",
    }

    out["contended_batch_1000"] = batches_1000(quick)
    out["contended_10000"] = batches_10000(quick)
    out["plan_file_20000"] = plan_file(2_000 if quick else 20_000)
    out["load_before"] = load_before

    out["targets"] = {
        "fast_path_decisions_per_s>=50000": out["fast_path"]["decisions_per_s"] >= 50_000,
        **contended_targets(out["contended_batch_1000"], out["contended_10000"]),
        "plan_file_20000_to_json_in_2s": plan_file_target(out["plan_file_20000"]),
    }
    out["load_after"] = os.getloadavg()
    out["measured_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return out


def only(part: str, quick: bool, previous: Path) -> dict[str, Any]:
    """Measure one part alone; every other entry of ``previous`` is kept.

    Args:
        part: ``fast_path``, ``plan_file``, ``contended_1000`` or ``contended_10000``.
        quick: Smaller sizes.
        previous: The results file whose other entries are kept.

    Returns:
        The results with that part (and its targets) replaced.
    """
    out: dict[str, Any] = json.loads(previous.read_text()) if previous.exists() else {}
    targets = out.setdefault("targets", {})
    load_before = os.getloadavg()
    # Parts are re-measured at different times, perhaps on different machines: each
    # records its own.
    here = machine()
    if part == "fast_path":
        got = fast_path(20_000 if quick else 100_000)
        out["fast_path"] = {**got, "machine": here, "load": [load_before, os.getloadavg()]}
        targets["fast_path_decisions_per_s>=50000"] = out["fast_path"]["decisions_per_s"] >= 50_000
        return out
    if part == "plan_file":
        got = plan_file(2_000 if quick else 20_000)
        out["plan_file_20000"] = {**got, "machine": here}
        targets["plan_file_20000_to_json_in_2s"] = plan_file_target(got)
        return out
    key = "contended_batch_1000" if part == "contended_1000" else "contended_10000"
    out[key] = batches_1000(quick) if part == "contended_1000" else batches_10000(quick)
    new = contended_targets(out.get("contended_batch_1000", []), out.get("contended_10000", []))
    name = (
        "contended_1000_within_1pct_in_2s_tiers_equal"
        if part == "contended_1000"
        else "contended_10000_within_2pct_of_lp_bound_in_10s"
    )
    targets[name] = new[name]
    # The machine is shared: the load around this part is recorded beside it.
    out[f"{key}_load"] = {
        "before": load_before,
        "after": os.getloadavg(),
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": here,
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    ap.add_argument(
        "--only",
        choices=["fast_path", "plan_file", "contended_1000", "contended_10000"],
        help="measure only this part; the other entries of --out stay",
    )
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    res = only(args.only, args.quick, args.out) if args.only else run(args.quick)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, allow_nan=False) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
