"""Two scheduling cycles on one store: the lease's holder works, a replaced one stops.

The schedulers share a SQLite store (each its own ``Store``, as two processes would), one
simulated cloud and one fake clock. The first holds the lease with a TTL of 0, so the
second may take it over whenever the test says; the first then finds every write, launch
and termination refused (``docs/architecture.md``, "One scheduler per store").
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from multicloud.lifecycle import JobState
from multicloud.service.scheduler import CrashPoints
from multicloud.store import Holder, LeaseHeldError, LeaseLost, Store
from multicloud.testing.builders import job
from multicloud.testing.scheduling import SchedulerHarness, quick_settings, sim_fleet, sim_offer

FLEET = sim_fleet(cheap={"offers": [sim_offer("r1", 10.0, capacity=8)]})


class Crash(Exception):
    pass


def _raise(_: int) -> None:
    raise Crash


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Callable[..., SchedulerHarness]]:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    made: list[SchedulerHarness] = []

    def make(owner: str, *, ttl: float = 60.0, **kwargs: Any) -> SchedulerHarness:
        if made:
            kwargs.setdefault("state", made[0].state)
            kwargs.setdefault("clock", made[0].clock)
        settings = quick_settings(lease_ttl_s=ttl, lease_renew_s=1000.0)
        h = SchedulerHarness(
            FLEET, store=Store.open(url), settings=settings, holder=Holder(owner), **kwargs
        )
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()
        h.store.close()


def test_a_second_scheduler_is_refused_while_the_lease_is_held(
    pair: Callable[..., SchedulerHarness],
) -> None:
    first = pair("first")
    with pytest.raises(LeaseHeldError, match="held by first"):
        pair("second")
    ids = first.submit(job("a"))
    first.run_until(first.all_final(ids))


def _recorded_not_launched(
    pair: Callable[..., SchedulerHarness],
) -> tuple[SchedulerHarness, SchedulerHarness]:
    # The stale one records its attempts, then stops before its launches go out.
    stale = pair("stale", ttl=0.0, crash=CrashPoints({"after_decide": 1.0}, exit=_raise))
    stale.submit(*[job(f"j{i}", duration_hours=1000) for i in range(3)])
    with pytest.raises(Crash):
        stale.run_until(lambda: False, steps=50)
    assert stale.state.workloads == {}
    fresh = pair("fresh")
    fresh.run_until(lambda: _all_running(fresh))
    return stale, fresh


def _others_running(
    pair: Callable[..., SchedulerHarness],
) -> tuple[SchedulerHarness, SchedulerHarness]:
    # The new holder runs jobs the stale one's index never heard of: the stale one's
    # sweep would take them for orphans of this install.
    stale = pair("stale", ttl=0.0)
    fresh = pair("fresh")
    fresh.submit(*[job(f"j{i}", duration_hours=1000) for i in range(3)])
    fresh.run_until(lambda: _all_running(fresh))
    stale.scheduler.sweeper.timer.next_at = 0.0
    stale.step()  # sends the sweep's listing; its answer is acted on next tick
    return stale, fresh


def _all_running(h: SchedulerHarness) -> bool:
    states = set(h.store.job_states().values())
    return states == {JobState.RUNNING.value} and len(h.state.workloads) == 3


STALE = {
    "launches it recorded before it was replaced": _recorded_not_launched,
    "sweeps the new holder's workloads as orphans": _others_running,
}


@pytest.mark.parametrize("situation", STALE.values(), ids=STALE.keys())
def test_a_replaced_scheduler_stops_and_touches_nothing(
    pair: Callable[..., SchedulerHarness],
    situation: Callable[..., tuple[SchedulerHarness, SchedulerHarness]],
) -> None:
    stale, fresh = situation(pair)
    before = {w.request_id: w.live_at(fresh.clock()) for w in fresh.state.workloads.values()}
    loop = threading.Thread(target=stale.scheduler.run, args=(threading.Event(),))
    loop.start()
    loop.join(timeout=30)
    assert not loop.is_alive(), "the replaced scheduler's cycle did not stop"
    assert isinstance(stale.scheduler.lost, LeaseLost)
    with pytest.raises(LeaseLost):
        stale.scheduler.cancel(next(iter(fresh.store.job_states())))
    # Nothing launched, nothing terminated by the stale one; one workload per job.
    after = {w.request_id: w.live_at(fresh.clock()) for w in fresh.state.workloads.values()}
    assert after == before and all(after.values()) and len(after) == 3
    for record in fresh.store.list_jobs():
        assert record.state is JobState.RUNNING
        assert [a.attempt for a in record.attempts] == [1]
