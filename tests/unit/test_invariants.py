"""The chaos soak's invariant checker finds each kind of violation (and none in a clean run).

A scheduler (no Ray) runs one job on a simulated cloud journaled to a file, on a fake clock
set to the wall clock (the checker reads workloads at the wall clock's time); then each case
breaks one thing the way a bug would — a workload for an attempt launched twice, one no
attempt recorded, an acknowledged job missing, a cancel that did not stick, a job left
running at the end — and the checker must name it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from multicloud.lifecycle import JobState
from multicloud.sim import SimState
from multicloud.testing.builders import job
from multicloud.testing.clock import FakeClock
from multicloud.testing.invariants import Invariants, Submitted
from multicloud.testing.scheduling import SchedulerHarness, sim_fleet, sim_offer

S = JobState
FLEET = sim_fleet(cloud={"offers": [sim_offer("r1", 10.0)]})


@dataclasses.dataclass
class Ran:
    """One job run (or left running) by a scheduler, and what the driver was told."""

    h: SchedulerHarness
    job_id: str
    submitted: Submitted
    invariants: Invariants


@pytest.fixture
def ran(tmp_path: Path) -> Iterator[Callable[[bool], Ran]]:
    made: list[Ran] = []

    def make(finish: bool) -> Ran:
        journal = str(tmp_path / "sim.jsonl")
        h = SchedulerHarness.in_dir(
            tmp_path, FLEET, state=SimState.open(journal), clock=FakeClock(time.time())
        )
        job_id = h.scheduler.submit([(job("a", duration_hours=1000), "key-a")])[0][0]
        h.run_until(lambda: h.state_of(job_id) is S.RUNNING)
        if finish:
            h.scheduler.cancel(job_id)
            h.run_until(lambda: not h.sims["cloud"].owned(h.scheduler.install_id))
        url = f"sqlite:///{tmp_path / 'store.db'}"
        run = Ran(h, job_id, Submitted({"key-a": job_id}), Invariants(url, [journal]))
        made.append(run)
        return run

    yield make
    for run in made:
        run.invariants.close()
        run.h.close()


def _launch_again(run: Ran, *, same_request: bool) -> None:
    """Put a second workload of the job's attempt into the cloud."""
    state = run.h.state
    with state.transaction():
        first = next(iter(state.workloads.values()))
        twin = dataclasses.replace(
            first,
            id=first.id + "-twin",
            request_id=first.request_id if same_request else first.request_id + "-other",
            tags=dict(first.tags),
        )
        state.add_workload(twin)


CASES: list[tuple[str, bool, Callable[[Ran], None], bool, set[str]]] = [
    # (case, finish the job first, what breaks, final check, invariants named)
    ("a clean run", True, lambda r: None, True, set()),
    ("an attempt launched twice", True, lambda r: _launch_again(r, same_request=True), True,
     {"launched-twice"}),
    ("a launch no attempt recorded", True, lambda r: _launch_again(r, same_request=False),
     True, {"unrecorded-launch"}),
    ("an acknowledged job missing", True,
     lambda r: r.submitted.ids.update({"key-b": "job-000000000000"}), False, {"lost"}),
    ("a key answered with another job", True,
     lambda r: r.submitted.ids.update({"key-a": "job-000000000000"}), False, {"lost"}),
    ("a cancel that did not stick", False, lambda r: r.submitted.cancelled.add(r.job_id),
     True, {"cancel-lost", "not-terminal", "live-attempt", "orphan"}),
    ("a job left running at the end", False, lambda r: None, True,
     {"not-terminal", "live-attempt", "orphan"}),
    ("still running, mid-run", False, lambda r: None, False, set()),
]


@pytest.mark.parametrize(
    ("finish", "breaks", "final", "named"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_the_checker_names_what_broke(
    ran: Callable[[bool], Ran],
    finish: bool,
    breaks: Callable[[Ran], None],
    final: bool,
    named: set[str],
) -> None:
    run = ran(finish)
    breaks(run)
    found = run.invariants.check(run.submitted, final=final)
    assert {v.invariant for v in found} == named, found
