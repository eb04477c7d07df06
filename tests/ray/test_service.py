"""The scheduler service end to end on a local Ray cluster, with simulated clouds.

Each test runs its own scheduler actor in its own Ray namespace, on its own store and
simulated-cloud journal, so tests share the (slow to start) cluster and nothing else.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from multicloud.errors import SpecError
from multicloud.models import Fleet
from multicloud.service.client import Client
from multicloud.service.config import ServiceConfig
from multicloud.service.control import start
from multicloud.sim import SimState
from multicloud.store import IdempotencyConflictError, Store
from multicloud.testing.builders import job

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.ray

HOUR_S = 0.05  # one simulated hour, in wall seconds


def offer(region: str, price: float, capacity: int | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "region": region,
        "instance_type": "h100x8",
        "accelerator": "H100",
        "count": 8,
        "price": price,
        "capacity": capacity,
        **extra,
    }


SIMPLE = {
    "providers": {
        "cheap": {"adapter": "sim", "offers": [offer("r1", 10.0, spot_price=4.0)]},
        "dear": {"adapter": "sim", "offers": [offer("r2", 14.0)]},
    },
    "time_scale": HOUR_S,
}


class Service:
    """A scheduler actor of one test."""

    def __init__(self, cluster: Any, tmp_path: Path, doc: dict[str, Any], **extra: Any) -> None:
        self.namespace = f"mc-{uuid.uuid4().hex[:8]}"
        self.tmp_path = tmp_path
        self.store_url = extra.pop("store_url", None) or f"sqlite:///{tmp_path / 'store.db'}"
        self.sim_state = str(tmp_path / "sim.jsonl")
        settings = {
            "status_interval_s": 0.1,
            "replan_interval_s": 0.2,
            "sweep_interval_s": 1.0,
            "retry_backoff_s": 0.05,
            "blocked_ttl_s": 1.0,
            **extra.pop("settings", {}),
        }
        self.config = ServiceConfig.build(
            Fleet.model_validate(doc),
            store_url=self.store_url,
            sim_state=self.sim_state,
            local_logs=str(tmp_path / "logs"),
            settings=settings,
            **extra,
        )
        self.result = start(self.config, address=cluster.address, namespace=self.namespace)
        self.client = Client(ray.get_actor("scheduler", namespace=self.namespace))

    def actor(self) -> Any:
        return ray.get_actor("scheduler", namespace=self.namespace)

    def stop(self) -> None:
        try:
            actor = self.actor()
        except ValueError:
            return
        ray.kill(actor, no_restart=True)

    def store(self) -> Store:
        return Store.open(self.store_url)

    def sim(self) -> SimState:
        return SimState.open(self.sim_state)


@pytest.fixture
def service(cluster: Any, tmp_path: Path) -> Iterator[Callable[..., Service]]:
    made: list[Service] = []

    def make(doc: dict[str, Any] = SIMPLE, **extra: Any) -> Service:
        s = Service(cluster, tmp_path, doc, **extra)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def check_no_duplicates_or_orphans(svc: Service) -> dict[str, int]:
    """Every workload in the cloud belongs to exactly one recorded attempt; none is left."""
    state = svc.sim()
    with state.transaction():
        workloads = list(state.workloads.values())
    with svc.store() as store:
        attempts = {a.request_id: a for j in store.list_jobs() for a in j.attempts}
    by_request = Counter(w.request_id for w in workloads)
    assert all(n == 1 for n in by_request.values())
    stray = [w.request_id for w in workloads if w.request_id not in attempts]
    assert stray == [], "a workload was launched that no attempt recorded"
    per_attempt = Counter((w.job_id, int(w.tags["multicloud:attempt"])) for w in workloads)
    assert all(n == 1 for n in per_attempt.values()), "a job attempt was launched twice"
    now = time.time()
    assert [w.id for w in workloads if w.live_at(now)] == [], "orphaned workloads left running"
    return {"workloads": len(workloads), "attempts": len(attempts)}


# --------------------------------------------------------------------------- basics


def test_submit_wait_status_explain_audit(service: Callable[..., Service]) -> None:
    doc = {
        **SIMPLE,
        "contracts": {"rofr": {"holders": ["dear"], "tolerance": 0.5}},
    }
    svc = service(doc)
    client = svc.client
    ids = client.submit_many([job(f"j{i}", duration_hours=2) for i in range(4)])
    assert len(set(ids)) == 4
    states = client.wait(ids, timeout=60)
    assert set(states.values()) == {"succeeded"}

    (view,) = client.status(ids[0])
    one = view.to_json()
    for key in (
        "id",
        "name",
        "state",
        "priority",
        "provider",
        "region",
        "instance_type",
        "accelerator",
        "count",
        "catalog_version",
        "attempts",
        "submitted_at",
        "updated_at",
        "placed_at",
        "started_at",
        "finished_at",
    ):
        assert key in one
    assert view.attempts[0].outcome == "succeeded"
    assert {"request_id", "handle", "outcome", "accelerator"} <= set(one["attempts"][0])
    assert (view.accelerator, view.count) == ("H100", 8)
    assert len(client.status()) == 4

    why = client.explain(ids[0])
    assert [e.to_state for e in why.events] == [
        "pending",
        "placed",
        "provisioning",
        "running",
        "succeeded",
    ]
    assert why.decisions[0].placement
    # dear holds the ROFR within 50 %: 14 ≤ 10 × 1.5, so it accepted every job.
    lines = client.audit()
    assert len(lines) == 4 and {e.answer for e in lines} == {"accepted"}
    assert {j.provider for j in client.status()} == {"dear"}
    assert client.ping()["orphans_terminated"] == 0


def test_service_on_a_postgresql_store(
    service: Callable[..., Service], pg_database: str
) -> None:
    svc = service(store_url=pg_database)
    assert svc.client.ping()["store"].startswith("postgresql")
    ids = svc.client.submit_many([job(f"pg{i}") for i in range(5)], client_keys=None)
    assert set(svc.client.wait(ids, timeout=60).values()) == {"succeeded"}
    with Store.open(pg_database) as store:
        assert {j.state.value for j in store.list_jobs()} == {"succeeded"}
    check_no_duplicates_or_orphans(svc)


def test_start_again_is_a_no_op(cluster: Any, service: Callable[..., Service]) -> None:
    svc = service()
    again = start(svc.config, address=cluster.address, namespace=svc.namespace)
    assert again.started_actor is False and svc.result.started_actor is True


def test_client_key_makes_submission_idempotent(service: Callable[..., Service]) -> None:
    client = service().client
    first = client.submit(job("a"), client_key="key-1")
    assert client.submit(job("a"), client_key="key-1") == first
    with pytest.raises(IdempotencyConflictError):
        client.submit(job("a", priority=5), client_key="key-1")


def test_bad_job_is_refused_and_nothing_is_queued(service: Callable[..., Service]) -> None:
    client = service().client
    with pytest.raises(SpecError) as err:
        client.submit_many([job("ok").model_dump(mode="json"), {"name": "x", "resources": {}}])
    assert "resources" in err.value.render()
    assert client.status() == []


def test_cancel_a_running_job(service: Callable[..., Service]) -> None:
    svc = service()
    job_id = svc.client.submit(job("long", duration_hours=8000))
    deadline = time.monotonic() + 30
    while svc.client.states([job_id])[job_id] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert svc.client.cancel(job_id) == "cancelled"
    deadline = time.monotonic() + 30
    while True:
        state = svc.sim()
        with state.transaction():
            live = [w for w in state.workloads.values() if w.live_at(time.time())]
        if not live:
            break
        assert time.monotonic() < deadline, "the cancelled job's workload still runs"
        time.sleep(0.1)


def test_metrics_are_served(service: Callable[..., Service]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    svc = service(metrics_port=port)
    job_id = svc.client.submit(job("a"))
    svc.client.wait(job_id, timeout=60)
    deadline = time.monotonic() + 10
    while True:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        if 'multicloud_jobs{state="succeeded"} 1.0' in text:
            break
        assert time.monotonic() < deadline, text[:2000]
        time.sleep(0.2)
    assert 'multicloud_launches_total{outcome="ok",provider="cheap"} 1.0' in text
    assert "multicloud_decision_seconds_bucket" in text


def test_local_provider_runs_the_command_and_keeps_logs(service: Callable[..., Service]) -> None:
    doc = {"providers": {"local": {"adapter": "local"}}, "time_scale": HOUR_S}
    svc = service(doc)
    ok = svc.client.submit(
        job(
            "hello",
            accelerator="cpu",
            run={"command": "echo hello from $WHO", "env": {"WHO": "mc"}},
        )
    )
    bad = svc.client.submit(job("bad", accelerator="cpu", run={"command": "exit 3"}))
    states = svc.client.wait([ok, bad], timeout=90)
    assert states == {ok: "succeeded", bad: "failed"}
    assert "hello from mc" in svc.client.logs(ok)
    assert "exit code 3" in svc.client.explain(bad).events[-1].reason


# --------------------------------------------------------------------------- 500 jobs


def test_500_jobs_with_capacity_quota_errors_and_preemptions(
    service: Callable[..., Service],
) -> None:
    doc = {
        "providers": {
            "aws": {
                "adapter": "sim",
                "offers": [
                    offer("us-east-1", 10.0, 20, spot_price=4.0),
                    offer("us-west-2", 11.0, 20),
                ],
                "faults": [
                    {"kind": "capacity", "region": "us-east-1", "times": 25},
                    {"kind": "preemption", "region": "us-east-1", "times": 30, "after_hours": 0.5},
                ],
            },
            "gcp": {
                "adapter": "sim",
                "offers": [offer("us-central1", 10.5, 20, spot_price=4.5)],
                "faults": [
                    {"kind": "quota", "times": 15},
                    {"kind": "preemption", "times": 20, "after_hours": 0.3},
                    {"kind": "transient", "times": 10},
                ],
            },
            "azure": {"adapter": "sim", "offers": [offer("eastus", 12.0, 20)]},
        },
        "time_scale": HOUR_S,
    }
    svc = service(doc, settings={"blocked_ttl_s": 0.5, "max_attempts": 30})
    rng = random.Random(7)
    jobs = [
        job(
            f"j{i}",
            priority=rng.choice([0, 0, 1, 5]),
            market=rng.choice(["on-demand", "any", "spot"]),
            duration_hours=rng.choice([1, 2, 4]),
            nodes=rng.choice([1, 1, 2]),
        )
        for i in range(500)
    ]
    ids: list[str] = []
    for start_at in range(0, 500, 100):
        ids += svc.client.submit_many(jobs[start_at : start_at + 100])
    states = svc.client.wait(ids, timeout=300)
    assert Counter(states.values()) == {"succeeded": 500}

    outcomes: Counter[str] = Counter()
    for j in svc.client.status():
        attempts = j.attempts
        assert attempts[-1].outcome == "succeeded"
        assert all(
            a.outcome in {"capacity", "quota", "preempted", "transient"} for a in attempts[:-1]
        ), attempts
        numbers = sorted({a.attempt for a in attempts})
        assert numbers == list(range(1, len(numbers) + 1))
        outcomes.update(a.outcome for a in attempts)
    assert outcomes["capacity"] >= 1 and outcomes["quota"] >= 1 and outcomes["preempted"] >= 1
    check_no_duplicates_or_orphans(svc)


# --------------------------------------------------------------------------- restarts


def test_kills_at_random_points_lose_nothing_and_launch_nothing_twice(
    service: Callable[..., Service],
) -> None:
    doc = {
        "providers": {
            "aws": {
                "adapter": "sim",
                "offers": [offer("us-east-1", 10.0, 12, spot_price=4.0)],
                "faults": [{"kind": "preemption", "times": 10, "after_hours": 0.4}],
            },
            "gcp": {"adapter": "sim", "offers": [offer("us-central1", 11.0, 12)]},
        },
        "time_scale": HOUR_S,
    }
    svc = service(
        doc,
        crash_points={"after_decide": 0.05, "after_launch": 0.05, "mid_status": 0.05},
        settings={"status_chunk": 4},
    )
    rng = random.Random(11)
    jobs = [
        job(f"k{i}", market=rng.choice(["on-demand", "any"]), duration_hours=rng.choice([1, 3]))
        for i in range(120)
    ]
    keys = [f"kill-test/{i}" for i in range(len(jobs))]
    ids: list[str] = []
    for start_at in range(0, len(jobs), 20):
        ids += svc.client.submit_many(
            jobs[start_at : start_at + 20], client_keys=keys[start_at : start_at + 20]
        )
        # And kills from outside, at moments the process did not choose.
        if rng.random() < 0.5:
            ray.kill(svc.actor(), no_restart=False)
    for _ in range(4):
        time.sleep(rng.uniform(0.2, 1.5))
        ray.kill(svc.actor(), no_restart=False)
    states = svc.client.wait(ids, timeout=300)
    assert Counter(states.values()) == {"succeeded": len(jobs)}, Counter(states.values())
    from ray.util.state import get_actor

    restarts = get_actor(svc.actor()._actor_id.hex()).num_restarts
    assert restarts >= 5, f"only {restarts} restarts: the test did not test much"
    # Every accepted job is still there, once.
    with svc.store() as store:
        assert len(store.list_jobs()) == len(jobs)
    totals = check_no_duplicates_or_orphans(svc)
    assert totals["workloads"] >= len(jobs)


def test_whole_ray_restart_keeps_jobs_and_workloads(
    cluster: Any, service: Callable[..., Service]
) -> None:
    svc = service(SIMPLE)
    ids = svc.client.submit_many([job(f"r{i}", duration_hours=60) for i in range(10)])
    deadline = time.monotonic() + 60
    while set(svc.client.states(ids).values()) != {"running"}:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    cluster.restart()
    # The whole cluster is new: start the scheduler again on the same store.
    start(svc.config, address=cluster.address, namespace=svc.namespace)
    svc.client = Client(svc.actor())
    states = svc.client.wait(ids, timeout=120)
    assert set(states.values()) == {"succeeded"}
    for j in svc.client.status():
        assert [a.outcome for a in j.attempts] == ["succeeded"], j.attempts
    check_no_duplicates_or_orphans(svc)


# --------------------------------------------------------------------------- Ray Jobs API


def test_submit_through_the_ray_jobs_api(
    cluster: Any, service: Callable[..., Service], tmp_path: Path
) -> None:
    svc = service()
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(job("via-ray-jobs").model_dump(mode="json")))
    ray_cli = str(Path(sys.executable).parent / "ray")
    env = {**os.environ}
    proc = subprocess.run(
        [
            ray_cli,
            "job",
            "submit",
            "--address",
            cluster.dashboard_url,
            "--",
            "multicloud",
            "submit",
            str(job_file),
            "--namespace",
            svc.namespace,
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith('{"jobs"'))
    (submitted,) = json.loads(line)["jobs"]
    assert submitted["name"] == "via-ray-jobs"
    assert svc.client.wait(submitted["id"], timeout=60) == {submitted["id"]: "succeeded"}
