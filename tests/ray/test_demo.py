"""`multicloud demo` end to end on the session's Ray cluster (the README's first command)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.ray


def test_live_demo_runs_every_job_through_faults_and_exits_0(cluster: Any) -> None:
    multicloud = str(Path(sys.executable).parent / "multicloud")
    proc = subprocess.run(
        [multicloud, "demo", "--address", cluster.address, "--json"],
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert doc["all_succeeded"] is True
    jobs = doc["jobs"]
    kinds = Counter(j["kind"] for j in jobs)
    assert kinds["training"] >= 8 and kinds["inference"] >= 3
    outcomes = Counter(a["outcome"] for j in jobs for a in j["attempts"])
    # The demo promises a capacity error and a spot preemption along the way.
    assert outcomes["capacity"] >= 1 and outcomes["preempted"] >= 1, outcomes
    used = {a["provider"] for j in jobs for a in j["attempts"]}
    assert used == {"aws", "gcp", "azure", "coreweave", "local"}
    assert doc["audit"] and {e["holder"] for e in doc["audit"]} == {"azure"}
    # The local jobs really ran: their output came back.
    assert "tokens:" in doc["logs"]["tokenizer-smoke-test"]
    assert "accuracy" in doc["logs"]["eval-harness-dry-run"]
