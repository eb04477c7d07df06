"""The ``Store``: jobs, attempts, decisions, the ROFR ledger and events, in one database.

The store lives outside Ray so that restarting the scheduler actor, or the whole Ray
cluster, loses nothing (``docs/architecture.md``, "The store"): a SQLite file by default,
PostgreSQL by URL. Both run the same SQLAlchemy Core statements over the same, versioned
schema.

Rules every method follows:

* One call is one transaction (or joins the caller's :meth:`Store.batch`), so a crash
  leaves all of a call's rows or none.
* Writes are in bulk: every write takes a batch of items; there are no one-item twins.
* Time comes from the caller (``now``), never from the clock. Datetimes must be aware.
* Job specs are stored as the user wrote them. A spec carries secret *names* only.
* Once this ``Store`` holds the lease (:attr:`Store.lease`), every write is fenced by its
  epoch and raises ``LeaseLost`` after a takeover (``docs/architecture.md``).

A ``Store`` may be used by several threads (each call opens its own transaction); any
number of stores, in any number of processes, may share a URL.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from types import TracebackType

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from multicloud.lifecycle import ACTIVE_STATES, JobState, Transition, states_of
from multicloud.models import Job
from multicloud.planner.types import AuditEntry
from multicloud.provider import Handle
from multicloud.store import attempts as attempts_sql
from multicloud.store import jobs as jobs_sql
from multicloud.store import ledger
from multicloud.store.engine import Database
from multicloud.store.errors import JobNotFoundError
from multicloud.store.lease import StoreLease
from multicloud.store.migrations import applied_version, migrate
from multicloud.store.reads import LedgerReads
from multicloud.store.records import (
    AttemptRecord,
    Charge,
    Decision,
    JobRecord,
    NewAttempt,
)
from multicloud.store.schema import ATTEMPTS, JOBS, META, utc

__all__ = ["Store"]


class Store(LedgerReads):
    """Jobs, attempts, decisions, the ROFR audit ledger and events, in SQLite or PostgreSQL.

    Open with :meth:`Store.open`; close with :meth:`close` or use it as a context manager.

    Args:
        db: A database whose schema is current; use :meth:`open` instead.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self.lease = StoreLease(db)
        """The store's lease: one scheduler per store (``docs/architecture.md``)."""

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, url: str) -> Store:
        """Connect to the store at ``url`` and bring its schema up to date.

        Args:
            url: ``sqlite:///path/file.db`` (parent directories are created) or
                ``postgresql://user@host:port/db``.

        Returns:
            The open store.

        Raises:
            StoreError: The URL is unsupported.
            SchemaVersionError: The database is newer than this code.
        """
        db = Database(url)
        try:
            with db.write() as conn:
                migrate(conn, db.url)
        except BaseException:
            db.dispose()
            raise
        return cls(db)

    def close(self) -> None:
        """Close every connection; the store cannot be used afterwards."""
        self._db.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def url(self) -> str:
        """The URL the store is connected to, password hidden."""
        return self._db.url

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._db.backend

    @contextmanager
    def batch(self) -> Iterator[Store]:
        """Run every store call this thread makes inside the block in one write transaction.

        The scheduler records a whole step of its cycle this way: one commit instead of
        one per kind of row, and a crash mid-step leaves nothing half-written. An error
        inside the block rolls the whole batch back. Batches do not nest.

        Yields:
            The store itself.

        Raises:
            StoreError: If this thread is already inside a batch.
        """
        with self._db.batch():
            yield self

    def schema_version(self) -> int:
        """Return the highest migration applied to the database."""
        with self._db.read() as conn:
            return applied_version(conn)

    def install_id(self) -> str:
        """Return this installation's id, creating it on first use.

        Every resource the scheduler launches is tagged with it, so the orphan sweep can
        tell its own leftovers from other installs' workloads in the same cloud account.

        Returns:
            ``mc-`` and 12 hex digits, stable for the life of the store.
        """
        with self._db.write() as conn:
            query = sa.select(META.c.value).where(META.c.key == "install_id")
            found = conn.execute(query).scalar()
            if found is not None:
                return str(found)
            value = "mc-" + secrets.token_hex(6)
            conn.execute(sa.insert(META).values(key="install_id", value=value))
            return value

    # ------------------------------------------------------------------ jobs

    def submit_many(
        self, items: Sequence[tuple[Job, str | None]], *, now: datetime
    ) -> list[tuple[str, bool]]:
        """Accept jobs as PENDING in one transaction (all or none).

        Args:
            items: ``(job, client_key)`` pairs; a job submitted again under its key with
                the same spec gets its first id back.
            now: Submission time.

        Returns:
            ``(job_id, created)`` per item, in order.

        Raises:
            IdempotencyConflictError: A client key was used for a different spec; nothing
                is accepted.
            ValueError: A client key is empty or ``now`` is naive.
        """
        at = utc(now)
        if any(key is not None and not key for _, key in items):
            raise ValueError("client_key must be a non-empty string or None")
        texts = jobs_sql.spec_texts(items)
        for tries_left in (1, 0):
            try:
                with self._db.write() as conn:
                    return jobs_sql.insert_jobs(
                        self._db, conn, items, texts, at, spread_ids=not tries_left
                    )
            except IntegrityError:
                # Another process inserted one of the keys between our check and our
                # insert (PostgreSQL; SQLite's write lock rules that out), or a new id
                # drew a stored one: the next try finds the key, and draws its ids over
                # all 48 bits (the millisecond of the first draw may be crowded). Inside
                # a caller's batch the transaction is lost: re-raise.
                if not tries_left or self._db.in_batch():
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, job_id: str) -> JobRecord:
        """Return one job with its attempts.

        Args:
            job_id: Job id.

        Returns:
            The job.

        Raises:
            JobNotFoundError: No such job.
        """
        with self._db.read() as conn:
            row = conn.execute(sa.select(JOBS).where(JOBS.c.id == job_id)).mappings().first()
            if row is None:
                raise JobNotFoundError(f"no job {job_id!r}")
            query = sa.select(ATTEMPTS).where(ATTEMPTS.c.job_id == job_id)
            rows = conn.execute(query.order_by(ATTEMPTS.c.id)).mappings()
            return jobs_sql.job_record(row, (attempts_sql.attempt_record(a) for a in rows))

    def list_jobs(self, states: Iterable[JobState] | None = None) -> list[JobRecord]:
        """Return jobs with their attempts, in submission order.

        Args:
            states: Only jobs in these states (None: all jobs).

        Returns:
            The jobs, oldest submission first (queue order is the planner's business).
        """
        wanted = None if states is None else sorted(s.value for s in states_of(states))
        if wanted == []:
            return []
        jobs_q = sa.select(JOBS).order_by(JOBS.c.seq)
        attempts_q = (
            sa.select(ATTEMPTS).join(JOBS, JOBS.c.id == ATTEMPTS.c.job_id).order_by(ATTEMPTS.c.id)
        )
        if wanted is not None:
            jobs_q = jobs_q.where(JOBS.c.state.in_(wanted))
            attempts_q = attempts_q.where(JOBS.c.state.in_(wanted))
        with self._db.read() as conn:
            # Two queries rather than one per job: the scheduler lists thousands.
            by_job: dict[str, list[AttemptRecord]] = {}
            for row in conn.execute(attempts_q).mappings():
                by_job.setdefault(row["job_id"], []).append(attempts_sql.attempt_record(row))
            return [
                jobs_sql.job_record(row, by_job.get(row["id"], ()))
                for row in conn.execute(jobs_q).mappings()
            ]

    def active_jobs(self) -> list[JobRecord]:
        """Return every job not yet finished, with its attempts (what a scheduler recovers)."""
        return self.list_jobs(ACTIVE_STATES)

    def job_states(self, job_ids: Iterable[str] | None = None) -> dict[str, str]:
        """Return the state name of each job without loading specs or attempts.

        Args:
            job_ids: Only these jobs (None: all).

        Returns:
            Job id → state name (the wire form ``wait`` polls), in submission order.
        """
        query = sa.select(JOBS.c.id, JOBS.c.state).order_by(JOBS.c.seq)
        with self._db.read() as conn:
            if job_ids is None:
                return {str(i): str(s) for i, s in conn.execute(query)}
            wanted = sorted(set(job_ids))
            found: dict[str, str] = {}
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                found.update(
                    {str(i): str(s) for i, s in conn.execute(query.where(JOBS.c.id.in_(chunk)))}
                )
            return found

    def count_by_state(self) -> dict[JobState, int]:
        """Return how many jobs are in each state (states without jobs are absent)."""
        query = sa.select(JOBS.c.state, sa.func.count()).group_by(JOBS.c.state)
        with self._db.read() as conn:
            return {JobState(state): int(n) for state, n in conn.execute(query)}

    def transition_many(self, changes: Sequence[Transition], *, now: datetime) -> list[JobState]:
        """Apply lifecycle moves in one transaction, in order, each a compare-and-set.

        A move happens only if the job is, at that instant, in one of its ``expect``
        states (any state allowed to reach ``to`` when None). A job may appear more than
        once; each change is checked against the state the previous one left.

        Args:
            changes: The moves.
            now: When.

        Returns:
            The state each job left, per change.

        Raises:
            JobNotFoundError: A job does not exist; nothing changes.
            InvalidTransitionError: A job is not in an expected state, or the lifecycle
                does not allow a move; nothing changes.
        """
        at = utc(now)
        if not changes:
            return []
        with self._db.write() as conn:
            return jobs_sql.move(self._db, conn, changes, at)

    # ------------------------------------------------------------------ attempts

    def begin_attempts(
        self, attempts: Sequence[NewAttempt], *, now: datetime
    ) -> list[AttemptRecord]:
        """Record launches before they are sent, idempotently by request id.

        Args:
            attempts: The launches, each with its place as planned.
            now: When they were decided.

        Returns:
            One attempt per item: the one already recorded under its request id if any.

        Raises:
            JobNotFoundError: A job does not exist; nothing is recorded.
            IdempotencyConflictError: A request id already belongs to another job or
                attempt number; nothing is recorded.
        """
        at = utc(now)
        if not attempts:
            return []
        for tries_left in (1, 0):
            try:
                with self._db.write() as conn:
                    return attempts_sql.begin(self._db, conn, attempts, at)
            except IntegrityError:
                # Lost a race with another process recording one of the request ids: the
                # next try finds its row. A caller's batch is lost anyway: re-raise.
                if not tries_left or self._db.in_batch():
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def set_attempt_handles(self, handles: Sequence[tuple[str, Handle]]) -> None:
        """Record the adapters' handles of launches that returned.

        Args:
            handles: ``(request_id, handle)`` pairs.

        Raises:
            AttemptNotFoundError: An attempt does not exist; nothing changes.
        """
        if handles:
            with self._db.write() as conn:
                attempts_sql.set_handles(self._db, conn, handles)

    def end_attempts(self, ends: Sequence[tuple[str, str]], *, now: datetime) -> None:
        """Record how attempts ended; ending one again with the same outcome is a no-op.

        Args:
            ends: ``(request_id, outcome)`` pairs; outcomes such as ``succeeded``,
                ``failed``, ``preempted``, ``capacity``, ``cancelled``, ``orphaned``.
            now: When.

        Raises:
            AttemptNotFoundError: An attempt does not exist; nothing changes.
            AttemptEndedError: One already ended with another outcome; nothing changes.
            ValueError: An outcome is empty.
        """
        at = utc(now)
        if any(not outcome for _, outcome in ends):
            raise ValueError("outcome must be a non-empty string")
        if ends:
            with self._db.write() as conn:
                attempts_sql.end(self._db, conn, ends, at)

    def live_attempts(self) -> list[AttemptRecord]:
        """Return every attempt without an outcome (what the orphan sweep must keep)."""
        with self._db.read() as conn:
            return attempts_sql.live(conn)

    def charges(self) -> list[Charge]:
        """Return every attempt of a job that has a team, for budget accounting."""
        query = (
            sa.select(JOBS.c.team, ATTEMPTS)
            .join(JOBS, JOBS.c.id == ATTEMPTS.c.job_id)
            .where(JOBS.c.team.is_not(None))
            .order_by(ATTEMPTS.c.id)
        )
        with self._db.read() as conn:
            return [
                Charge(str(r["team"]), str(r["job_id"]), attempts_sql.attempt_record(r))
                for r in conn.execute(query).mappings()
            ]

    # ------------------------------------------------------------------ decisions, ledger

    def record_decisions(self, decisions: Sequence[Decision], *, now: datetime) -> None:
        """Record where the planner put jobs (or why not) in one transaction.

        Args:
            decisions: The decisions.
            now: When.

        Raises:
            JobNotFoundError: A job does not exist; nothing is recorded.
        """
        at = utc(now)
        if decisions:
            with self._db.write() as conn:
                ledger.insert_decisions(self._db, conn, decisions, at)

    def record_audit(self, entries: Sequence[AuditEntry], *, now: datetime) -> None:
        """Append ROFR offers and answers to the audit ledger, all or none.

        Args:
            entries: Ledger lines from the plan; ``entry.job`` must be a store job id.
            now: Time stamped on entries whose ``at`` is None (the decision's time).

        Raises:
            JobNotFoundError: An entry names an unknown job.
        """
        at = utc(now)
        if entries:
            with self._db.write() as conn:
                ledger.insert_audit(self._db, conn, entries, at)
