"""The flow tables' column names and the schema version, without SQLAlchemy.

Backends that write SQL by hand (SQLite, PostgreSQL) build their statements
from these; `schema.py` declares the same tables for migrations, and a test
checks that both agree.
"""

from __future__ import annotations

__all__ = ["ATOM_COLUMNS", "FLOW_COLUMNS", "SCHEMA_VERSION", "SUMMARY_COLUMNS"]

#: The version `schema.migrate` brings a database to (its number of migrations).
SCHEMA_VERSION = 7

#: `zag_flows` columns a write sets, besides `uuid` and the lease.
FLOW_COLUMNS = (
    "logbook",
    "name",
    "state",
    "owner",
    "store",
    "meta",
    "created_at",
    "updated_at",
    "version",
)

#: `zag_atoms` columns a write sets, besides the key (`flow_uuid`, `name`).
ATOM_COLUMNS = (
    "kind",
    "state",
    "intention",
    "result",
    "failure",
    "revert_result",
    "revert_failure",
    "history",
    "duration",
    "attempts",
    "meta",
    "position",
)

#: What a flow listing reads.
SUMMARY_COLUMNS = (
    "uuid",
    "name",
    "state",
    "logbook",
    "owner",
    "created_at",
    "updated_at",
    "version",
)
