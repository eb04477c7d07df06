"""Realistic synthetic workloads for the benchmarks.

Job sizes and durations are drawn from the public Alibaba GPU trace in ``shared/data/traces``
when it is present (GPUs per task, run time), and from a fixed fallback distribution when it
is not; the mix of accelerators, gang sizes, markets and constraints is ours. Everything is
seeded, so two runs plan the same jobs.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any

from multicloud.models import Job

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"

# (accelerator choices, weight): what AI teams ask for, newest first
ACCEL_MIX: list[tuple[list[str], float]] = [
    (["H100"], 0.30),
    (["H100", "H200"], 0.15),
    (["A100-80GB", "A100"], 0.15),
    (["B200"], 0.05),
    (["L4"], 0.10),
    (["A10G", "L4"], 0.05),
    (["TPU-v6e"], 0.05),
    (["L40S"], 0.05),
    (["A100"], 0.10),
]


PODS = SHARED / "traces" / "alibaba_gpu_v2023_openb_pods.csv"
FALLBACK: list[tuple[int, float]] = [(1, 1.0), (2, 4.0), (4, 12.0), (8, 24.0), (8, 72.0), (1, 0.5)]


def trace_samples(synthetic: bool = False) -> list[tuple[int, float]]:
    """Return (gpus, hours) pairs from the public trace, or a fallback distribution.

    Args:
        synthetic: Use the fallback distribution even when the trace is present.
    """
    path = PODS
    out: list[tuple[int, float]] = []
    if path.exists() and not synthetic:
        with path.open() as fh:
            for row in csv.DictReader(fh):
                if not row["duration_s"] or not row["num_gpus"]:
                    continue
                gpus = int(row["num_gpus"])
                if gpus <= 0:
                    continue
                hours = min(max(float(row["duration_s"]) / 3600.0, 0.25), 720.0)
                out.append((gpus, round(hours, 2)))
    if not out:
        out = list(FALLBACK)
    return out


def make_jobs(
    n: int, seed: int = 7, *, inference_share: float = 0.2, synthetic: bool = False
) -> list[Job]:
    """Generate ``n`` jobs.

    Args:
        n: Number of jobs.
        seed: Random seed.
        inference_share: Fraction of inference services.
        synthetic: Draw sizes and run times from the fallback distribution (what runs
            where the trace is absent) even when the trace is present.

    Returns:
        Validated jobs named ``job-00000`` … in submission order.
    """
    rng = random.Random(seed)
    samples = trace_samples(synthetic)
    choices = [c for c, _ in ACCEL_MIX]
    weights = [w for _, w in ACCEL_MIX]
    near = ["us-east-1", "us-west-2", "eu-west-1", "us-central1", "eastus"]
    jobs: list[Job] = []
    for i in range(n):
        gpus, hours = rng.choice(samples)
        accel = rng.choices(choices, weights)[0]
        spec: dict[str, Any] = {
            "name": f"job-{i:05d}",
            "priority": rng.choices([0, 1, 2, 5], [0.5, 0.25, 0.15, 0.1])[0],
            "team": rng.choice(["research", "product", "infra"]),
            "duration_hours": hours,
        }
        if rng.random() < inference_share:
            spec |= {
                "kind": "inference",
                "resources": {"accelerator": accel, "count": 1 if gpus < 8 else 8},
                "serving": {
                    "replicas": rng.choice([2, 3, 4]),
                    "spread": rng.choice([1, 2]),
                    "regions_near": [rng.choice(near)],
                    "max_latency_ms": rng.choice([40.0, 80.0]),
                },
            }
        else:
            big = rng.random() < 0.3
            spec |= {
                "kind": "training",
                "resources": {
                    "accelerator": accel,
                    "count": 8 if big or gpus >= 8 else min(gpus, 8),
                    "nodes": rng.choice([2, 4, 8, 16]) if big else 1,
                },
                "market": rng.choices(["on-demand", "any", "spot"], [0.6, 0.3, 0.1])[0],
            }
            if rng.random() < 0.1:
                spec["placement"] = {"residency": ["EU"]}
            elif rng.random() < 0.2:
                spec["placement"] = {"regions": ["us-*", "eastus*", "westus*"]}
        jobs.append(Job.model_validate(spec))
    return jobs


# The trace's GPU-model constraints (spec33 variant), as the shipped catalog names them.
# P100 and the undisclosed G1-G3 codes have no cloud offer: the nearest current class.
TRACE_GPUS = {
    "T4": "T4",
    "P100": "V100",
    "V100M16": "V100",
    "V100M32": "V100-32GB",
    "A10": "A10",
    "G1": "A100",
    "G2": "A100",
    "G3": "A100-80GB",
}
ANY_GPU = ["H100", "A100-80GB", "A100"]  # unconstrained pods: any current training GPU
QOS_PRIORITY = {"Guaranteed": 5, "LS": 2, "Burstable": 1, "BE": 0}


def trace_batch(n: int = 900) -> list[Job] | None:
    """Jobs from the busiest window of the public Alibaba GPU trace (None if absent).

    The window is the ``n`` consecutive GPU pods (by submission) submitted in the
    shortest time. Each pod is one job: its GPUs per node, run time, QoS as priority
    (Guaranteed 5, LS 2, Burstable 1, BE 0; BE and Burstable may use spot) and GPU-model
    constraint (mapped by ``TRACE_GPUS``; none means any of ``ANY_GPU``).

    Args:
        n: Pods in the window.

    Returns:
        The jobs in submission order, or None when the trace is not in ``shared/``.
    """
    if not PODS.exists():
        return None
    with PODS.open() as fh:
        rows = [
            r
            for r in csv.DictReader(fh)
            if r["duration_s"] and r["num_gpus"] and int(r["num_gpus"]) > 0
        ]
    times = [int(r["submit_time_s"]) for r in rows]
    start = min(range(len(rows) - n + 1), key=lambda i: (times[i + n - 1] - times[i], i))
    jobs: list[Job] = []
    for k, r in enumerate(rows[start : start + n]):
        want = [g for g in r["gpu_model_constraint_spec33"].split("|") if g]
        accel = sorted({TRACE_GPUS[g] for g in want if g in TRACE_GPUS}) or ANY_GPU
        qos = r["qos"]
        spec: dict[str, Any] = {
            "name": f"pod-{k:04d}",
            "priority": QOS_PRIORITY.get(qos, 0),
            "duration_hours": round(min(max(float(r["duration_s"]) / 3600.0, 0.25), 720.0), 2),
            "resources": {"accelerator": accel, "count": int(r["num_gpus"])},
            "market": "any" if qos in ("BE", "Burstable") else "on-demand",
        }
        jobs.append(Job.model_validate(spec))
    return jobs
