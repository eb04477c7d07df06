"""Planner benchmark (issue #2 item 8): writes bench/results/planner.json.

Measures, on this machine, against the shipped catalog (all four clouds, every offer):

* the fast path: 100,000 jobs with no contended capacity, decisions/s;
* per-decision latency (p50/p99): a scheduling cycle with one pending job;
* a contended fleet with ROFR on: 10,000 jobs, decisions/s and the optimiser's share;
* a contended batch of 1,000 jobs: optimiser time, proven optimality and the cost gap to
  the LP relaxation bound.

Run: ``.venv/bin/python -m bench.planner [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.workload import make_jobs
from multicloud.catalog import load_catalog
from multicloud.models import Contracts, Job
from multicloud.planner import Plan, Policy, Snapshot, plan
from multicloud.provider import Offer

RESULTS = Path(__file__).resolve().parent / "results" / "planner.json"
NOW = datetime(2026, 11, 23, tzinfo=timezone.utc)
ROFR = Contracts.model_validate({"rofr": {"holders": ["azure"], "tolerance": 0.1}})


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


def run(quick: bool) -> dict[str, Any]:
    n_fast = 20_000 if quick else 100_000
    n_cont = 2_000 if quick else 10_000
    unlimited = catalog_offers(None)
    limited = catalog_offers(48)
    out: dict[str, Any] = {
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": __import__("os").cpu_count(),
        },
        "offers": len(limited),
        "catalog_version": load_catalog().version,
    }

    jobs = make_jobs(n_fast, seed=1)
    p, secs = timed(snapshot(jobs, unlimited, ROFR))
    out["fast_path"] = {
        "jobs": n_fast,
        "seconds": round(secs, 3),
        "decisions_per_s": round(n_fast / secs),
        "path": p.stats.path,
        "placed": n_fast - len(p.unplaced),
        "rofr_offers": len(p.audit),
    }

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

    jobs = make_jobs(n_cont, seed=3)
    p, secs = timed(snapshot(jobs, limited, ROFR))
    out["contended_rofr"] = {
        "jobs": n_cont,
        "seconds": round(secs, 3),
        "decisions_per_s": round(n_cont / secs),
        "path": p.stats.path,
        "optimizer_jobs": p.stats.optimizer_jobs,
        "optimizer_variables": p.stats.optimizer_variables,
        "optimal": p.stats.optimal,
        "gap_to_proven_bound": p.to_dict()["stats"]["mip_gap"],
        "placed": n_cont - len(p.unplaced),
        "rofr_offers": len(p.audit),
        "rofr_accepted": sum(1 for e in p.audit if e.answer == "accepted"),
        "total_cost": round(p.total_cost, 2),
    }

    batches = {}
    for label, cap in (("moderate", 48), ("heavy", 12)):
        jobs = make_jobs(1_000, seed=4)
        offers = catalog_offers(cap, seed=5)
        p, secs = timed(snapshot(jobs, offers, ROFR), Policy(time_limit_s=2))
        # Reference: the same plan solved to proven optimality (no size cap, long limit).
        ref, ref_secs = timed(
            snapshot(jobs, offers, ROFR),
            Policy(time_limit_s=600, max_milp_variables=10**9),
        )
        batches[label] = {
            "jobs": 1_000,
            "capacity_per_pool": f"0..{cap} nodes",
            "plan_seconds": round(secs, 3),
            "optimizer_jobs": p.stats.optimizer_jobs,
            "optimizer_variables": p.stats.optimizer_variables,
            "proven_optimal": p.stats.optimal,
            "gap_to_proven_bound": p.to_dict()["stats"]["mip_gap"],
            "lp_bound_gap": p.stats.lp_bound_gap,
            "placed": 1_000 - len(p.unplaced),
            "total_cost": round(p.total_cost, 2),
            "reference_optimum": {
                "seconds": round(ref_secs, 1),
                "proven_optimal": ref.stats.optimal,
                "total_cost": round(ref.total_cost, 2),
                "placed": 1_000 - len(ref.unplaced),
            },
            "cost_gap_to_reference": round((p.total_cost - ref.total_cost) / ref.total_cost, 5),
        }
    out["contended_batch_1000"] = batches
    fast_ok = out["fast_path"]["decisions_per_s"] >= 20_000
    out["targets"] = {
        "fast_path_decisions_per_s>=20000": fast_ok,
        **{
            f"contended_1000_{k}_optimal_or_1pct_within_2s": bool(
                b["plan_seconds"] <= 2.0
                and (b["proven_optimal"] or (b["lp_bound_gap"] or 1.0) <= 0.01)
            )
            for k, b in batches.items()
        },
    }
    out["measured_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    res = run(args.quick)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, allow_nan=False) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
