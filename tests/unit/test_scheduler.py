"""The scheduling cycle without Ray: lifecycles, errors, ROFR window, restarts, the sweep.

Every test runs the Scheduler through ``SchedulerHarness``: a SQLite store, simulated
clouds sharing one state, and one fake clock read by the scheduler and the clouds alike.
One simulated hour lasts 0.05 fake seconds; a step moves the clock 0.01 s.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from multicloud.errors import InvalidRequestError, error_scope
from multicloud.lifecycle import JobState
from multicloud.provider import (
    LaunchSpec,
    MarketKind,
    Offer,
    Provider,
    ResourceRequest,
    WorkloadState,
    WorkloadStatus,
    request_id,
)
from multicloud.service.scheduler import CrashPoints
from multicloud.testing.builders import job
from multicloud.testing.scheduling import SchedulerHarness, quick_settings, sim_fleet, sim_offer

S = JobState

TWO_CLOUDS = sim_fleet(
    cheap={"offers": [sim_offer("r1", 10.0, spot_price=4.0)]},
    dear={"offers": [sim_offer("r2", 14.0)]},
)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Callable[..., SchedulerHarness]]:
    made: list[SchedulerHarness] = []

    def make(doc: Any = TWO_CLOUDS, **kwargs: Any) -> SchedulerHarness:
        h = SchedulerHarness.in_dir(tmp_path, doc, **kwargs)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


# --------------------------------------------------------------------------- lifecycles

LIFECYCLE = ["pending", "placed", "provisioning", "running", "succeeded"]

CASES: list[tuple[str, dict[str, Any], dict[str, Any], list[str], list[str | None]]] = [
    # (case, fleet, job fields, expected events, expected attempt outcomes)
    ("plain run on the cheapest cloud", TWO_CLOUDS, {}, LIFECYCLE, ["succeeded"]),
    (
        "capacity error: scope blocked, re-placed on the other cloud",
        sim_fleet(
            cheap={"offers": [sim_offer("r1", 10.0)], "faults": [{"kind": "capacity"}]},
            dear={"offers": [sim_offer("r2", 14.0)]},
        ),
        {},
        ["pending", "placed", "pending", *LIFECYCLE[1:]],
        ["capacity", "succeeded"],
    ),
    (
        "quota error: region blocked, re-placed",
        sim_fleet(
            cheap={"offers": [sim_offer("r1", 10.0)], "faults": [{"kind": "quota"}]},
            dear={"offers": [sim_offer("r2", 14.0)]},
        ),
        {},
        ["pending", "placed", "pending", *LIFECYCLE[1:]],
        ["quota", "succeeded"],
    ),
    (
        "transient error: same launch re-sent, one attempt",
        sim_fleet(
            cheap={
                "offers": [sim_offer("r1", 10.0)],
                "faults": [{"kind": "transient", "times": 2}],
            },
        ),
        {},
        LIFECYCLE,
        ["succeeded"],
    ),
    (
        "spot preemption: requeued and run again",
        sim_fleet(
            cheap={
                "offers": [sim_offer("r1", 10.0, spot_price=4.0)],
                "faults": [{"kind": "preemption", "after_hours": 3.0}],
            },
        ),
        {"market": "spot", "duration_hours": 8.0},
        [
            "pending",
            "placed",
            "provisioning",
            "running",
            "preempted",
            "pending",
            "placed",
            "provisioning",
            "running",
            "succeeded",
        ],
        ["preempted", "succeeded"],
    ),
]


@pytest.mark.parametrize(
    ("fleet", "fields", "events", "outcomes"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_lifecycle(
    harness: Callable[..., SchedulerHarness],
    fleet: dict[str, Any],
    fields: dict[str, Any],
    events: list[str],
    outcomes: list[str | None],
) -> None:
    h = harness(fleet)
    (job_id,) = h.submit(job("train", **fields))
    h.run_until(h.all_final([job_id]))
    record = h.store.get(job_id)
    assert record.state is S.SUCCEEDED, h.store.events(job_id)
    assert h.events(job_id) == events
    assert [a.outcome for a in record.attempts] == outcomes
    # Every event has a reason a person can read.
    assert all(e.reason for e in h.store.events(job_id))
    # Request ids are derived, so a crash and a re-send could never launch twice.
    for a in record.attempts:
        assert a.request_id == request_id(job_id, a.attempt, a.place.key)


def test_capacity_error_blocks_the_scope_for_later_jobs(
    harness: Callable[..., SchedulerHarness],
) -> None:
    h = harness(
        sim_fleet(
            cheap={"offers": [sim_offer("r1", 10.0)], "faults": [{"kind": "capacity"}]},
            dear={"offers": [sim_offer("r2", 14.0)]},
        )
    )
    (first,) = h.submit(job("a"))
    h.run_until(lambda: h.state_of(first) is S.SUCCEEDED)
    assert "cheap/r1" in h.scheduler.stats()["blocked"]
    (second,) = h.submit(job("b"))
    h.run_until(lambda: h.state_of(second) is S.SUCCEEDED)
    # The blocked scope is not tried again while its TTL runs.
    assert [a.provider for a in h.store.get(second).attempts] == ["dear"]


def test_a_block_runs_out_on_the_clock_and_the_scope_is_used_again(
    harness: Callable[..., SchedulerHarness],
) -> None:
    doc = sim_fleet(
        cheap={"offers": [sim_offer("r1", 10.0)], "faults": [{"kind": "capacity"}]},
        dear={"offers": [sim_offer("r2", 14.0)]},
    )
    h = harness(doc, settings=quick_settings(blocked_ttl_s=1.0))
    (first,) = h.submit(job("a"))
    h.run_until(lambda: h.state_of(first) is S.SUCCEEDED)
    assert "cheap/r1" in h.scheduler.stats()["blocked"]
    h.clock.advance(1.0)  # exactly the TTL: the block is gone on the next tick
    h.step()
    assert h.scheduler.stats()["blocked"] == []
    (second,) = h.submit(job("b"))
    h.run_until(lambda: h.state_of(second) is S.SUCCEEDED)
    assert [a.provider for a in h.store.get(second).attempts] == ["cheap"]


def test_capacity_lost_after_launch_blocks_the_scope_and_re_places(
    harness: Callable[..., SchedulerHarness],
) -> None:
    # A Kubernetes-style cloud: the launch is accepted, then the pods never get GPUs. The
    # adapter reports PREEMPTED with the scope to avoid; the scheduler must not walk back in.
    def wrap(name: str, provider: Provider) -> Provider:
        if name != "cheap":
            return provider
        real_status = provider.status

        def status(handles: Any) -> Any:
            known = real_status(handles)
            return {
                h.id: WorkloadStatus(
                    WorkloadState.PREEMPTED,
                    "capacity: pods unschedulable",
                    blocked_scope=error_scope(name, h.region),
                )
                for h in handles
                if h.id in known
            }

        provider.status = status  # type: ignore[method-assign]
        return provider

    h = harness(TWO_CLOUDS, wrap=wrap)
    (job_id,) = h.submit(job("a"))
    h.run_until(lambda: h.state_of(job_id) is S.SUCCEEDED)
    record = h.store.get(job_id)
    assert [(a.provider, a.outcome) for a in record.attempts] == [
        ("cheap", "preempted"),
        ("dear", "succeeded"),
    ]
    assert "cheap/r1" in h.scheduler.stats()["blocked"]


def test_run_failure_fails_the_job_without_retry(harness: Callable[..., SchedulerHarness]) -> None:
    def wrap(name: str, provider: Provider) -> Provider:
        real_status = provider.status

        def status(handles: Any) -> Any:
            return {
                h.id: WorkloadStatus(WorkloadState.FAILED, "exit 3", exit_code=3)
                if s.state is WorkloadState.RUNNING
                else s
                for h, s in zip(handles, real_status(handles).values(), strict=True)
            }

        provider.status = status  # type: ignore[method-assign]
        return provider

    h = harness(wrap=wrap)
    (job_id,) = h.submit(job("a"))
    h.run_until(h.all_final([job_id]))
    record = h.store.get(job_id)
    assert record.state is S.FAILED
    assert [a.outcome for a in record.attempts] == ["failed"]
    assert "exit code 3" in h.store.events(job_id)[-1].reason


def test_invalid_request_fails_the_job(harness: Callable[..., SchedulerHarness]) -> None:
    h = harness(sim_fleet(dear={"offers": [sim_offer("r2", 14.0)]}))

    def bad_launch(*args: Any, **kwargs: Any) -> Any:
        raise InvalidRequestError("bad instance type", provider="dear")

    h.sims["dear"].launch = bad_launch  # type: ignore[method-assign]
    (job_id,) = h.submit(job("a"))
    h.run_until(h.all_final([job_id]))
    assert h.state_of(job_id) is S.FAILED
    assert "invalid" in h.store.events(job_id)[-1].reason


def test_gives_up_after_max_attempts(harness: Callable[..., SchedulerHarness]) -> None:
    doc = sim_fleet(
        cheap={"offers": [sim_offer("r1", 10.0)], "faults": [{"kind": "capacity", "times": 50}]}
    )
    h = harness(doc, settings=quick_settings(blocked_ttl_s=0.0, max_attempts=3))
    (job_id,) = h.submit(job("a"))
    h.run_until(h.all_final([job_id]))
    record = h.store.get(job_id)
    assert record.state is S.FAILED
    assert [a.outcome for a in record.attempts] == ["capacity"] * 3
    assert "gave up after 3 attempts" in h.store.events(job_id)[-1].reason


def test_cancel_terminates_the_workload(harness: Callable[..., SchedulerHarness]) -> None:
    h = harness()
    (job_id,) = h.submit(job("long", duration_hours=1000))
    h.run_until(lambda: h.state_of(job_id) is S.RUNNING)
    assert h.scheduler.cancel(job_id) is S.CANCELLED
    h.run_until(lambda: not h.sims["cheap"].owned(h.scheduler.install_id))
    record = h.store.get(job_id)
    assert record.state is S.CANCELLED
    assert [a.outcome for a in record.attempts] == ["cancelled"]
    # Cancelling a finished job changes nothing.
    assert h.scheduler.cancel(job_id) is S.CANCELLED


def test_a_cancel_the_store_refused_leaves_the_job_scheduled(
    harness: Callable[..., SchedulerHarness], monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness()
    (job_id,) = h.submit(job("a", duration_hours=40))
    h.run_until(lambda: h.state_of(job_id) is S.RUNNING)

    def down(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("the store went away mid-cancel")

    with monkeypatch.context() as m:
        m.setattr(h.store, "transition_many", down)
        with pytest.raises(ConnectionError):
            h.scheduler.cancel(job_id)
    # Nothing was cancelled in the store: the scheduler must still run the job to its end,
    # not forget it because its memory moved before the store refused.
    assert h.state_of(job_id) is S.RUNNING
    h.run_until(h.all_final([job_id]))
    assert h.state_of(job_id) is S.SUCCEEDED


def test_unplaceable_job_waits_with_one_decision_saying_why(
    harness: Callable[..., SchedulerHarness],
) -> None:
    h = harness()
    (job_id,) = h.submit(job("tpu", accelerator="TPU-v5p"))
    h.steps(40)  # several capacity probes: none may write another decision
    assert h.state_of(job_id) is S.PENDING
    decisions = h.store.decisions(job_id)
    assert len(decisions) == 1 and decisions[0].placement == ()
    assert decisions[0].reasons[0]


def test_capacity_is_never_over_committed(harness: Callable[..., SchedulerHarness]) -> None:
    h = harness(sim_fleet(cheap={"offers": [sim_offer("r1", 10.0, capacity=2)]}))
    ids = h.submit(*[job(f"j{i}", duration_hours=2) for i in range(7)])
    peak = 0

    def done() -> bool:
        nonlocal peak
        peak = max(peak, len(h.sims["cheap"].owned(h.scheduler.install_id)))
        return all(h.state_of(i).is_terminal for i in ids)

    h.run_until(done)
    assert peak <= 2
    assert {h.state_of(i) for i in ids} == {S.SUCCEEDED}


# --------------------------------------------------------------------------- ROFR window


def test_holder_that_answers_after_its_window_is_declined(
    harness: Callable[..., SchedulerHarness],
) -> None:
    doc = {
        **sim_fleet(
            holder={"offers": [sim_offer("r1", 9.0)]},
            other={"offers": [sim_offer("r2", 10.0)]},
        ),
        "contracts": {"rofr": {"holders": ["holder"], "window": 0.05}},
    }
    gate = threading.Event()

    class Hung:
        """The holder's offers call hangs until the test ends (never within the window)."""

        def __init__(self, inner: Provider) -> None:
            self.inner = inner
            self.name = inner.name
            self.capabilities = inner.capabilities

        def offers(self, request: ResourceRequest) -> list[Offer]:
            gate.wait(10)
            return self.inner.offers(request)

        def __getattr__(self, attr: str) -> Any:
            return getattr(self.inner, attr)

    def wrap(name: str, p: Provider) -> Provider:
        return Hung(p) if name == "holder" else p  # type: ignore[return-value]

    h = harness(doc, wrap=wrap, settle_s=0.01)
    try:
        (job_id,) = h.submit(job("a"))
        h.run_until(h.all_final([job_id]))
    finally:
        gate.set()
    audit = h.store.audit(job_id)
    assert audit and audit[0].answer == "declined"
    assert "window" in audit[0].reason or "answer" in audit[0].reason
    assert [a.provider for a in h.store.get(job_id).attempts] == ["other"]


# --------------------------------------------------------------------------- restarts


class Crash(Exception):
    pass


def _raise(_: int) -> None:
    raise Crash


@pytest.mark.parametrize("point", ["after_decide", "after_launch"])
def test_crash_and_restart_launches_nothing_twice(
    harness: Callable[..., SchedulerHarness], point: str
) -> None:
    first = harness(crash=CrashPoints({point: 1.0}, exit=_raise))
    ids = first.submit(*[job(f"j{i}") for i in range(3)])
    with pytest.raises(Crash):
        first.run_until(lambda: False, steps=50)
    # A new scheduler on the same store and the same cloud, as after a restart.
    second = harness(state=first.state, store=first.store, clock=first.clock)
    second.run_until(second.all_final(ids))
    for job_id in ids:
        record = second.store.get(job_id)
        assert record.state is S.SUCCEEDED
        assert [a.attempt for a in record.attempts] == [1]
    assert len(first.state.workloads) == len(ids)  # one workload per job: nothing twice


def test_orphan_sweep_terminates_unowned_workloads(
    harness: Callable[..., SchedulerHarness],
) -> None:
    h = harness()
    sim = h.sims["cheap"]
    (offer,) = sim.offers(ResourceRequest())
    spec = LaunchSpec(
        job_id="job-000000000000",
        job_name="stray",
        attempt=1,
        nodes=1,
        market=MarketKind.ON_DEMAND,
        install_id=h.scheduler.install_id,
        duration_hours=1000,
    )
    sim.launch(offer, spec, request_id="stray")
    # Another installation's workload in the same account is none of our business.
    sim.launch(offer, dataclasses.replace(spec, install_id="mc-other"), request_id="theirs")
    assert len(sim.owned(h.scheduler.install_id)) == 1
    h.run_until(lambda: not sim.owned(h.scheduler.install_id))
    assert h.scheduler.stats()["orphans_terminated"] == 1
    assert len(sim.owned("mc-other")) == 1


def test_inference_spread_over_two_clouds_finishes_when_every_replica_has(
    harness: Callable[..., SchedulerHarness],
) -> None:
    doc = sim_fleet(
        cheap={"offers": [sim_offer("r1", 10.0)]},
        dear={"offers": [sim_offer("r1", 14.0)]},
    )
    h = harness(doc)
    (job_id,) = h.submit(
        job("serve", kind="inference", serving={"replicas": 2, "spread": 2, "regions_near": []})
    )
    h.run_until(h.all_final([job_id]))
    record = h.store.get(job_id)
    assert record.state is S.SUCCEEDED
    assert sorted(a.provider for a in record.attempts) == ["cheap", "dear"]
    assert {a.outcome for a in record.attempts} == {"succeeded"}
    assert h.events(job_id) == LIFECYCLE


# --------------------------------------------------------------------------- idle moments


def test_the_idle_hook_runs_between_ticks_only_when_no_submission_waits(
    harness: Callable[..., SchedulerHarness],
) -> None:
    h = harness()
    scheduler = h.scheduler
    seen: list[int] = []
    # Jobs arrive while a tick runs: the hook must wait until they have been taken in.
    tick = scheduler.tick
    arrivals = [[job("late")], [], []]

    def tick_with_arrivals() -> None:
        tick()
        if arrivals:
            jobs = arrivals.pop(0)
            if jobs:
                h.submit(*jobs)

    scheduler.tick = tick_with_arrivals  # type: ignore[method-assign]
    scheduler.idle = lambda: seen.append(len(scheduler._inbox))
    stop = threading.Event()
    loop = threading.Thread(target=scheduler.run, args=(stop,))
    loop.start()
    try:
        for _ in range(500):
            if not arrivals and len(seen) >= 2:
                break
            stop.wait(0.01)
    finally:
        stop.set()
        loop.join(timeout=10)
    assert len(seen) >= 2
    assert set(seen) == {0}
