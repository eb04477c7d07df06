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

import sqlalchemy as sa
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
from multicloud.store.engine import Database, chunks
from multicloud.store.errors import IdempotencyConflictError, JobNotFoundError
from multicloud.store.records import AttemptRecord, JobRecord
from multicloud.store.schema import JOBS, UtcDateTime

__all__ = [
    "event_row",
    "insert_jobs",
    "job_record",
    "move",
    "require_jobs",
    "spec_hash",
]

# Statements run many times, built once: constructing a statement with an ``IN`` list of
# literals costs more than running it. ``ids`` is an expanding parameter.
_IDS: sa.BindParameter[Any] = sa.bindparam("ids", expanding=True)
_Q_JOB_IDS = sa.select(JOBS.c.id).where(JOBS.c.id.in_(_IDS))
_Q_LOCK_STATES = (
    sa.select(JOBS.c.id, JOBS.c.state)
    .where(JOBS.c.id.in_(_IDS))
    .order_by(JOBS.c.id)
    .with_for_update()
)
# The state in the WHERE clause is the compare-and-set itself.
_Q_MOVE = (
    sa.update(JOBS)
    .where(JOBS.c.id.in_(_IDS), JOBS.c.state == sa.bindparam("src"))
    .values(state=sa.bindparam("dst"), updated_at=sa.bindparam("at", type_=UtcDateTime()))
)
_Q_KEYS = sa.select(JOBS.c.client_key, JOBS.c.id, JOBS.c.spec_hash).where(
    JOBS.c.client_key.in_(_IDS)
)


def spec_hash(spec: Mapping[str, Any]) -> str:
    """Hash a job spec's JSON form canonically, to compare specs for idempotent submission.

    Args:
        spec: ``job.model_dump(mode="json")``.

    Returns:
        The SHA-256 of the spec's canonical JSON (sorted keys, no whitespace), in hex.
    """
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
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


def insert_jobs(
    db: Database, conn: Connection, items: Sequence[tuple[Job, str | None]], at: datetime
) -> list[tuple[str, bool]]:
    """Accept jobs as PENDING, idempotently by client key.

    Args:
        db: The database (for its bulk rows).
        conn: A write transaction.
        items: ``(job, client_key)`` pairs.
        at: Submission time (UTC).

    Returns:
        ``(job_id, created)`` per item.

    Raises:
        IdempotencyConflictError: A key was used for a different spec.
    """
    specs = [job.model_dump(mode="json") for job, _ in items]
    texts = [json.dumps(spec) for spec in specs]
    digests = [spec_hash(spec) for spec in specs]
    stamp = db.stamp(at)
    keys = sorted({key for _, key in items if key is not None})
    known: dict[str, tuple[str, str]] = {}
    for chunk in chunks(keys):
        for row in conn.execute(_Q_KEYS, {"ids": list(chunk)}):
            known[str(row.client_key)] = (str(row.id), str(row.spec_hash))
    out: list[tuple[str, bool]] = []
    jobs: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    for (job, key), text, digest in zip(items, texts, digests, strict=True):
        if key is not None and key in known:
            job_id, stored = known[key]
            if stored != digest:
                raise IdempotencyConflictError(_key_conflict(key, job_id))
            out.append((job_id, False))
            continue
        job_id = "job-" + secrets.token_hex(6)
        if key is not None:
            known[key] = (job_id, digest)  # the same key twice in one batch
        pending = JobState.PENDING.value
        jobs.append(
            (job_id, job.name, job.priority, job.team, text, digest, key, pending, stamp, stamp)
        )
        events.append(event_row(stamp, job_id, None, JobState.PENDING, "submitted"))
        out.append((job_id, True))
    # In list order: rows get their ``seq`` (submission order) as they come.
    db.many(conn, INSERT_JOBS, jobs)
    db.many(conn, INSERT_EVENTS, events)
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


def require_jobs(conn: Connection, job_ids: Iterable[str]) -> None:
    """Raise JobNotFoundError naming every id of ``job_ids`` that is not a job."""
    wanted = sorted(set(job_ids))
    found: set[str] = set()
    for chunk in chunks(wanted):
        found.update(conn.execute(_Q_JOB_IDS, {"ids": list(chunk)}).scalars())
    missing = [j for j in wanted if j not in found]
    if missing:
        raise JobNotFoundError(f"no job {', '.join(repr(m) for m in missing)}")


def _names(states: Iterable[JobState]) -> str:
    return ", ".join(sorted(s.value for s in states)) or "nothing"


def move(
    db: Database, conn: Connection, changes: Sequence[Transition], at: datetime
) -> list[JobState]:
    """Apply lifecycle moves in order, each a compare-and-set, and log their events.

    A job may appear more than once (``RUNNING → PREEMPTED → PENDING``); each change is
    checked against the state the previous one left. Rows are read and locked in one
    statement and written with one ``UPDATE`` per (from, to) pair.

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
    first: dict[str, JobState] = {}
    for chunk in chunks(ids):
        rows = conn.execute(_Q_LOCK_STATES, {"ids": list(chunk)})
        first.update({str(r.id): JobState(r.state) for r in rows})
    current = dict(first)
    left: list[JobState] = []
    events: list[tuple[Any, ...]] = []
    stamp = db.stamp(at)
    for change in changes:
        job_id, to, reason = change.job_id, JobState(change.to), change.reason
        if job_id not in current:
            raise JobNotFoundError(f"no job {job_id!r}")
        src = current[job_id]
        expected = None if change.expect is None else states_of(change.expect)
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
    moves: dict[tuple[JobState, JobState], list[str]] = defaultdict(list)
    for job_id in ids:
        moves[(first[job_id], current[job_id])].append(job_id)
    for (src, dst), group in moves.items():
        for chunk in chunks(group):
            changed = conn.execute(
                _Q_MOVE, {"ids": list(chunk), "src": src.value, "dst": dst.value, "at": at}
            ).rowcount
            if changed != len(chunk):  # pragma: no cover - the row locks rule it out
                raise InvalidTransitionError("a job changed state concurrently")
    db.many(conn, INSERT_EVENTS, events)
    return left
