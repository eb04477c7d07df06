"""Whether a count tier the planner leaves short of its LP bound could place more jobs.

The count stage places each priority tier's jobs from the top down and stops a tier at its
count's LP bound, or, short of it, after its wider passes, left-out jobs, trades and
shift (``multicloud.planner.count``). Where it stops short, the planner does not claim
the count proven (``stats.counts_optimal``), but nothing says whether the jobs it hunted
for exist.
This measures that on the planner benchmark's 10,000-job batches: each batch is planned in
this process on one thread, every tier that ends short is captured (its model with the
upper tiers' counts held, the count objective, the search's plan), and then:

- **root**: HiGHS on the whole model, from the search's plan, cut off at one job more and
  stopped after its root node (the planner's own ``Search.solve_sub`` with its options;
  handed a start, it runs without presolve);
- **proximity**: the fewest units (gangs or replicas, and a service's flags) on variables
  the plan leaves at 0, with the tier's count at its bound as a row (the other tiers' jobs
  may move or drop; lower tiers' jobs only hold capacity in a count search, so they are 0
  here); moves among the variables the plan already uses cost nothing. Stopped at its
  first plan after the root; HiGHS's dual bound then is a lower bound on that number for
  any plan meeting the row.

Each answers "are there more jobs" only when it finds them: stopped at its root, neither
proves there are none. Jobs more found in a tier say the batch's counts are short there
given the tiers above as the search left them (the first such tier is the one that
decides: counts rank from the top). A plan found is one plan, not the fewest moves: what it
changes is an upper bound on what placing those jobs needs.

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
from multicloud.planner.problem import FRAC, Problem
from multicloud.planner.search import Search

RESULTS = Path(__file__).resolve().parent / "results" / "countgap.json"
BATCHES = [f"{w}-{s}" for w in ("trace", "synthetic") for s in (3, 7, 8)]


def capture(batch: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Plan one 10,000-job batch on one thread and keep every count tier that ends short.

    Args:
        batch: ``trace-SEED`` or ``synthetic-SEED``, as the planner benchmark builds it.

    Returns:
        The short tiers (model, settings, objective, plan, tier and scope, the LP bound and
        the count the search reached), and the plan's figures (seconds, cost, work).
    """
    workload, seed = batch.split("-")
    jobs = make_jobs(10_000, seed=int(seed), synthetic=workload == "synthetic")
    snap = snapshot(jobs, catalog_offers(48, seed=int(seed)), ROFR)
    short: list[dict[str, Any]] = []
    copying = 0.0  # seconds spent copying models inside the plan, not the plan's own
    widen = count._widen

    def hook(
        search: Search, objective: Any, lp: Any, x: Any, idx: Any, target: int, scope: Any
    ) -> Any:
        nonlocal copying
        out = widen(search, objective, lp, x, idx, target, scope)
        if out[1] < target:
            t0 = time.perf_counter()
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
            copying += time.perf_counter() - t0
        return out

    count._widen = hook
    try:
        t0 = time.perf_counter()
        result = plan(snap, Policy(workers=1))
        seconds = time.perf_counter() - t0
    finally:
        count._widen = widen
    figures = {
        "plan_seconds_one_thread": round(seconds - copying, 1),
        "total_cost": round(result.total_cost, 2),
        "work": result.stats.work,
        "counts_proven": result.stats.counts_optimal,
        "timed_out": result.stats.timed_out,
    }
    return short, figures


def _changes(p: Problem, before: np.ndarray, after: np.ndarray) -> dict[str, int]:
    """What a plan found changes against the search's plan.

    Args:
        p: The count model.
        before: The search's plan.
        after: The plan found.

    Returns:
        The owners whose variables changed (an owner is a class of identical gangs or one
        service, not one job), the units changed on limited pools (a unit moved from one
        option to another counts twice: off one, onto the other) and those pools.
    """
    moved = np.abs(after - before) > 1e-6
    on_pool = moved & (p.pool >= 0)  # -1: a pool that can never fill, not a limited one
    return {
        "owners_changed": len(np.unique(p.owner[moved & (p.owner >= 0)])),
        "limited_pool_units_changed": round(float(np.abs(after - before)[on_pool].sum())),
        "limited_pools_changed": len(np.unique(p.pool[on_pool])),
    }


def root(case: dict[str, Any]) -> dict[str, Any]:
    """The whole count model at HiGHS's root, from the search's plan, cut off at a job more.

    Args:
        case: A short tier from :func:`capture`.

    Returns:
        Seconds, the tier's count in a plan placing more than the search's (None: HiGHS
        returned none, or only the start back), whether the ceiling on solver time (what
        the plan left of it) stopped it, and what that plan changes.
    """
    p, x, idx = case["problem"], case["plan"], case["tier"]
    search = Search(p, case["settings"])
    every = np.ones(p.n, dtype=np.bool_)
    cutoff = -(case["placed"] + 1) + case["settings"].count_tie
    t0 = time.perf_counter()
    out = search.solve_sub(case["objective"], x, every, x, nodes=1, cutoff=cutoff, proof=True)
    seconds = time.perf_counter() - t0
    found: dict[str, Any] = {
        "seconds": round(seconds, 1),
        "placed": None,
        "timed_out": search.timed_out,
    }
    if out.x is not None and round(float(out.x[idx].sum())) > case["placed"]:
        found.update(placed=round(float(out.x[idx].sum())), **_changes(p, x, out.x))
    return found


def proximity(case: dict[str, Any]) -> dict[str, Any]:
    """The fewest units on variables the plan leaves at 0, the tier's count at its bound.

    Args:
        case: A short tier from :func:`capture`.

    Returns:
        Seconds, the tier's count in the plan found (None: none found), whether the
        ceiling on solver time stopped it, the units on variables the plan left at 0,
        HiGHS's lower bound on them when it stopped (None: no finite bound), and what that
        plan changes.
    """
    p = copy.deepcopy(case["problem"])
    x, idx, scope = case["plan"], case["tier"], case["scope"]
    p.add_rows([(idx, float(case["target"]), math.inf)])
    search = Search(p, case["settings"])
    new = np.where((x <= FRAC) & scope, 1.0, 0.0)  # unused, as the planner's Hood reads it
    every = np.ones(p.n, dtype=np.bool_)
    bounds = (np.zeros(p.n), np.where(scope, p.ub, 0.0))
    t0 = time.perf_counter()
    # gap 1: the first plan is the answer; HiGHS's dual bound then is kept as the fewest
    out = search.solve_sub(new, x, every, None, nodes=1, bounds=bounds, gap=1.0)
    seconds = time.perf_counter() - t0
    found: dict[str, Any] = {
        "seconds": round(seconds, 1),
        "placed": None,
        "timed_out": search.timed_out,
    }
    if out.x is not None:
        found.update(
            placed=round(float(out.x[idx].sum())),
            new_units=round(float(new @ out.x)),
            fewest_new_units=math.ceil(out.bound - 1e-6) if math.isfinite(out.bound) else None,
            **_changes(p, x, out.x),
        )
    return found


def main() -> None:
    """Measure the batches named (default: all six) and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", action="append", choices=BATCHES, help="default: all six")
    args = parser.parse_args()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    batches: list[dict[str, Any]] = []
    for batch in args.batch or BATCHES:
        cases, figures = capture(batch)
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
        batches.append({"batch": batch, **figures, "short_tiers": tiers})
        print(json.dumps(batches[-1]), flush=True)
    out = {
        "machine": machine(),
        "started_at": started,
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "what": "count tiers the search leaves short of their LP bound, and whether HiGHS "
        "finds more jobs there (whole count model, stopped after its root)",
        "batches": batches,
    }
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
