"""The store's versioned schema: every migration ever released, and how to apply them.

Append only: a released migration never changes, a new one gets the next version. A
migration builds the tables it touches from its own definitions, never from the current
metadata, so that a fresh database goes through exactly what an old one went through.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from multicloud.provider import MarketKind, Offer, Place
from multicloud.store.errors import SchemaVersionError
from multicloud.store.schema import (
    JSON,
    NAMING,
    define_v1,
    define_v2,
    define_v4,
    live_attempts_index,
)

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "VERSIONS", "applied_version", "migrate"]

# Any fixed 64-bit number works; processes of one installation only need to agree on it.
_MIGRATION_LOCK = 0x6D756C7469636C64  # "multicld"


@dataclass(frozen=True)
class Migration:
    """One schema step.

    Attributes:
        version: The version it brings the database to.
        description: What it adds.
        apply: The step, run inside the migration transaction.
    """

    version: int
    description: str
    apply: Callable[[Connection], None]


def _migrate_v1(conn: Connection) -> None:
    md = sa.MetaData(naming_convention=NAMING)
    define_v1(md)
    md.create_all(conn)


def _migrate_v2(conn: Connection) -> None:
    md = sa.MetaData(naming_convention=NAMING)
    define_v2(md)
    md.create_all(conn)
    # Which reservation a live attempt draws on: a restarted scheduler must know how much
    # of each prepaid block is in use before it places anything.
    conn.execute(sa.text("ALTER TABLE attempts ADD COLUMN reservation VARCHAR(128)"))


# Version 3's view of the tables it reads, fixed here so that later versions cannot move it.
_V3_ATTEMPTS = sa.table(
    "attempts",
    *(
        sa.column(name)
        for name in (
            "id",
            "job_id",
            "provider",
            "region",
            "zone",
            "instance_type",
            "nodes",
            "market",
            "price_per_hour",
            "reservation",
        )
    ),
    sa.column("place", sa.JSON),
)
_V3_JOBS = sa.table("jobs", sa.column("id"), sa.column("spec", sa.JSON))
_V3_DECISIONS = sa.table(
    "decisions",
    sa.column("id"),
    sa.column("job_id"),
    sa.column("placement", sa.JSON),
    sa.column("catalog_version"),
)


def _migrate_v3(conn: Connection) -> None:
    """Keep the place of every attempt exactly as planned, and index the live ones.

    Rows written before this version carry the place as separate columns, without the
    accelerator, the count per node or the catalog version: those are filled from what
    the store knows (the job's decision for that place, else its spec), never guessed
    from a price list. A value nothing records stays empty.
    """
    kind = JSON
    ddl = kind.compile(dialect=conn.dialect)
    conn.execute(sa.text(f"ALTER TABLE attempts ADD COLUMN place {ddl}"))
    rows = list(conn.execute(sa.select(_V3_ATTEMPTS).where(_V3_ATTEMPTS.c.place.is_(None))))
    if rows:
        job_ids = sorted({str(r.job_id) for r in rows})
        specs: dict[str, Mapping[str, Any]] = {}
        found: dict[tuple[str, str, str, str | None, str], tuple[str, str]] = {}
        for start in range(0, len(job_ids), 500):
            chunk = job_ids[start : start + 500]
            for j in conn.execute(sa.select(_V3_JOBS).where(_V3_JOBS.c.id.in_(chunk))):
                specs[str(j.id)] = j.spec
            decisions = conn.execute(
                sa.select(_V3_DECISIONS)
                .where(_V3_DECISIONS.c.job_id.in_(chunk))
                .order_by(_V3_DECISIONS.c.id)
            )
            for d in decisions:
                placed = d.placement if isinstance(d.placement, list) else [d.placement]
                for p in placed:
                    if isinstance(p, Mapping) and p.get("accelerator"):
                        key = (
                            str(d.job_id),
                            str(p.get("provider")),
                            str(p.get("region")),
                            p.get("zone"),
                            str(p.get("instance_type")),
                        )
                        found[key] = (str(p["accelerator"]), str(d.catalog_version))
        updates = [
            {"row_id": r.id, "new_place": _v3_place(r, specs.get(str(r.job_id), {}), found)}
            for r in rows
        ]
        stmt = (
            sa.update(_V3_ATTEMPTS)
            .where(_V3_ATTEMPTS.c.id == sa.bindparam("row_id"))
            .values(place=sa.bindparam("new_place", type_=kind))
        )
        conn.execute(stmt, updates)
    md = sa.MetaData(naming_convention=NAMING)
    define_v1(md)
    live_attempts_index(md.tables["attempts"]).create(conn)


def _v3_place(
    row: Any,
    spec: Mapping[str, Any],
    found: Mapping[tuple[str, str, str, str | None, str], tuple[str, str]],
) -> dict[str, Any]:
    resources = spec.get("resources", {}) if isinstance(spec, Mapping) else {}
    wanted = resources.get("accelerator", [])
    wanted = [wanted] if isinstance(wanted, str) else list(wanted)
    key = (str(row.job_id), str(row.provider), str(row.region), row.zone, str(row.instance_type))
    accelerator, catalog = found.get(key, (wanted[0] if len(wanted) == 1 else "", ""))
    market = MarketKind(row.market)
    nodes = max(int(row.nodes), 1)
    node_price = float(row.price_per_hour) / nodes
    offer = Offer(
        provider=str(row.provider),
        region=str(row.region),
        zone=row.zone,
        instance_type=str(row.instance_type),
        accelerator=accelerator,
        count=int(resources.get("count", 1) or 1),
        price=None if market is MarketKind.SPOT else node_price,
        spot_price=node_price if market is MarketKind.SPOT else None,
        reservation=row.reservation,
        catalog_version=catalog,
    )
    return Place(offer, int(row.nodes), market, float(row.price_per_hour)).to_json()


def _migrate_v4(conn: Connection) -> None:
    md = sa.MetaData(naming_convention=NAMING)
    define_v4(md)
    md.create_all(conn)
    # The one lease row exists from the start: acquiring, renewing and fencing are then
    # all updates of it, and two schedulers never race to insert it.
    conn.execute(sa.insert(md.tables["lease"]).values(id=1, epoch=0, expires_at=0.0))


def _migrate_v5(conn: Connection) -> None:
    """Make a job's moves cheap: no index on ``jobs.state``, room for rows to change in place.

    Only a starting scheduler looked jobs up by state (a scan does that once), while every
    move of every job rewrote the index; on PostgreSQL a changed indexed column also made
    each move write a new row version into every index of the table. Without it, and with
    free room on each page, PostgreSQL rewrites a moved job's row in place (a heap-only
    update), touching no index; attempts, whose handle is set once, likewise.
    """
    conn.execute(sa.text("DROP INDEX IF EXISTS ix_jobs_state"))
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("ALTER TABLE jobs SET (fillfactor = 50)"))
        conn.execute(sa.text("ALTER TABLE attempts SET (fillfactor = 70)"))


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "jobs, attempts, decisions, audit, events", _migrate_v1),
    Migration(2, "meta: install id", _migrate_v2),
    Migration(3, "attempts keep their place as planned; live-attempt index", _migrate_v3),
    Migration(4, "lease: one scheduler per store, with a fencing epoch", _migrate_v4),
    Migration(5, "jobs: no index on state; rows change in place", _migrate_v5),
)
SCHEMA_VERSION: int = MIGRATIONS[-1].version

VERSIONS = sa.Table(
    "schema_version",
    sa.MetaData(naming_convention=NAMING),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("description", sa.String(256), nullable=False),
)


def migrate(conn: Connection, shown_url: str) -> None:
    """Bring the schema up to date inside the caller's write transaction.

    Safe when several processes open the same store at once: on PostgreSQL an advisory
    lock serialises them before anything, even ``schema_version``, exists; SQLite's write
    lock does the same there.

    Args:
        conn: A connection in a write transaction.
        shown_url: The store URL (password hidden), for messages.

    Raises:
        SchemaVersionError: The database is newer than this code.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
    VERSIONS.create(conn, checkfirst=True)
    current = conn.execute(sa.select(sa.func.max(VERSIONS.c.version))).scalar() or 0
    if current > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"store {shown_url} has schema version {current}, this multicloud knows "
            f"up to {SCHEMA_VERSION}: upgrade multicloud"
        )
    for migration in MIGRATIONS:
        if migration.version > current:
            migration.apply(conn)
            conn.execute(
                sa.insert(VERSIONS).values(
                    version=migration.version, description=migration.description
                )
            )


def applied_version(conn: Connection) -> int:
    """Return the highest migration applied.

    Args:
        conn: A connection.

    Returns:
        The version (0 for an empty database).
    """
    return int(conn.execute(sa.select(sa.func.max(VERSIONS.c.version))).scalar() or 0)
