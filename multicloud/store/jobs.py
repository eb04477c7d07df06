"""Jobs: idempotent submission, reads, and lifecycle moves as compare-and-set, in bulk.

Functions here run inside a transaction their caller (``Store``) opened; each takes the
whole batch at once and costs a handful of statements, not a few per job.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection, RowMapping

from multicloud.lifecycle import (
    TRANSITIONS,
    InvalidTransitionError,
    JobState,
    Transition,
    can_transition,
    states_of,
)
from multicloud.models import Job
from multicloud.store.engine import Database
from multicloud.store.errors import IdempotencyConflictError, JobNotFoundError
from multicloud.store.records import AttemptRecord, JobRecord

__all__ = [
    "event_row",
    "insert_jobs",
    "job_record",
    "move",
    "new_ids",
    "require_jobs",
    "spec_hash",
    "spec_texts",
]

# Bulk lookups by id, as text (``Database.rows_in``): ``{ids}`` is the chunk's IN list.
_JOB_IDS = "SELECT id FROM jobs WHERE id IN ({ids})"
_LOCK_STATES = "SELECT id, state FROM jobs WHERE id IN ({ids}) ORDER BY id"
# The state in the WHERE clause is the compare-and-set itself; the ids are looked up in
# their primary key (since schema version 5 no index on ``state`` tempts either planner to
# walk every job in that state instead).
_MOVE = "UPDATE jobs SET state = ?, updated_at = ? WHERE state = ? AND id IN ({ids})"
_ID_TIME_BITS = 20
"""Bits of a job id that are its submission time, in milliseconds (wrapping every 17.5 min)."""
_ID_RANDOM_BITS = 28
"""Random bits of a job id, after the time: 48 bits in all, 12 hex digits."""
_KEYS = "SELECT client_key, id, spec_hash FROM jobs WHERE client_key IN ({ids})"


def spec_hash(spec: Mapping[str, Any]) -> str:
    """Hash a job spec's JSON form canonically, to compare specs for idempotent submission.

    Args:
        spec: ``job.model_dump(mode="json")``.

    Returns:
        The SHA-256 of the spec's canonical JSON (sorted keys, no whitespace), in hex.
    """
    return _digest(_canonical(spec))


def _canonical(spec: Mapping[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


INSERT_EVENTS = (
    "INSERT INTO events (job_id, at, from_state, to_state, reason) VALUES (?, ?, ?, ?, ?)"
)
INSERT_JOBS = (
    "INSERT INTO jobs (id, name, priority, team, spec, spec_hash, client_key, state, "
    "submitted_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def event_row(
    stamp: Any, job_id: str, src: JobState | None, dst: JobState, reason: str
) -> tuple[Any, ...]:
    """Return the ``events`` row of one lifecycle move (``stamp``: ``Database.stamp``)."""
    return (job_id, stamp, src.value if src is not None else None, dst.value, reason)


def _key_conflict(client_key: str, job_id: str) -> str:
    return (
        f"client key {client_key!r} was already used for job {job_id} with a "
        "different spec; use a new key to submit a different job"
    )


def spec_texts(items: Sequence[tuple[Job, str | None]]) -> list[tuple[str, str]]:
    """Each job's spec as stored (JSON text) and its :func:`spec_hash`.

    Worked out before the write transaction opens: on SQLite that holds the one write
    lock, which the scheduler's cycle waits for meanwhile.

    Args:
        items: ``(job, client_key)`` pairs.

    Returns:
        ``(text, digest)`` per item.
    """
    # The canonical text is both what is stored (a JSON column: read back as the same
    # document, key order aside) and what is hashed, so each spec is rendered once.
    texts = [_canonical(job.model_dump(mode="json")) for job, _ in items]
    return [(text, _digest(text)) for text in texts]


def new_ids(at: datetime, n: int, *, spread: bool = False) -> list[str]:
    """Draw ``n`` distinct job ids: ``job-``, the submission time, random bits; 12 hex digits.

    The ids are as unlikely to collide as 48 random bits (a collision with a stored id is
    a unique violation the caller retries), but ids submitted together sort together:
    every table holds an index on the job id, and SQLite or PostgreSQL inserting a
    batch of random keys into such an index dirties a page per row, where ids that share
    a prefix fill one page after another (measured: 3-4 times the cost per row on SQLite
    at 300,000 rows, and a write-ahead log 15 times longer).

    Args:
        at: Submission time (UTC).
        n: How many.
        spread: Draw the time bits at random too (48 random bits, no order): for a retry
            after a collision, whose millisecond may already hold many stored ids (a
            caller's fixed ``now``, a large burst).

    Returns:
        The ids.
    """
    if spread:
        raw = secrets.token_bytes(6 * n)
        drawn = {int.from_bytes(raw[6 * k : 6 * k + 6], "big") for k in range(n)}
        while len(drawn) < n:  # two drew the same 48 bits: draw again
            drawn.add(secrets.randbits(_ID_TIME_BITS + _ID_RANDOM_BITS))
        return [f"job-{value:012x}" for value in drawn]
    stamp = (int(at.timestamp() * 1000) & ((1 << _ID_TIME_BITS) - 1)) << _ID_RANDOM_BITS
    # One read of the system's randomness for the whole batch, not one per job (each is a
    # system call, made while the write lock is held).
    raw = secrets.token_bytes(4 * n)
    out: list[str] = []
    seen: set[int] = set()
    for k in range(n):
        value = int.from_bytes(raw[4 * k : 4 * k + 4], "big") >> (32 - _ID_RANDOM_BITS)
        while value in seen:  # two of the batch drew the same bits: draw again
            value = secrets.randbits(_ID_RANDOM_BITS)
        seen.add(value)
        out.append(f"job-{stamp | value:012x}")
    return out


def insert_jobs(
    db: Database,
    conn: Connection,
    items: Sequence[tuple[Job, str | None]],
    texts: Sequence[tuple[str, str]],
    at: datetime,
    *,
    spread_ids: bool = False,
) -> list[tuple[str, bool]]:
    """Accept jobs as PENDING, idempotently by client key.

    Args:
        db: The database (for its bulk rows).
        conn: A write transaction.
        items: ``(job, client_key)`` pairs.
        texts: :func:`spec_texts` of ``items``.
        at: Submission time (UTC).
        spread_ids: Draw ids without their time order (:func:`new_ids`).

    Returns:
        ``(job_id, created)`` per item.

    Raises:
        IdempotencyConflictError: A key was used for a different spec.
    """
    stamp = db.stamp(at)
    keys = sorted({key for _, key in items if key is not None})
    known: dict[str, tuple[str, str]] = {
        str(key): (str(job_id), str(digest))
        for key, job_id, digest in db.rows_in(conn, _KEYS, keys)
    }
    fresh = new_ids(at, len(items), spread=spread_ids)
    out: list[tuple[str, bool]] = []
    jobs: list[tuple[Any, ...]] = []
    for k, ((job, key), (text, digest)) in enumerate(zip(items, texts, strict=True)):
        if key is not None and key in known:
            job_id, stored = known[key]
            if stored != digest:
                raise IdempotencyConflictError(_key_conflict(key, job_id))
            out.append((job_id, False))
            continue
        job_id = fresh[k]
        if key is not None:
            known[key] = (job_id, digest)  # the same key twice in one batch
        pending = JobState.PENDING.value
        jobs.append(
            (job_id, job.name, job.priority, job.team, text, digest, key, pending, stamp, stamp)
        )
        out.append((job_id, True))
    # In list order: rows get their ``seq`` (submission order) as they come. No event row:
    # the submission's event is the job row's ``submitted_at`` (``ledger.events_of``).
    db.many(conn, INSERT_JOBS, jobs)
    seen = db.known_jobs()
    if seen is not None:
        seen.update(row[0] for row in jobs)
    return out


def job_record(row: RowMapping, attempts: Iterable[AttemptRecord]) -> JobRecord:
    """Build a job record from its row and its attempts."""
    return JobRecord(
        id=row["id"],
        name=row["name"],
        state=JobState(row["state"]),
        priority=row["priority"],
        team=row["team"],
        job=Job.model_validate(row["spec"]),
        submitted_at=row["submitted_at"],
        updated_at=row["updated_at"],
        attempts=tuple(attempts),
        client_key=row["client_key"],
    )


def require_jobs(db: Database, conn: Connection, job_ids: Iterable[str]) -> None:
    """Raise JobNotFoundError naming every id of ``job_ids`` that is not a job.

    Jobs the caller's batch already read or inserted are not looked for again
    (:meth:`Database.known_jobs`): a cycle records placements, attempts, decisions and
    ROFR lines of the same jobs in one transaction.
    """
    seen = db.known_jobs()
    wanted = sorted(set(job_ids) - seen if seen is not None else set(job_ids))
    found = {str(r[0]) for r in db.rows_in(conn, _JOB_IDS, wanted)}
    missing = [j for j in wanted if j not in found]
    if missing:
        raise JobNotFoundError(f"no job {', '.join(repr(m) for m in missing)}")
    if seen is not None:
        seen.update(found)


def _names(states: Iterable[JobState]) -> str:
    return ", ".join(sorted(s.value for s in states)) or "nothing"


def _expected(expect: JobState | Iterable[JobState] | None) -> frozenset[JobState] | None:
    if expect is None:
        return None
    if isinstance(expect, JobState):
        return _SINGLE[expect]
    return states_of(expect)


_SINGLE = {state: frozenset({state}) for state in JobState}


def _replay(
    changes: Sequence[Transition], first: dict[str, JobState], stamp: Any
) -> tuple[dict[str, JobState], list[JobState], list[tuple[Any, ...]]]:
    """Check the moves in order from the states ``first``; return where each job ends,
    the state each change left, and the events (or raise as :func:`move` documents)."""
    current = dict(first)
    left: list[JobState] = []
    events: list[tuple[Any, ...]] = []
    for change in changes:
        job_id, to, reason = change.job_id, JobState(change.to), change.reason
        if job_id not in current:
            raise JobNotFoundError(f"no job {job_id!r}")
        src = current[job_id]
        expected = _expected(change.expect)
        if expected is not None and src not in expected:
            raise InvalidTransitionError(
                f"job {job_id} is {src.value}, expected {_names(expected)} "
                f"(wanted {to.value}: {reason})"
            )
        if not can_transition(src, to):
            raise InvalidTransitionError(
                f"job {job_id} cannot go from {src.value} to {to.value}; "
                f"{src.value} may go to {_names(TRANSITIONS[src])}"
            )
        current[job_id] = to
        left.append(src)
        events.append(event_row(stamp, job_id, src, to, reason))
    return current, left, events


def _assumed(changes: Sequence[Transition]) -> dict[str, JobState] | None:
    """Each job's state as its first change expects it, if every one names exactly one."""
    first: dict[str, JobState] = {}
    for change in changes:
        if change.job_id not in first:
            expected = _expected(change.expect)
            if expected is None or len(expected) != 1:
                return None
            (first[change.job_id],) = expected
    return first


def move(
    db: Database, conn: Connection, changes: Sequence[Transition], at: datetime
) -> list[JobState]:
    """Apply lifecycle moves in order, each a compare-and-set, and log their events.

    A job may appear more than once (``RUNNING → PREEMPTED → PENDING``); each change is
    checked against the state the previous one left. Rows are written with one ``UPDATE``
    per (from, to) pair. Its ``WHERE state = from`` is the compare-and-set, and when every
    job's first change names the one state it expects (the scheduler's moves do), no row
    is read first: the ``UPDATE`` returns the rows it changed, and only a job it did not
    change is read, to say why the whole call fails (on PostgreSQL that saves a round
    trip per call). Otherwise the rows are read (and on PostgreSQL locked) first, in one
    statement.

    Args:
        db: The database (for its bulk rows).
        conn: A write transaction.
        changes: The moves.
        at: When (UTC).

    Returns:
        The state each job left, per change.

    Raises:
        JobNotFoundError: A job does not exist.
        InvalidTransitionError: A job is not in an expected state, or the lifecycle does
            not allow a move.
    """
    # Sorted: concurrent writers lock rows in one order and cannot deadlock.
    ids = sorted({c.job_id for c in changes})
    stamp = db.stamp(at)
    first = _assumed(changes) if db.returning else None
    replayed = None
    if first is not None:
        try:
            replayed = _replay(changes, first, stamp)
        except (JobNotFoundError, InvalidTransitionError):
            first = None  # read the rows: the error must name what the store holds
    checked = first is None or replayed is None
    if first is None or replayed is None:
        lock = _LOCK_STATES if db.backend == "sqlite" else _LOCK_STATES + " FOR UPDATE"
        first = {str(i): JobState(state) for i, state in db.rows_in(conn, lock, ids)}
        replayed = _replay(changes, first, stamp)
    current, left, events = replayed
    moves: dict[tuple[JobState, JobState], list[str]] = defaultdict(list)
    for job_id in ids:
        moves[(first[job_id], current[job_id])].append(job_id)
    changed: set[str] = set()
    for (src, dst), group in moves.items():
        params = (dst.value, stamp, src.value)
        if checked:
            done = db.update_in(conn, _MOVE, group, params)
            if done != len(group):  # pragma: no cover - the row locks rule it out
                raise InvalidTransitionError("a job changed state concurrently")
            changed.update(group)
        else:
            rows = db.rows_in(conn, _MOVE + " RETURNING id", group, params)
            changed.update(str(r[0]) for r in rows)
    if len(changed) != len(ids):
        # Some job was not in the state its change expected: read what it is, and fail
        # as the reading path would (the caller's transaction rolls back).
        stale = [i for i in ids if i not in changed]
        actual = {str(i): JobState(state) for i, state in db.rows_in(conn, _LOCK_STATES, stale)}
        _replay(changes, {**{i: first[i] for i in changed}, **actual}, stamp)
        raise InvalidTransitionError("a job changed state concurrently")  # pragma: no cover
    seen = db.known_jobs()
    if seen is not None:
        seen.update(ids)
    db.many(conn, INSERT_EVENTS, events)
    return left
