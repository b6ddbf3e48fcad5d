"""The database under a SQL job board: connections, transactions, the clock, errors.

A SQL board's parts (jobs, claims and leases, wake-ups, locks) all talk to one
database the same few ways, and the dialect differences (how SQLite takes its
write lock, how PostgreSQL reads its clock and hands out fencing tokens) are
easier to trust written once. So this module owns the board's own SQLAlchemy
engine (the flow backend's engine is that backend's business), and everything
else asks it for a read, a write transaction or the database's time.

Every time a board uses is the DATABASE's clock, in epoch seconds: PostgreSQL's
`statement_timestamp()`, SQLite's `julianday('now')` (millisecond precision).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import Float, Table, event, literal_column, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.elements import ColumnElement

from ..errors import BoardUnavailable
from ..persistence.schema import job_counters
from ..persistence.urls import parse_url

__all__ = ["NOTIFY_CHANNEL", "BoardDb"]

#: The PostgreSQL channel every SQL board of a database notifies and listens on.
NOTIFY_CHANNEL = "zag_jobs"

_CLOCKS = {
    "postgresql": "CAST(EXTRACT(EPOCH FROM statement_timestamp()) AS DOUBLE PRECISION)",
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
}


class BoardDb:
    """One SQL board's connection to its database.

    Args:
        url: `sqlite+aiosqlite:///path.db` or `postgresql+asyncpg://user@host/db`.
        connect_timeout: seconds to wait for a connection before a call fails
            with BoardUnavailable.
    """

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        parsed = parse_url(url)
        self.dialect = parsed.get_backend_name()
        self.url = url
        self.display = parsed.render_as_string(hide_password=True)
        self.connect_timeout = connect_timeout
        #: the database's clock as a SQL expression (epoch seconds)
        self.now_sql: ColumnElement[float] = literal_column(_CLOCKS[self.dialect], Float)
        self._engine: AsyncEngine | None = None
        self._reader: AsyncEngine | None = None
        self._offset = 0.0  # the database's clock minus ours, as last seen

    @property
    def postgres(self) -> bool:
        return self.dialect == "postgresql"

    def insert(self, table: Table) -> Any:
        """The dialect's INSERT (it has ON CONFLICT)."""
        return postgresql.insert(table) if self.postgres else sqlite.insert(table)

    def asyncpg_dsn(self) -> str:
        """The URL as a plain libpq DSN (for the listening asyncpg connection)."""
        url = make_url(self.url).set(drivername="postgresql")
        return url.render_as_string(hide_password=False)

    async def open(self) -> None:
        """Bring the schema up to date (the flow backend's migrations) and connect."""
        if self._engine is not None:
            return
        from ..persistence import upgrade

        await upgrade(self.url)
        kwargs: dict[str, Any] = {"connect_args": {"timeout": self.connect_timeout}}
        if self.postgres:
            kwargs["pool_timeout"] = self.connect_timeout
        else:
            # Transactions are begun and ended by hand (BEGIN IMMEDIATE ... COMMIT), so
            # the driver must not open its own, nor the pool roll back a finished one.
            kwargs["isolation_level"] = "AUTOCOMMIT"
            kwargs["pool_reset_on_return"] = None
        engine = create_async_engine(self.url, **kwargs)
        if not self.postgres:
            event.listen(engine.sync_engine, "connect", _sqlite_setup)
        self._engine = engine
        # Reads need no transaction of their own (no BEGIN/ROLLBACK round trips). The
        # SQLite engine is AUTOCOMMIT already: switching a connection's level there
        # costs a driver call on each checkout and return (and a window in which a
        # cancelled caller would leave the connection checked out).
        self._reader = (
            engine.execution_options(isolation_level="AUTOCOMMIT") if self.postgres else engine
        )

    async def aclose(self) -> None:
        engine, self._engine, self._reader = self._engine, None, None
        if engine is not None:
            await engine.dispose()

    # -- the clock -----------------------------------------------------------------

    def observe(self, db_now: float) -> None:
        """Remember the database's time just read (for `estimate_now`)."""
        self._offset = db_now - time.time()

    def estimate_now(self) -> float:
        """The database's clock without a round trip (from the last time one was seen)."""
        return time.time() + self._offset

    async def now(self) -> float:
        async with self.read() as conn:
            value = float((await conn.execute(select(self.now_sql))).scalar_one())
        self.observe(value)
        return value

    # -- connections -----------------------------------------------------------------

    def _engine_or_fail(self) -> AsyncEngine:
        if self._engine is None:
            raise BoardUnavailable(f"board {self.display} is not open")
        return self._engine

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection without a transaction: each statement commits (and sees commits) alone."""
        self._engine_or_fail()
        assert self._reader is not None
        async with mapped(self.display), self._reader.connect() as conn:
            yield conn

    def single(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        """A connection where each statement commits on its own (one-statement writes)."""
        return self.read()

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction, committed on exit (rolled back on an exception).

        On SQLite it starts with BEGIN IMMEDIATE: a transaction that reads before
        it writes would otherwise fail at once (SQLITE_BUSY) when another process
        committed in between, instead of waiting its turn.
        """
        engine = self._engine_or_fail()
        async with mapped(self.display):
            if self.postgres:
                async with engine.begin() as conn:
                    yield conn
                return
            async with engine.connect() as conn:
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    await conn.exec_driver_sql("ROLLBACK")
                    raise
                await conn.exec_driver_sql("COMMIT")

    async def changed(self, conn: AsyncConnection) -> None:
        """Tell other processes, in this transaction, that jobs changed.

        PostgreSQL: a NOTIFY, delivered at commit. SQLite: bump the "changes"
        counter the boards of other processes poll.
        """
        if self.postgres:
            await conn.exec_driver_sql(f"SELECT pg_notify('{NOTIFY_CHANNEL}', '')")
        else:
            await conn.execute(
                update(job_counters)
                .where(job_counters.c.name == "changes")
                .values(value=job_counters.c.value + 1)
            )

    async def change_count(self) -> int:
        """SQLite: the "changes" counter (what `changed()` bumps)."""
        async with self.read() as conn:
            query = select(job_counters.c.value).where(job_counters.c.name == "changes")
            return int((await conn.execute(query)).scalar_one())


@contextlib.asynccontextmanager
async def mapped(display: str) -> AsyncIterator[None]:
    """Turn database and connection errors into BoardUnavailable."""
    try:
        yield
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        raise BoardUnavailable(f"board {display}: {_first_line(exc)}") from exc
    except Exception as exc:
        if type(exc).__module__.startswith(("asyncpg", "aiosqlite", "sqlite3")):
            raise BoardUnavailable(f"board {display}: {exc!r}") from exc
        raise


def _first_line(exc: BaseException) -> str:
    orig = exc.orig if isinstance(exc, DBAPIError) else None
    lines = str(orig if orig is not None else exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _sqlite_setup(dbapi_conn: Any, _record: Any) -> None:
    """WAL (readers never block the writer) and a generous wait for the write lock."""
    cursor = dbapi_conn.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=10000"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()
