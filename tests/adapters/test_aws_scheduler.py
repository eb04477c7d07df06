"""The scheduling cycle (no Ray) over the real AWS adapter and the fake EC2.

A spot gang whose nodes EC2 reclaims while their command is killed (and still reports 143)
is re-placed and finishes; a gang whose command exits 3 fails.

The cycle runs in :class:`~multicloud.testing.scheduling.SchedulerHarness` steps on a fake
clock (docs/architecture.md, "The scheduler"): every adapter call a tick sends (launch,
status, the orphan sweep's listing) is answered before the next tick, the test changes the
fake EC2 only between steps, and every window, TTL and back-off reads the fake clock. Ticked
on the real clock with the adapter calls racing the test, it failed about one run in ten
with a re-placed gang lost a third time and the sweep having terminated a workload: a
listing answered before the test reclaimed the first gang was applied after it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from multicloud_aws.node import EXIT_TAG
from multicloud_aws.testing import FakeAWS, serve

from multicloud.store import AttemptRecord, JobState
from multicloud.testing.builders import job
from multicloud.testing.scheduling import SchedulerHarness

REGION = "us-east-1"


class Cycle(SchedulerHarness):
    """A harness over a fresh SQLite store and one aws fleet entry on the fake."""

    def __init__(self, tmp_path: Path, fake: FakeAWS) -> None:
        doc = {
            "providers": {"aws": {"adapter": "aws", "regions": [REGION], "options": fake.options}}
        }
        super().__init__(doc, store_url=f"sqlite:///{tmp_path / 'store.db'}", settle_s=20.0)

    def until(self, done: Callable[[], bool]) -> None:
        """Step until ``done()``; on failure, name what happened to every job."""
        try:
            self.run_until(done, steps=2_000)
        except AssertionError as exc:
            history = [
                f"{e.to_state.value}: {e.reason}"
                for record in self.store.list_jobs()
                for e in self.store.events(record.id)
            ]
            raise AssertionError(f"{exc}; events: {history}") from None

    def running(self, job_id: str, attempt: int) -> Callable[[], bool]:
        def check() -> bool:
            record = self.store.get(job_id)
            assert not record.state.is_terminal, self.store.events(job_id)[-1].reason
            return record.state is JobState.RUNNING and record.attempts[-1].attempt == attempt

        return check

    def last(self, job_id: str) -> AttemptRecord:
        return self.store.get(job_id).attempts[-1]


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
    (job_id,) = c.submit(_gang(market="spot"))
    c.until(c.running(job_id, 1))
    first = c.last(job_id)
    # EC2 reclaims the spot nodes; their containers were killed and the nodes still got
    # their reports out: exit 143. Preemption wins over that exit code.
    fake.preempt(_handle(first))
    fake.client("ec2", REGION).create_tags(
        Resources=_handle(first).split(","), Tags=[{"Key": EXIT_TAG, "Value": "143"}]
    )
    c.until(c.running(job_id, 2))
    second = c.last(job_id)
    assert _handle(second) != _handle(first)
    fake.finish(_handle(second), 0)
    c.until(lambda: c.state_of(job_id).is_terminal)
    record = c.store.get(job_id)
    assert record.state is JobState.SUCCEEDED
    assert [(a.market.value, a.outcome) for a in record.attempts] == [
        ("spot", "preempted"),
        ("spot", "succeeded"),
    ]


def test_a_gang_whose_command_exits_3_fails(cycle: tuple[Cycle, FakeAWS]) -> None:
    c, fake = cycle
    (job_id,) = c.submit(_gang())
    c.until(c.running(job_id, 1))
    fake.finish(_handle(c.last(job_id)), 3)
    c.until(lambda: c.state_of(job_id).is_terminal)
    record = c.store.get(job_id)
    assert record.state is JobState.FAILED
    assert [(a.outcome, len(_handle(a).split(","))) for a in record.attempts] == [("failed", 2)]
