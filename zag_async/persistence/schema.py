"""The SQL schema (SQLAlchemy Core tables) and its versioned migrations.

We keep a one-row `zag_schema_version` table and an ordered list of
migration steps instead of Alembic: the schema is a handful of tables, upgrades must
run from `connect()` and from `zag-async db upgrade URL` without a migration
environment on disk, and each step is a plain function of a connection.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import (
    BigInteger,
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

from . import names

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "actions",
    "atoms",
    "flows",
    "job_counters",
    "job_keys",
    "job_locks",
    "job_results",
    "job_schedules",
    "jobs",
    "logbooks",
    "metadata",
    "migrate",
    "signals",
]

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

# -- job boards (migration 3): a SQL board keeps its jobs beside the flows they run --

#: Posting order is the integer key (`seq`); a claim is a lease: `owner` holds the
#: job while `lease_until` (the database's clock, epoch seconds) is ahead; `token`
#: is the claim's fencing token.
jobs = Table(
    "zag_jobs",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("uuid", String(36), nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("flow_id", String(36), nullable=False),
    Column("data", Text, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("due_at", Float, nullable=False),
    Column("posted_at", Float, nullable=False),
    Column("idempotency_key", Text),
    Column("schedule", Text),
    Column("build_failures", Integer, nullable=False),
    Column("last_build_error", Text),
    Column("owner", Text),
    Column("lease_until", Float),
    Column("token", BigInteger),
    Column("version", Integer, nullable=False),
    Index("zag_jobs_order", "priority", "seq"),
    Index("zag_jobs_owner", "owner"),
    Index("zag_jobs_schedule", "schedule"),
)

#: Every idempotency key ever posted, and its job (kept after the job ends).
job_keys = Table(
    "zag_job_keys",
    metadata,
    Column("key", Text, primary_key=True),
    Column("job_uuid", String(36), nullable=False),
)

#: How each finished job ended (`trash_reason` set for trashed ones).
job_results = Table(
    "zag_job_results",
    metadata,
    Column("job_uuid", String(36), primary_key=True),
    Column("outcome", Text, nullable=False),
    Column("job", Text, nullable=False),
    Column("trash_reason", Text),
    Column("finished_at", Float, nullable=False),
)

#: The latest finished jobs first (the operations UI's trash and failures).
job_results_finished = Index("zag_job_results_finished", job_results.c.finished_at)

job_schedules = Table(
    "zag_job_schedules",
    metadata,
    Column("name", Text, primary_key=True),
    Column("data", Text, nullable=False),
)

#: Named locks as leases.
job_locks = Table(
    "zag_job_locks",
    metadata,
    Column("name", Text, primary_key=True),
    Column("holder", Text, nullable=False),
    Column("lease_until", Float, nullable=False),
)

#: Counters of SQL boards: "token" (the last fencing token on SQLite, moved by
#: the trigger `zag_job_tokens`; PostgreSQL uses the sequence `zag_job_tokens`)
#: and "changes" (bumped by each change; SQLite boards of other processes poll it).
job_counters = Table(
    "zag_job_counters",
    metadata,
    Column("name", String(16), primary_key=True),
    Column("value", BigInteger, nullable=False),
)


#: Signals sent to flows (migration 4): `seq` is the arrival order, `id` the
#: sender's idempotency key, `created_at` the database's clock at arrival, and
#: `taken_by` the token of the one wait that consumed the signal (NULL: pending).
signals = Table(
    "zag_signals",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("id", String(200), nullable=False, unique=True),
    Column("flow_uuid", String(36), nullable=False),
    Column("event", Text, nullable=False),
    Column("payload", Text),
    Column("created_at", Float, nullable=False),
    Column("taken_by", String(64)),
    Index("zag_signals_flow", "flow_uuid", "event", "seq"),
)

#: The signals no wait has taken yet: what the conductors' sweep looks for.
pending_signals = Index(
    "zag_signals_pending",
    signals.c.flow_uuid,
    postgresql_where=signals.c.taken_by.is_(None),
    sqlite_where=signals.c.taken_by.is_(None),
)


#: Newest-first listings (the operations UI's flows page, `zag-async flows list`)
#: read the top of this index instead of sorting the whole table; the uuid breaks
#: ties, so a keyset cursor (created_at, uuid) pages through it. State and name
#: ride along (migration 7 added all three) so that their filters are checked in the
#: index: a name filter matching nothing reads the index, not every row's page, and
#: a count per state of recent flows reads a range of it. (Flow names are at most
#: 255 characters, well inside an index entry; both columns rarely change.)
flows_created = Index(
    "zag_flows_created", flows.c.created_at, flows.c.uuid, flows.c.state, flows.c.name
)

#: Operator actions (migration 7): who did what to which flow or job, and when (the
#: database's clock). An audit log: nothing deletes its rows, a flow's deletion included.
actions = Table(
    "zag_actions",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("at", Float, nullable=False),
    Column("who", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("target", Text, nullable=False),
    Column("detail", Text, nullable=False),
    Index("zag_actions_target", "target", "id"),
)


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


def _v3_jobs(conn: Connection) -> None:
    """SQL job boards: jobs, idempotency keys, results, schedules, locks, counters."""
    tables = [jobs, job_keys, job_results, job_schedules, job_locks, job_counters]
    metadata.create_all(conn, tables=tables)
    conn.execute(
        job_counters.insert(), [{"name": "token", "value": 0}, {"name": "changes", "value": 0}]
    )
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("CREATE SEQUENCE IF NOT EXISTS zag_job_tokens")
    else:
        # A claim is one UPDATE taking the next token from the counter; this moves
        # the counter in the same statement.
        conn.exec_driver_sql(
            "CREATE TRIGGER zag_job_tokens AFTER UPDATE OF token ON zag_jobs BEGIN "
            "UPDATE zag_job_counters SET value = NEW.token "
            "WHERE name = 'token' AND value < NEW.token; END"
        )


def _v4_signals(conn: Connection) -> None:
    """Signals for flows that wait (`zag.signal`)."""
    metadata.create_all(conn, tables=[signals])


def _v5_pending_signals(conn: Connection) -> None:
    """An index of the signals not yet taken (a v4 database made by this code has it)."""
    pending_signals.create(conn, checkfirst=True)


def _v6_flows_created(conn: Connection) -> None:
    """An index of the flows by creation time (a new database gets it with the table, in
    migration 1; older ones here)."""
    flows_created.create(conn, checkfirst=True)


def _v7_actions(conn: Connection) -> None:
    """The record of operator actions, the flows' creation index keyed by
    (created_at, uuid) for keyset paging, with state and name (it was on created_at
    alone), and an index of finished jobs by when they finished (the UI lists the
    latest; a new database gets it with the table, in migration 3)."""
    job_results_finished.create(conn, checkfirst=True)
    found = {i["name"]: i["column_names"] for i in inspect(conn).get_indexes(flows.name)}
    if found.get(flows_created.name) != [c.name for c in flows_created.columns]:
        if flows_created.name in found:
            conn.exec_driver_sql(f"DROP INDEX {flows_created.name}")
        flows_created.create(conn)
    metadata.create_all(conn, tables=[actions])


#: Migration N (1-based) brings the schema from version N-1 to N.
MIGRATIONS: list[Callable[[Connection], None]] = [
    _v1,
    _v2,
    _v3_jobs,
    _v4_signals,
    _v5_pending_signals,
    _v6_flows_created,
    _v7_actions,
]
SCHEMA_VERSION = len(MIGRATIONS)
assert SCHEMA_VERSION == names.SCHEMA_VERSION, "bump names.SCHEMA_VERSION with a migration"


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
