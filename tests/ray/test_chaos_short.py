"""The chaos soak's short run: ``bench/chaos.py --minutes 1.5``, every fault kind, no violation.

The same program as the full soak (``bench/chaos.py``), with the same invariant checker
(``multicloud.testing.invariants``), run for a minute and a half with faults coming faster:
every kind of fault is injected at least once, and every invariant must hold throughout and
at the end. It runs in a process of its own: the soak starts (and restarts) its own Ray
cluster and its own PostgreSQL, which must not be this test session's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.chaos]

REPO = Path(__file__).resolve().parents[2]


def test_chaos_short_run_keeps_every_invariant(tmp_path: Path) -> None:
    out = tmp_path / "chaos.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.chaos", "--minutes", "1.5", "--fault-every", "3",
         "--submit-every", "1.5", "--seed", "11", "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    if proc.returncode == 3:
        pytest.skip(proc.stderr.strip().splitlines()[-1])
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-5000:]
    figures = json.loads(out.read_text())
    assert figures["violations"] == [], json.dumps(figures["violations"], indent=2)
    assert proc.returncode == 0, proc.stderr[-5000:]
    # The nine kinds of the soak: five done to the service, four by the clouds.
    assert len(figures["fault_kinds"]) == 9, figures["fault_kinds"]
    missing = [k for k in figures["fault_kinds"] if not figures["faults"].get(k)]
    assert missing == [], f"fault kinds never injected: {missing}; {figures['faults']}"
    jobs = figures["jobs"]
    assert jobs["submitted"] >= 10 and jobs["in_store"] == jobs["submitted"], jobs
    assert set(jobs["final_states"]) <= {"succeeded", "failed", "cancelled"}, jobs
    assert sum(jobs["final_states"].values()) == jobs["submitted"], jobs
