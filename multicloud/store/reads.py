"""The store's read-only views of the ledger: audit lines, events, decisions, state times.

A mixin of :class:`multicloud.store.core.Store` (one read transaction per call), kept apart
so that the store's module stays small.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from multicloud.lifecycle import JobState
from multicloud.planner.types import AuditEntry
from multicloud.store import ledger
from multicloud.store.engine import Database
from multicloud.store.records import DecisionRecord, EventRecord

__all__ = ["LedgerReads"]


class LedgerReads:
    """Reads of the audit ledger, the events and the decisions."""

    _db: Database

    def audit(self, job_id: str | None = None, holder: str | None = None) -> list[AuditEntry]:
        """Return audit ledger lines, oldest first.

        Args:
            job_id: Only this job's lines.
            holder: Only offers to this holder.

        Returns:
            The lines.
        """
        with self._db.read() as conn:
            return ledger.audit_lines(conn, job_id, holder)

    def events(self, job_id: str) -> list[EventRecord]:
        """Return a job's lifecycle events, oldest first.

        Raises:
            JobNotFoundError: No such job.
        """
        with self._db.read() as conn:
            return ledger.events_of(conn, job_id)

    def decisions(self, job_id: str) -> list[DecisionRecord]:
        """Return a job's placement decisions, oldest first.

        Raises:
            JobNotFoundError: No such job.
        """
        with self._db.read() as conn:
            return ledger.decisions_of(conn, job_id)

    def state_times(
        self, job_ids: Iterable[str] | None = None
    ) -> dict[str, dict[JobState, datetime]]:
        """Return when each job first entered each state (PENDING: its row; the rest: events).

        Args:
            job_ids: Only these jobs (None: all).

        Returns:
            ``{job_id: {state: time}}``.
        """
        with self._db.read() as conn:
            return ledger.state_times(conn, job_ids)
