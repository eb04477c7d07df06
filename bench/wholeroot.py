"""What HiGHS's whole-model root finds on the 20,000-job file's budget-tied group.

The planner's search works in neighbourhoods; on the 20,000-job file against the demo
fleet (bench/planfile.py) its count of the last tier and its cost both stop short of what
HiGHS finds when handed the whole group's model and the search's own plan as a start, and
stopped after its root node (README, "The 20,000-job file"). This re-measures that: the
file is planned in this process with the last count tier's model and the cost stage's
model captured (with the plans the search ends on), then each model goes to HiGHS whole,
one thread, ``mip_max_nodes=1``.

Run: ``.venv/bin/python -m bench.wholeroot`` (about a minute; writes
``bench/results/wholeroot.json``).
"""

from __future__ import annotations

import copy
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from scipy.sparse import csc_array

from bench.planner import machine
from bench.workload import make_jobs
from multicloud.cli.app import check_adapters
from multicloud.demo import demo_paths
from multicloud.fleet import plan_fleet
from multicloud.planner import count
from multicloud.planner import search as search_module
from multicloud.planner.problem import Problem, highs
from multicloud.specs import load_fleet

RESULTS = Path(__file__).resolve().parent / "results" / "wholeroot.json"
NOW = datetime(2026, 11, 23, tzinfo=timezone.utc)
LARGE = 20_000  # variables: the budget-tied group's models, not the file's small groups


def capture() -> tuple[dict[str, Any], dict[str, Any], float]:
    """Plan the file; the last count tier's and the cost stage's models and final plans."""
    seen: dict[str, dict[str, Any]] = {}
    widen = count._widen
    improve = search_module.Search.improve

    def widen_hook(search: Any, objective: Any, lp: Any, x: Any, idx: Any, *rest: Any) -> Any:
        out = widen(search, objective, lp, x, idx, *rest)
        if search.problem.n > LARGE:
            seen["count"] = {
                "problem": copy.deepcopy(search.problem),
                "objective": objective.copy(),
                "plan": out[0].copy(),
                "tier": idx,
            }
        return out

    def improve_hook(self: Any, objective: Any, lp: Any, incumbent: Any, *a: Any, **k: Any) -> Any:
        out = improve(self, objective, lp, incumbent, *a, **k)
        scope = a[1] if len(a) > 1 else k.get("scope")
        if scope is None and self.problem.n > LARGE:
            seen["cost"] = {
                "problem": copy.deepcopy(self.problem),
                "objective": objective.copy(),
                "plan": out.copy(),
            }
        return out

    substitute = search_module.Search.substitute

    def substitute_hook(self: Any, objective: Any, *a: Any) -> Any:
        out = substitute(self, objective, *a)
        # the cost stage's last step, when it stalled (a count search trades too)
        if self.problem.n > LARGE and self.settings.count_tie <= 0:
            seen.setdefault("cost", {})["plan"] = out.copy()
        return out

    count._widen = widen_hook  # type: ignore[assignment]
    search_module.Search.improve = improve_hook  # type: ignore[method-assign]
    search_module.Search.substitute = substitute_hook  # type: ignore[method-assign,assignment]
    try:
        jobs = make_jobs(20_000, seed=5)
        fleet = load_fleet(demo_paths()[1])
        t0 = time.perf_counter()
        plan_fleet(jobs, fleet, now=NOW, providers=check_adapters(fleet, "demo"))
        seconds = time.perf_counter() - t0
    finally:
        count._widen = widen
        search_module.Search.improve = improve  # type: ignore[method-assign]
        search_module.Search.substitute = substitute  # type: ignore[method-assign]
    return seen["count"], seen["cost"], seconds


def root(p: Problem, objective: np.ndarray, start: np.ndarray) -> dict[str, Any]:
    """HiGHS on the whole model, from ``start``, stopped after its root node."""
    a = csc_array(p.a)
    lp = highs(a, objective, p.ub, p.row_lb, p.row_ub, None)
    lp.run()
    h = highs(a, objective, p.ub, p.row_lb, p.row_ub, p.integral)
    h.setOptionValue("mip_max_nodes", 1)
    h.setOptionValue("time_limit", 600.0)
    h.setSolution(p.n, np.arange(p.n, dtype=np.int32), np.ascontiguousarray(start))
    t0 = time.perf_counter()
    h.run()
    seconds = time.perf_counter() - t0
    info = h.getInfo()
    found = np.asarray(h.getSolution().col_value)
    found = np.where(p.integral, np.round(found), found)
    return {
        "variables": p.n,
        "rows": int(p.row_lb.shape[0]),
        "seconds": round(seconds, 1),
        "status": str(h.getModelStatus()),
        "lp_bound": float(lp.getInfo().objective_function_value),
        "start_value": float(objective @ start),
        "found_value": float(objective @ found),
        "dual_bound": float(info.mip_dual_bound),
        "found": found,
    }


def main() -> None:
    counted, cost, plan_seconds = capture()
    tier = counted["tier"]
    got = root(counted["problem"], counted["objective"], counted["plan"])
    count_part = {
        "what": "the last count tier (tier 0) of the budget-tied group, upper tiers held",
        "search_placed": round(float(counted["plan"][tier].sum())),
        "root_placed": round(float(got.pop("found")[tier].sum())),
        **got,
    }
    got = root(cost["problem"], cost["objective"], cost["plan"])
    changed = np.abs(got.pop("found") - cost["plan"]) > 1e-6
    owners = np.unique(cost["problem"].owner[changed & (cost["problem"].owner >= 0)])
    cost_part = {
        "what": "the cost stage of the budget-tied group (ranked cost), tier counts held",
        "owners_changed": len(owners),
        "found_below_search": round(1 - got["found_value"] / got["start_value"], 4),
        "search_above_lp": round(got["start_value"] / got["lp_bound"] - 1, 4),
        **got,
    }
    out = {
        "machine": machine(),
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "plan_seconds": round(plan_seconds, 1),
        "count": count_part,
        "cost": cost_part,
    }
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
