"""``multicloud plan FILE --json`` on a large job file, timed step by step inside the process.

Part of the planner benchmark (bench/planner.py, issue 11): the same jobs as YAML and as
JSON, planned against the demo fleet by the real command in its own process. That
process runs the command line as installed, with timers around its steps (imports,
reading and validating the jobs, the fleet and its checks, the optimiser's imports,
planning, and in it the optimiser and its count stage, encoding and printing); the rest
of its wall time is the interpreter's start, argument parsing and exit. The machine is
shared: the load is recorded, and the process's CPU time beside its wall time.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from bench.workload import make_jobs

# Runs in the measured process: wraps the command's steps with timers, writes them to
# stderr as JSON when the command exits (an exit handler: the command may end the
# process once it has printed, see multicloud.cli.app.leave, and runs the handlers then).
DRIVER = """
import atexit, importlib, json, sys, time
t0 = time.perf_counter()
from multicloud.cli import main
# by module name: the package's attribute ``app`` is the Typer app
app = importlib.import_module("multicloud.cli.app")
verb = importlib.import_module("multicloud.cli.plan")
marks = {"cli_imports": time.perf_counter() - t0}
t0 = time.perf_counter()
import multicloud.planner.milp  # numpy, scipy.sparse, highspy: imported when contended
marks["optimizer_imports"] = time.perf_counter() - t0
milp = sys.modules["multicloud.planner.milp"]

def timed(module, name, key):
    step = getattr(module, name)
    def wrapper(*args, **kwargs):
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return step(*args, **kwargs)
        finally:
            # summed over calls: the count stage runs once per contended component
            marks[key] = marks.get(key, 0.0) + time.perf_counter() - t0
            marks[key + "_cpu"] = marks.get(key + "_cpu", 0.0) + time.process_time() - c0
    setattr(module, name, wrapper)

timed(app, "load_jobs", "read_and_validate")
timed(verb, "load", "load")
timed(verb, "plan_fleet", "plan")
timed(verb, "echo_plan_json", "encode_and_print")
# inside planning: the optimiser (looked up when called), and in it the count stage
timed(milp, "optimise", "optimise")
timed(milp, "count_tiers", "count")
atexit.register(lambda: sys.stderr.write("\\n" + json.dumps(marks) + "\\n"))
main()
"""


def run_cli(path: Path, now: str) -> dict[str, Any]:
    """Run the command once on ``path``; its figures (seconds) and its plan's stats."""
    cmd = [sys.executable, "-c", DRIVER, "plan", str(path), "--json", "--now", now]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"multicloud plan failed ({proc.returncode}):\n{proc.stderr}")
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    marks = json.loads(proc.stderr.strip().splitlines()[-1])
    steps = {
        "cli_imports_seconds": marks["cli_imports"],
        "read_and_validate_seconds": marks["read_and_validate"],
        "read_and_validate_cpu_seconds": marks["read_and_validate_cpu"],
        "fleet_and_checks_seconds": marks["load"] - marks["read_and_validate"],
        "optimizer_imports_seconds": marks["optimizer_imports"],
        "plan_seconds": marks["plan"],
        "plan_cpu_seconds": marks["plan_cpu"],
        # planning's parts: offers, the queue walk and the rest before the optimiser; the
        # optimiser (its count stage, then the rest: options, models, the cost stage)
        "before_optimiser_seconds": marks["plan"] - marks.get("optimise", 0.0),
        "optimise_seconds": marks.get("optimise", 0.0),
        "count_seconds": marks.get("count", 0.0),
        "encode_and_print_seconds": marks["encode_and_print"],
        "encode_and_print_cpu_seconds": marks["encode_and_print_cpu"],
    }
    timed = ("cli_imports", "optimizer_imports", "load", "plan", "encode_and_print")
    doc = json.loads(proc.stdout)
    return {
        "bytes": path.stat().st_size,
        "process_seconds": round(wall, 3),
        "process_cpu_seconds": round(cpu, 3),
        **{k: round(v, 3) for k, v in steps.items()},
        # the interpreter's start, argument parsing, exit
        "other_seconds": round(wall - sum(marks[k] for k in timed), 3),
        # all but planning: what reading and printing a file this size costs
        "outside_plan_seconds": round(wall - marks["plan"], 3),
        "path": doc["stats"]["path"],
        "optimizer_jobs": doc["stats"]["optimizer_jobs"],
        "placed": len({a["job"] for a in doc["placements"]}),
    }


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the runs (the plan's stats are the same in every run)."""
    out = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, float):
            out[key] = statistics.median(r[key] for r in runs)
    out["runs"] = len(runs)
    out["process_seconds_each"] = [r["process_seconds"] for r in runs]
    return out


def plan_file(n: int, repeat: int = 3) -> dict[str, Any]:
    """Time ``multicloud plan FILE --json`` on an ``n``-job file, YAML and JSON.

    The jobs are the benchmark's trace-shaped ones; the fleet is the demo fleet (its
    pools are limited, so part of the batch is contended). Each file is planned
    ``repeat`` times, alternating, and each figure is its median: the machine is shared.

    Args:
        n: Jobs in the file.
        repeat: Runs of each file.

    Returns:
        The figures, per file kind, with the load before and after.
    """
    docs = [j.model_dump(mode="json", exclude_defaults=True) for j in make_jobs(n, seed=5)]
    out: dict[str, Any] = {"jobs": n, "fleet": "demo", "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        files = {"yaml": Path(tmp) / "jobs.yaml", "json": Path(tmp) / "jobs.json"}
        files["yaml"].write_text(yaml.dump({"jobs": docs}, Dumper=yaml.CSafeDumper))
        files["json"].write_text(json.dumps({"jobs": docs}))
        runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in files}
        for _ in range(repeat):
            for kind, path in files.items():
                runs[kind].append(run_cli(path, "2026-11-23T00:00:00Z"))
        for kind in files:
            out[kind] = median_run(runs[kind])
    out["load_after"] = os.getloadavg()
    out["measured_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return out
