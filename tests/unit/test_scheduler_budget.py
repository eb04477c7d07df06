"""A team's budget is charged what an attempt really ran, from the moment it ends.

A live attempt is charged its job's whole duration (what the plan promised). When it ends
early — cancelled, preempted, lost, failed — the charge must drop to what it ran at once,
not at the next restart: the running scheduler's spend must equal what a scheduler started
afresh on the same store recomputes. One simulated hour is one fake second here; a job of
10 hours at $10/h is charged $100 while it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from multicloud.lifecycle import JobState
from multicloud.provider import Provider, WorkloadState, WorkloadStatus
from multicloud.testing.builders import job
from multicloud.testing.clock import FakeClock
from multicloud.testing.scheduling import SchedulerHarness, quick_settings, sim_fleet, sim_offer

S = JobState
PRICE = 10.0
HOURS = 10.0
PLANNED = PRICE * HOURS


def _fleet(**cloud: Any) -> dict[str, Any]:
    doc = sim_fleet(
        time_scale=1.0, cloud={"offers": [sim_offer("r1", PRICE, spot_price=PRICE)], **cloud}
    )
    doc["budgets"] = {"research": {"max_cost_usd": 10_000}}
    return doc


def _fails_at(clock: FakeClock, hours: float) -> Callable[[str, Provider], Provider]:
    """A wrapper whose cloud reports every running workload failed from ``hours`` on."""

    def wrap(name: str, provider: Provider) -> Provider:
        real_status = provider.status

        def status(handles: Any) -> Any:
            out = dict(real_status(handles))
            for handle_id, s in out.items():
                if s.state is WorkloadState.RUNNING and clock() >= hours:
                    out[handle_id] = WorkloadStatus(WorkloadState.FAILED, "exit 1", exit_code=1)
            return out

        provider.status = status  # type: ignore[method-assign]
        return provider

    return wrap


@dataclass(frozen=True)
class Case:
    """How an attempt ends, and what its job's state is then."""

    name: str
    fleet: dict[str, Any]
    job: dict[str, Any]
    # At 3 h: "cancel", "lose" (terminated behind the scheduler's back), "fail" (the run
    # exits 1); "run": until the job is final on its own (preemption or success).
    end: str
    final: JobState
    # Attempts of the job, with how many hours each should be charged (roughly).
    charged_hours: tuple[float, ...]
    max_attempts: int = 1


CASES = [
    Case("cancelled while running", _fleet(), {}, "cancel", S.CANCELLED, (3.0,)),
    Case(
        "preempted, the last of its attempts",
        _fleet(faults=[{"kind": "preemption", "after_hours": 2.0}]),
        {"market": "spot"},
        "run",
        S.FAILED,
        (2.0,),
    ),
    Case(
        "preempted, then run again to the end",
        _fleet(faults=[{"kind": "preemption", "after_hours": 2.0}]),
        {"market": "spot"},
        "run",
        S.SUCCEEDED,
        (2.0, HOURS),
        max_attempts=2,
    ),
    Case("lost: gone from the cloud", _fleet(), {}, "lose", S.FAILED, (3.0,)),
    Case("failed: the command exited 1", _fleet(), {}, "fail", S.FAILED, (3.0,)),
    Case("succeeded: the whole duration", _fleet(), {}, "run", S.SUCCEEDED, (HOURS,)),
]


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Callable[..., SchedulerHarness]]:
    made: list[SchedulerHarness] = []

    def make(doc: Any, **kwargs: Any) -> SchedulerHarness:
        h = SchedulerHarness.in_dir(tmp_path, doc, step_s=0.25, **kwargs)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def _recomputed(h: SchedulerHarness, make: Callable[..., SchedulerHarness]) -> float:
    """What a scheduler started afresh on the same store charges the team."""
    fresh = make(h.fleet, store=h.store, state=h.state, clock=h.clock)
    return fresh.scheduler.book.spent["research"]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_charge_follows_the_attempts_real_end(
    harness: Callable[..., SchedulerHarness], case: Case
) -> None:
    clock = FakeClock()
    wrap = _fails_at(clock, 3.0) if case.end == "fail" else None
    settings = quick_settings(max_attempts=case.max_attempts)
    h = harness(case.fleet, settings=settings, clock=clock, wrap=wrap)
    (job_id,) = h.submit(job("a", team="research", duration_hours=HOURS, **case.job))
    h.run_until(lambda: h.state_of(job_id) is S.RUNNING)
    assert h.scheduler.book.spent["research"] == pytest.approx(PLANNED)

    if case.end in ("cancel", "lose"):
        h.run_until(lambda: h.clock() >= 3.0)
        if case.end == "cancel":
            h.scheduler.cancel(job_id)
        else:
            (row,) = [a for a in h.store.get(job_id).attempts if a.live]
            assert row.handle is not None
            h.sims["cloud"].terminate(row.handle, request_id="behind-its-back")
    h.run_until(h.all_final([job_id]))

    record = h.store.get(job_id)
    assert record.state is case.final
    spent = h.scheduler.book.spent["research"]
    assert spent == pytest.approx(_recomputed(h, harness))
    # Each attempt charged about what it ran (a step or two of the clock either way).
    expected = sum(PRICE * hours for hours in case.charged_hours)
    assert spent == pytest.approx(expected, abs=PRICE * 0.6)
    assert not h.scheduler.book.charged
