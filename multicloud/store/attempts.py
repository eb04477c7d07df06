"""Launch attempts: recorded before they are sent, given a handle, ended, in bulk.

Recording first and launching second is what makes a crash in between safe: the restarted
scheduler finds the live attempt, re-sends the same request id, and the adapter returns the
existing workload instead of a second one.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from multicloud.provider import Handle, Place
from multicloud.store.engine import Database, chunks
from multicloud.store.errors import (
    AttemptEndedError,
    AttemptNotFoundError,
    IdempotencyConflictError,
)
from multicloud.store.jobs import require_jobs
from multicloud.store.records import AttemptRecord, NewAttempt
from multicloud.store.schema import ATTEMPTS

__all__ = ["attempt_record", "begin", "end", "live", "set_handles"]

_IDS: sa.BindParameter[Any] = sa.bindparam("ids", expanding=True)
_Q_BY_REQUEST = sa.select(ATTEMPTS).where(ATTEMPTS.c.request_id.in_(_IDS))
_KNOWN = "SELECT request_id FROM attempts WHERE request_id IN ({ids})"
_OUTCOMES = "SELECT request_id, outcome FROM attempts WHERE request_id IN ({ids})"
_SET_HANDLE = "UPDATE attempts SET handle = ? WHERE request_id = ?"
# No ``outcome IS NULL`` here: :func:`end` has read (and on PostgreSQL locked) the rows
# first, and with that condition PostgreSQL, before it has statistics on a young table,
# looks each row up through the partial index of live attempts (``ix_attempts_live``):
# a scan of every live attempt per row ended (profiled: 32 ms per status chunk).
_END = "UPDATE attempts SET outcome = ?, ended_at = ? WHERE request_id = ?"
_INSERT = (
    "INSERT INTO attempts (job_id, attempt, request_id, place, provider, region, zone, "
    "instance_type, nodes, market, price_per_hour, reservation, started_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def attempt_record(row: RowMapping) -> AttemptRecord:
    """Build an attempt record from its row."""
    handle = row["handle"]
    return AttemptRecord(
        job_id=row["job_id"],
        attempt=row["attempt"],
        request_id=row["request_id"],
        place=Place.from_json(row["place"]),
        handle=Handle.from_json(handle) if handle is not None else None,
        outcome=row["outcome"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
    )


@functools.lru_cache(maxsize=4096)
def _place_text(place: Place) -> str:
    # Places repeat (one pool, a few gang sizes): the JSON of each is worked out once.
    return json.dumps(place.to_json())


def _row(a: NewAttempt, stamp: Any) -> tuple[Any, ...]:
    place = a.place
    # The place travels whole in ``place``; the columns beside it are its projection for
    # people querying the store with SQL (and for schema versions before 3).
    return (
        a.job_id,
        a.attempt,
        a.request_id,
        _place_text(place),
        place.provider,
        place.region,
        place.zone,
        place.instance_type,
        place.nodes,
        place.market.value,
        place.price_per_hour,
        place.reservation,
        stamp,
    )


def begin(
    db: Database, conn: Connection, attempts: Sequence[NewAttempt], at: datetime
) -> list[AttemptRecord]:
    """Record launches before they are sent, idempotently by request id.

    Args:
        db: The database (for its bulk rows).
        conn: A write transaction.
        attempts: The launches.
        at: When they were decided (UTC).

    Returns:
        One attempt per item: the one already recorded under its request id if any.

    Raises:
        JobNotFoundError: A job does not exist.
        IdempotencyConflictError: A request id already names another job's attempt.
    """
    found: dict[str, AttemptRecord] = {}
    # A request id is almost always new: only those already recorded are read whole.
    recorded = sorted(
        {str(r[0]) for r in db.rows_in(conn, _KNOWN, sorted({a.request_id for a in attempts}))}
    )
    for chunk in chunks(recorded):
        rows = conn.execute(_Q_BY_REQUEST, {"ids": list(chunk)}).mappings()
        found.update({str(r["request_id"]): attempt_record(r) for r in rows})
    out: list[AttemptRecord] = []
    new_rows: list[tuple[Any, ...]] = []
    stamp = db.stamp(at)
    for a in attempts:
        known = found.get(a.request_id)
        if known is not None:
            if (known.job_id, known.attempt) != (a.job_id, a.attempt):
                raise IdempotencyConflictError(
                    f"request id {a.request_id!r} already names attempt "
                    f"{known.attempt} of job {known.job_id}"
                )
            out.append(known)
            continue
        record = AttemptRecord(a.job_id, a.attempt, a.request_id, a.place, None, None, at, None)
        found[a.request_id] = record
        out.append(record)
        new_rows.append(_row(a, stamp))
    if new_rows:
        require_jobs(db, conn, (r[0] for r in new_rows))
        db.many(conn, _INSERT, new_rows)
    return out


def _outcomes(
    db: Database, conn: Connection, request_ids: Iterable[str], *, lock: bool = False
) -> dict[str, str | None]:
    """Request id → outcome of each attempt (AttemptNotFoundError if one is missing).

    With ``lock``, PostgreSQL locks the rows until the transaction ends (SQLite's writer
    holds the whole database anyway).
    """
    wanted = sorted(set(request_ids))
    query = _OUTCOMES + " FOR UPDATE" if lock and db.backend != "sqlite" else _OUTCOMES
    found: dict[str, str | None] = {str(r): o for r, o in db.rows_in(conn, query, wanted)}
    missing = [r for r in wanted if r not in found]
    if missing:
        raise AttemptNotFoundError(
            f"no attempt with request id {', '.join(repr(m) for m in missing)}"
        )
    return found


def set_handles(db: Database, conn: Connection, handles: Sequence[tuple[str, Handle]]) -> None:
    """Record the handles of launches that returned.

    Args:
        db: The database (for its bulk rows).
        conn: A write transaction.
        handles: ``(request_id, handle)`` pairs.

    Raises:
        AttemptNotFoundError: An attempt does not exist.
    """
    rows = [(json.dumps(h.to_json()), r) for r, h in handles]
    if db.many(conn, _SET_HANDLE, rows) != len({r for r, _ in handles}):
        _outcomes(db, conn, (r for r, _ in handles))  # names the missing ones


def end(db: Database, conn: Connection, ends: Sequence[tuple[str, str]], at: datetime) -> None:
    """Record how attempts ended; ending one again with the same outcome is a no-op.

    Args:
        db: The database (for its bulk rows).
        conn: A write transaction.
        ends: ``(request_id, outcome)`` pairs.
        at: When (UTC).

    Raises:
        AttemptNotFoundError: An attempt does not exist.
        AttemptEndedError: One already ended with another outcome.
    """
    known = _outcomes(db, conn, (r for r, _ in ends), lock=True)
    updates: list[tuple[Any, ...]] = []
    stamp = db.stamp(at)
    for request, outcome in ends:
        before = known[request]
        if before is not None:
            if before != outcome:
                raise AttemptEndedError(
                    f"attempt {request} already ended as {before!r}, not {outcome!r}"
                )
            continue
        known[request] = outcome
        updates.append((outcome, stamp, request))
    db.many(conn, _END, updates)


def live(conn: Connection) -> list[AttemptRecord]:
    """Return every attempt without an outcome, oldest first."""
    rows = conn.execute(
        sa.select(ATTEMPTS).where(ATTEMPTS.c.outcome.is_(None)).order_by(ATTEMPTS.c.id)
    ).mappings()
    return [attempt_record(r) for r in rows]
