"""Counting transactions for S4: PostgreSQL's own counters and SQLAlchemy's COMMITs.

PostgreSQL (``pg_stat_database``) is the authority: ``xact_commit`` counts every
committed transaction in a database, whichever driver or library sent it. Its
counters are updated asynchronously: a backend keeps its counts pending and
flushes them at most once a second while busy, ten seconds after it goes idle,
or when it exits. So a measured window here always ends with the library's
connections closed: :meth:`PgCounters.snapshot` waits until no session is left
in the database (an exiting backend flushes its counts before it leaves
``pg_stat_activity``), clears the statistics snapshot and reads. The reading
connection is on another database (``postgres``), so its own transactions
never appear in the bench database's counters. The one thing subtracted: every
new session runs one transaction of its own at start-up (InitPostgres reads the
catalogs), so ``net_commits`` = ``xact_commit`` delta - ``sessions`` delta. A raw
asyncpg loop of N single-row transactions measures exactly N this way.

SQLite has no such counters: :class:`CommitCounter` counts the COMMITs
SQLAlchemy issues (both libraries use SQLAlchemy), per database. It also counts
read-only transactions that SQLAlchemy commits, so it is an upper bound; on
PostgreSQL it is shown beside ``xact_commit`` as a cross-check.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit


def database_of(url: str) -> str:
    """The database part of a SQLAlchemy URL (a file path for SQLite)."""
    if url.startswith("sqlite"):
        return url.split("///", 1)[1]
    return urlsplit(url).path.lstrip("/")


def admin_dsn(url: str) -> str:
    """A libpq DSN for the ``postgres`` database on the server ``url`` points at."""
    parts = urlsplit(url)
    parts = parts._replace(scheme=parts.scheme.split("+")[0], path="/postgres")
    return urlunsplit(parts)


@dataclass(frozen=True)
class Counters:
    commits: int
    rollbacks: int
    sessions: int

    @property
    def net_commits(self) -> int:
        """Commits minus each new session's own start-up transaction."""
        return self.commits - self.sessions

    def __sub__(self, other: Counters) -> Counters:
        return Counters(
            self.commits - other.commits,
            self.rollbacks - other.rollbacks,
            self.sessions - other.sessions,
        )


class PgCounters:
    """``pg_stat_database`` counters of one database, read from the ``postgres`` database."""

    def __init__(self, url: str, *, idle_timeout: float = 15.0) -> None:
        import psycopg2

        self.dbname = database_of(url)
        self.idle_timeout = idle_timeout
        self._conn = psycopg2.connect(admin_dsn(url), connect_timeout=5)
        self._conn.autocommit = True
        self.stray_waits = 0  # windows that ended with someone else still connected

    def close(self) -> None:
        self._conn.close()

    def _one(self, sql: str, *args: Any) -> Any:
        with self._conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchone()

    def recreate(self) -> None:
        """Drop and create the bench database: every session starts from an empty schema."""
        with self._conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')
            cur.execute(f'CREATE DATABASE "{self.dbname}"')

    def wait_idle(self) -> bool:
        """Wait until no session is connected to the database; False on timeout."""
        deadline = time.monotonic() + self.idle_timeout
        while True:
            (busy,) = self._one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", self.dbname
            )
            if busy == 0:
                return True
            if time.monotonic() > deadline:
                self.stray_waits += 1
                return False
            time.sleep(0.002)

    def snapshot(self) -> Counters:
        """Counters once every session of the database has gone (and flushed its counts)."""
        self.wait_idle()
        self._one("SELECT pg_stat_clear_snapshot()")
        row = self._one(
            "SELECT xact_commit, xact_rollback, sessions FROM pg_stat_database WHERE datname = %s",
            self.dbname,
        )
        return Counters(*row)


class CommitCounter:
    """Counts SQLAlchemy COMMITs per database (a class-level ``Engine`` event).

    Async engines are included: their work runs on a synchronous ``Engine``.
    """

    _installed = False
    counts: collections.Counter[str] = collections.Counter()

    @classmethod
    def install(cls) -> None:
        if cls._installed:
            return
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        def on_commit(conn: Any) -> None:
            cls.counts[str(conn.engine.url.database)] += 1

        event.listen(Engine, "commit", on_commit)
        cls._installed = True

    @classmethod
    def get(cls, url: str) -> int:
        return cls.counts[database_of(url)]
