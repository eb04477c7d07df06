"""The scheduling cycle (no Ray) over the real AWS adapter and the fake EC2.

A spot gang whose nodes EC2 reclaims while their command is killed (and still reports 143)
is re-placed and finishes; a gang whose command exits 3 fails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from multicloud_aws.node import EXIT_TAG
from multicloud_aws.testing import FakeAWS, serve

from multicloud import providers as registry
from multicloud.models import Fleet
from multicloud.service.effects import InlineEffects
from multicloud.service.scheduler import Scheduler
from multicloud.store import AttemptRecord, JobState, Store
from multicloud.testing.builders import job
from multicloud.testing.scheduling import quick_settings, run_until

REGION = "us-east-1"


class Cycle:
    """A scheduler over a fresh SQLite store and one aws fleet entry on the fake."""

    def __init__(self, tmp_path: Path, fake: FakeAWS) -> None:
        doc = {
            "providers": {"aws": {"adapter": "aws", "regions": [REGION], "options": fake.options}}
        }
        self.fleet = Fleet.model_validate(doc)
        self.effects = InlineEffects({"aws": registry.from_fleet(self.fleet, "aws")})
        self.store = Store.open(f"sqlite:///{tmp_path / 'store.db'}")
        self.scheduler = Scheduler(self.store, self.fleet, self.effects, settings=quick_settings())

    def run_until(self, done: Callable[[], bool], timeout: float = 20.0) -> None:
        run_until(self.scheduler, done, timeout=timeout, pause=0.005)

    def running(self, job_id: str, attempt: int) -> Callable[[], bool]:
        def check() -> bool:
            record = self.store.get(job_id)
            assert not record.state.is_terminal, self.store.events(job_id)[-1].reason
            return record.state is JobState.RUNNING and record.attempts[-1].attempt == attempt

        return check

    def last(self, job_id: str) -> AttemptRecord:
        return self.store.get(job_id).attempts[-1]

    def close(self) -> None:
        self.effects.close()
        self.store.close()


@pytest.fixture
def cycle(tmp_path: Path) -> Iterator[tuple[Cycle, FakeAWS]]:
    with serve() as fake:
        c = Cycle(tmp_path, fake)
        try:
            yield c, fake
        finally:
            c.close()


def _gang(**fields: Any) -> Any:
    return job(
        "gang",
        accelerator="H100",
        count=8,
        nodes=2,
        run={"image": "ghcr.io/acme/train:1", "command": "torchrun train.py"},
        **fields,
    )


def _handle(attempt: AttemptRecord) -> str:
    assert attempt.handle is not None
    return attempt.handle.id


def test_a_reclaimed_spot_gang_is_re_placed_and_finishes(cycle: tuple[Cycle, FakeAWS]) -> None:
    c, fake = cycle
    ((job_id, _),) = c.scheduler.submit([(_gang(market="spot"), None)])
    c.run_until(c.running(job_id, 1))
    first = c.last(job_id)
    # EC2 reclaims the spot nodes; their containers were killed and the nodes still got
    # their reports out: exit 143. Preemption wins over that exit code.
    fake.preempt(_handle(first))
    fake.client("ec2", REGION).create_tags(
        Resources=_handle(first).split(","), Tags=[{"Key": EXIT_TAG, "Value": "143"}]
    )
    c.run_until(c.running(job_id, 2))
    second = c.last(job_id)
    assert _handle(second) != _handle(first)
    fake.finish(_handle(second), 0)
    c.run_until(lambda: c.store.get(job_id).state.is_terminal)
    record = c.store.get(job_id)
    assert record.state is JobState.SUCCEEDED
    assert [(a.market.value, a.outcome) for a in record.attempts] == [
        ("spot", "preempted"),
        ("spot", "succeeded"),
    ]


def test_a_gang_whose_command_exits_3_fails(cycle: tuple[Cycle, FakeAWS]) -> None:
    c, fake = cycle
    ((job_id, _),) = c.scheduler.submit([(_gang(), None)])
    c.run_until(c.running(job_id, 1))
    fake.finish(_handle(c.last(job_id)), 3)
    c.run_until(lambda: c.store.get(job_id).state.is_terminal)
    record = c.store.get(job_id)
    assert record.state is JobState.FAILED
    assert [(a.outcome, len(_handle(a).split(","))) for a in record.attempts] == [("failed", 2)]
