"""The store's tables as the code reads and writes them today, and their column types.

Each migration (``multicloud.store.migrations``) builds its own version of a table from the
``define_v*`` functions here, which never change once released; the metadata at the bottom
is the schema of the current version, which the queries use.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect

__all__ = [
    "ATTEMPTS",
    "AUDIT",
    "DECISIONS",
    "EVENTS",
    "JOBS",
    "JSON",
    "LEASE",
    "META",
    "NAMING",
    "UtcDateTime",
    "define_v1",
    "define_v2",
    "define_v4",
    "live_attempts_index",
    "utc",
]


def utc(value: datetime) -> datetime:
    """Return ``value`` in UTC; refuse naive datetimes (the store never guesses a zone).

    Args:
        value: A timezone-aware datetime.

    Returns:
        The same instant in UTC.

    Raises:
        ValueError: If ``value`` is naive.
    """
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValueError(f"timestamps must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(timezone.utc)


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """Timestamps in UTC on both backends.

    SQLite has no time zones and would hand back naive datetimes, PostgreSQL hands back the
    session's zone: normalising here keeps one code path above.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        stamp = utc(value)
        return stamp.replace(tzinfo=None) if dialect.name == "sqlite" else stamp

    def process_result_value(self, value: Any | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        stamp = cast(datetime, value)
        if stamp.tzinfo is None:
            return stamp.replace(tzinfo=timezone.utc)
        return stamp.astimezone(timezone.utc)


# JSONB on PostgreSQL so that operators can query the ledger with SQL; plain JSON text
# elsewhere. Both round-trip the same Python values.
JSON = sa.JSON().with_variant(JSONB(), "postgresql")

# Deterministic constraint names, so that later migrations can refer to them by name.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
}


def define_v1(md: sa.MetaData) -> None:
    """Add the version-1 tables to ``md`` (released: never change this function)."""
    sa.Table(
        "jobs",
        md,
        # ``seq`` is the key so that submission order is a plain integer on both backends.
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(32), nullable=False, unique=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("team", sa.String(128), nullable=True),
        sa.Column("spec", JSON, nullable=False),
        sa.Column("spec_hash", sa.String(64), nullable=False),
        sa.Column("client_key", sa.String(256), nullable=True, unique=True),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("submitted_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
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
        sa.Column("handle", JSON, nullable=True),
        sa.Column("outcome", sa.String(64), nullable=True),
        sa.Column("started_at", UtcDateTime(), nullable=False),
        sa.Column("ended_at", UtcDateTime(), nullable=True),
    )
    sa.Table(
        "decisions",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), nullable=False, index=True),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("placement", JSON, nullable=False),
        sa.Column("reasons", JSON, nullable=False),
        sa.Column("catalog_version", sa.String(128), nullable=False),
    )
    sa.Table(
        "audit",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), nullable=False, index=True),
        sa.Column("holder", sa.String(128), nullable=False, index=True),
        sa.Column("terms", JSON, nullable=False),
        sa.Column("outside_price_per_hour", sa.Float, nullable=True),
        sa.Column("holder_price_per_hour", sa.Float, nullable=True),
        sa.Column("answer", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("billed_price_per_hour", sa.Float, nullable=True),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("catalog_version", sa.String(128), nullable=False),
    )
    sa.Table(
        "events",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), nullable=False, index=True),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("from_state", sa.String(16), nullable=True),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )


def define_v2(md: sa.MetaData) -> None:
    """Add the version-2 table: facts about the installation itself (released)."""
    sa.Table(
        "meta",
        md,
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def define_v4(md: sa.MetaData) -> None:
    """Add the version-4 table: the scheduler's lease on the store (released).

    One row (``id`` 1). Times are seconds since 1970 on the database's own clock, so that
    schedulers on different machines compare them with one clock.
    """
    sa.Table(
        "lease",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("owner", sa.String(512), nullable=True),
        sa.Column("install_id", sa.String(64), nullable=True),
        sa.Column("host", sa.String(256), nullable=True),
        sa.Column("pid", sa.Integer, nullable=True),
        sa.Column("ray_address", sa.String(256), nullable=True),
        sa.Column("actor", sa.String(128), nullable=True),
        sa.Column("started_at", sa.Float, nullable=True),
        sa.Column("renewed_at", sa.Float, nullable=True),
        sa.Column("expires_at", sa.Float, nullable=False),
    )


def live_attempts_index(attempts: sa.Table) -> sa.Index:
    """The partial index behind the live-attempt scan a (re)starting scheduler runs.

    Args:
        attempts: The attempts table.

    Returns:
        An index on the attempts without an outcome (released with version 3).
    """
    live = attempts.c.outcome.is_(None)
    return sa.Index("ix_attempts_live", attempts.c.id, sqlite_where=live, postgresql_where=live)


# The tables as the code reads and writes them: version 1, 2 and the columns added since.
_MD = sa.MetaData(naming_convention=NAMING)
define_v1(_MD)
define_v2(_MD)
define_v4(_MD)
# Version 2: the reservation a live attempt draws on.
_MD.tables["attempts"].append_column(sa.Column("reservation", sa.String(128), nullable=True))
# Version 3: the place exactly as planned (``Place.to_json``).
_MD.tables["attempts"].append_column(sa.Column("place", JSON, nullable=True))

# Version 5: no index on the jobs' state (``migrations._migrate_v5``).
_MD.tables["jobs"].indexes.difference_update(
    [ix for ix in _MD.tables["jobs"].indexes if ix.name == "ix_jobs_state"]
)

JOBS = _MD.tables["jobs"]
ATTEMPTS = _MD.tables["attempts"]
DECISIONS = _MD.tables["decisions"]
AUDIT = _MD.tables["audit"]
EVENTS = _MD.tables["events"]
META = _MD.tables["meta"]
LEASE = _MD.tables["lease"]
