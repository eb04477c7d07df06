"""The durable store behind the scheduler: jobs, attempts, decisions, the ROFR ledger, events.

The store lives outside Ray (DESIGN.md §6) so that restarting the scheduler actor, or the
whole Ray cluster, loses nothing: a SQLite file by default, PostgreSQL by URL for HA. Both
run the same SQLAlchemy Core statements over the same, versioned schema.

Rules every method follows:

* One method call is one transaction, so a crash leaves either all of a call's rows or none.
* Time comes from the caller (``now``), never from the clock, so tests and the
  simulated-time scheduler decide what time it is. Datetimes must be timezone-aware.
* Job specs are stored as the user wrote them. A spec carries secret *names* only; their
  values are resolved on the host and never reach the store.

A :class:`Store` may be used by one thread at a time (give each thread its own ``Store`` on
the same URL). Any number of ``Store`` objects, in any number of processes, may share a
URL: each sees the others' committed writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Literal, NamedTuple, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import URL, Connection, Dialect, Engine, RowMapping
from sqlalchemy.exc import ArgumentError, IntegrityError
from sqlalchemy.pool import StaticPool

from multicloud.errors import MulticloudError
from multicloud.models import Job
from multicloud.planner.types import AuditEntry
from multicloud.provider import MarketKind

__all__ = [
    "SCHEMA_VERSION",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "AttemptEndedError",
    "AttemptNotFoundError",
    "AttemptRecord",
    "Decision",
    "IdempotencyConflictError",
    "InvalidTransitionError",
    "JobNotFoundError",
    "JobRecord",
    "JobState",
    "NewAttempt",
    "SchemaVersionError",
    "Store",
    "StoreError",
    "Transition",
    "can_transition",
    "engine_url",
    "spec_hash",
]


_T = TypeVar("_T")

# --------------------------------------------------------------------------- errors


class StoreError(MulticloudError):
    """The store cannot be opened or used as asked."""


class JobNotFoundError(StoreError):
    """No job has the given id."""


class AttemptNotFoundError(StoreError):
    """No launch attempt has the given request id."""


class IdempotencyConflictError(StoreError):
    """An idempotency key was reused for something different from what it first named."""


class InvalidTransitionError(StoreError):
    """A job state change is not allowed by the lifecycle, or the job is not where expected."""


class AttemptEndedError(StoreError):
    """An attempt that already ended was ended again with another outcome."""


class SchemaVersionError(StoreError):
    """The database was written by a newer multicloud than this one."""


# --------------------------------------------------------------------------- lifecycle


class JobState(str, Enum):
    """Where a job is in its lifecycle (issue 3, item 3)."""

    PENDING = "pending"
    PLACED = "placed"
    PROVISIONING = "provisioning"
    RUNNING = "running"
    PREEMPTED = "preempted"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True for states a job never leaves."""
        return self in TERMINAL_STATES


TERMINAL_STATES: frozenset[JobState] = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
)

_S = JobState
TRANSITIONS: Mapping[JobState, frozenset[JobState]] = MappingProxyType(
    {
        # A job nobody can place stays pending (the planner says why); only a user ends it.
        _S.PENDING: frozenset({_S.PLACED, _S.CANCELLED}),
        # Back to PENDING: the launch failed (capacity, quota) and the job is re-placed.
        _S.PLACED: frozenset({_S.PROVISIONING, _S.PENDING, _S.FAILED, _S.CANCELLED}),
        _S.PROVISIONING: frozenset({_S.RUNNING, _S.PREEMPTED, _S.PENDING, _S.FAILED, _S.CANCELLED}),
        _S.RUNNING: frozenset({_S.SUCCEEDED, _S.FAILED, _S.PREEMPTED, _S.CANCELLED}),
        # A preempted job is requeued, never resumed in place: the capacity is gone.
        _S.PREEMPTED: frozenset({_S.PENDING, _S.CANCELLED}),
        _S.SUCCEEDED: frozenset(),
        _S.FAILED: frozenset(),
        _S.CANCELLED: frozenset(),
    }
)
del _S


def can_transition(src: JobState, dst: JobState) -> bool:
    """Say whether the lifecycle allows a job to move from ``src`` to ``dst``.

    Args:
        src: Current state.
        dst: Wanted state.

    Returns:
        True if the move is allowed.
    """
    return dst in TRANSITIONS[src]


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class AttemptRecord:
    """One launch of (part of) a job on one offer.

    Attributes:
        job_id: Owning job.
        attempt: Attempt number (1-based); an inference job may launch several offers in
            one attempt, one row each.
        request_id: Idempotency key sent to the adapter (unique).
        provider: Fleet provider name.
        region: Region.
        zone: Zone, if any.
        instance_type: Instance type.
        nodes: Nodes launched.
        market: Market billed.
        price_per_hour: Price of all nodes per hour.
        handle: The adapter's handle as JSON, once the launch returned.
        outcome: How the attempt ended (None while it is live).
        started_at: When the attempt was decided.
        ended_at: When it ended.
        reservation: The prepaid reservation it draws on, if any.
    """

    job_id: str
    attempt: int
    request_id: str
    provider: str
    region: str
    zone: str | None
    instance_type: str
    nodes: int
    market: MarketKind
    price_per_hour: float
    handle: dict[str, Any] | None
    outcome: str | None
    started_at: datetime
    ended_at: datetime | None
    reservation: str | None = None

    @property
    def live(self) -> bool:
        """True until the attempt has an outcome."""
        return self.outcome is None

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form used by ``multicloud status --json``."""
        return {
            "job": self.job_id,
            "attempt": self.attempt,
            "request_id": self.request_id,
            "provider": self.provider,
            "region": self.region,
            "zone": self.zone,
            "instance_type": self.instance_type,
            "nodes": self.nodes,
            "market": self.market.value,
            "price_per_hour": self.price_per_hour,
            "handle": self.handle,
            "outcome": self.outcome,
            "started_at": self.started_at.isoformat(),
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "reservation": self.reservation,
        }


class Transition(NamedTuple):
    """One state change for :meth:`Store.transition_many`.

    Attributes:
        job_id: The job.
        to: New state.
        reason: Why, for the event log.
        expect: States the caller believes the job is in (None: any that may reach ``to``).
    """

    job_id: str
    to: JobState
    reason: str
    expect: JobState | Iterable[JobState] | None = None


class NewAttempt(NamedTuple):
    """A launch to record before it is sent (:meth:`Store.begin_attempts`).

    Attributes:
        job_id: Owning job.
        attempt: Attempt number.
        request_id: Idempotency key.
        provider: Fleet provider name.
        region: Region.
        zone: Zone, if any.
        instance_type: Instance type.
        nodes: Nodes.
        market: Market billed.
        price_per_hour: Price of all nodes per hour.
        reservation: The reservation it draws on, if any.
    """

    job_id: str
    attempt: int
    request_id: str
    provider: str
    region: str
    zone: str | None
    instance_type: str
    nodes: int
    market: MarketKind | str
    price_per_hour: float
    reservation: str | None = None


class Decision(NamedTuple):
    """Where the planner put a job and why (:meth:`Store.record_decisions`).

    Attributes:
        job_id: The job.
        placement: ``Assignment.to_dict()`` or a list of them (empty: not placed).
        reasons: Why.
        catalog_version: Price data version the decision used.
    """

    job_id: str
    placement: Mapping[str, Any] | Sequence[Mapping[str, Any]]
    reasons: Sequence[str]
    catalog_version: str


@dataclass(frozen=True)
class JobRecord:
    """A job as the store knows it.

    Attributes:
        id: Scheduler job id (``job-`` and 12 hex digits).
        name: The spec's name.
        state: Lifecycle state.
        priority: The spec's priority.
        team: The spec's team.
        job: The spec, as submitted.
        submitted_at: Submission time.
        updated_at: Time of the last state change.
        attempts: Launch attempts, oldest first.
        client_key: The idempotency key it was submitted with, if any.
    """

    id: str
    name: str
    state: JobState
    priority: int
    team: str | None
    job: Job
    submitted_at: datetime
    updated_at: datetime
    attempts: list[AttemptRecord]
    client_key: str | None = None


# --------------------------------------------------------------------------- schema


class _UtcDateTime(sa.types.TypeDecorator[datetime]):
    """Timestamps in UTC on both backends.

    SQLite has no time zones and would hand back naive datetimes, PostgreSQL hands back the
    session's zone: normalising here keeps one code path above.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        utc = _utc(value)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        stamp = cast(datetime, value)
        if stamp.tzinfo is None:
            return stamp.replace(tzinfo=timezone.utc)
        return stamp.astimezone(timezone.utc)


# JSONB on PostgreSQL so that operators can query the ledger with SQL; plain JSON text
# elsewhere. Both round-trip the same Python values.
_JSON = sa.JSON().with_variant(JSONB(), "postgresql")

# Deterministic constraint names, so that later migrations can refer to them by name.
_NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
}


def _define_v1(md: sa.MetaData) -> None:
    """Add the version-1 tables to ``md``.

    Migration 1 calls this on a metadata of its own; a later migration that alters a table
    must not change this function, or fresh databases would skip ahead of their version.
    """
    sa.Table(
        "jobs",
        md,
        # ``seq`` is the key so that submission order is a plain integer on both backends.
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(32), nullable=False, unique=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("team", sa.String(128), nullable=True),
        sa.Column("spec", _JSON, nullable=False),
        sa.Column("spec_hash", sa.String(64), nullable=False),
        sa.Column("client_key", sa.String(256), nullable=True, unique=True),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("submitted_at", _UtcDateTime(), nullable=False),
        sa.Column("updated_at", _UtcDateTime(), nullable=False),
        # Never reuse a seq on SQLite, even if rows were ever deleted by hand.
        sqlite_autoincrement=True,
    )
    sa.Table(
        "attempts",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), nullable=False, index=True),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False, unique=True),
        sa.Column("provider", sa.String(128), nullable=False),
        sa.Column("region", sa.String(128), nullable=False),
        sa.Column("zone", sa.String(128), nullable=True),
        sa.Column("instance_type", sa.String(128), nullable=False),
        sa.Column("nodes", sa.Integer, nullable=False),
        sa.Column("market", sa.String(16), nullable=False),
        sa.Column("price_per_hour", sa.Float, nullable=False),
        sa.Column("handle", _JSON, nullable=True),
        sa.Column("outcome", sa.String(64), nullable=True),
        sa.Column("started_at", _UtcDateTime(), nullable=False),
        sa.Column("ended_at", _UtcDateTime(), nullable=True),
    )
    sa.Table(
        "decisions",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), nullable=False, index=True),
        sa.Column("at", _UtcDateTime(), nullable=False),
        sa.Column("placement", _JSON, nullable=False),
        sa.Column("reasons", _JSON, nullable=False),
        sa.Column("catalog_version", sa.String(128), nullable=False),
    )
    sa.Table(
        "audit",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), nullable=False, index=True),
        sa.Column("holder", sa.String(128), nullable=False, index=True),
        sa.Column("terms", _JSON, nullable=False),
        sa.Column("outside_price_per_hour", sa.Float, nullable=True),
        sa.Column("holder_price_per_hour", sa.Float, nullable=True),
        sa.Column("answer", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("billed_price_per_hour", sa.Float, nullable=True),
        sa.Column("at", _UtcDateTime(), nullable=False),
        sa.Column("catalog_version", sa.String(128), nullable=False),
    )
    sa.Table(
        "events",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), nullable=False, index=True),
        sa.Column("at", _UtcDateTime(), nullable=False),
        sa.Column("from_state", sa.String(16), nullable=True),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )


def _migrate_v1(conn: Connection) -> None:
    md = sa.MetaData(naming_convention=_NAMING)
    _define_v1(md)
    md.create_all(conn)


@dataclass(frozen=True)
class _Migration:
    version: int
    description: str
    apply: Callable[[Connection], None]


# Append only: a released migration never changes, a new one gets the next version.
def _define_v2(md: sa.MetaData) -> None:
    """Add the version-2 table: facts about the installation itself (its install id)."""
    sa.Table(
        "meta",
        md,
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def _migrate_v2(conn: Connection) -> None:
    md = sa.MetaData(naming_convention=_NAMING)
    _define_v2(md)
    md.create_all(conn)
    # Which reservation a live attempt draws on: a restarted scheduler must know how much
    # of each prepaid block is in use before it places anything.
    conn.execute(sa.text("ALTER TABLE attempts ADD COLUMN reservation VARCHAR(128)"))


_MIGRATIONS: tuple[_Migration, ...] = (
    _Migration(1, "jobs, attempts, decisions, audit, events", _migrate_v1),
    _Migration(2, "meta: install id", _migrate_v2),
)
SCHEMA_VERSION: int = _MIGRATIONS[-1].version

_VERSION_MD = sa.MetaData(naming_convention=_NAMING)
_VERSIONS = sa.Table(
    "schema_version",
    _VERSION_MD,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("description", sa.String(256), nullable=False),
)

# The tables as the code below reads and writes them: today, versions 1 and 2.
_MD = sa.MetaData(naming_convention=_NAMING)
_define_v1(_MD)
_define_v2(_MD)
_MD.tables["attempts"].append_column(sa.Column("reservation", sa.String(128), nullable=True))
_JOBS = _MD.tables["jobs"]
_ATTEMPTS = _MD.tables["attempts"]
_DECISIONS = _MD.tables["decisions"]
_AUDIT = _MD.tables["audit"]
_EVENTS = _MD.tables["events"]
_META = _MD.tables["meta"]

# Statements the bulk methods run many times, built once: constructing a statement with an
# ``IN`` list of literals costs more than running it. ``ids`` is an expanding parameter.
_IDS: sa.BindParameter[Any] = sa.bindparam("ids", expanding=True)
_Q_JOB_IDS = sa.select(_JOBS.c.id).where(_JOBS.c.id.in_(_IDS))
_Q_LOCK_STATES = (
    sa.select(_JOBS.c.id, _JOBS.c.state)
    .where(_JOBS.c.id.in_(_IDS))
    .order_by(_JOBS.c.id)
    .with_for_update()
)
# The state in the WHERE clause is the compare-and-set itself.
_Q_MOVE = (
    sa.update(_JOBS)
    .where(_JOBS.c.id.in_(_IDS), _JOBS.c.state == sa.bindparam("src"))
    .values(state=sa.bindparam("dst"), updated_at=sa.bindparam("at", type_=_UtcDateTime()))
)
_Q_ATTEMPTS = sa.select(_ATTEMPTS).where(_ATTEMPTS.c.request_id.in_(_IDS))
_Q_OUTCOMES = sa.select(_ATTEMPTS.c.request_id, _ATTEMPTS.c.outcome).where(
    _ATTEMPTS.c.request_id.in_(_IDS)
)
_Q_SET_HANDLE = (
    sa.update(_ATTEMPTS)
    .where(_ATTEMPTS.c.request_id == sa.bindparam("rid"))
    .values(handle=sa.bindparam("new_handle", type_=_JSON))
)
_Q_END = (
    sa.update(_ATTEMPTS)
    .where(_ATTEMPTS.c.request_id == sa.bindparam("rid"), _ATTEMPTS.c.outcome.is_(None))
    .values(
        outcome=sa.bindparam("new_outcome"),
        ended_at=sa.bindparam("new_end", type_=_UtcDateTime()),
    )
)

# Any fixed 64-bit number works; processes of one installation only need to agree on it.
_MIGRATION_LOCK = 0x6D756C7469636C64  # "multicld"


# --------------------------------------------------------------------------- helpers


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValueError(f"timestamps must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(timezone.utc)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def spec_hash(spec: Mapping[str, Any]) -> str:
    """Hash a job spec's JSON form canonically, to compare specs for idempotent submission.

    Args:
        spec: ``job.model_dump(mode="json")``.

    Returns:
        The SHA-256 of the spec's canonical JSON (sorted keys, no whitespace), in hex.
    """
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def engine_url(url: str) -> URL:
    """Turn a store URL into the SQLAlchemy URL the store connects with.

    ``postgresql://`` (and ``postgres://``) select the psycopg 3 driver; an explicit driver
    (``postgresql+xyz://``) is kept. ``sqlite:///PATH`` is used as is.

    Args:
        url: ``sqlite:///path/file.db`` or ``postgresql://user@host:port/db``.

    Returns:
        The SQLAlchemy URL.

    Raises:
        StoreError: The URL is malformed or names an unsupported database.
    """
    try:
        parsed = sa.make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"malformed store URL {url!r}: {exc}") from exc
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        if "+" not in parsed.drivername:
            parsed = parsed.set(drivername="postgresql+psycopg")
        elif backend == "postgres":
            parsed = parsed.set(drivername="postgresql+" + parsed.get_driver_name())
        return parsed
    if backend == "sqlite":
        return parsed
    shown = parsed.render_as_string(hide_password=True)
    raise StoreError(
        f"unsupported store URL {shown!r}: use sqlite:///PATH/FILE.db or postgresql://HOST/DB"
    )


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    # The sqlite3 module would otherwise open transactions lazily, behind SQLAlchemy's
    # back, and never around DDL; we issue BEGIN ourselves (see _sqlite_on_begin).
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        # WAL lets readers (the CLI's status) run while the scheduler writes.
        _set_wal(cursor)
    finally:
        cursor.close()


def _set_wal(cursor: Any) -> None:
    # Switching a new database to WAL needs an exclusive lock and does not wait on the busy
    # timeout: processes opening a fresh store together get "database is locked". The mode
    # is persistent, so once one of them has switched it the others find it set.
    deadline = time.monotonic() + 30.0
    delay = 0.01
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def _sqlite_on_begin(conn: Connection) -> None:
    # Writers take the write lock up front: a deferred transaction that reads, then writes,
    # can fail with SQLITE_BUSY mid-way instead of waiting for the other writer.
    write = conn.get_execution_options().get("multicloud_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _attempt(row: RowMapping) -> AttemptRecord:
    return AttemptRecord(
        job_id=row["job_id"],
        attempt=row["attempt"],
        request_id=row["request_id"],
        provider=row["provider"],
        region=row["region"],
        zone=row["zone"],
        instance_type=row["instance_type"],
        nodes=row["nodes"],
        market=MarketKind(row["market"]),
        price_per_hour=row["price_per_hour"],
        handle=row["handle"],
        outcome=row["outcome"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        reservation=row["reservation"],
    )


def _job(row: RowMapping, attempts: list[AttemptRecord]) -> JobRecord:
    return JobRecord(
        id=row["id"],
        name=row["name"],
        state=JobState(row["state"]),
        priority=row["priority"],
        team=row["team"],
        job=Job.model_validate(row["spec"]),
        submitted_at=row["submitted_at"],
        updated_at=row["updated_at"],
        attempts=attempts,
        client_key=row["client_key"],
    )


def _key_conflict(client_key: str, job_id: str) -> str:
    return (
        f"client key {client_key!r} was already used for job {job_id} with a "
        "different spec; use a new key to submit a different job"
    )


_CHUNK = 500
"""Values per ``IN (...)`` list: well below every backend's bound-parameter limit."""


def _chunks(values: Sequence[_T], size: int = _CHUNK) -> Iterator[Sequence[_T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _event_row(
    job_id: str, at: datetime, src: JobState | None, dst: JobState, reason: str
) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "at": at,
        "from_state": src.value if src is not None else None,
        "to_state": dst.value,
        "reason": reason,
    }


def _states(states: JobState | Iterable[JobState]) -> frozenset[JobState]:
    if isinstance(states, JobState):
        return frozenset({states})
    return frozenset(JobState(s) for s in states)


def _names(states: Iterable[JobState]) -> str:
    return ", ".join(sorted(s.value for s in states)) or "nothing"


# --------------------------------------------------------------------------- the store


class Store:
    """Jobs, attempts, decisions, the ROFR audit ledger and events, in SQLite or PostgreSQL.

    Open with :meth:`Store.open`; close with :meth:`close` or use it as a context manager.
    Every method runs in one transaction. A ``Store`` may be used by one thread at a time;
    several ``Store`` objects may share a URL and see each other's committed writes.
    """

    def __init__(self, engine: Engine) -> None:
        """Wrap an engine whose schema is already current; use :meth:`open` instead.

        Args:
            engine: A SQLAlchemy engine on a migrated database.
        """
        self._engine = engine
        # The connection of the batch this thread is in, if any (see :meth:`batch`).
        self._local = threading.local()
        # SQLite has one writer at a time, and a writer that finds the file locked polls
        # with sleeps of up to 100 ms (the busy handler). Threads of this process queue
        # on a lock instead and start the moment the previous writer commits: the
        # scheduler's cycle and its submitters write concurrently all the time.
        self._write_lock: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def open(cls, url: str) -> Store:
        """Connect to the store at ``url`` and bring its schema up to date.

        Safe when several processes open the same store at once: migrations run in one
        transaction under a lock (SQLite's write lock, a PostgreSQL advisory lock).

        Args:
            url: ``sqlite:///path/file.db`` (parent directories are created) or
                ``postgresql://user@host:port/db``.

        Returns:
            The open store.

        Raises:
            StoreError: The URL is unsupported.
            SchemaVersionError: The database is newer than this code.
        """
        target = engine_url(url)
        if target.get_backend_name() == "sqlite":
            engine = cls._sqlite_engine(target)
        else:
            # pre_ping: a store outlives PostgreSQL restarts and failovers.
            engine = sa.create_engine(target, pool_pre_ping=True)
        store = cls(engine)
        try:
            store._migrate()
        except BaseException:
            engine.dispose()
            raise
        return store

    @staticmethod
    def _sqlite_engine(target: URL) -> Engine:
        database = target.database
        if database in (None, "", ":memory:"):
            # One connection, or every checkout would see a different empty database.
            engine = sa.create_engine(
                target, poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
        else:
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            # timeout: wait this long for another process's write lock instead of failing.
            engine = sa.create_engine(target, connect_args={"timeout": 30.0})
        sa.event.listen(engine, "connect", _sqlite_on_connect)
        sa.event.listen(engine, "begin", _sqlite_on_begin)
        return engine

    def close(self) -> None:
        """Close every connection; the store cannot be used afterwards."""
        self._engine.dispose()

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
        return self._engine.url.render_as_string(hide_password=True)

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._engine.dialect.name

    @contextmanager
    def batch(self) -> Iterator[Store]:
        """Run every store call this thread makes inside the block in one write transaction.

        The scheduler records a whole cycle (placements, attempts, decisions, audit lines,
        events) this way: one commit instead of one per row is what lets it keep up with
        thousands of jobs per second, and a crash mid-cycle leaves nothing half-written.
        An error inside the block rolls the whole batch back. Batches do not nest.

        Yields:
            The store itself.

        Raises:
            StoreError: If this thread is already inside a batch.
        """
        if getattr(self._local, "conn", None) is not None:
            raise StoreError("store batches do not nest")
        with self._write_lock, self._engine.connect() as conn:
            conn.execution_options(multicloud_write=True)
            with conn.begin():
                self._local.conn = conn
                try:
                    yield self
                finally:
                    self._local.conn = None

    @contextmanager
    def _tx(self, *, write: bool) -> Iterator[Connection]:
        batched: Connection | None = getattr(self._local, "conn", None)
        if batched is not None:
            yield batched
            return
        with (
            self._write_lock if write else contextlib.nullcontext(),
            self._engine.connect() as conn,
        ):
            if write:
                conn.execution_options(multicloud_write=True)
            elif conn.dialect.name == "postgresql":
                # Reads that span several queries (a job and its attempts) see one snapshot.
                conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    def _migrate(self) -> None:
        with self._tx(write=True) as conn:
            if conn.dialect.name == "postgresql":
                # Serialises concurrent opens before anything, even schema_version, exists.
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
            _VERSIONS.create(conn, checkfirst=True)
            current = conn.execute(sa.select(sa.func.max(_VERSIONS.c.version))).scalar() or 0
            if current > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"store {self.url} has schema version {current}, this multicloud knows "
                    f"up to {SCHEMA_VERSION}: upgrade multicloud"
                )
            for migration in _MIGRATIONS:
                if migration.version > current:
                    migration.apply(conn)
                    conn.execute(
                        sa.insert(_VERSIONS).values(
                            version=migration.version, description=migration.description
                        )
                    )

    def schema_version(self) -> int:
        """Return the schema version recorded in the database.

        Returns:
            The highest migration applied.
        """
        with self._tx(write=False) as conn:
            return int(conn.execute(sa.select(sa.func.max(_VERSIONS.c.version))).scalar() or 0)

    def install_id(self) -> str:
        """Return this installation's id, creating it on first use.

        Every resource the scheduler launches is tagged with it, so the orphan sweep can
        tell its own leftovers from other installs' workloads in the same cloud account.

        Returns:
            ``mc-`` and 12 hex digits, stable for the life of the store.
        """
        with self._tx(write=True) as conn:
            found = conn.execute(
                sa.select(_META.c.value).where(_META.c.key == "install_id")
            ).scalar()
            if found is not None:
                return str(found)
            value = "mc-" + secrets.token_hex(6)
            conn.execute(sa.insert(_META).values(key="install_id", value=value))
            return value

    # ------------------------------------------------------------------ jobs

    def submit_many(
        self, items: Sequence[tuple[Job, str | None]], *, now: datetime
    ) -> list[tuple[str, bool]]:
        """Accept several jobs in one transaction (all or none), like :meth:`submit`.

        Args:
            items: ``(job, client_key)`` pairs.
            now: Submission time.

        Returns:
            ``(job_id, created)`` per item, in order.

        Raises:
            IdempotencyConflictError: A client key was used for a different spec; nothing
                is accepted.
        """
        at = _utc(now)
        for _, key in items:
            if key is not None and not key:
                raise ValueError("client_key must be a non-empty string or None")
        specs = [job.model_dump(mode="json") for job, _ in items]
        digests = [spec_hash(spec) for spec in specs]
        # Two statements for the whole batch rather than two per job: at thousands of
        # submissions per second the per-statement overhead is what the store spends.
        for tries_left in (1, 0):
            try:
                with self._tx(write=True) as conn:
                    return self._insert_jobs(conn, items, specs, digests, at)
            except IntegrityError:
                # Another process inserted one of the keys between our check and our
                # insert (PostgreSQL; SQLite's write lock rules that out): the next try
                # finds it. Inside a caller's batch the transaction is lost: re-raise.
                if not tries_left or self._in_batch():
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _in_batch(self) -> bool:
        return getattr(self._local, "conn", None) is not None

    def _insert_jobs(
        self,
        conn: Connection,
        items: Sequence[tuple[Job, str | None]],
        specs: Sequence[dict[str, Any]],
        digests: Sequence[str],
        at: datetime,
    ) -> list[tuple[str, bool]]:
        keys = sorted({key for _, key in items if key is not None})
        known: dict[str, tuple[str, str]] = {}
        for chunk in _chunks(keys):
            for row in conn.execute(
                sa.select(_JOBS.c.client_key, _JOBS.c.id, _JOBS.c.spec_hash).where(
                    _JOBS.c.client_key.in_(chunk)
                )
            ):
                known[str(row.client_key)] = (str(row.id), str(row.spec_hash))
        out: list[tuple[str, bool]] = []
        jobs: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        for (job, key), spec, digest in zip(items, specs, digests, strict=True):
            if key is not None and key in known:
                job_id, stored = known[key]
                if stored != digest:
                    raise IdempotencyConflictError(_key_conflict(key, job_id))
                out.append((job_id, False))
                continue
            job_id = "job-" + secrets.token_hex(6)
            if key is not None:
                known[key] = (job_id, digest)  # the same key twice in one batch
            jobs.append(
                {
                    "id": job_id,
                    "name": job.name,
                    "priority": job.priority,
                    "team": job.team,
                    "spec": spec,
                    "spec_hash": digest,
                    "client_key": key,
                    "state": JobState.PENDING.value,
                    "submitted_at": at,
                    "updated_at": at,
                }
            )
            events.append(_event_row(job_id, at, None, JobState.PENDING, "submitted"))
            out.append((job_id, True))
        if jobs:
            # One multi-row INSERT: rows get their ``seq`` (submission order) in list order.
            conn.execute(sa.insert(_JOBS), jobs)
            conn.execute(sa.insert(_EVENTS), events)
        return out

    def submit(self, job: Job, *, now: datetime, client_key: str | None = None) -> tuple[str, bool]:
        """Accept a job as PENDING, idempotently when a client key is given.

        Args:
            job: The job spec (it carries secret names, never values).
            now: Submission time.
            client_key: Optional idempotency key chosen by the client.

        Returns:
            ``(job_id, created)``: a new id and True, or the id first submitted under
            ``client_key`` and False when the spec is the same.

        Raises:
            IdempotencyConflictError: ``client_key`` was used for a different spec.
            ValueError: ``client_key`` is empty or ``now`` is naive.
        """
        if client_key is not None and not client_key:
            raise ValueError("client_key must be a non-empty string or None")
        at = _utc(now)
        spec = job.model_dump(mode="json")
        digest = spec_hash(spec)
        try:
            with self._tx(write=True) as conn:
                if client_key is not None:
                    found = self._by_client_key(conn, client_key, digest)
                    if found is not None:
                        return found, False
                job_id = "job-" + secrets.token_hex(6)
                conn.execute(
                    sa.insert(_JOBS).values(
                        id=job_id,
                        name=job.name,
                        priority=job.priority,
                        team=job.team,
                        spec=spec,
                        spec_hash=digest,
                        client_key=client_key,
                        state=JobState.PENDING.value,
                        submitted_at=at,
                        updated_at=at,
                    )
                )
                self._event(conn, job_id, at, None, JobState.PENDING, "submitted")
                return job_id, True
        except IntegrityError:
            # Another process inserted the same key between our check and our insert
            # (PostgreSQL; SQLite's write lock rules that out).
            if client_key is None:
                raise
            with self._tx(write=False) as conn:
                found = self._by_client_key(conn, client_key, digest)
            if found is None:
                raise
            return found, False

    @staticmethod
    def _by_client_key(conn: Connection, client_key: str, digest: str) -> str | None:
        row = conn.execute(
            sa.select(_JOBS.c.id, _JOBS.c.spec_hash).where(_JOBS.c.client_key == client_key)
        ).first()
        if row is None:
            return None
        if row.spec_hash != digest:
            raise IdempotencyConflictError(_key_conflict(client_key, str(row.id)))
        return str(row.id)

    def get(self, job_id: str) -> JobRecord:
        """Return one job with its attempts.

        Args:
            job_id: Job id.

        Returns:
            The job.

        Raises:
            JobNotFoundError: No such job.
        """
        with self._tx(write=False) as conn:
            row = conn.execute(sa.select(_JOBS).where(_JOBS.c.id == job_id)).mappings().first()
            if row is None:
                raise JobNotFoundError(f"no job {job_id!r}")
            attempts = conn.execute(
                sa.select(_ATTEMPTS).where(_ATTEMPTS.c.job_id == job_id).order_by(_ATTEMPTS.c.id)
            ).mappings()
            return _job(row, [_attempt(a) for a in attempts])

    def list_jobs(self, states: Iterable[JobState] | None = None) -> list[JobRecord]:
        """Return jobs with their attempts, in submission order.

        Args:
            states: Only jobs in these states (None: all jobs).

        Returns:
            The jobs, oldest submission first (queue order is the planner's business).
        """
        wanted = None if states is None else sorted(s.value for s in _states(states))
        if wanted == []:
            return []
        jobs_q = sa.select(_JOBS).order_by(_JOBS.c.seq)
        attempts_q = (
            sa.select(_ATTEMPTS)
            .join(_JOBS, _JOBS.c.id == _ATTEMPTS.c.job_id)
            .order_by(_ATTEMPTS.c.id)
        )
        if wanted is not None:
            jobs_q = jobs_q.where(_JOBS.c.state.in_(wanted))
            attempts_q = attempts_q.where(_JOBS.c.state.in_(wanted))
        with self._tx(write=False) as conn:
            # Two queries rather than one per job: the scheduler lists thousands.
            by_job: dict[str, list[AttemptRecord]] = {}
            for row in conn.execute(attempts_q).mappings():
                by_job.setdefault(row["job_id"], []).append(_attempt(row))
            return [_job(row, by_job.get(row["id"], [])) for row in conn.execute(jobs_q).mappings()]

    def job_states(self, job_ids: Iterable[str] | None = None) -> dict[str, str]:
        """Return the state of each job without loading specs or attempts.

        Args:
            job_ids: Only these jobs (None: all).

        Returns:
            Job id → state name, in submission order.
        """
        query = sa.select(_JOBS.c.id, _JOBS.c.state).order_by(_JOBS.c.seq)
        if job_ids is not None:
            wanted = list(job_ids)
            if not wanted:
                return {}
            query = query.where(_JOBS.c.id.in_(wanted))
        with self._tx(write=False) as conn:
            return {str(i): str(s) for i, s in conn.execute(query)}

    def count_by_state(self) -> dict[str, int]:
        """Return how many jobs are in each state.

        Returns:
            State name → count (states without jobs are absent).
        """
        query = sa.select(_JOBS.c.state, sa.func.count()).group_by(_JOBS.c.state)
        with self._tx(write=False) as conn:
            return {str(state): int(n) for state, n in conn.execute(query)}

    def pending(self) -> list[JobRecord]:
        """Return the PENDING jobs in submission order."""
        return self.list_jobs([JobState.PENDING])

    def transition(
        self,
        job_id: str,
        to: JobState,
        *,
        reason: str,
        now: datetime,
        expect: JobState | Iterable[JobState] | None = None,
    ) -> JobState:
        """Move a job to ``to`` if the lifecycle allows it, and record the event.

        A compare-and-set: the change happens only if the job is, at that instant, in one
        of the ``expect`` states (any state allowed to reach ``to`` when None).

        Args:
            job_id: Job id.
            to: New state.
            reason: Why, for the event log and ``explain``.
            now: When.
            expect: States the caller believes the job is in.

        Returns:
            The state the job left.

        Raises:
            JobNotFoundError: No such job.
            InvalidTransitionError: The job is not in an expected state, or the lifecycle
                does not allow the move.
        """
        return self.transition_many([Transition(job_id, to, reason, expect)], now=now)[0]

    def transition_many(self, changes: Sequence[Transition], *, now: datetime) -> list[JobState]:
        """Apply several transitions in one transaction, in order, like :meth:`transition`.

        A job may appear more than once (``RUNNING → PREEMPTED → PENDING``); each change
        is checked against the state the previous one left. The jobs' rows are read and
        locked in one statement and written with one ``UPDATE`` per (from, to) pair, so a
        cycle that moves a thousand jobs costs a handful of statements, not three thousand.

        Args:
            changes: The transitions.
            now: When.

        Returns:
            The state each job left, per change.

        Raises:
            JobNotFoundError: A job does not exist; nothing changes.
            InvalidTransitionError: A job is not in an expected state, or the lifecycle
                does not allow a move; nothing changes.
        """
        at = _utc(now)
        if not changes:
            return []
        with self._tx(write=True) as conn:
            # Sorted: concurrent writers lock rows in one order and cannot deadlock.
            ids = sorted({c.job_id for c in changes})
            first: dict[str, JobState] = {}
            for chunk in _chunks(ids):
                rows = conn.execute(_Q_LOCK_STATES, {"ids": chunk})
                first.update({str(r.id): JobState(r.state) for r in rows})
            current = dict(first)
            left: list[JobState] = []
            events: list[dict[str, Any]] = []
            for change in changes:
                job_id, to, reason = change.job_id, JobState(change.to), change.reason
                if job_id not in current:
                    raise JobNotFoundError(f"no job {job_id!r}")
                src = current[job_id]
                expected = None if change.expect is None else _states(change.expect)
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
                events.append(_event_row(job_id, at, src, to, reason))
            moves: dict[tuple[JobState, JobState], list[str]] = defaultdict(list)
            for job_id in {c.job_id for c in changes}:
                moves[(first[job_id], current[job_id])].append(job_id)
            for (src, dst), group in moves.items():
                for chunk in _chunks(sorted(group)):
                    changed = conn.execute(
                        _Q_MOVE, {"ids": chunk, "src": src.value, "dst": dst.value, "at": at}
                    ).rowcount
                    if changed != len(chunk):  # pragma: no cover - the row locks rule it out
                        raise InvalidTransitionError("a job changed state concurrently")
            conn.execute(sa.insert(_EVENTS), events)
            return left

    @staticmethod
    def _event(
        conn: Connection,
        job_id: str,
        at: datetime,
        src: JobState | None,
        dst: JobState,
        reason: str,
    ) -> None:
        conn.execute(
            sa.insert(_EVENTS).values(
                job_id=job_id,
                at=at,
                from_state=src.value if src is not None else None,
                to_state=dst.value,
                reason=reason,
            )
        )

    @staticmethod
    def _require_jobs(conn: Connection, job_ids: Iterable[str]) -> None:
        wanted = sorted(set(job_ids))
        if not wanted:
            return
        found: set[str] = set()
        for chunk in _chunks(wanted):
            found.update(conn.execute(_Q_JOB_IDS, {"ids": chunk}).scalars())
        missing = [j for j in wanted if j not in found]
        if missing:
            raise JobNotFoundError(f"no job {', '.join(repr(m) for m in missing)}")

    # ------------------------------------------------------------------ attempts

    def begin_attempt(
        self,
        job_id: str,
        *,
        attempt: int,
        request_id: str,
        provider: str,
        region: str,
        zone: str | None,
        instance_type: str,
        nodes: int,
        market: MarketKind | str,
        price_per_hour: float,
        now: datetime,
        reservation: str | None = None,
    ) -> AttemptRecord:
        """Record a launch before it is sent, idempotently by request id.

        Recording first and launching second is what makes a crash in between safe: the
        restarted scheduler finds the live attempt, re-sends the same request id, and the
        adapter returns the existing workload instead of a second one.

        Args:
            job_id: Owning job.
            attempt: Attempt number (see :meth:`next_attempt_number`).
            request_id: Idempotency key (``multicloud.provider.request_id``).
            provider: Fleet provider name.
            region: Region.
            zone: Zone, if any.
            instance_type: Instance type.
            nodes: Nodes.
            market: Market billed.
            price_per_hour: Price of all nodes per hour.
            now: When the launch was decided.
            reservation: The reservation the launch draws on, if any.

        Returns:
            The attempt: the one already recorded under ``request_id`` if there is one.

        Raises:
            JobNotFoundError: No such job.
            IdempotencyConflictError: ``request_id`` already belongs to another job or
                attempt number.
        """
        at = _utc(now)
        kind = MarketKind(market)
        try:
            with self._tx(write=True) as conn:
                found = self._attempt_by_request(conn, request_id, job_id, attempt)
                if found is not None:
                    return found
                self._require_jobs(conn, [job_id])
                conn.execute(
                    sa.insert(_ATTEMPTS).values(
                        job_id=job_id,
                        attempt=attempt,
                        request_id=request_id,
                        provider=provider,
                        region=region,
                        zone=zone,
                        instance_type=instance_type,
                        nodes=nodes,
                        market=kind.value,
                        price_per_hour=price_per_hour,
                        handle=None,
                        outcome=None,
                        started_at=at,
                        ended_at=None,
                        reservation=reservation,
                    )
                )
                return self._require_attempt(conn, request_id)
        except IntegrityError:
            # Lost a race with another process recording the same request id.
            with self._tx(write=False) as conn:
                raced = self._attempt_by_request(conn, request_id, job_id, attempt)
            if raced is None:
                raise
            return raced

    def begin_attempts(
        self, attempts: Sequence[NewAttempt], *, now: datetime
    ) -> list[AttemptRecord]:
        """Record several launches before they are sent, like :meth:`begin_attempt`.

        Args:
            attempts: The launches.
            now: When they were decided.

        Returns:
            One attempt per item: the one already recorded under its request id if any.

        Raises:
            JobNotFoundError: A job does not exist; nothing is recorded.
            IdempotencyConflictError: A request id already belongs to another job or
                attempt number; nothing is recorded.
        """
        at = _utc(now)
        if not attempts:
            return []
        try:
            with self._tx(write=True) as conn:
                found: dict[str, AttemptRecord] = {}
                for chunk in _chunks(sorted({a.request_id for a in attempts})):
                    rows = conn.execute(_Q_ATTEMPTS, {"ids": chunk}).mappings()
                    found.update({str(r["request_id"]): _attempt(r) for r in rows})
                out: list[AttemptRecord] = []
                rows_new: list[dict[str, Any]] = []
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
                    record = AttemptRecord(
                        job_id=a.job_id,
                        attempt=a.attempt,
                        request_id=a.request_id,
                        provider=a.provider,
                        region=a.region,
                        zone=a.zone,
                        instance_type=a.instance_type,
                        nodes=a.nodes,
                        market=MarketKind(a.market),
                        price_per_hour=a.price_per_hour,
                        handle=None,
                        outcome=None,
                        started_at=at,
                        ended_at=None,
                        reservation=a.reservation,
                    )
                    found[a.request_id] = record
                    out.append(record)
                    rows_new.append(
                        {
                            "job_id": a.job_id,
                            "attempt": a.attempt,
                            "request_id": a.request_id,
                            "provider": a.provider,
                            "region": a.region,
                            "zone": a.zone,
                            "instance_type": a.instance_type,
                            "nodes": a.nodes,
                            "market": record.market.value,
                            "price_per_hour": a.price_per_hour,
                            "handle": None,
                            "outcome": None,
                            "started_at": at,
                            "ended_at": None,
                            "reservation": a.reservation,
                        }
                    )
                if rows_new:
                    self._require_jobs(conn, (r["job_id"] for r in rows_new))
                    conn.execute(sa.insert(_ATTEMPTS), rows_new)
                return out
        except IntegrityError:
            # Lost a race with another process recording one of the request ids: one at a
            # time now (each call finds the other's row). A caller's batch is lost anyway.
            if self._in_batch():
                raise
            return [
                self.begin_attempt(
                    a.job_id,
                    attempt=a.attempt,
                    request_id=a.request_id,
                    provider=a.provider,
                    region=a.region,
                    zone=a.zone,
                    instance_type=a.instance_type,
                    nodes=a.nodes,
                    market=a.market,
                    price_per_hour=a.price_per_hour,
                    now=now,
                    reservation=a.reservation,
                )
                for a in attempts
            ]

    @staticmethod
    def _attempt_by_request(
        conn: Connection, request_id: str, job_id: str | None = None, attempt: int | None = None
    ) -> AttemptRecord | None:
        row = (
            conn.execute(sa.select(_ATTEMPTS).where(_ATTEMPTS.c.request_id == request_id))
            .mappings()
            .first()
        )
        if row is None:
            return None
        found = _attempt(row)
        if (job_id is not None and found.job_id != job_id) or (
            attempt is not None and found.attempt != attempt
        ):
            raise IdempotencyConflictError(
                f"request id {request_id!r} already names attempt {found.attempt} of job "
                f"{found.job_id}"
            )
        return found

    def _require_attempt(self, conn: Connection, request_id: str) -> AttemptRecord:
        found = self._attempt_by_request(conn, request_id)
        if found is None:
            raise AttemptNotFoundError(f"no attempt with request id {request_id!r}")
        return found

    def set_attempt_handle(self, request_id: str, handle: Mapping[str, Any]) -> None:
        """Record the adapter's handle once a launch returned.

        Args:
            request_id: The attempt's request id.
            handle: The handle as JSON-serialisable data.

        Raises:
            AttemptNotFoundError: No such attempt.
        """
        with self._tx(write=True) as conn:
            self._require_attempt(conn, request_id)
            conn.execute(
                sa.update(_ATTEMPTS)
                .where(_ATTEMPTS.c.request_id == request_id)
                .values(handle=dict(handle))
            )

    def end_attempt(self, request_id: str, *, outcome: str, now: datetime) -> AttemptRecord:
        """Record how an attempt ended; ending it again with the same outcome is a no-op.

        Args:
            request_id: The attempt's request id.
            outcome: E.g. ``succeeded``, ``failed``, ``preempted``, ``capacity``,
                ``cancelled``, ``orphaned``.
            now: When.

        Returns:
            The ended attempt.

        Raises:
            AttemptNotFoundError: No such attempt.
            AttemptEndedError: It already ended with another outcome.
        """
        at = _utc(now)
        if not outcome:
            raise ValueError("outcome must be a non-empty string")
        with self._tx(write=True) as conn:
            found = self._require_attempt(conn, request_id)
            if found.outcome is not None:
                if found.outcome == outcome:
                    return found
                raise AttemptEndedError(
                    f"attempt {request_id} already ended as {found.outcome!r}, not {outcome!r}"
                )
            conn.execute(
                sa.update(_ATTEMPTS)
                .where(_ATTEMPTS.c.request_id == request_id, _ATTEMPTS.c.outcome.is_(None))
                .values(outcome=outcome, ended_at=at)
            )
            return self._require_attempt(conn, request_id)

    @staticmethod
    def _outcomes(conn: Connection, request_ids: Iterable[str]) -> dict[str, str | None]:
        """Request id → outcome of each attempt (AttemptNotFoundError if one is missing)."""
        wanted = sorted(set(request_ids))
        found: dict[str, str | None] = {}
        for chunk in _chunks(wanted):
            for row in conn.execute(_Q_OUTCOMES, {"ids": chunk}):
                found[str(row.request_id)] = row.outcome
        missing = [r for r in wanted if r not in found]
        if missing:
            raise AttemptNotFoundError(
                f"no attempt with request id {', '.join(repr(m) for m in missing)}"
            )
        return found

    def set_attempt_handles(self, handles: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """Record several launches' handles in one transaction, like :meth:`set_attempt_handle`.

        Args:
            handles: ``(request_id, handle)`` pairs.

        Raises:
            AttemptNotFoundError: An attempt does not exist; nothing changes.
        """
        if not handles:
            return
        with self._tx(write=True) as conn:
            self._outcomes(conn, (r for r, _ in handles))
            conn.execute(_Q_SET_HANDLE, [{"rid": r, "new_handle": dict(h)} for r, h in handles])

    def end_attempts(self, ends: Sequence[tuple[str, str]], *, now: datetime) -> None:
        """End several attempts in one transaction, like :meth:`end_attempt`.

        Args:
            ends: ``(request_id, outcome)`` pairs.
            now: When.

        Raises:
            AttemptNotFoundError: An attempt does not exist; nothing changes.
            AttemptEndedError: One already ended with another outcome; nothing changes.
        """
        at = _utc(now)
        if any(not outcome for _, outcome in ends):
            raise ValueError("outcome must be a non-empty string")
        if not ends:
            return
        with self._tx(write=True) as conn:
            known = self._outcomes(conn, (r for r, _ in ends))
            updates: list[dict[str, Any]] = []
            for request, outcome in ends:
                before = known[request]
                if before is not None:
                    if before != outcome:
                        raise AttemptEndedError(
                            f"attempt {request} already ended as {before!r}, not {outcome!r}"
                        )
                    continue
                known[request] = outcome
                updates.append({"rid": request, "new_outcome": outcome, "new_end": at})
            if updates:
                conn.execute(_Q_END, updates)

    def live_attempts(self) -> list[AttemptRecord]:
        """Return every attempt without an outcome (what the orphan sweep must keep).

        Returns:
            The live attempts, oldest first.
        """
        with self._tx(write=False) as conn:
            rows = conn.execute(
                sa.select(_ATTEMPTS).where(_ATTEMPTS.c.outcome.is_(None)).order_by(_ATTEMPTS.c.id)
            ).mappings()
            return [_attempt(r) for r in rows]

    def next_attempt_number(self, job_id: str) -> int:
        """Return the attempt number the job's next launch should use.

        Args:
            job_id: Job id.

        Returns:
            One more than the highest attempt recorded (1 for a job never launched).

        Raises:
            JobNotFoundError: No such job.
        """
        with self._tx(write=False) as conn:
            self._require_jobs(conn, [job_id])
            top = conn.execute(
                sa.select(sa.func.max(_ATTEMPTS.c.attempt)).where(_ATTEMPTS.c.job_id == job_id)
            ).scalar()
            return int(top or 0) + 1

    # ------------------------------------------------------------------ decisions, audit

    def record_decision(
        self,
        job_id: str,
        *,
        placement: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        reasons: Sequence[str],
        catalog_version: str,
        now: datetime,
    ) -> None:
        """Record where the planner put a job and why.

        Args:
            job_id: Job id.
            placement: ``Assignment.to_dict()`` (or a list of them for an inference job
                spread over several offers).
            reasons: Why this placement.
            catalog_version: Price data version the decision used.
            now: When.

        Raises:
            JobNotFoundError: No such job.
        """
        at = _utc(now)
        stored: dict[str, Any] | list[dict[str, Any]] = (
            dict(placement) if isinstance(placement, Mapping) else [dict(p) for p in placement]
        )
        with self._tx(write=True) as conn:
            self._require_jobs(conn, [job_id])
            conn.execute(
                sa.insert(_DECISIONS).values(
                    job_id=job_id,
                    at=at,
                    placement=stored,
                    reasons=list(reasons),
                    catalog_version=catalog_version,
                )
            )

    def record_decisions(self, decisions: Sequence[Decision], *, now: datetime) -> None:
        """Record several decisions in one transaction, like :meth:`record_decision`.

        Args:
            decisions: The decisions.
            now: When.

        Raises:
            JobNotFoundError: A job does not exist; nothing is recorded.
        """
        at = _utc(now)
        if not decisions:
            return
        rows = [
            {
                "job_id": d.job_id,
                "at": at,
                "placement": (
                    dict(d.placement)
                    if isinstance(d.placement, Mapping)
                    else [dict(p) for p in d.placement]
                ),
                "reasons": list(d.reasons),
                "catalog_version": d.catalog_version,
            }
            for d in decisions
        ]
        with self._tx(write=True) as conn:
            self._require_jobs(conn, (d.job_id for d in decisions))
            conn.execute(sa.insert(_DECISIONS), rows)

    def record_audit(self, entries: Sequence[AuditEntry], *, now: datetime) -> None:
        """Append ROFR offers and answers to the audit ledger, all or none.

        Args:
            entries: Ledger lines from the plan; ``entry.job`` must be a store job id.
            now: Time stamped on entries whose ``at`` is None (the decision's time).

        Raises:
            JobNotFoundError: An entry names an unknown job.
        """
        at = _utc(now)
        if not entries:
            return
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
                "at": _utc(e.at) if e.at is not None else at,
                "catalog_version": e.catalog_version,
            }
            for e in entries
        ]
        with self._tx(write=True) as conn:
            self._require_jobs(conn, (e.job for e in entries))
            conn.execute(sa.insert(_AUDIT), rows)

    def audit(self, job_id: str | None = None, holder: str | None = None) -> list[dict[str, Any]]:
        """Return audit ledger lines, oldest first, in ``AuditEntry.to_dict()`` form.

        Args:
            job_id: Only this job's lines.
            holder: Only offers to this holder.

        Returns:
            The lines.
        """
        query = sa.select(_AUDIT).order_by(_AUDIT.c.id)
        if job_id is not None:
            query = query.where(_AUDIT.c.job_id == job_id)
        if holder is not None:
            query = query.where(_AUDIT.c.holder == holder)
        with self._tx(write=False) as conn:
            rows = list(conn.execute(query).mappings())
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
            ).to_dict()
            for r in rows
        ]

    def events(self, job_id: str) -> list[dict[str, Any]]:
        """Return a job's lifecycle events, oldest first.

        Args:
            job_id: Job id.

        Returns:
            ``{"job", "at", "from_state", "to_state", "reason"}`` dicts (``at`` in ISO 8601;
            ``from_state`` is None for the submission).

        Raises:
            JobNotFoundError: No such job.
        """
        return [
            {
                "job": r["job_id"],
                "at": _iso(r["at"]),
                "from_state": r["from_state"],
                "to_state": r["to_state"],
                "reason": r["reason"],
            }
            for r in self._job_rows(_EVENTS, job_id)
        ]

    def decisions(self, job_id: str) -> list[dict[str, Any]]:
        """Return a job's placement decisions, oldest first.

        Args:
            job_id: Job id.

        Returns:
            ``{"job", "at", "placement", "reasons", "catalog_version"}`` dicts.

        Raises:
            JobNotFoundError: No such job.
        """
        return [
            {
                "job": r["job_id"],
                "at": _iso(r["at"]),
                "placement": r["placement"],
                "reasons": r["reasons"],
                "catalog_version": r["catalog_version"],
            }
            for r in self._job_rows(_DECISIONS, job_id)
        ]

    def state_times(self, job_ids: Iterable[str] | None = None) -> dict[str, dict[str, str]]:
        """Return when each job first entered each state, from its events, in one query.

        Args:
            job_ids: Only these jobs (None: all).

        Returns:
            ``{job_id: {state: ISO 8601 time}}``.
        """
        first = sa.func.min(_EVENTS.c.at, type_=_UtcDateTime()).label("at")
        query = sa.select(_EVENTS.c.job_id, _EVENTS.c.to_state, first).group_by(
            _EVENTS.c.job_id, _EVENTS.c.to_state
        )
        if job_ids is not None:
            wanted = list(job_ids)
            if not wanted:
                return {}
            query = query.where(_EVENTS.c.job_id.in_(wanted))
        out: dict[str, dict[str, str]] = {}
        with self._tx(write=False) as conn:
            for row in conn.execute(query).mappings():
                out.setdefault(row["job_id"], {})[row["to_state"]] = _iso(row["at"]) or ""
        return out

    def _job_rows(self, table: sa.Table, job_id: str) -> list[sa.RowMapping]:
        """One job's rows of a ledger table, oldest first (JobNotFoundError if no job)."""
        with self._tx(write=False) as conn:
            self._require_jobs(conn, [job_id])
            return list(
                conn.execute(
                    sa.select(table).where(table.c.job_id == job_id).order_by(table.c.id)
                ).mappings()
            )
