"""examples/oci_plan.py runs with no OCI configuration (sim) and against the fake OCI API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "oci_plan.py"


def run(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCI_")}
    done = subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True,
                          text=True, timeout=120, check=True)
    return done.stdout


def test_without_configuration_it_falls_back_to_sim() -> None:
    out = run()
    assert "No OCI configuration" in out and "simulated OCI (sim)" in out
    assert "BM.GPU.H100.8" in out and "QUEUED" not in out


def test_against_the_fake_the_ad_narrowing_and_the_reservation_show() -> None:
    out = run("--fake")
    [h100] = [line for line in out.splitlines() if line.strip().startswith("pretrain-h100")]
    assert "AD-3" in h100 and "reserved" in h100 and "$      0.00" in h100
    assert "QUEUED" not in out
