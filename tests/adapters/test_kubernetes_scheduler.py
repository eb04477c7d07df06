"""The scheduling cycle (no Ray) over two generic Kubernetes clusters: multicloud decides which
cluster, Kueue decides when inside it.

``lab`` is the lab's own cluster running Kueue (H100 nodes owned, priced at their amortised
cost, so the planner prefers it); ``spare`` is a rented cluster without Kueue at a list-like
price. Both are fake API servers reached through the real kubernetes client.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from multicloud_kubernetes.testing import FakeKube, serve

from multicloud import providers as registry
from multicloud.models import Fleet
from multicloud.service.effects import InlineEffects
from multicloud.service.scheduler import Scheduler
from multicloud.store import JobState, Store
from multicloud.testing.builders import job
from multicloud.testing.scheduling import quick_settings, run_until

OWNED = {"H100": {"cost_usd": 250_000, "years": 4, "running_usd_per_hour": 1.5}}


class Cycle:
    """A scheduler over a fresh SQLite store and the given fleet entries (also CoreWeave's)."""

    def __init__(self, tmp_path: Path, providers: dict[str, Any]) -> None:
        self.fleet = Fleet.model_validate({"providers": providers})
        self.effects = InlineEffects({n: registry.from_fleet(self.fleet, n) for n in providers})
        self.store = Store.open(f"sqlite:///{tmp_path / 'store.db'}")
        self.scheduler = Scheduler(self.store, self.fleet, self.effects, settings=quick_settings())

    def run_until(self, done: Callable[[], bool], timeout: float = 15.0) -> None:
        run_until(self.scheduler, done, timeout=timeout, pause=0.005)

    def state(self, job_id: str) -> JobState:
        return self.store.get(job_id).state

    def outcomes(self, job_id: str) -> list[tuple[str, str | None]]:
        return [(a.provider, a.outcome) for a in self.store.get(job_id).attempts]

    def close(self) -> None:
        self.effects.close()
        self.store.close()


class TwoClusters(Cycle):
    """``lab`` (Kueue, owned H100s) and ``spare`` (no Kueue, rented H100s)."""

    def __init__(self, tmp_path: Path, lab: FakeKube, spare: FakeKube, **lab_options: Any):
        super().__init__(tmp_path, {
            "lab": {"adapter": "kubernetes", "options": {
                **lab.options, "price_card": OWNED, "local_queue": "team",
                "unschedulable_grace_s": 0.0, **lab_options}},
            "spare": {"adapter": "kubernetes", "options": {
                **spare.options, "price_card": {"H100": 45.0}, "unschedulable_grace_s": 0.0}},
        })
        self.lab, self.spare = lab, spare

    def submit(self) -> str:
        spec = job("train", accelerator="H100", count=8, nodes=2,
                   run={"image": "ghcr.io/acme/train:1", "command": "torchrun train.py"})
        ((job_id, _),) = self.scheduler.submit([(spec, None)])
        return str(job_id)


@pytest.fixture
def clusters() -> Iterator[tuple[FakeKube, FakeKube]]:
    with serve(kueue="v1beta2") as lab, serve() as spare:
        lab.add_nodes(4, region="us-east-1")
        lab.kueue.add_cluster_queue("gpus", {"nvidia.com/gpu": "16"})
        lab.kueue.add_local_queue("team", "gpus")
        spare.add_nodes(2, region="us-central-1")
        yield lab, spare


@pytest.fixture
def make(
    tmp_path: Path, clusters: tuple[FakeKube, FakeKube]
) -> Iterator[Callable[..., TwoClusters]]:
    made: list[TwoClusters] = []

    def build(**lab_options: Any) -> TwoClusters:
        made.append(TwoClusters(tmp_path, *clusters, **lab_options))
        return made[-1]

    yield build
    for c in made:
        c.close()


def _only(kube: FakeKube) -> str:
    (obj,) = kube.objects("jobs")
    return str(obj["metadata"]["name"])


def test_kueue_admits_the_gang_on_the_cheaper_cluster_and_it_succeeds(
    make: Callable[..., TwoClusters],
) -> None:
    c = make()
    job_id = c.submit()
    c.run_until(lambda: c.state(job_id) is JobState.RUNNING)
    name = _only(c.lab)
    assert c.lab.launches[name] == 1 and c.spare.objects("jobs") == []
    assert len(c.lab.pods_of(name)) == 2
    c.lab.finish(name, 0)
    c.run_until(lambda: c.state(job_id).is_terminal)
    assert c.state(job_id) is JobState.SUCCEEDED
    assert c.outcomes(job_id) == [("lab", "succeeded")]


def test_a_kueue_preemption_sends_the_job_to_the_other_cluster(
    make: Callable[..., TwoClusters],
) -> None:
    c = make(queue_grace_s=0.0)  # give the place up as soon as Kueue evicts it
    job_id = c.submit()
    c.run_until(lambda: c.state(job_id) is JobState.RUNNING)
    c.lab.preempt(_only(c.lab))  # Kueue's preemption: suspended, requeued, held out
    c.run_until(lambda: bool(c.spare.objects("jobs")))
    c.run_until(lambda: c.lab.objects("jobs") == [])  # the lab's attempt was terminated
    c.run_until(lambda: c.state(job_id) is JobState.RUNNING)
    c.spare.finish(_only(c.spare), 0)
    c.run_until(lambda: c.state(job_id).is_terminal)
    assert c.state(job_id) is JobState.SUCCEEDED
    assert c.outcomes(job_id) == [("lab", "preempted"), ("spare", "succeeded")]


def test_within_the_grace_kueue_readmits_the_preempted_job_in_place(
    make: Callable[..., TwoClusters],
) -> None:
    c = make(queue_grace_s=600.0)
    job_id = c.submit()
    c.run_until(lambda: c.state(job_id) is JobState.RUNNING)
    name = _only(c.lab)
    c.lab.preempt(name)
    for _ in range(20):  # several status rounds: requeued in Kueue, the place kept
        c.scheduler.tick()
    assert c.outcomes(job_id) == [("lab", None)] and c.spare.objects("jobs") == []
    c.lab.kueue.readmit(name)
    c.run_until(lambda: len(c.lab.pods_of(name)) == 2)
    c.lab.finish(name, 0)
    c.run_until(lambda: c.state(job_id).is_terminal)
    assert c.outcomes(job_id) == [("lab", "succeeded")]


def test_a_job_kueue_keeps_queued_goes_elsewhere(make: Callable[..., TwoClusters]) -> None:
    c = make(queue_grace_s=0.0)
    # The ClusterQueue's quota is spent (none left for this team), whatever the free nodes.
    c.lab.kueue.add_cluster_queue("gpus", {"nvidia.com/gpu": "0"})
    job_id = c.submit()
    c.run_until(lambda: bool(c.spare.objects("jobs")))
    c.run_until(lambda: c.state(job_id) is JobState.RUNNING)
    attempts = c.store.get(job_id).attempts
    assert [(a.provider, a.outcome) for a in attempts] == [("lab", "preempted"), ("spare", None)]
    assert "insufficient unused quota for nvidia.com/gpu" in " ".join(
        e.reason for e in c.store.events(job_id))


def test_a_command_that_exits_3_under_kueue_fails_the_job(make: Callable[..., TwoClusters]) -> None:
    c = make()
    job_id = c.submit()
    c.run_until(lambda: c.state(job_id) is JobState.RUNNING)
    c.lab.finish(_only(c.lab), 3)
    c.run_until(lambda: c.state(job_id).is_terminal)
    assert c.state(job_id) is JobState.FAILED
    assert c.outcomes(job_id) == [("lab", "failed")]
