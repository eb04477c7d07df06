"""How the cycle batches its work: plan size cap, the submission inbox, bulk store writes.

The scheduler over a SQLite store and in-memory simulated clouds, driven tick by tick.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from multicloud import providers as registry
from multicloud.models import Fleet
from multicloud.provider import Provider
from multicloud.service.effects import InlineEffects
from multicloud.service.scheduler import Scheduler, Settings
from multicloud.sim import SimState
from multicloud.store import JobState, Store
from multicloud.testing.builders import job
from multicloud.testing.scheduling import run_until

S = JobState

FLEET = {
    "providers": {
        "cloud": {
            "adapter": "sim",
            "offers": [
                {
                    "region": "r1",
                    "instance_type": "h100x8",
                    "accelerator": "H100",
                    "count": 8,
                    "price": 10.0,
                    "capacity": 100,
                }
            ],
        }
    },
    "time_scale": 0.05,
}


class Cycle:
    """A scheduler and its store, ticked by hand."""

    def __init__(self, tmp_path: Path, **settings: Any) -> None:
        fleet = Fleet.model_validate(FLEET)
        state = SimState()
        providers: dict[str, Provider] = {
            name: registry.from_fleet(fleet, name, state=state) for name in fleet.providers
        }
        self.store = Store.open(f"sqlite:///{tmp_path / 'store.db'}")
        self.effects = InlineEffects(providers)
        self.scheduler = Scheduler(
            self.store,
            fleet,
            self.effects,
            # Default sweep and back-off: these tests count adapter calls.
            settings=Settings(
                tick_s=0.0, status_interval_s=0.0, replan_interval_s=0.01, **settings
            ),
        )

    def submit(self, *jobs: Any) -> list[str]:
        return [job_id for job_id, _ in self.scheduler.submit([(j, None) for j in jobs])]

    def run_until(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        run_until(self.scheduler, done, timeout=timeout, pause=0.002)

    def states(self, ids: list[str]) -> set[str]:
        return set(self.store.job_states(ids).values())


@pytest.fixture
def cycle(tmp_path: Path) -> Iterator[Callable[..., Cycle]]:
    made: list[Cycle] = []

    def make(**settings: Any) -> Cycle:
        c = Cycle(tmp_path, **settings)
        made.append(c)
        return c

    yield make
    for c in made:
        c.effects.close()
        c.store.close()


def test_a_backlog_is_planned_in_capped_batches(cycle: Callable[..., Cycle]) -> None:
    c = cycle(max_plan_jobs=3)
    ids = c.submit(*(job(f"j{i}", duration_hours=1) for i in range(10)))
    c.run_until(lambda: c.states(ids) == {"succeeded"})
    stats = c.scheduler.stats()
    assert stats["plans"] >= 4
    assert stats["plan_jobs"]["max"] <= 3
    assert stats["cycle_errors"] == 0


def test_jobs_nothing_can_place_do_not_hold_back_the_rest(cycle: Callable[..., Cycle]) -> None:
    c = cycle(max_plan_jobs=2)
    # No offer has a B200: these stay pending, and they come first in queue order.
    stuck = c.submit(*(job(f"b{i}", accelerator="B200", priority=9) for i in range(4)))
    ok = c.submit(*(job(f"h{i}", duration_hours=1) for i in range(3)))
    c.run_until(lambda: c.states(ok) == {"succeeded"})
    assert c.states(stuck) == {"pending"}
    assert all(c.store.decisions(i) for i in stuck), "every stuck job was tried and explained"


def test_a_job_cancelled_before_the_cycle_took_it_in_is_never_placed(
    cycle: Callable[..., Cycle],
) -> None:
    c = cycle()
    (job_id,) = c.submit(job("gone"))
    assert c.scheduler.cancel(job_id) is S.CANCELLED
    for _ in range(20):
        c.scheduler.tick()
    assert [e["to_state"] for e in c.store.events(job_id)] == ["pending", "cancelled"]
    assert c.scheduler.stats()["cycle_errors"] == 0
    assert c.scheduler.stats()["active_jobs"] == {}


def test_a_submission_does_not_wait_for_the_cycle(cycle: Callable[..., Cycle]) -> None:
    c = cycle()
    with c.scheduler.lock:  # a long tick holds the lock
        ids = c.submit(job("a"), job("b"))
    assert c.states(ids) == {"pending"}
    assert c.scheduler.busy(), "accepted jobs wait in the inbox for the next tick"
    c.run_until(lambda: c.states(ids) == {"succeeded"})
