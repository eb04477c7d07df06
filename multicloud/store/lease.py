"""The store's lease: one scheduler per store, and the fencing epoch that enforces it.

One row holds who holds the lease (the holder's identity), until when (``expires_at``) and
under which **epoch**, a number that grows by one on every acquisition. The holder renews
the lease every few seconds; another scheduler may take it only once it has expired (or
when it is the same installation coming back, ``owner`` equal). Every write of the holder
runs with the epoch as its fence (:meth:`multicloud.store.engine.Database.write`): the
transaction first reads the row's epoch (``FOR SHARE`` on PostgreSQL, so that a takeover
waits for writes already under way; SQLite's write lock serialises anyway) and raises
:class:`LeaseLost` when it is not the holder's own any more (``docs/architecture.md``, "One
scheduler per store").

Times are seconds since 1970 on the **database's clock** (``clock_timestamp()`` on
PostgreSQL, SQLite's ``julianday('now')``), never the caller's: schedulers on two machines
compare expiry against one clock, whatever their own clocks say.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from multicloud.store.errors import LeaseHeldError, LeaseLost
from multicloud.store.schema import LEASE

if TYPE_CHECKING:
    from multicloud.store.engine import Database

__all__ = [
    "Holder",
    "Lease",
    "StoreLease",
    "acquire",
    "check",
    "read",
    "release",
    "renew",
    "still_held",
]


@dataclass(frozen=True)
class Holder:
    """Who a scheduler is, as the lease records it.

    Attributes:
        owner: The installation's key (host, multicloud home, Ray namespace): a scheduler
            with the holder's key may take the lease at once (a restart of the same
            installation), any other waits for it to expire.
        install_id: The store's install id.
        host: Host name of the scheduler's process.
        pid: Its process id.
        ray_address: GCS address of its Ray cluster.
        actor: Its Ray actor id (empty outside Ray).
    """

    owner: str
    install_id: str = ""
    host: str = ""
    pid: int = 0
    ray_address: str = ""
    actor: str = ""


@dataclass(frozen=True)
class Lease:
    """The lease row as read, with the database's time of the reading.

    Attributes:
        epoch: The fencing epoch (0: never held).
        holder: Who holds (or last held) it; None if nobody ever did.
        started_at: When the holder acquired it.
        renewed_at: When the holder last renewed it.
        expires_at: When it runs out unless renewed.
        now: The database's time when this was read.
    """

    epoch: int
    holder: Holder | None
    started_at: datetime | None
    renewed_at: datetime | None
    expires_at: datetime
    now: datetime

    @property
    def held(self) -> bool:
        """True while a holder has it and it has not run out."""
        return self.holder is not None and self.expires_at > self.now

    def describe(self) -> str:
        """One line for people: who holds it, since when, until when."""
        if not self.held or self.holder is None:
            return f"free (epoch {self.epoch})"
        h = self.holder
        left = (self.expires_at - self.now).total_seconds()
        since = f"{self.started_at:%Y-%m-%d %H:%M:%S} UTC" if self.started_at else "?"
        return (
            f"held by {h.owner} (host {h.host}, pid {h.pid}, Ray {h.ray_address or '—'}, "
            f"install {h.install_id}) since {since}, epoch {self.epoch}, expires in "
            f"{max(left, 0.0):.1f} s unless renewed"
        )

    def to_json(self) -> dict[str, Any]:
        """The lease as ``multicloud status --json`` prints it (``lease`` key)."""
        return {
            "held": self.held,
            "epoch": self.epoch,
            "holder": asdict(self.holder) if self.holder is not None else None,
            "started_at": _iso(self.started_at),
            "renewed_at": _iso(self.renewed_at),
            "expires_at": _iso(self.expires_at),
            "now": _iso(self.now),
        }


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def _stamp(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(float(seconds), timezone.utc)


def db_now(conn: Connection) -> sa.ColumnElement[float]:
    """The database's current time in seconds since 1970, as a SQL expression.

    Args:
        conn: A connection (for its dialect).

    Returns:
        ``clock_timestamp()`` on PostgreSQL (not ``now()``: that is the transaction's
        start, and a transaction may wait on a lock); SQLite's ``julianday('now')``.
    """
    if conn.dialect.name == "postgresql":
        return sa.cast(sa.extract("epoch", sa.func.clock_timestamp()), sa.Float)
    return sa.cast((sa.func.julianday("now") - 2440587.5) * 86400.0, sa.Float)


def _select(conn: Connection, *, lock: str | None) -> Any:
    query = sa.select(LEASE, db_now(conn).label("db_now")).where(LEASE.c.id == 1)
    if lock == "update":
        query = query.with_for_update()
    elif lock == "share":
        query = query.with_for_update(read=True)
    row = conn.execute(query).mappings().first()
    if row is None:  # the migration inserts it; only a hand-edited database lacks it
        raise LeaseLost("the store has no lease row (was it edited by hand?)")
    return row


def _lease(row: Any) -> Lease:
    holder = None
    if row["owner"] is not None:
        holder = Holder(
            owner=str(row["owner"]),
            install_id=str(row["install_id"] or ""),
            host=str(row["host"] or ""),
            pid=int(row["pid"] or 0),
            ray_address=str(row["ray_address"] or ""),
            actor=str(row["actor"] or ""),
        )
    expires = _stamp(row["expires_at"])
    now = _stamp(row["db_now"])
    assert expires is not None and now is not None
    return Lease(
        epoch=int(row["epoch"]),
        holder=holder,
        started_at=_stamp(row["started_at"]),
        renewed_at=_stamp(row["renewed_at"]),
        expires_at=expires,
        now=now,
    )


def read(conn: Connection) -> Lease:
    """Return the lease as it is now.

    Args:
        conn: A connection.

    Returns:
        The lease.
    """
    return _lease(_select(conn, lock=None))


def acquire(conn: Connection, holder: Holder, ttl: float, *, own: bool) -> Lease:
    """Take the lease if it is free, expired, or (with ``own``) held by ``holder.owner``.

    Taking it always bumps the epoch, even from one's own earlier incarnation: whatever
    that one still had in flight is fenced off.

    Args:
        conn: A connection in a write transaction (not fenced).
        holder: Who takes it.
        ttl: Seconds it lasts unless renewed.
        own: Take it at once from a holder with the same ``owner`` key.

    Returns:
        The lease now held, with its new epoch.

    Raises:
        LeaseHeldError: Another live scheduler holds it.
    """
    row = _select(conn, lock="update")
    seen = _lease(row)
    mine = own and seen.holder is not None and seen.holder.owner == holder.owner
    if seen.held and not mine:
        raise LeaseHeldError(f"the store's lease is {seen.describe()}", seen)
    now = float(row["db_now"])
    conn.execute(
        sa.update(LEASE)
        .where(LEASE.c.id == 1)
        .values(
            epoch=seen.epoch + 1,
            **asdict(holder),
            started_at=now,
            renewed_at=now,
            expires_at=now + ttl,
        )
    )
    return read(conn)


def renew(conn: Connection, epoch: int, ttl: float) -> Lease:
    """Push the expiry ``ttl`` seconds past now, if the lease is still under ``epoch``.

    Args:
        conn: A connection in a write transaction (not fenced).
        epoch: The holder's epoch.
        ttl: Seconds from now.

    Returns:
        The renewed lease.

    Raises:
        LeaseLost: Another scheduler took the lease over.
    """
    now = db_now(conn)
    done = conn.execute(
        sa.update(LEASE)
        .where(LEASE.c.id == 1, LEASE.c.epoch == epoch)
        .values(renewed_at=now, expires_at=now + ttl)
    )
    if done.rowcount != 1:
        raise LeaseLost(
            f"lease lost: epoch {epoch} was taken over; the store's lease is now "
            f"{read(conn).describe()}"
        )
    return read(conn)


def release(conn: Connection, epoch: int) -> bool:
    """Let the lease run out now (a clean stop), if it is still under ``epoch``.

    The holder's identity stays, for ``status`` to show who held it last.

    Args:
        conn: A connection in a write transaction (not fenced).
        epoch: The holder's epoch.

    Returns:
        True if it was released; False if another scheduler had taken it.
    """
    now = db_now(conn)
    done = conn.execute(
        sa.update(LEASE).where(LEASE.c.id == 1, LEASE.c.epoch == epoch).values(expires_at=now)
    )
    return bool(done.rowcount == 1)


# The fence runs first in every write transaction of the holder: plain SQL, the database's
# work alone (as a SQLAlchemy statement with a mapping it cost ~0.3 ms of the cycle's CPU
# per transaction). The time is ``db_now``'s.
_FENCE = {
    "sqlite": "SELECT epoch, (julianday('now') - 2440587.5) * 86400.0 FROM lease WHERE id = 1",
    "postgresql": "SELECT epoch, CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS FLOAT) "
    "FROM lease WHERE id = 1 FOR SHARE",
}
_EPOCH = "SELECT epoch FROM lease WHERE id = 1"


def _refused(conn: Connection, epoch: int) -> LeaseLost:
    return LeaseLost(
        f"lease lost: this scheduler writes under epoch {epoch}; the store's lease is "
        f"now {read(conn).describe()}"
    )


def check(conn: Connection, epoch: int) -> float:
    """The fence: refuse the transaction unless the lease is still under ``epoch``.

    Runs first in every fenced write transaction. On PostgreSQL the row is read ``FOR
    SHARE``: writers of the holder do not block each other, and a takeover (an update of
    the row) waits until they commit, so no write of an old epoch commits after it.

    Args:
        conn: A connection in a write transaction.
        epoch: The writer's epoch.

    Returns:
        The database's time of the check (seconds since 1970).

    Raises:
        LeaseLost: The epoch moved on: another scheduler holds the lease.
    """
    row = conn.exec_driver_sql(_FENCE[conn.dialect.name]).first()
    if row is None:  # the migration inserts it; only a hand-edited database lacks it
        raise LeaseLost("the store has no lease row (was it edited by hand?)")
    if int(row[0]) != epoch:
        raise _refused(conn, epoch)
    return float(row[1])


def still_held(conn: Connection, epoch: int) -> None:
    """Raise :class:`LeaseLost` unless the lease is still under ``epoch``, writing nothing.

    What a holder checks right before a cloud call that changes something: nothing is
    written, so there is no write to order against a takeover, and a plain read tells
    what the fence would (on PostgreSQL, without the row lock's transaction id and
    synced commit).

    Args:
        conn: A connection in a (read) transaction.
        epoch: The holder's epoch.

    Raises:
        LeaseLost: The epoch moved on: another scheduler holds the lease.
    """
    found = conn.exec_driver_sql(_EPOCH).scalar()
    if found is None:
        raise LeaseLost("the store has no lease row (was it edited by hand?)")
    if int(found) != epoch:
        raise _refused(conn, epoch)


class StoreLease:
    """The lease of one open store (``Store.lease``): what a scheduler holds it with.

    Acquiring sets the store's fence: from then on every write of this ``Store`` object
    (the cycle's and the clients') is refused with :class:`LeaseLost` once another
    scheduler has taken the lease over.

    Args:
        db: The store's database.
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    @property
    def epoch(self) -> int | None:
        """The epoch this store writes under (None: not holding, writes unfenced)."""
        return self._db.fence

    @property
    def last_write_at(self) -> datetime | None:
        """Database time of the fence check of the last fenced write that committed."""
        return _stamp(self._db.fenced_at)

    def read(self) -> Lease:
        """Return the lease as it is now (who holds it, epoch, expiry)."""
        with self._db.read() as conn:
            return read(conn)

    def acquire(self, holder: Holder, ttl: float, *, own: bool = False) -> Lease:
        """Take the lease (see :func:`acquire`) and fence every later write with its epoch.

        Args:
            holder: Who takes it.
            ttl: Seconds it lasts unless renewed.
            own: Take it at once from an earlier holder with the same owner key.

        Returns:
            The lease held.

        Raises:
            LeaseHeldError: Another live scheduler holds it.
        """
        with self._db.write(fenced=False) as conn:
            got = acquire(conn, holder, ttl, own=own)
        self._db.fence = got.epoch
        self._db.limit_idle_transactions(ttl)
        return got

    def renew(self, ttl: float) -> Lease:
        """Renew the lease held; see :func:`renew`.

        Raises:
            LeaseLost: It was taken over (or was never acquired here).
        """
        epoch = self._db.fence
        if epoch is None:
            raise LeaseLost("this store does not hold the lease")
        with self._db.write(fenced=False) as conn:
            return renew(conn, epoch, ttl)

    def release(self) -> bool:
        """Let the lease held run out now and stop fencing; True if it was still held."""
        epoch, self._db.fence = self._db.fence, None
        if epoch is None:
            return False
        with self._db.write(fenced=False) as conn:
            return release(conn, epoch)

    def check(self) -> None:
        """Raise :class:`LeaseLost` unless the lease is still this store's (a no-op unfenced).

        The scheduler calls it right before a cloud call that changes something (a launch
        batch, a termination), which writes nothing to the store itself.
        """
        epoch = self._db.fence
        if epoch is not None:
            with self._db.read() as conn:
                still_held(conn, epoch)
