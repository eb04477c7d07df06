"""Connections and transactions: the one place the store touches SQLAlchemy's engine.

Every read and write of the store runs in a transaction opened here, and every write goes
through :meth:`Database.write`: the single choke point where a lease check (one scheduler
per store, ``docs/architecture.md``) can refuse a stale writer.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import StaticPool

from multicloud.store import lease
from multicloud.store.checkpoint import Checkpointer
from multicloud.store.errors import StoreError

__all__ = ["CHUNK", "Database", "chunks", "engine_url"]

_T = TypeVar("_T")

CHUNK = 500
"""Values per ``IN (...)`` list: well below every backend's bound-parameter limit."""


def chunks(values: Sequence[_T], size: int = CHUNK) -> Iterator[Sequence[_T]]:
    """Split ``values`` into slices of at most ``size``.

    Args:
        values: The values.
        size: Slice length.

    Yields:
        The slices, in order.
    """
    for start in range(0, len(values), size):
        yield values[start : start + size]


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


_INSERT = re.compile(r"INSERT INTO (?P<table>\w+) \((?P<columns>[\w, ]+)\) VALUES \([?, ]+\)")
_COPY_ROWS = 8
"""Rows from which PostgreSQL inserts by ``COPY`` (per row 4× cheaper than ``executemany``)."""


def _copy(
    conn: Connection, statement: str, table: str, columns: str, rows: Sequence[Sequence[Any]]
) -> int:
    """Insert rows with PostgreSQL's ``COPY ... FROM STDIN`` on the transaction's connection.

    Errors come back as SQLAlchemy's, as from any other statement (a unique violation is
    an ``IntegrityError`` the store's callers retry on).
    """
    import psycopg

    driver = conn.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    try:
        with driver.cursor() as cursor:
            with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            return len(rows)
    except psycopg.Error as exc:
        raise sa.exc.DBAPIError.instance(statement, None, exc, psycopg.Error) from exc


_WAL_LIMIT = 64 * 2**20
"""Bytes a SQLite store's WAL file is cut back to when it starts again from its beginning."""


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    # The sqlite3 module would otherwise open transactions lazily, behind SQLAlchemy's
    # back, and never around DDL; we issue BEGIN ourselves (see _sqlite_on_begin).
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        # WAL lets readers (the CLI's status) run while the scheduler writes; NORMAL sync
        # is durable across process crashes in WAL mode (only an OS crash may lose the
        # last commits), and saves an fsync per commit on the scheduler's hot path.
        _set_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        # Checkpoints run on a thread of their own (Checkpointer), not inside whichever
        # commit crossed the WAL's size: that one would stall for the copy and its fsync.
        cursor.execute("PRAGMA wal_autocheckpoint=0")
        # A WAL that did grow (a reader held the checkpoints back) shrinks to this when it
        # is next started again, instead of keeping its largest size on disk.
        cursor.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT}")
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


class Database:
    """An engine and the transactions the store runs on it.

    One thread may hold a *batch*: every store call it makes inside the batch joins one
    write transaction. Other threads' calls run in their own transactions.

    Args:
        url: The store URL.

    Raises:
        StoreError: The URL is unsupported.
    """

    def __init__(self, url: str) -> None:
        target = engine_url(url)
        self._checkpointer: Checkpointer | None = None
        if target.get_backend_name() == "sqlite":
            self.engine = _sqlite_engine(target)
        else:
            # pre_ping: a store outlives PostgreSQL restarts and failovers.
            self.engine = sa.create_engine(target, pool_pre_ping=True)
            sa.event.listen(self.engine, "connect", self._pg_on_connect)
        self._idle_limit_ms = 0
        self._local = threading.local()
        # SQLite has one writer at a time, and a writer that finds the file locked polls
        # with sleeps of up to 100 ms (the busy handler). Threads of this process queue
        # on a lock instead and start the moment the previous writer commits: the
        # scheduler's cycle and its submitters write concurrently all the time.
        self._write_lock: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if self.backend == "sqlite" else contextlib.nullcontext()
        )
        if self.backend == "sqlite" and target.database not in (None, "", ":memory:"):
            self._checkpointer = Checkpointer(self.engine, self._write_lock)
        # The lease epoch every write is fenced with (None: unfenced, e.g. tools and tests),
        # and the database time of the fence check of the last fenced write that committed.
        self.fence: int | None = None
        self.fenced_at: float | None = None

    def _pg_on_connect(self, dbapi_conn: Any, _record: Any) -> None:
        if self._idle_limit_ms:
            with dbapi_conn.cursor() as cursor:
                cursor.execute(f"SET idle_in_transaction_session_timeout = {self._idle_limit_ms}")
            dbapi_conn.commit()

    def limit_idle_transactions(self, seconds: float) -> None:
        """End this process's PostgreSQL sessions that sit in a transaction this long.

        A lease holder paused (or partitioned) in the middle of a transaction keeps its
        row locks, the lease row's included, and a takeover would wait on them for ever;
        the server ends such a session after ``seconds``, and the lease can move on.
        Connections already open are replaced.

        Args:
            seconds: The limit (the lease's TTL).
        """
        limit = max(int(seconds * 1000), 1000)
        if self.backend == "postgresql" and limit != self._idle_limit_ms:
            self._idle_limit_ms = limit
            self.engine.dispose()

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    @property
    def returning(self) -> bool:
        """True if ``UPDATE ... RETURNING`` works here (PostgreSQL; SQLite from 3.35)."""
        return self.backend != "sqlite" or sqlite3.sqlite_version_info >= (3, 35)

    @property
    def url(self) -> str:
        """The URL, password hidden."""
        return self.engine.url.render_as_string(hide_password=True)

    def checkpoint(self) -> tuple[int, int, int] | None:
        """Copy a SQLite store's WAL into its database file now (as the thread does).

        Returns:
            SQLite's answer (busy, frames in the WAL, frames copied); None where no
            checkpoints run (PostgreSQL, an in-memory SQLite database).
        """
        return self._checkpointer.checkpoint() if self._checkpointer is not None else None

    def dispose(self) -> None:
        """Stop the checkpoints and close every connection."""
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        self.engine.dispose()

    # ------------------------------------------------------------------ bulk rows

    def stamp(self, at: datetime) -> Any:
        """A UTC timestamp as the driver takes it for a ``UtcDateTime`` column.

        SQLite gets the text SQLAlchemy itself writes for such a column (naive UTC), so
        rows written in bulk read back like any other.
        """
        if self.backend == "sqlite":
            return at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
        return at

    def many(self, conn: Connection, statement: str, rows: Sequence[Sequence[Any]]) -> int:
        """Run one statement for many rows through the driver's ``executemany``.

        The hot writes of a cycle (events, attempts, decisions, handles) go this way: the
        rows are already in the driver's types (JSON as text, timestamps from
        :meth:`stamp`), so nothing is processed per value on the way. psycopg pipelines
        an ``executemany`` into one round trip; sqlite3 runs it in C.

        Args:
            conn: A connection in a transaction.
            statement: SQL with ``?`` placeholders.
            rows: One parameter tuple per row.

        Returns:
            Rows affected, summed over all.
        """
        if not rows:
            return 0
        if self.backend != "sqlite":
            insert = _INSERT.fullmatch(statement)
            if insert is not None and len(rows) >= _COPY_ROWS:
                return _copy(conn, statement, insert["table"], insert["columns"], rows)
            statement = statement.replace("?", "%s")
        result = conn.exec_driver_sql(statement, list(rows))
        return int(result.rowcount)

    def _in_list(self, statement: str, size: int) -> str:
        sql = statement.replace("{ids}", ", ".join("?" * size))
        return sql if self.backend == "sqlite" else sql.replace("?", "%s")

    def rows_in(
        self, conn: Connection, statement: str, values: Sequence[Any], params: Sequence[Any] = ()
    ) -> Iterator[Any]:
        """Run a query once per chunk of ``values`` and yield its rows (plain tuples).

        Built as text, such a lookup costs the database's work alone; an expanding ``IN``
        parameter of a SQLAlchemy statement is rendered again on every run.

        Args:
            conn: A connection in a transaction.
            statement: SQL with ``?`` placeholders, where ``{ids}`` stands for the
                chunk's values (``IN ({ids})``).
            values: The values, in chunks of at most :data:`CHUNK`.
            params: Parameters of the placeholders before ``{ids}``.

        Yields:
            The rows.
        """
        for chunk in chunks(values):
            sql = self._in_list(statement, len(chunk))
            yield from conn.exec_driver_sql(sql, (*params, *chunk))

    def update_in(
        self, conn: Connection, statement: str, values: Sequence[Any], params: Sequence[Any] = ()
    ) -> int:
        """Run a write once per chunk of ``values`` (as :meth:`rows_in`); return rows changed."""
        changed = 0
        for chunk in chunks(values):
            sql = self._in_list(statement, len(chunk))
            changed += int(conn.exec_driver_sql(sql, (*params, *chunk)).rowcount)
        return changed

    def known_jobs(self) -> set[str] | None:
        """Jobs this thread's batch has read or inserted (None outside a batch).

        Jobs are never deleted: later statements of the batch need not look for them.
        """
        return getattr(self._local, "jobs", None)

    def in_batch(self) -> bool:
        """True while this thread is inside :meth:`batch`."""
        return getattr(self._local, "conn", None) is not None

    @contextmanager
    def batch(self) -> Iterator[Connection]:
        """Join every store call of this thread in the block into one write transaction.

        Yields:
            The batch's connection.

        Raises:
            StoreError: If this thread is already inside a batch.
            LeaseLost: The fence is set and another scheduler took the lease over.
        """
        if self.in_batch():
            raise StoreError("store batches do not nest")
        with self._write_lock, self.engine.connect() as conn:
            conn.execution_options(multicloud_write=True)
            with conn.begin():
                checked = self._check_fence(conn)
                self._local.conn = conn
                self._local.jobs = set()
                try:
                    yield conn
                finally:
                    self._local.conn = None
                    self._local.jobs = None
            self._committed(checked)

    @contextmanager
    def write(self, *, fenced: bool = True) -> Iterator[Connection]:
        """A write transaction (the caller's batch, if this thread is in one).

        With a :attr:`fence` set, the transaction first checks that the store's lease is
        still under that epoch and raises ``LeaseLost`` (rolling back) otherwise.

        Args:
            fenced: Check the fence (False only for the lease's own updates).

        Yields:
            The connection.

        Raises:
            LeaseLost: Another scheduler took the lease over.
        """
        batched: Connection | None = getattr(self._local, "conn", None)
        if batched is not None:
            yield batched
            return
        with self._write_lock, self.engine.connect() as conn:
            conn.execution_options(multicloud_write=True)
            with conn.begin():
                checked = self._check_fence(conn) if fenced else None
                yield conn
            self._committed(checked)

    def _check_fence(self, conn: Connection) -> float | None:
        epoch = self.fence
        return None if epoch is None else lease.check(conn, epoch)

    def _committed(self, checked: float | None) -> None:
        if checked is not None:
            self.fenced_at = checked

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction that sees one snapshot (the caller's batch, if any).

        Yields:
            The connection.
        """
        batched: Connection | None = getattr(self._local, "conn", None)
        if batched is not None:
            yield batched
            return
        with self.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                # Reads that span several queries (a job and its attempts) see one snapshot.
                conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn
