"""The store's bulk methods (one transaction, a few statements for many rows).

The scheduler records whole cycles through them, so each must do, for every row, what one
row alone would get, and all or nothing. Run against SQLite and PostgreSQL (the
PostgreSQL half needs the server the ``pg_database`` fixture describes).
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

from multicloud.provider import Handle, MarketKind, Place
from multicloud.store import (
    AttemptEndedError,
    AttemptNotFoundError,
    Decision,
    IdempotencyConflictError,
    InvalidTransitionError,
    JobNotFoundError,
    JobState,
    NewAttempt,
    Store,
    Transition,
)
from multicloud.store.jobs import new_ids
from multicloud.testing.builders import job, offer

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
S = JobState


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/store.db"
    else:
        url = request.getfixturevalue("pg_database")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP SCHEMA public CASCADE")
            conn.execute("CREATE SCHEMA public")
    opened = Store.open(url)
    try:
        yield opened
    finally:
        opened.close()


PLACE = Place(
    offer(zone="use1-az1", instance_type="p5.48xlarge", price=98.3), 2, MarketKind.ON_DEMAND, 196.6
)


def new_attempt(job_id: str, attempt: int = 1, key: str | None = None) -> NewAttempt:
    return NewAttempt(job_id, attempt, key or f"r-{job_id}-{attempt}", PLACE)


def handle(rid: str, handle_id: str) -> Handle:
    return Handle(
        "aws", handle_id, rid, "us-east-1", "use1-az1", "p5.48xlarge", 2, MarketKind.ON_DEMAND, "j"
    )


def submitted(store: Store, n: int) -> list[str]:
    return [i for i, _ in store.submit_many([(job(f"j{k}"), None) for k in range(n)], now=at(0))]


def test_submit_many_keeps_order_and_resolves_a_key_used_twice_in_one_batch(
    store: Store,
) -> None:
    results = store.submit_many(
        [(job("a"), "k1"), (job("b"), None), (job("a"), "k1"), (job("c"), "k2")], now=at(0)
    )
    assert [created for _, created in results] == [True, True, False, True]
    assert results[2][0] == results[0][0]
    assert [r.name for r in store.list_jobs()] == ["a", "b", "c"]
    assert [e.reason for e in store.events(results[1][0])] == ["submitted"]
    with pytest.raises(IdempotencyConflictError):
        store.submit_many([(job("d"), "k3"), (job("other"), "k3")], now=at(1))
    assert len(store.list_jobs()) == 3


def test_transition_many_applies_changes_in_order_per_job(store: Store) -> None:
    a, b = submitted(store, 2)
    left = store.transition_many(
        [
            Transition(a, S.PLACED, "placed", S.PENDING),
            Transition(b, S.PLACED, "placed"),
            Transition(a, S.PROVISIONING, "launched", S.PLACED),
            Transition(a, S.RUNNING, "running", S.PROVISIONING),
        ],
        now=at(1),
    )
    assert left == [S.PENDING, S.PENDING, S.PLACED, S.PROVISIONING]
    assert store.get(a).state is S.RUNNING and store.get(b).state is S.PLACED
    assert [e.to_state for e in store.events(a)] == [
        S.PENDING,
        S.PLACED,
        S.PROVISIONING,
        S.RUNNING,
    ]
    assert store.get(a).updated_at == at(1)
    # Preempted and requeued in one call: the job ends where it started, moved twice.
    store.transition_many(
        [Transition(a, S.PREEMPTED, "preempted"), Transition(a, S.PENDING, "requeued")],
        now=at(2),
    )
    assert store.get(a).state is S.PENDING
    assert store.get(a).updated_at == at(2)


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (Transition("job-000000000000", S.PLACED, "x"), JobNotFoundError),
        (Transition("<b>", S.RUNNING, "not from pending"), InvalidTransitionError),
        (Transition("<b>", S.PLACED, "stale", S.RUNNING), InvalidTransitionError),
    ],
)
def test_transition_many_is_all_or_nothing(
    store: Store, bad: Transition, error: type[Exception]
) -> None:
    a, b = submitted(store, 2)
    if bad.job_id == "<b>":
        bad = bad._replace(job_id=b)
    with pytest.raises(error):
        store.transition_many([Transition(a, S.PLACED, "placed"), bad], now=at(1))
    assert {store.get(a).state, store.get(b).state} == {S.PENDING}
    assert [e.to_state for e in store.events(a)] == [S.PENDING]


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        (Transition("job-000000000000", S.PLACED, "x", S.PENDING), JobNotFoundError, "no job"),
        (Transition("<b>", S.PROVISIONING, "old", S.PLACED), InvalidTransitionError, "is pending"),
        (Transition("<b>", S.RUNNING, "skips", S.PENDING), InvalidTransitionError, "cannot go"),
    ],
)
def test_transition_many_with_expected_states_is_all_or_nothing(
    store: Store, bad: Transition, error: type[Exception], match: str
) -> None:
    # Every change names the state it expects: the rows are written without being read
    # first, and a job that was not in that state undoes the whole call.
    a, b = submitted(store, 2)
    if bad.job_id == "<b>":
        bad = bad._replace(job_id=b)
    with pytest.raises(error, match=match):
        store.transition_many([Transition(a, S.PLACED, "placed", S.PENDING), bad], now=at(1))
    assert {store.get(a).state, store.get(b).state} == {S.PENDING}
    assert [e.to_state for e in store.events(a)] == [S.PENDING]


def test_a_batch_still_refuses_rows_of_unknown_jobs_after_moving_others(store: Store) -> None:
    (a,) = submitted(store, 1)
    with pytest.raises(JobNotFoundError, match="job-000000000000"), store.batch():
        store.transition_many([Transition(a, S.PLACED, "placed", S.PENDING)], now=at(1))
        store.record_decisions(
            [Decision(a, [], ["ok"], "v1"), Decision("job-000000000000", [], ["x"], "v1")],
            now=at(1),
        )
    assert store.get(a).state is S.PENDING
    assert store.decisions(a) == []


def test_begin_attempts_records_and_is_idempotent_by_request_id(store: Store) -> None:
    a, b = submitted(store, 2)
    first = store.begin_attempts([new_attempt(a), new_attempt(b)], now=at(1))
    assert [r.request_id for r in store.live_attempts()] == [f"r-{a}-1", f"r-{b}-1"]
    assert tuple(first) == store.get(a).attempts + store.get(b).attempts
    # Resent (say after a crash), plus one new: the recorded ones come back unchanged.
    again = store.begin_attempts([new_attempt(a), new_attempt(a, 2)], now=at(5))
    assert again[0] == first[0]
    assert again[1].attempt == 2 and again[1].started_at == at(5)
    with pytest.raises(IdempotencyConflictError):
        store.begin_attempts([new_attempt(b, 3, key=f"r-{a}-1")], now=at(6))
    with pytest.raises(JobNotFoundError):
        store.begin_attempts([new_attempt(b, 3), new_attempt("job-000000000000")], now=at(6))
    assert [r.attempt for r in store.get(b).attempts] == [1]


def test_handles_and_ends_in_bulk(store: Store) -> None:
    a, b = submitted(store, 2)
    store.begin_attempts([new_attempt(a), new_attempt(b)], now=at(1))
    ra, rb = f"r-{a}-1", f"r-{b}-1"
    store.set_attempt_handles([(ra, handle(ra, "i-a")), (rb, handle(rb, "i-b"))])
    assert store.get(a).attempts[0].handle == handle(ra, "i-a")
    with pytest.raises(AttemptNotFoundError):
        store.set_attempt_handles([(ra, handle(ra, "other")), ("nope", handle("nope", "x"))])
    assert store.get(a).attempts[0].handle == handle(ra, "i-a")

    store.end_attempts([(ra, "succeeded")], now=at(2))
    # Ending again with the same outcome changes nothing; another outcome is refused.
    store.end_attempts([(ra, "succeeded"), (rb, "preempted")], now=at(3))
    assert store.get(a).attempts[0].ended_at == at(2)
    assert store.get(b).attempts[0].outcome == "preempted"
    with pytest.raises(AttemptEndedError):
        store.end_attempts([(ra, "failed")], now=at(4))
    with pytest.raises(AttemptNotFoundError):
        store.end_attempts([("nope", "failed")], now=at(4))
    assert store.live_attempts() == []


def test_record_decisions_in_bulk(store: Store) -> None:
    a, b = submitted(store, 2)
    placement = {"provider": "aws", "region": "us-east-1", "nodes": 2}
    store.record_decisions(
        [
            Decision(a, [placement], ["cheapest"], "2026.11.23"),
            Decision(b, [], ["no capacity", "details"], "2026.11.23"),
        ],
        now=at(1),
    )
    (got,) = store.decisions(a)
    assert (got.job_id, got.at, got.placement, got.reasons, got.catalog_version) == (
        a,
        at(1),
        (placement,),
        ("cheapest",),
        "2026.11.23",
    )
    assert store.decisions(b)[0].reasons == ("no capacity", "details")
    assert store.decisions(b)[0].placement == ()
    with pytest.raises(JobNotFoundError):
        store.record_decisions([Decision("job-000000000000", [], ["x"], "v")], now=at(2))


def test_bulk_calls_join_a_batch_and_roll_back_with_it(store: Store) -> None:
    (a,) = submitted(store, 1)
    with pytest.raises(RuntimeError), store.batch():
        store.transition_many([Transition(a, S.PLACED, "placed")], now=at(1))
        store.begin_attempts([new_attempt(a)], now=at(1))
        raise RuntimeError("crash mid-cycle")
    assert store.get(a).state is S.PENDING and store.get(a).attempts == ()


def test_many_rows_cross_the_in_list_chunks(store: Store) -> None:
    ids = submitted(store, 1203)
    store.transition_many([Transition(i, S.PLACED, "placed", S.PENDING) for i in ids], now=at(1))
    store.begin_attempts([new_attempt(i) for i in ids], now=at(1))
    store.set_attempt_handles([(f"r-{i}-1", handle(f"r-{i}-1", i)) for i in ids])
    store.end_attempts([(f"r-{i}-1", "capacity") for i in ids], now=at(2))
    assert store.count_by_state() == {S.PLACED: 1203}
    assert store.live_attempts() == []
    assert store.get(ids[-1]).attempts[0].handle == handle(f"r-{ids[-1]}-1", ids[-1])
    assert len(store.job_states(ids)) == 1203 and len(store.state_times(ids)) == 1203


def test_nothing_to_do_is_fine(store: Store) -> None:
    assert store.transition_many([], now=at(0)) == []
    assert store.begin_attempts([], now=at(0)) == []
    store.set_attempt_handles([])
    store.end_attempts([], now=at(0))
    store.record_decisions([], now=at(0))
    assert store.submit_many([], now=at(0)) == []


# --------------------------------------------------------------------------- what a job costs


def test_job_ids_of_later_submissions_sort_after_and_stay_distinct() -> None:
    # Ids sort by submission time (to the millisecond) so that a batch's rows sit side by
    # side in every index on the job id; within a batch they are distinct random bits.
    batches = [new_ids(at(0) + timedelta(milliseconds=ms), 500) for ms in (0, 1, 50, 1000)]
    flat = [i for batch in batches for i in batch]
    assert len(set(flat)) == len(flat)
    assert all(re.fullmatch(r"job-[0-9a-f]{12}", i) for i in flat)
    for earlier, later in itertools.pairwise(batches):
        assert max(earlier) < min(later)


def test_a_submission_is_an_event_and_a_state_time_without_an_event_row(store: Store) -> None:
    (job_id,) = submitted(store, 1)
    store.transition_many([Transition(job_id, S.PLACED, "placed on x", S.PENDING)], now=at(2))
    events = store.events(job_id)
    assert [(e.from_state, e.to_state, e.reason, e.at) for e in events] == [
        (None, S.PENDING, "submitted", T0),
        (S.PENDING, S.PLACED, "placed on x", at(2)),
    ]
    assert store.state_times([job_id]) == {job_id: {S.PENDING: T0, S.PLACED: at(2)}}
    assert store.state_times() == store.state_times([job_id])


def test_a_new_id_that_draws_a_stored_one_is_drawn_again(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same millisecond and the same random bits as a stored job: the insert hits the
    # unique id, and the retry draws its ids over all 48 bits instead.
    ((stored, _),) = store.submit_many([(job("first"), None)], now=T0)
    real = secrets.token_bytes
    first_bits = (int(stored.removeprefix("job-"), 16) & ((1 << 28) - 1)) << 4
    draws: list[int] = []

    def token_bytes(n: int) -> bytes:
        draws.append(n)
        return first_bits.to_bytes(4, "big") if len(draws) == 1 else real(n)

    monkeypatch.setattr(secrets, "token_bytes", token_bytes)
    ((job_id, created),) = store.submit_many([(job("second"), None)], now=T0)
    assert created and job_id != stored
    assert draws[:2] == [4, 6]  # the time-ordered draw, then the 48-bit one
    assert {r.id for r in store.list_jobs()} == {stored, job_id}
