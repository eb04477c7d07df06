"""The record of why: placement decisions, the ROFR audit ledger and lifecycle events.

Append-only tables; ``explain`` and ``audit`` are views of them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Literal, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from multicloud.lifecycle import JobState
from multicloud.planner.types import AuditEntry
from multicloud.store.engine import Database, chunks
from multicloud.store.errors import JobNotFoundError
from multicloud.store.jobs import require_jobs
from multicloud.store.records import Decision, DecisionRecord, EventRecord
from multicloud.store.schema import AUDIT, DECISIONS, EVENTS, JOBS, UtcDateTime, utc

__all__ = [
    "audit_lines",
    "decisions_of",
    "events_of",
    "insert_audit",
    "insert_decisions",
    "state_times",
]


_INSERT_DECISIONS = (
    "INSERT INTO decisions (job_id, at, placement, reasons, catalog_version) VALUES (?, ?, ?, ?, ?)"
)
_INSERT_AUDIT = (
    "INSERT INTO audit (job_id, holder, terms, outside_price_per_hour, "
    "holder_price_per_hour, answer, reason, billed_price_per_hour, at, catalog_version) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def insert_decisions(
    db: Database, conn: Connection, decisions: Sequence[Decision], at: datetime
) -> None:
    """Append decisions.

    Args:
        db: The database (for its bulk rows).
        conn: A write transaction.
        decisions: The decisions.
        at: When (UTC).

    Raises:
        JobNotFoundError: A job does not exist.
    """
    stamp = db.stamp(at)
    rows = [
        (
            d.job_id,
            stamp,
            json.dumps([dict(p) for p in d.placement]),
            json.dumps(list(d.reasons)),
            d.catalog_version,
        )
        for d in decisions
    ]
    require_jobs(db, conn, (d.job_id for d in decisions))
    db.many(conn, _INSERT_DECISIONS, rows)


def insert_audit(
    db: Database, conn: Connection, entries: Sequence[AuditEntry], at: datetime
) -> None:
    """Append ROFR offers and answers to the ledger.

    Args:
        db: The database (for its bulk rows).
        conn: A write transaction.
        entries: Ledger lines; ``entry.job`` must be a store job id.
        at: Time stamped on entries whose ``at`` is None.

    Raises:
        JobNotFoundError: An entry names an unknown job.
    """
    stamp = db.stamp(at)
    rows = [
        (
            e.job,
            e.holder,
            json.dumps(dict(e.terms)),
            e.outside_price_per_hour,
            e.holder_price_per_hour,
            e.answer,
            e.reason,
            e.billed_price_per_hour,
            db.stamp(utc(e.at)) if e.at is not None else stamp,
            e.catalog_version,
        )
        for e in entries
    ]
    require_jobs(db, conn, (e.job for e in entries))
    db.many(conn, _INSERT_AUDIT, rows)


def audit_lines(conn: Connection, job_id: str | None, holder: str | None) -> list[AuditEntry]:
    """Return ledger lines, oldest first, optionally one job's and/or one holder's."""
    query = sa.select(AUDIT).order_by(AUDIT.c.id)
    if job_id is not None:
        query = query.where(AUDIT.c.job_id == job_id)
    if holder is not None:
        query = query.where(AUDIT.c.holder == holder)
    return [
        AuditEntry(
            job=r["job_id"],
            holder=r["holder"],
            terms=r["terms"],
            outside_price_per_hour=r["outside_price_per_hour"],
            holder_price_per_hour=r["holder_price_per_hour"],
            answer=cast(Literal["accepted", "declined"], r["answer"]),
            reason=r["reason"],
            billed_price_per_hour=r["billed_price_per_hour"],
            at=r["at"],
            catalog_version=r["catalog_version"],
        )
        for r in conn.execute(query).mappings()
    ]


def _submitted_at(conn: Connection, job_id: str) -> datetime:
    """When ``job_id`` was submitted (JobNotFoundError if there is no such job)."""
    job = conn.execute(sa.select(JOBS.c.submitted_at).where(JOBS.c.id == job_id)).first()
    if job is None:
        raise JobNotFoundError(f"no job {job_id!r}")
    at: datetime = job[0]
    return at


def _rows(conn: Connection, table: sa.Table, job_id: str) -> list[sa.RowMapping]:
    _submitted_at(conn, job_id)
    query = sa.select(table).where(table.c.job_id == job_id).order_by(table.c.id)
    return list(conn.execute(query).mappings())


SUBMITTED = "submitted"
"""The reason of a job's first event: its submission."""


def events_of(conn: Connection, job_id: str) -> list[EventRecord]:
    """Return a job's lifecycle events, oldest first (JobNotFoundError if no such job).

    The first, its submission, is the job row itself (``submitted_at``): a submission
    writes no event row (stores written before that hold one, which is shown instead).
    """
    submitted_at = _submitted_at(conn, job_id)
    query = sa.select(EVENTS).where(EVENTS.c.job_id == job_id).order_by(EVENTS.c.id)
    out = [
        EventRecord(
            job_id=r["job_id"],
            at=r["at"],
            from_state=JobState(r["from_state"]) if r["from_state"] else None,
            to_state=JobState(r["to_state"]),
            reason=r["reason"],
        )
        for r in conn.execute(query).mappings()
    ]
    if not out or out[0].from_state is not None:
        out.insert(0, EventRecord(job_id, submitted_at, None, JobState.PENDING, SUBMITTED))
    return out


def decisions_of(conn: Connection, job_id: str) -> list[DecisionRecord]:
    """Return a job's decisions, oldest first (JobNotFoundError if no such job)."""
    out = []
    for r in _rows(conn, DECISIONS, job_id):
        placement: Any = r["placement"]
        placed = placement if isinstance(placement, list) else [placement]
        out.append(
            DecisionRecord(
                job_id=r["job_id"],
                at=r["at"],
                placement=tuple(p for p in placed if p),
                reasons=tuple(r["reasons"]),
                catalog_version=r["catalog_version"],
            )
        )
    return out


def state_times(
    conn: Connection, job_ids: Iterable[str] | None
) -> dict[str, dict[JobState, datetime]]:
    """Return when each job first entered each state, from its submission and its events.

    Args:
        conn: A read transaction.
        job_ids: Only these jobs (None: all).

    Returns:
        ``{job_id: {state: time}}``.
    """
    first = sa.func.min(EVENTS.c.at, type_=UtcDateTime()).label("at")
    query = sa.select(EVENTS.c.job_id, EVENTS.c.to_state, first).group_by(
        EVENTS.c.job_id, EVENTS.c.to_state
    )
    # Every job entered PENDING when it was submitted (no event row says so: events_of).
    submitted = sa.select(JOBS.c.id, JOBS.c.submitted_at)
    out: dict[str, dict[JobState, datetime]] = {}

    def collect(q: sa.Select[Any], jobs: sa.Select[Any]) -> None:
        for job_id, at in conn.execute(jobs):
            out[job_id] = {JobState.PENDING: at}
        for row in conn.execute(q).mappings():
            times = out.setdefault(row["job_id"], {})
            state, at = JobState(row["to_state"]), row["at"]
            if state not in times or at < times[state]:
                times[state] = at

    if job_ids is None:
        collect(query, submitted)
        return out
    for chunk in chunks(sorted(set(job_ids))):
        ids = list(chunk)
        collect(query.where(EVENTS.c.job_id.in_(ids)), submitted.where(JOBS.c.id.in_(ids)))
    return out
