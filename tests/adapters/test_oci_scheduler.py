"""The scheduling cycle (no Ray) over the real OCI adapter and the fake OCI REST server.

A spot V100 job lands on a preemptible VM shape; OCI reclaims the node while its command is
killed (exit 143): the attempt reads PREEMPTED and the job is re-placed, then succeeds. A job
whose command exits 3 reads FAILED and is not re-placed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from multicloud_oci.testing import FakeOCI, serve

from multicloud import providers as registry
from multicloud.models import Fleet
from multicloud.service.effects import InlineEffects
from multicloud.service.scheduler import Scheduler
from multicloud.store import JobState, Store
from multicloud.testing.builders import job
from multicloud.testing.scheduling import quick_settings, run_until


class Cycle:
    """A scheduler over a fresh SQLite store and one OCI fleet entry."""

    def __init__(self, tmp_path: Path, fake: FakeOCI) -> None:
        doc = {"providers": {"oci": {"adapter": "oci", "regions": ["us-ashburn-1"],
                                     "options": fake.options}}}
        self.fleet = Fleet.model_validate(doc)
        self.effects = InlineEffects({"oci": registry.from_fleet(self.fleet, "oci")})
        self.store = Store.open(f"sqlite:///{tmp_path / 'store.db'}")
        self.scheduler = Scheduler(self.store, self.fleet, self.effects, settings=quick_settings())

    def run_until(self, done: Callable[[], bool], timeout: float = 15.0) -> None:
        run_until(self.scheduler, done, timeout=timeout, pause=0.005)

    def state(self, job_id: str) -> JobState:
        return self.store.get(job_id).state

    def close(self) -> None:
        self.effects.close()
        self.store.close()


@pytest.fixture
def cycle(tmp_path: Path) -> Iterator[tuple[Cycle, FakeOCI]]:
    with serve() as fake:
        c = Cycle(tmp_path, fake)
        try:
            yield c, fake
        finally:
            c.close()


def _live(fake: FakeOCI) -> list[str]:
    """Base names of the launches with a live instance."""
    return sorted({i["displayName"].rsplit("-", 1)[0] for i in fake.instances.values()
                   if i["lifecycleState"] not in ("TERMINATING", "TERMINATED")})


def test_a_reclaimed_spot_node_is_re_placed_and_finishes(cycle: tuple[Cycle, FakeOCI]) -> None:
    c, fake = cycle
    spot = job("spot", accelerator="V100", count=1, market="spot",
               run={"image": "ghcr.io/acme/train:1", "command": "python train.py"})
    ((job_id, _),) = c.scheduler.submit([(spot, None)])
    c.run_until(lambda: c.state(job_id) is JobState.RUNNING)
    (first,) = _live(fake)
    [inst] = fake.members(first)
    assert inst["shape"] == "VM.GPU3.1" and inst["preemptibleInstanceConfig"] is not None
    fake.preempt(first)
    fake.finish(first, 143)  # the container was killed; the node reports "preempted"
    c.run_until(lambda: bool(_live(fake)) and _live(fake) != [first])
    (second,) = _live(fake)
    assert fake.members(second)[0]["freeformTags"]["multicloud-attempt"] == "2"
    fake.finish(second, 0)
    c.run_until(lambda: c.state(job_id).is_terminal)
    record = c.store.get(job_id)
    assert record.state is JobState.SUCCEEDED
    assert [a.outcome for a in record.attempts] == ["preempted", "succeeded"]
    assert sum(fake.launches.values()) == 2  # each launch seen exactly once


def test_a_command_that_exits_3_fails_the_job(cycle: tuple[Cycle, FakeOCI]) -> None:
    c, fake = cycle
    train = job("train", accelerator="H100", count=8, nodes=2,
                run={"image": "ghcr.io/acme/train:1", "command": "torchrun train.py"})
    ((job_id, _),) = c.scheduler.submit([(train, None)])
    c.run_until(lambda: c.state(job_id) is JobState.RUNNING)
    (name,) = _live(fake)
    fake.finish(name, 3)
    c.run_until(lambda: c.state(job_id).is_terminal)
    record = c.store.get(job_id)
    assert record.state is JobState.FAILED
    assert [(a.outcome, a.nodes, a.instance_type) for a in record.attempts] == [
        ("failed", 2, "BM.GPU.H100.8")
    ]
