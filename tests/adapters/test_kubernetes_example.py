"""examples/kubernetes_plan.py and coreweave_plan.py: with no cluster (sim) and on the fakes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(example: str, *args: str, home: Path) -> str:
    env = {k: v for k, v in os.environ.items()
           if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    env["HOME"] = str(home)  # no ~/.kube/config
    done = subprocess.run([sys.executable, str(EXAMPLES / f"{example}_plan.py"), *args],
                          env=env, capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


@pytest.mark.parametrize("example", ["kubernetes", "coreweave"])
def test_without_a_kubeconfig_it_plans_on_the_simulation(example: str, tmp_path: Path) -> None:
    out = run(example, home=tmp_path)
    assert "no kubeconfig found" in out and f"simulated {example} cluster" in out
    assert "QUEUED" not in out and "finetune-h100" in out


def test_the_generic_cluster_prices_owned_nodes_amortised(tmp_path: Path) -> None:
    out = run("kubernetes", "--fake", home=tmp_path)
    assert "planning on the in-package fake kubernetes cluster" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")
             and not line.strip().startswith("total")}
    assert "NVIDIA-H100-80GB-HBM3" in lines["finetune-h100"]
    assert "$   8.63/node-h" in lines["finetune-h100"]  # $250k over 4 years + $1.50/h
    assert "$   0.00/node-h" in lines["eval-a100"]  # paid off: an explicit $0
    assert "AMD_Instinct_MI300X_OAM" in lines["embed"]


def test_coreweave_reads_cks_instance_ids(tmp_path: Path) -> None:
    out = run("coreweave", "--fake", home=tmp_path)
    assert "gd-8xh100ib-i128" in out and "QUEUED" not in out
    assert "L40S" in next(line for line in out.splitlines() if line.startswith("  embed"))
