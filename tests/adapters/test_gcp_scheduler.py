"""The scheduling cycle (no Ray) over the real GCP adapter and the fake Compute API.

A spot gang whose VMs Google reclaims reads PREEMPTED — even though the node's shutdown killed
its container and the exit code 143 reached the labels — and the job is re-placed; a gang
whose command exits 3 reads FAILED and is not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from multicloud_gcp.testing import FakeGCP, serve_offline

from multicloud import providers as registry
from multicloud.models import Fleet, Job
from multicloud.service.effects import InlineEffects
from multicloud.service.scheduler import Scheduler
from multicloud.store import AttemptRecord, JobState, Store
from multicloud.testing.builders import job
from multicloud.testing.scheduling import quick_settings, run_until


class Cycle:
    """A scheduler over a fresh SQLite store and one gcp fleet entry (one zone of H100s)."""

    def __init__(self, tmp_path: Path, fake: FakeGCP) -> None:
        entry = {"adapter": "gcp", "regions": ["us-central1"], "options": fake.options}
        self.fleet = Fleet.model_validate({"providers": {"gcp": entry}})
        self.effects = InlineEffects({"gcp": registry.from_fleet(self.fleet, "gcp")})
        self.store = Store.open(f"sqlite:///{tmp_path / 'store.db'}")
        self.scheduler = Scheduler(self.store, self.fleet, self.effects, settings=quick_settings())

    def run_until(self, done: Callable[[], bool]) -> None:
        run_until(self.scheduler, done, timeout=20.0, pause=0.005)

    def attempts(self, job_id: str) -> list[AttemptRecord]:
        return list(self.store.get(job_id).attempts)

    def running(self, job_id: str, attempt: int) -> Callable[[], bool]:
        def check() -> bool:
            record = self.store.get(job_id)
            return record.state is JobState.RUNNING and len(record.attempts) == attempt

        return check

    def close(self) -> None:
        self.effects.close()
        self.store.close()


@pytest.fixture
def cycle(tmp_path: Path) -> Iterator[tuple[Cycle, FakeGCP]]:
    with serve_offline() as fake:
        c = Cycle(tmp_path, fake)
        try:
            yield c, fake
        finally:
            c.close()


def _gang(market: str) -> Job:
    return job(
        "train",
        accelerator="H100",
        count=8,
        nodes=2,
        market=market,
        run={"image": "ghcr.io/acme/train:1", "command": "torchrun train.py"},
    )


def handle_of(attempt: AttemptRecord) -> str:
    assert attempt.handle is not None
    return attempt.handle.id


def test_a_reclaimed_spot_gang_exiting_143_is_re_placed(cycle: tuple[Cycle, FakeGCP]) -> None:
    c, fake = cycle
    ((job_id, _),) = c.scheduler.submit([(_gang("spot"), None)])
    c.run_until(c.running(job_id, 1))
    first = handle_of(c.attempts(job_id)[0])
    # Google reclaims the VMs; their shutdown kills the container, whose 143 is reported.
    fake.preempt(first)
    fake.finish(first, 143)
    c.run_until(c.running(job_id, 2))
    attempts = c.attempts(job_id)
    assert attempts[0].outcome == "preempted"
    second = handle_of(attempts[1])
    assert second != first
    fake.finish(second, 0)
    c.run_until(lambda: c.store.get(job_id).state.is_terminal)
    assert c.store.get(job_id).state is JobState.SUCCEEDED
    assert [a.outcome for a in c.attempts(job_id)] == ["preempted", "succeeded"]


def test_a_gang_whose_command_exits_3_fails(cycle: tuple[Cycle, FakeGCP]) -> None:
    c, fake = cycle
    ((job_id, _),) = c.scheduler.submit([(_gang("on-demand"), None)])
    c.run_until(c.running(job_id, 1))
    fake.finish(handle_of(c.attempts(job_id)[0]), 3)
    c.run_until(lambda: c.store.get(job_id).state.is_terminal)
    record = c.store.get(job_id)
    assert record.state is JobState.FAILED
    assert [a.outcome for a in record.attempts] == ["failed"]
