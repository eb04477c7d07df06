"""Whether a count tier the planner leaves short of its LP bound could place a job more.

The count stage places each priority tier's jobs from the top down and stops a tier at its
count's LP bound, or, short of it, after its wider passes, left-out jobs and trades
(``multicloud.planner.count``). Where it stops short, the planner does not claim the count
proven (``stats.counts_optimal``), but nothing says whether the job it hunted for exists.
This measures that on the planner benchmark's 10,000-job batches: each batch is planned in
this process on one thread, every tier that ends short is captured (its model with the
upper tiers' counts held, the count objective, the search's plan), and then:

- **root**: HiGHS on the whole model, from the search's plan, cut off at one job more and
  stopped after its root node (the planner's own ``Search.solve_sub``, with its options);
- **proximity**: the fewest options the plan does not use, with the tier's count at its
  bound as a row (the other tiers' jobs may move or drop; lower tiers' jobs only hold
  capacity in a count search, so they are 0 here), also stopped after the root. Its LP
  bound is the fewest such options any plan placing the job more can use.

Each answers "is there a job more" only when it finds one: stopped at its root, neither
proves there is none. A job more found in a tier says the batch's counts are short there
given the tiers above as the search left them (the first such tier is the one that
decides: counts rank from the top).

Run: ``.venv/bin/python -m bench.countgap [--batch trace-7 ...]`` (a few minutes per batch
that has short tiers; writes ``bench/results/countgap.json``).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from bench.planner import ROFR, catalog_offers, machine, snapshot
from bench.workload import make_jobs
from multicloud.planner import Policy, count, plan
from multicloud.planner.search import Search

RESULTS = Path(__file__).resolve().parent / "results" / "countgap.json"
BATCHES = [f"{w}-{s}" for w in ("trace", "synthetic") for s in (3, 7, 8)]


def capture(batch: str) -> tuple[list[dict[str, Any]], float, bool]:
    """Plan one 10,000-job batch on one thread; every count tier that ends short."""
    workload, seed = batch.split("-")
    jobs = make_jobs(10_000, seed=int(seed), synthetic=workload == "synthetic")
    snap = snapshot(jobs, catalog_offers(48, seed=int(seed)), ROFR)
    short: list[dict[str, Any]] = []
    widen = count._widen

    def hook(
        search: Search, objective: Any, lp: Any, x: Any, idx: Any, target: int, scope: Any
    ) -> Any:
        out = widen(search, objective, lp, x, idx, target, scope)
        if out[1] < target:
            # the tier's priority: the count stage's loop variable, one frame up
            priority = sys._getframe(1).f_locals.get("t")
            short.append(
                {
                    "priority": priority,
                    "problem": copy.deepcopy(search.problem),
                    "settings": search.settings,
                    "objective": objective.copy(),
                    "plan": out[0].copy(),
                    "tier": idx.copy(),
                    "scope": scope.copy(),
                    "target": target,
                    "placed": out[1],
                }
            )
        return out

    count._widen = hook
    try:
        t0 = time.perf_counter()
        result = plan(snap, Policy(workers=1))
        seconds = time.perf_counter() - t0
    finally:
        count._widen = widen
    return short, seconds, result.stats.counts_optimal


def root(case: dict[str, Any]) -> dict[str, Any]:
    """The whole count model at HiGHS's root, from the search's plan, cut off at a job more."""
    p, x, idx = case["problem"], case["plan"], case["tier"]
    search = Search(p, case["settings"])
    every = np.ones(p.n, dtype=np.bool_)
    cutoff = -(case["placed"] + 1) + case["settings"].count_tie
    t0 = time.perf_counter()
    out = search.solve_sub(case["objective"], x, every, x, nodes=1, cutoff=cutoff, proof=True)
    seconds = time.perf_counter() - t0
    placed = None if out.x is None else round(float(out.x[idx].sum()))
    return {"seconds": round(seconds, 1), "placed": placed}


def proximity(case: dict[str, Any]) -> dict[str, Any]:
    """The fewest options the plan does not use, with the tier's count at its bound."""
    p = copy.deepcopy(case["problem"])
    x, idx, scope = case["plan"], case["tier"], case["scope"]
    p.add_rows([(idx, float(case["target"]), math.inf)])
    search = Search(p, case["settings"])
    new = np.where((x <= 1e-6) & scope, 1.0, 0.0)
    every = np.ones(p.n, dtype=np.bool_)
    bounds = (np.zeros(p.n), np.where(scope, p.ub, 0.0))
    t0 = time.perf_counter()
    # gap 1: the first plan is the answer (its LP bound is kept as the fewest possible)
    out = search.solve_sub(new, x, every, None, nodes=1, bounds=bounds, gap=1.0)
    seconds = time.perf_counter() - t0
    found: dict[str, Any] = {"seconds": round(seconds, 1), "placed": None}
    if out.x is not None:
        moved = np.abs(out.x - x) > 1e-6
        pools = np.unique(p.pool[moved])
        found.update(
            placed=round(float(out.x[idx].sum())),
            new_options=round(float(new @ out.x)),
            fewest_new_options=math.ceil(out.bound - 1e-6),
            jobs_moved=len(np.unique(p.owner[moved & (p.owner >= 0)])),
            pools_moved=int((pools >= 0).sum()),
        )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", action="append", choices=BATCHES, help="default: all six")
    args = parser.parse_args()
    batches: list[dict[str, Any]] = []
    for batch in args.batch or BATCHES:
        cases, seconds, proven = capture(batch)
        tiers = []
        for case in cases:
            tiers.append(
                {
                    "priority": case["priority"],
                    "variables": case["problem"].n,
                    "lp_bound": case["target"],
                    "search_placed": case["placed"],
                    "root": root(case),
                    "proximity": proximity(case),
                }
            )
        batches.append(
            {
                "batch": batch,
                "plan_seconds_one_thread": round(seconds, 1),
                "counts_proven": proven,
                "short_tiers": tiers,
            }
        )
        print(json.dumps(batches[-1]), flush=True)
    out = {
        "machine": machine(),
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "what": "count tiers the search leaves short of their LP bound, and whether HiGHS "
        "finds a job more there (whole count model, stopped after its root)",
        "batches": batches,
    }
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
