"""The SQL schema (SQLAlchemy Core tables) and its versioned migrations.

We keep a one-row `zag_schema_version` table and an ordered list of
migration steps instead of Alembic: the schema is three tables, upgrades must
run from `connect()` and from `zag-async db upgrade URL` without a migration
environment on disk, and each step is a plain function of a connection.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import (
    Column,
    Connection,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    select,
)

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "atoms", "flows", "logbooks", "metadata", "migrate"]

metadata = MetaData()

logbooks = Table(
    "zag_logbooks",
    metadata,
    Column("uuid", String(36), primary_key=True),
    Column("name", Text, nullable=False),
    Column("meta", Text),
    Column("created_at", Float, nullable=False),
)

flows = Table(
    "zag_flows",
    metadata,
    Column("uuid", String(36), primary_key=True),
    Column("logbook", String(36), nullable=True),
    Column("name", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("owner", Text),
    Column("store", Text),
    Column("meta", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("version", Integer, nullable=False),
    # Migration 2: the lease of the engine running the flow (expiry by the database's clock).
    Column("lease_owner", Text),
    Column("lease_expires", Float),
    Index("zag_flows_logbook", "logbook"),
    Index("zag_flows_state", "state"),
)

atoms = Table(
    "zag_atoms",
    metadata,
    Column(
        "flow_uuid",
        String(36),
        ForeignKey("zag_flows.uuid", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("name", Text, primary_key=True),
    Column("kind", String(8), nullable=False),
    Column("state", String(16), nullable=False),
    Column("intention", String(8), nullable=False),
    Column("result", Text),
    Column("failure", Text),
    Column("revert_result", Text),
    Column("revert_failure", Text),
    Column("history", Text),
    Column("duration", Float),
    Column("attempts", Integer, nullable=False, default=0),
    Column("meta", Text),
    Column("position", Integer, nullable=False, default=0),
)

schema_version = Table(
    "zag_schema_version",
    metadata,
    Column("version", Integer, nullable=False),
)


_LEASE_COLUMNS = ("lease_owner", "lease_expires")


def _v1(conn: Connection) -> None:
    """The first schema: logbooks, flows, atoms."""
    metadata.create_all(conn, tables=[logbooks, flows, atoms])


def _v2(conn: Connection) -> None:
    """Flow leases: who runs the flow now (`lease_owner`) and until when.

    `flows` is declared at its latest shape, so a database created by this
    code has the columns from migration 1 already; older ones get them here.
    """
    present = {column["name"] for column in inspect(conn).get_columns(flows.name)}
    for name in _LEASE_COLUMNS:
        if name in present:
            continue
        kind = flows.c[name].type.compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE {flows.name} ADD COLUMN {name} {kind}")


#: Migration N (1-based) brings the schema from version N-1 to N.
MIGRATIONS: list[Callable[[Connection], None]] = [_v1, _v2]
SCHEMA_VERSION = len(MIGRATIONS)


def current_version(conn: Connection) -> int:
    if not inspect(conn).has_table(schema_version.name):
        return 0
    return int(conn.execute(select(schema_version.c.version)).scalar_one_or_none() or 0)


def migrate(conn: Connection) -> int:
    """Apply the missing migrations in one transaction; returns the version reached.

    Raises RuntimeError when the database is newer than this code.
    """
    version = current_version(conn)
    if version > SCHEMA_VERSION:
        raise RuntimeError(
            f"the database schema is version {version}, newer than this zag-async "
            f"(which knows up to {SCHEMA_VERSION}); upgrade zag-async"
        )
    if version == SCHEMA_VERSION:
        return version
    if version == 0:
        schema_version.create(conn, checkfirst=True)
        conn.execute(schema_version.insert().values(version=0))
    for step in MIGRATIONS[version:]:
        step(conn)
    conn.execute(schema_version.update().values(version=SCHEMA_VERSION))
    return SCHEMA_VERSION
