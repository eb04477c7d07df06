"""The record of why: placement decisions, the ROFR audit ledger and lifecycle events.

Append-only tables; ``explain`` and ``audit`` are views of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Literal, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from multicloud.lifecycle import JobState
from multicloud.planner.types import AuditEntry
from multicloud.store.engine import chunks
from multicloud.store.jobs import require_jobs
from multicloud.store.records import Decision, DecisionRecord, EventRecord
from multicloud.store.schema import AUDIT, DECISIONS, EVENTS, UtcDateTime, utc

__all__ = [
    "audit_lines",
    "decisions_of",
    "events_of",
    "insert_audit",
    "insert_decisions",
    "state_times",
]


def insert_decisions(conn: Connection, decisions: Sequence[Decision], at: datetime) -> None:
    """Append decisions.

    Args:
        conn: A write transaction.
        decisions: The decisions.
        at: When (UTC).

    Raises:
        JobNotFoundError: A job does not exist.
    """
    rows = [
        {
            "job_id": d.job_id,
            "at": at,
            "placement": [dict(p) for p in d.placement],
            "reasons": list(d.reasons),
            "catalog_version": d.catalog_version,
        }
        for d in decisions
    ]
    require_jobs(conn, (d.job_id for d in decisions))
    conn.execute(sa.insert(DECISIONS), rows)


def insert_audit(conn: Connection, entries: Sequence[AuditEntry], at: datetime) -> None:
    """Append ROFR offers and answers to the ledger.

    Args:
        conn: A write transaction.
        entries: Ledger lines; ``entry.job`` must be a store job id.
        at: Time stamped on entries whose ``at`` is None.

    Raises:
        JobNotFoundError: An entry names an unknown job.
    """
    rows = [
        {
            "job_id": e.job,
            "holder": e.holder,
            "terms": dict(e.terms),
            "outside_price_per_hour": e.outside_price_per_hour,
            "holder_price_per_hour": e.holder_price_per_hour,
            "answer": e.answer,
            "reason": e.reason,
            "billed_price_per_hour": e.billed_price_per_hour,
            "at": utc(e.at) if e.at is not None else at,
            "catalog_version": e.catalog_version,
        }
        for e in entries
    ]
    require_jobs(conn, (e.job for e in entries))
    conn.execute(sa.insert(AUDIT), rows)


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


def _rows(conn: Connection, table: sa.Table, job_id: str) -> list[sa.RowMapping]:
    require_jobs(conn, [job_id])
    query = sa.select(table).where(table.c.job_id == job_id).order_by(table.c.id)
    return list(conn.execute(query).mappings())


def events_of(conn: Connection, job_id: str) -> list[EventRecord]:
    """Return a job's lifecycle events, oldest first (JobNotFoundError if no such job)."""
    return [
        EventRecord(
            job_id=r["job_id"],
            at=r["at"],
            from_state=JobState(r["from_state"]) if r["from_state"] else None,
            to_state=JobState(r["to_state"]),
            reason=r["reason"],
        )
        for r in _rows(conn, EVENTS, job_id)
    ]


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
    """Return when each job first entered each state, from its events.

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
    out: dict[str, dict[JobState, datetime]] = {}

    def collect(q: sa.Select[Any]) -> None:
        for row in conn.execute(q).mappings():
            out.setdefault(row["job_id"], {})[JobState(row["to_state"])] = row["at"]

    if job_ids is None:
        collect(query)
        return out
    for chunk in chunks(sorted(set(job_ids))):
        collect(query.where(EVENTS.c.job_id.in_(list(chunk))))
    return out
