"""The whole SQLite schema at its current version, as plain SQL.

A new file gets these statements in one transaction, so the first start of an
embedded service imports no SQLAlchemy; older files go through `schema.migrate`.
They are the statements SQLAlchemy emits for `schema.metadata`; a test creates
a file both ways and compares what SQLite keeps of each.
"""

from __future__ import annotations

from .names import SCHEMA_VERSION

__all__ = ["FRESH"]

#: Run in order inside BEGIN IMMEDIATE on a file with no zag tables.
FRESH: tuple[str, ...] = (
    """CREATE TABLE zag_schema_version (
        version INTEGER NOT NULL
    )""",
    """CREATE TABLE zag_logbooks (
        uuid VARCHAR(36) NOT NULL,
        name TEXT NOT NULL,
        meta TEXT,
        created_at FLOAT NOT NULL,
        PRIMARY KEY (uuid)
    )""",
    """CREATE TABLE zag_flows (
        uuid VARCHAR(36) NOT NULL,
        logbook VARCHAR(36),
        name TEXT NOT NULL,
        state VARCHAR(16) NOT NULL,
        owner TEXT,
        store TEXT,
        meta TEXT,
        created_at FLOAT NOT NULL,
        updated_at FLOAT NOT NULL,
        version INTEGER NOT NULL,
        lease_owner TEXT,
        lease_expires FLOAT,
        PRIMARY KEY (uuid)
    )""",
    "CREATE INDEX zag_flows_state ON zag_flows (state)",
    "CREATE INDEX zag_flows_logbook ON zag_flows (logbook)",
    """CREATE TABLE zag_atoms (
        flow_uuid VARCHAR(36) NOT NULL,
        name TEXT NOT NULL,
        kind VARCHAR(8) NOT NULL,
        state VARCHAR(16) NOT NULL,
        intention VARCHAR(8) NOT NULL,
        result TEXT,
        failure TEXT,
        revert_result TEXT,
        revert_failure TEXT,
        history TEXT,
        duration FLOAT,
        attempts INTEGER NOT NULL,
        meta TEXT,
        position INTEGER NOT NULL,
        PRIMARY KEY (flow_uuid, name),
        FOREIGN KEY(flow_uuid) REFERENCES zag_flows (uuid) ON DELETE CASCADE
    )""",
    """CREATE TABLE zag_jobs (
        seq INTEGER NOT NULL,
        uuid VARCHAR(36) NOT NULL,
        name TEXT NOT NULL,
        flow_id VARCHAR(36) NOT NULL,
        data TEXT NOT NULL,
        priority INTEGER NOT NULL,
        due_at FLOAT NOT NULL,
        posted_at FLOAT NOT NULL,
        idempotency_key TEXT,
        schedule TEXT,
        build_failures INTEGER NOT NULL,
        last_build_error TEXT,
        owner TEXT,
        lease_until FLOAT,
        token BIGINT,
        version INTEGER NOT NULL,
        PRIMARY KEY (seq),
        UNIQUE (uuid)
    )""",
    "CREATE INDEX zag_jobs_schedule ON zag_jobs (schedule)",
    "CREATE INDEX zag_jobs_order ON zag_jobs (priority, seq)",
    "CREATE INDEX zag_jobs_owner ON zag_jobs (owner)",
    """CREATE TABLE zag_job_keys (
        "key" TEXT NOT NULL,
        job_uuid VARCHAR(36) NOT NULL,
        PRIMARY KEY ("key")
    )""",
    """CREATE TABLE zag_job_results (
        job_uuid VARCHAR(36) NOT NULL,
        outcome TEXT NOT NULL,
        job TEXT NOT NULL,
        trash_reason TEXT,
        finished_at FLOAT NOT NULL,
        PRIMARY KEY (job_uuid)
    )""",
    """CREATE TABLE zag_job_schedules (
        name TEXT NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (name)
    )""",
    """CREATE TABLE zag_job_locks (
        name TEXT NOT NULL,
        holder TEXT NOT NULL,
        lease_until FLOAT NOT NULL,
        PRIMARY KEY (name)
    )""",
    """CREATE TABLE zag_job_counters (
        name VARCHAR(16) NOT NULL,
        value BIGINT NOT NULL,
        PRIMARY KEY (name)
    )""",
    (
        "CREATE TRIGGER zag_job_tokens AFTER UPDATE OF token ON zag_jobs BEGIN UPDATE "
        "zag_job_counters SET value = NEW.token WHERE name = 'token' AND value < NEW.token; "
        "END"
    ),
    """CREATE TABLE zag_signals (
        seq INTEGER NOT NULL,
        id VARCHAR(200) NOT NULL,
        flow_uuid VARCHAR(36) NOT NULL,
        event TEXT NOT NULL,
        payload TEXT,
        created_at FLOAT NOT NULL,
        taken_by VARCHAR(64),
        PRIMARY KEY (seq),
        UNIQUE (id)
    )""",
    "CREATE INDEX zag_signals_flow ON zag_signals (flow_uuid, event, seq)",
    "CREATE INDEX zag_signals_pending ON zag_signals (flow_uuid) WHERE taken_by IS NULL",
    "CREATE INDEX zag_flows_created ON zag_flows (created_at, uuid, state, name)",
    """CREATE TABLE zag_actions (
        id INTEGER NOT NULL,
        at FLOAT NOT NULL,
        who TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL,
        PRIMARY KEY (id)
    )""",
    "CREATE INDEX zag_actions_target ON zag_actions (target, id)",
    "CREATE INDEX zag_job_results_finished ON zag_job_results (finished_at)",
    "INSERT INTO zag_job_counters (name, value) VALUES ('token', 0), ('changes', 0)",
    f"INSERT INTO zag_schema_version (version) VALUES ({SCHEMA_VERSION})",
)
