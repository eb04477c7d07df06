"""The queue: whole batches planned as one, incremental re-planning, event-driven wakes.

The scheduler over a SQLite store and in-memory simulated clouds, on a fake clock.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from multicloud import fleet as fleet_mod
from multicloud.lifecycle import JobState
from multicloud.models import Job
from multicloud.planner import plan
from multicloud.provider import ResourceRequest
from multicloud.testing.builders import job
from multicloud.testing.scheduling import SchedulerHarness, sim_fleet, sim_offer

S = JobState

ONE_CLOUD = sim_fleet(cloud={"offers": [sim_offer("r1", 10.0, capacity=100)]})


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Callable[..., SchedulerHarness]]:
    made: list[SchedulerHarness] = []

    def make(doc: Any = ONE_CLOUD, **kwargs: Any) -> SchedulerHarness:
        h = SchedulerHarness.in_dir(tmp_path, doc, **kwargs)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def states(h: SchedulerHarness, ids: list[str]) -> set[str]:
    return set(h.store.job_states(ids).values())


def test_a_batch_larger_than_any_slice_is_planned_in_one_plan(
    harness: Callable[..., SchedulerHarness],
) -> None:
    h = harness(sim_fleet(cloud={"offers": [sim_offer("r1", 10.0, capacity=None)]}))
    ids = h.submit(*(job(f"j{i}", duration_hours=1000) for i in range(600)))
    h.run_until(lambda: states(h, ids) == {"running"})
    stats = h.scheduler.stats()
    assert stats["plans"] == 1 and stats["plan_jobs"]["max"] == 600


def _contended(n: int, seed: int) -> tuple[dict[str, Any], list[Job]]:
    rng = random.Random(seed)
    offers = {
        "a": [sim_offer("r1", 10.0, capacity=6), sim_offer("r2", 12.5, capacity=5)],
        "b": [
            sim_offer("r3", 11.0, capacity=7, spot_price=6.0),
            sim_offer("r4", 9.0, capacity=3, instance_type="h200x8", accelerator="H200"),
        ],
    }
    doc = {
        **sim_fleet(**{name: {"offers": o} for name, o in offers.items()}),
        "contracts": {"rofr": {"holders": ["b"], "tolerance": 0.05}},
    }
    jobs = [
        job(
            f"j{i}",
            priority=rng.choice([0, 0, 1, 5]),
            nodes=rng.choice([1, 1, 2, 3]),
            accelerator=rng.choice([["H100"], ["H100", "H200"]]),
            market=rng.choice(["on-demand", "any"]),
            duration_hours=rng.choice([100, 300, 900]),
        )
        for i in range(n)
    ]
    return doc, jobs


def test_the_service_places_what_the_offline_planner_places(
    harness: Callable[..., SchedulerHarness],
) -> None:
    doc, jobs = _contended(40, seed=5)
    h = harness(doc)
    # The snapshot the service will see: the clouds' offers before anything runs.
    offers = [o for sim in h.sims.values() for o in sim.offers(ResourceRequest())]
    snap = fleet_mod.snapshot(jobs, h.fleet, offers, now=h.wall(), job_ids=[j.name for j in jobs])
    offline = plan(snap)
    assert offline.unplaced, "the batch must be contended to test anything"

    ids = h.submit(*jobs)
    h.run_until(lambda: not h.scheduler.busy() and h.scheduler.stats()["plans"] >= 1)
    by_name = dict(zip(ids, (j.name for j in jobs), strict=True))
    placed = {by_name[r.id]: r for r in h.store.list_jobs() if r.attempts}
    tiers = Counter(j.priority for j in jobs if j.name in placed)
    want = Counter(j.priority for j in jobs if j.name in {a.job for a in offline.placements})
    assert tiers == want
    cost = sum(
        a.place.price_per_hour * r.job.duration_hours for r in placed.values() for a in r.attempts
    )
    assert cost == pytest.approx(offline.total_cost, rel=0.005)


def test_an_unchanged_queue_is_not_planned_again(harness: Callable[..., SchedulerHarness]) -> None:
    h = harness()
    stuck = h.submit(*(job(f"b{i}", accelerator="B200") for i in range(300)))
    h.run_until(lambda: h.scheduler.stats()["plans"] == 1 and not h.scheduler.busy())
    h.steps(300)  # three fake seconds: dozens of capacity probes, nothing new in them
    stats = h.scheduler.stats()
    assert stats["plans"] == 1
    assert states(h, stuck) == {"pending"}
    assert all(len(h.store.decisions(i)) == 1 for i in stuck[:5])
    assert stats["queue"] == {"fresh": 0, "stuck": 300}
    ticks = h.scheduler.tick_stats(window_s=3.0)
    assert ticks["nothing_new"]["samples"] > 100


def _h100_and_l4(h100_capacity: int, reserved_h100: int = 0) -> dict[str, Any]:
    doc = sim_fleet(
        cloud={
            "offers": [
                sim_offer("r1", 10.0, capacity=h100_capacity),
                sim_offer("r1", 1.0, capacity=0, instance_type="l4", accelerator="L4", count=1),
            ]
        }
    )
    if reserved_h100:
        # A prepaid block that names no accelerator: the offer's is what it holds.
        block = {"name": "blk", "provider": "cloud", "region": "r1", "instance_type": "h100x8"}
        doc["contracts"] = {"reservations": [{**block, "nodes": reserved_h100}]}
    return doc


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param(_h100_and_l4(1), id="a-pool-node"),
        pytest.param(_h100_and_l4(0, reserved_h100=1), id="a-reserved-node"),
    ],
)
def test_capacity_coming_back_wakes_only_the_jobs_that_can_use_it(
    harness: Callable[..., SchedulerHarness], doc: dict[str, Any]
) -> None:
    h = harness(doc)
    (first,) = h.submit(job("first", duration_hours=2))
    h.run_until(lambda: h.state_of(first) is S.RUNNING)
    waiting = h.submit(*(job(f"h{i}", duration_hours=1) for i in range(3)))
    l4 = h.submit(*(job(f"l{i}", accelerator="L4", count=1) for i in range(50)))
    h.run_until(lambda: h.scheduler.stats()["plans"] == 2 and not h.scheduler.busy())
    h.run_until(lambda: h.state_of(first) is S.SUCCEEDED)
    h.run_until(lambda: h.state_of(waiting[0]) is not S.PENDING)
    h.steps(50)
    # Both submissions went into one plan; then the freed H100 node woke the 3 H100
    # jobs, planned on their own: the 50 L4 jobs, which it cannot serve, stayed asleep.
    sizes = [n for n, _, _ in h.scheduler.counters.decisions]
    assert sizes[:3] == [1, 53, 3]
    assert all(n < 50 for n in sizes[2:]), sizes
    assert states(h, l4) == {"pending"}


def test_jobs_nothing_can_place_do_not_hold_back_the_rest(
    harness: Callable[..., SchedulerHarness],
) -> None:
    h = harness()
    # No offer has a B200: these stay pending, and they come first in queue order.
    stuck = h.submit(*(job(f"b{i}", accelerator="B200", priority=9) for i in range(4)))
    ok = h.submit(*(job(f"h{i}", duration_hours=1) for i in range(3)))
    h.run_until(lambda: states(h, ok) == {"succeeded"})
    assert states(h, stuck) == {"pending"}
    assert all(h.store.decisions(i) for i in stuck), "every stuck job was tried and explained"


def test_a_job_cancelled_before_the_cycle_took_it_in_is_never_placed(
    harness: Callable[..., SchedulerHarness],
) -> None:
    h = harness()
    (job_id,) = h.submit(job("gone"))
    assert h.scheduler.cancel(job_id) is S.CANCELLED
    h.steps(20)
    assert h.events(job_id) == ["pending", "cancelled"]
    assert h.scheduler.stats()["cycle_errors"] == 0
    assert h.scheduler.stats()["active_jobs"] == {}


def test_a_submission_wakes_the_cycle_without_waiting_for_it(
    harness: Callable[..., SchedulerHarness],
) -> None:
    h = harness()
    h.scheduler.wake.clear()
    with h.scheduler.lock:  # a long tick holds the lock
        ids = h.submit(job("a"), job("b"))
    assert states(h, ids) == {"pending"}
    assert h.scheduler.wake.is_set(), "a submission wakes the loop at once"
    assert h.scheduler.busy(), "accepted jobs wait in the inbox for the next tick"
    h.run_until(lambda: states(h, ids) == {"succeeded"})


def test_an_adapter_answer_wakes_the_cycle(harness: Callable[..., SchedulerHarness]) -> None:
    h = harness()
    h.submit(job("a"))
    h.scheduler.tick()  # takes the job in, asks for offers
    h.scheduler.wake.clear()
    for fut in h.scheduler.outstanding():
        fut.result(timeout=5)
    assert h.scheduler.wake.is_set()


def test_the_loop_sleeps_until_its_next_timer(harness: Callable[..., SchedulerHarness]) -> None:
    h = harness()
    (job_id,) = h.submit(job("long", duration_hours=1000))
    h.run_until(lambda: h.state_of(job_id) is S.RUNNING)
    due = h.scheduler.next_due()
    assert due is not None and due <= h.clock() + h.scheduler.settings.sweep_interval_s


def test_status_answers_are_not_starved_by_submissions_during_every_tick(
    harness: Callable[..., SchedulerHarness], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A submission lands while each tick places: the status chunk may wait for the next
    # tick's plan, but only one tick, so the first job still moves on as its cloud says.
    h = harness()
    (first,) = h.submit(job("first"))
    place = h.scheduler.placer.step
    sent: list[str] = []

    def submit_meanwhile() -> None:
        sent.extend(h.submit(job(f"n{len(sent)}", duration_hours=1000)))
        place()

    monkeypatch.setattr(h.scheduler.placer, "step", submit_meanwhile)
    h.run_until(lambda: h.state_of(first) is S.SUCCEEDED, steps=200)
    assert h.scheduler.stats()["cycle_errors"] == 0
    placed = {S.PLACED, S.PROVISIONING, S.RUNNING}
    assert {h.state_of(i) for i in sent[:-2]} <= placed
