"""The scheduling cycle (no Ray) over the real CoreWeave adapter and the fake API server.

The Scheduler plans against the node pools the adapter reads from the fake cluster, launches
Kubernetes Jobs through the kubernetes client, follows them with batched status calls, and
re-places a job whose pod was evicted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from multicloud_coreweave.testing import FakeKube, serve

from multicloud import providers as registry
from multicloud.models import Fleet
from multicloud.service.effects import InlineEffects
from multicloud.service.scheduler import Scheduler
from multicloud.store import JobState, Store
from multicloud.testing.builders import job
from multicloud.testing.scheduling import quick_settings, run_until


class Cycle:
    """A scheduler over a fresh SQLite store and one coreweave fleet entry."""

    def __init__(self, tmp_path: Path, kube: FakeKube) -> None:
        options = {**kube.options, "unschedulable_grace_s": 0.0}
        doc = {"providers": {"cw": {"adapter": "coreweave", "options": options}}}
        self.fleet = Fleet.model_validate(doc)
        self.effects = InlineEffects({"cw": registry.from_fleet(self.fleet, "cw")})
        self.store = Store.open(f"sqlite:///{tmp_path / 'store.db'}")
        settings = quick_settings()
        self.scheduler = Scheduler(self.store, self.fleet, self.effects, settings=settings)

    def run_until(self, done: Callable[[], bool], timeout: float = 15.0) -> None:
        run_until(self.scheduler, done, timeout=timeout, pause=0.005)

    def state(self, job_id: str) -> JobState:
        return self.store.get(job_id).state

    def close(self) -> None:
        self.effects.close()
        self.store.close()


@pytest.fixture
def cycle(tmp_path: Path) -> Iterator[tuple[Cycle, FakeKube]]:
    with serve() as kube:
        kube.add_nodes(2, gpu_class="H100_NVLINK_80GB", region="US-EAST-04")
        c = Cycle(tmp_path, kube)
        try:
            yield c, kube
        finally:
            c.close()


def _train(**fields: Any) -> Any:
    return job(
        "train",
        accelerator="H100",
        count=8,
        run={"image": "ghcr.io/acme/train:1", "command": "python train.py"},
        **fields,
    )


def _live_jobs(kube: FakeKube) -> list[str]:
    return [
        j["metadata"]["name"]
        for j in kube.objects("jobs")
        if not any(c["type"] in ("Complete", "Failed") for c in j["status"]["conditions"])
    ]


def test_job_runs_to_success_on_the_cluster(cycle: tuple[Cycle, FakeKube]) -> None:
    c, kube = cycle
    ((job_id, _),) = c.scheduler.submit([(_train(), None)])
    c.run_until(lambda: c.state(job_id) is JobState.RUNNING)
    (name,) = _live_jobs(kube)
    kube.succeed(name)
    c.run_until(lambda: c.state(job_id).is_terminal)
    record = c.store.get(job_id)
    assert record.state is JobState.SUCCEEDED
    assert [(a.provider, a.region, a.outcome) for a in record.attempts] == [
        ("cw", "US-EAST-04", "succeeded")
    ]


def test_evicted_job_is_re_placed_and_finishes(cycle: tuple[Cycle, FakeKube]) -> None:
    c, kube = cycle
    ((job_id, _),) = c.scheduler.submit([(_train(), None)])
    c.run_until(lambda: c.state(job_id) is JobState.RUNNING)
    (first,) = _live_jobs(kube)
    kube.evict(first)
    # The scheduler sees PREEMPTED, deletes the first Job and launches attempt 2.
    c.run_until(lambda: bool(_live_jobs(kube)) and _live_jobs(kube) != [first])
    c.run_until(lambda: c.state(job_id) is JobState.RUNNING)
    (second,) = _live_jobs(kube)
    # Read before it finishes: a finished Job may be cleaned up by the next cycle.
    labels = (kube.object("jobs", second) or {})["metadata"]["labels"]
    assert labels["multicloud.io/attempt"] == "2"
    kube.succeed(second)
    c.run_until(lambda: c.state(job_id).is_terminal)
    record = c.store.get(job_id)
    assert record.state is JobState.SUCCEEDED
    assert [a.outcome for a in record.attempts] == ["preempted", "succeeded"]


def test_succeeded_workloads_are_deleted_by_the_sweep(cycle: tuple[Cycle, FakeKube]) -> None:
    """A succeeded attempt is not terminated by the scheduler: the orphan sweep deletes it."""
    c, kube = cycle
    ((job_id, _),) = c.scheduler.submit([(_train(), None)])
    c.run_until(lambda: c.state(job_id) is JobState.RUNNING)
    (name,) = _live_jobs(kube)
    kube.succeed(name)
    c.run_until(lambda: c.state(job_id).is_terminal)
    assert c.store.get(job_id).state is JobState.SUCCEEDED
    # The finished Job and its completed pod do not pile up in the namespace.
    c.run_until(lambda: kube.objects("jobs") == [])
    assert kube.pods_of(name) == []
    assert kube.deletions == [("jobs", name, "Foreground")]
    assert c.scheduler.counters.orphans_terminated >= 1


def test_the_sweep_spares_a_live_workload(cycle: tuple[Cycle, FakeKube]) -> None:
    c, kube = cycle
    ((job_id, _),) = c.scheduler.submit([(_train(), None)])
    c.run_until(lambda: c.state(job_id) is JobState.RUNNING)
    deadline = time.monotonic() + 0.5  # several sweeps (sweep_interval_s = 0.1)
    c.run_until(lambda: time.monotonic() > deadline)
    assert len(_live_jobs(kube)) == 1
    assert kube.deletions == []
