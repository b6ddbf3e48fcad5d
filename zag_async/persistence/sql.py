"""SQL backends through SQLAlchemy asyncio Core: SQLite (aiosqlite) and PostgreSQL (asyncpg).

`sqlite+aiosqlite:///path.db` is the embedded durable default (WAL journal,
synchronous=NORMAL: a commit survives a process crash, and costs tens of
microseconds); `postgresql+asyncpg://user@host/db` is the server one. Each
write is one transaction: a conditional UPDATE of the flow row (its version)
and one multi-row upsert of the changed atoms. Lease expiries are reckoned by
the database's clock, so the hosts' clocks need not agree.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    Select,
    bindparam,
    delete,
    event,
    func,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ..codec import Codec
from ..errors import (
    ConcurrentUpdate,
    ConfigurationError,
    NotFound,
    StorageError,
    StorageUnavailable,
)
from ..models import FlowSummary, LogBook
from ..states import FlowState
from . import schema
from .base import Backend, Row
from .leases import DEFAULT_LEASE, Holder
from .schema import atoms, flows, logbooks, signals

__all__ = ["SqlBackend", "hide_password", "parse_url"]


def parse_url(url: str) -> URL:
    """`url` parsed, or ConfigurationError at once when it cannot name a database
    (bad syntax or port, another driver, SQLite without a file), so a typo never
    waits for a connection timeout."""
    hidden = hide_password(url)
    try:
        parsed = make_url(url)
        parsed.port  # noqa: B018 - parsing checks the port too
    except (ArgumentError, ValueError) as exc:
        raise ConfigurationError(f"malformed database URL {hidden!r}: {exc}") from None
    drivers = {"sqlite": "aiosqlite", "postgresql": "asyncpg"}
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if drivers.get(backend) != driver:
        raise ConfigurationError(
            f"unsupported database URL {hidden!r}: use sqlite+aiosqlite:///path.db or "
            f"postgresql+asyncpg://user@host/db"
        )
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ConfigurationError(
            f"SQLite URL {hidden!r} names no file: use sqlite+aiosqlite:///path.db "
            f"(an in-memory database would lose the flows it exists to keep)"
        )
    return parsed


def hide_password(url: str) -> str:
    """`url` with any password between `user:` and `@` replaced by ***."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not (sep and at and ":" in userinfo):
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"


_LEASE_COLUMNS = ("lease_owner", "lease_expires")
_FLOW_COLUMNS = [c.name for c in flows.columns if c.name not in ("uuid", *_LEASE_COLUMNS)]
_ATOM_COLUMNS = [c.name for c in atoms.columns if c.name not in ("flow_uuid", "name")]
_SUMMARY_COLUMNS = [flows.c[n] for n in ("uuid", "name", "state", "logbook", "owner")] + [
    flows.c[n] for n in ("created_at", "updated_at", "version")
]


class SqlBackend(Backend):
    """Flow state in SQLite or PostgreSQL.

    Args:
        url: a SQLAlchemy async URL (`sqlite+aiosqlite:///...` or `postgresql+asyncpg://...`).
        upgrade: bring the schema up to date on open (default); with False,
            open fails unless `zag-async db upgrade URL` has been run.
        connect_timeout: seconds to wait for a connection before the write
            counts as failed (then retried by the engine, with backoff).
        lease: seconds an engine's lease on a flow lasts unless renewed.
    """

    def __init__(
        self,
        url: str,
        *,
        codec: Codec | None = None,
        upgrade: bool = True,
        connect_timeout: float = 5.0,
        pool_size: int = 5,
        lease: float = DEFAULT_LEASE,
    ) -> None:
        super().__init__(url, codec=codec, lease=lease)
        parsed = parse_url(url)
        self.dialect = parsed.get_backend_name()
        self._display = parsed.render_as_string(hide_password=True)
        self._auto_upgrade = upgrade
        self._connect_timeout = connect_timeout
        self._pool_size = pool_size
        self._engine: AsyncEngine | None = None
        dialect_insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        upsert = dialect_insert(atoms)
        self._upsert_atoms = upsert.on_conflict_do_update(
            index_elements=[atoms.c.flow_uuid, atoms.c.name],
            set_={name: upsert.excluded[name] for name in _ATOM_COLUMNS},
        )
        self._now: ColumnElement[float] = literal_column(
            "EXTRACT(EPOCH FROM statement_timestamp())::float8"
            if self.dialect == "postgresql"
            else "((julianday('now') - 2440587.5) * 86400.0)",
            Float,
        )
        self._insert_flow = dialect_insert(flows).on_conflict_do_nothing(
            index_elements=[flows.c.uuid]
        )
        self._insert_leased_flow = (
            dialect_insert(flows)
            .values(lease_expires=self._now + bindparam("lease_seconds", type_=Float))
            .on_conflict_do_nothing(index_elements=[flows.c.uuid])
        )
        self._update_flow = (
            update(flows)
            .where(flows.c.uuid == bindparam("w_uuid"), flows.c.version == bindparam("w_expected"))
            .values({name: bindparam(f"w_{name}") for name in _FLOW_COLUMNS})
        )
        self._update_releasing_flow = self._update_flow.values(lease_owner=None, lease_expires=None)
        self._insert_signal_row = (
            dialect_insert(signals)
            .values(created_at=self._now)
            .on_conflict_do_nothing(index_elements=[signals.c.id])
        )
        book = dialect_insert(logbooks)
        self._upsert_logbook = book.on_conflict_do_update(
            index_elements=[logbooks.c.uuid],
            set_={"name": book.excluded.name, "meta": book.excluded.meta},
        )

    # -- lifecycle ---------------------------------------------------------------

    async def open(self) -> None:
        self._check_open()
        if self._engine is not None:
            return
        # No pre-ping: it costs three round trips per commit, and a dead pooled
        # connection already surfaces as StorageUnavailable, which the engine
        # retries on a fresh connection.
        kwargs: dict[str, Any] = {}
        if self.dialect == "postgresql":
            kwargs["connect_args"] = {"timeout": self._connect_timeout}
            kwargs["pool_size"] = self._pool_size
            kwargs["pool_timeout"] = self._connect_timeout
        else:
            kwargs["connect_args"] = {"timeout": self._connect_timeout}
        engine = create_async_engine(self.url, **kwargs)
        if self.dialect == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        self._engine = engine
        try:
            if self._auto_upgrade:
                await self.upgrade()
            else:
                async with self._connect() as conn:
                    version = await conn.run_sync(schema.current_version)
                if version != schema.SCHEMA_VERSION:
                    raise StorageError(
                        f"{self._display}: schema is at version {version}, this zag-async "
                        f"needs {schema.SCHEMA_VERSION}; run: zag-async db upgrade URL"
                    )
        except BaseException as exc:
            self._engine = None
            await engine.dispose()
            if self.dialect == "sqlite" and isinstance(exc, Exception):
                # aiosqlite stops its thread after a failed connect without awaiting
                # it; give it a moment to report back before the caller's loop may
                # close, or the thread dies on "Event loop is closed".
                await asyncio.sleep(0.02)
            raise

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    async def upgrade(self) -> int:
        if self.dialect == "sqlite":
            return await self._upgrade_sqlite()
        async with self._begin() as conn:
            # Two processes upgrading at once take turns.
            await conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7263540192)")
            return await self._migrate(conn)

    async def _upgrade_sqlite(self) -> int:
        """Migrate inside BEGIN IMMEDIATE: the driver would run the DDL outside any
        transaction, so two processes opening a new file would both create tables."""
        async with self._connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.exec_driver_sql("BEGIN IMMEDIATE")  # waits out the busy timeout
            try:
                version = await self._migrate(conn)
            except BaseException:
                await conn.exec_driver_sql("ROLLBACK")
                raise
            await conn.exec_driver_sql("COMMIT")
            return version

    async def _migrate(self, conn: AsyncConnection) -> int:
        try:
            return int(await conn.run_sync(schema.migrate))
        except RuntimeError as exc:
            raise StorageError(f"{self._display}: {exc}") from exc

    # -- plumbing ----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _mapped(self) -> AsyncIterator[None]:
        """Turn driver errors into zag errors (connection trouble -> StorageUnavailable)."""
        try:
            yield
        except (ConcurrentUpdate, NotFound, StorageError):
            raise
        except (OperationalError, InterfaceError, DisconnectionError, PoolTimeout) as exc:
            raise StorageUnavailable(f"{self._display}: {_short(exc)}") from exc
        except DBAPIError as exc:
            if exc.connection_invalidated or _transient(exc):
                raise StorageUnavailable(f"{self._display}: {_short(exc)}") from exc
            raise StorageError(f"{self._display}: {_short(exc)}") from exc
        except (OSError, TimeoutError) as exc:
            raise StorageUnavailable(f"{self._display}: {exc!r}") from exc
        except Exception as exc:
            if type(exc).__module__.startswith(("asyncpg", "aiosqlite", "sqlite3")):
                raise StorageUnavailable(f"{self._display}: {exc!r}") from exc
            raise

    def _engine_or_fail(self) -> AsyncEngine:
        self._check_open()
        if self._engine is None:
            raise StorageError(f"{self._display} is not open; use 'async with' or await open()")
        return self._engine

    @contextlib.asynccontextmanager
    async def _begin(self) -> AsyncIterator[AsyncConnection]:
        engine = self._engine_or_fail()
        async with self._mapped(), engine.begin() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def _connect(self) -> AsyncIterator[AsyncConnection]:
        engine = self._engine_or_fail()
        async with self._mapped(), engine.connect() as conn:
            yield conn

    # -- logbooks ----------------------------------------------------------------

    async def save_logbook(self, book: LogBook) -> None:
        async with self._begin() as conn:
            await conn.execute(self._upsert_logbook, [self.logbook_row(book)])

    async def get_logbook(self, uuid: str) -> LogBook:
        async with self._connect() as conn:
            query = select(logbooks).where(logbooks.c.uuid == uuid)
            row = (await conn.execute(query)).mappings().first()
        if row is None:
            raise NotFound(f"no logbook {uuid!r} in {self._display}")
        return self.logbook_from_row(dict(row))

    async def list_logbooks(self) -> list[LogBook]:
        async with self._connect() as conn:
            query = select(logbooks).order_by(logbooks.c.created_at)
            rows = (await conn.execute(query)).mappings().all()
        return [self.logbook_from_row(dict(r)) for r in rows]

    async def delete_logbook(self, uuid: str) -> None:
        async with self._begin() as conn:
            ids = select(flows.c.uuid).where(flows.c.logbook == uuid)
            await conn.execute(delete(atoms).where(atoms.c.flow_uuid.in_(ids)))
            await conn.execute(delete(signals).where(signals.c.flow_uuid.in_(ids)))
            await conn.execute(delete(flows).where(flows.c.logbook == uuid))
            await conn.execute(delete(logbooks).where(logbooks.c.uuid == uuid))

    # -- flows -------------------------------------------------------------------

    async def _write(self, flow_row: Row, atom_rows: list[Row], expected: int) -> None:
        uuid = flow_row["uuid"]
        row = dict(flow_row)
        lease_seconds = row.pop("lease_seconds", None)
        leasing = "lease_owner" in row
        async with self._begin() as conn:
            if expected == 0:
                if leasing and lease_seconds is not None:
                    row["lease_seconds"] = lease_seconds
                    result = await conn.execute(self._insert_leased_flow, [row])
                else:
                    row.pop("lease_owner", None)
                    result = await conn.execute(self._insert_flow, [row])
            else:
                row.pop("lease_owner", None)
                params = {f"w_{k}": v for k, v in row.items()}
                params["w_expected"] = expected
                statement = self._update_releasing_flow if leasing else self._update_flow
                result = await conn.execute(statement, params)
            if result.rowcount != 1:
                raise self.stale(uuid, expected)
            if atom_rows:
                await conn.execute(self._upsert_atoms, atom_rows)

    async def _read(self, uuid: str) -> tuple[Row, list[Row]]:
        async with self._connect() as conn:
            row = (await conn.execute(select(flows).where(flows.c.uuid == uuid))).mappings().first()
            if row is None:
                raise NotFound(f"no flow {uuid!r} in {self._display}")
            query = select(atoms).where(atoms.c.flow_uuid == uuid)
            rows = (await conn.execute(query)).mappings().all()
        return dict(row), [dict(r) for r in rows]

    async def _claim(self, uuid: str, owner: str, expected: int) -> None:
        async with self._begin() as conn:
            result = await conn.execute(
                update(flows)
                .where(flows.c.uuid == uuid, flows.c.version == expected)
                .values(owner=owner, version=expected + 1)
            )
            if result.rowcount == 1:
                return
            exists = (await conn.execute(select(flows.c.uuid).where(flows.c.uuid == uuid))).first()
        if exists is None:
            raise NotFound(f"no flow {uuid!r} in {self._display}")
        raise self.stale(uuid, expected)

    async def _take(
        self,
        uuid: str,
        owner: str,
        expected: int,
        seconds: float,
        *,
        claim: str | None,
        steal: bool | str,
    ) -> Holder | None:
        now = self._now
        query = update(flows).where(flows.c.uuid == uuid, flows.c.version == expected)
        if steal is not True:
            free = [
                flows.c.lease_owner.is_(None),
                flows.c.lease_owner == owner,
                flows.c.lease_expires < now,
            ]
            if steal:
                free.append(flows.c.lease_owner == steal)
            query = query.where(or_(*free))
        values: dict[str, Any] = {
            "lease_owner": owner,
            "lease_expires": now + seconds,
            "version": expected + 1,
        }
        if claim is not None:
            values["owner"] = claim
        async with self._begin() as conn:
            result = await conn.execute(query.values(values))
            if result.rowcount == 1:
                return None
            found = (
                await conn.execute(
                    select(flows.c.version, flows.c.lease_owner, flows.c.lease_expires, now).where(
                        flows.c.uuid == uuid
                    )
                )
            ).first()
        if found is None:
            raise NotFound(f"no flow {uuid!r} in {self._display}")
        version, holder, expires, db_now = found
        live = holder is not None and expires is not None and expires >= db_now
        if live and holder not in (owner, steal) and steal is not True:
            return Holder(holder, float(expires), float(db_now))  # busy, whatever the version
        raise self.stale(uuid, expected)

    async def _renew(self, uuid: str, owner: str, seconds: float) -> bool:
        query = (
            update(flows)
            .where(flows.c.uuid == uuid, flows.c.lease_owner == owner)
            .values(lease_expires=self._now + seconds)
        )
        async with self._begin() as conn:
            result = await conn.execute(query)
        return bool(result.rowcount == 1)

    # -- signals and the clock -----------------------------------------------------

    async def clock(self) -> float:
        async with self._connect() as conn:
            return float((await conn.execute(select(self._now))).scalar_one())

    async def _insert_signal(self, row: Row) -> tuple[Row, bool]:
        async with self._begin() as conn:
            # PostgreSQL stamps created_at before the commit: a take (which locks
            # the flow's row) waits for this commit rather than miss a signal
            # stamped before a deadline it has seen pass. SQLite serializes writes.
            await conn.execute(self._flow_key(row["flow_uuid"]).with_for_update(key_share=True))
            result = await conn.execute(self._insert_signal_row, [row])
            query = select(signals).where(signals.c.id == row["id"])
            stored = (await conn.execute(query)).mappings().one()
        return dict(stored), result.rowcount == 1

    async def _take_signal(
        self, flow_id: str, event: str, taker: str, arrived_by: float | None
    ) -> Row | None:
        mine = select(signals).where(signals.c.flow_uuid == flow_id, signals.c.taken_by == taker)
        oldest = select(func.min(signals.c.seq)).where(
            signals.c.flow_uuid == flow_id,
            signals.c.event == event,
            signals.c.taken_by.is_(None),
        )
        if arrived_by is not None:
            oldest = oldest.where(signals.c.created_at <= arrived_by)
        take = (
            update(signals)
            .where(signals.c.seq == oldest.scalar_subquery(), signals.c.taken_by.is_(None))
            .values(taken_by=taker)
        )
        async with self._begin() as conn:
            await conn.execute(self._flow_key(flow_id).with_for_update())  # see _insert_signal
            found = (await conn.execute(mine)).mappings().first()
            if found is None and (await conn.execute(take)).rowcount == 1:
                found = (await conn.execute(mine)).mappings().first()
        return None if found is None else dict(found)

    async def _signal_row(self, signal_id: str) -> Row | None:
        async with self._connect() as conn:
            rows = await conn.execute(select(signals).where(signals.c.id == signal_id))
            found = rows.mappings().first()
        return None if found is None else dict(found)

    @staticmethod
    def _flow_key(flow_id: str) -> Select[tuple[str]]:
        return select(flows.c.uuid).where(flows.c.uuid == flow_id)

    async def _signalled_flows(self) -> dict[str, int]:
        query = (
            select(signals.c.flow_uuid, func.max(signals.c.seq))
            .join(flows, flows.c.uuid == signals.c.flow_uuid)
            .where(signals.c.taken_by.is_(None), flows.c.state == str(FlowState.WAITING))
            .group_by(signals.c.flow_uuid)
        )
        async with self._connect() as conn:
            rows = (await conn.execute(query)).all()
        return {str(flow_id): int(seq) for flow_id, seq in rows}

    async def _signal_rows(self, flow_id: str) -> list[Row]:
        query = select(signals).where(signals.c.flow_uuid == flow_id).order_by(signals.c.seq)
        async with self._connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [dict(r) for r in rows]

    async def list_flows(
        self,
        *,
        logbook: str | None = None,
        states: Sequence[FlowState] | None = None,
        newest_first: bool = False,
        limit: int | None = None,
    ) -> list[FlowSummary]:
        created = flows.c.created_at
        query = select(*_SUMMARY_COLUMNS).order_by(created.desc() if newest_first else created)
        if limit is not None:
            query = query.limit(limit)
        if logbook is not None:
            query = query.where(flows.c.logbook == logbook)
        if states is not None:
            query = query.where(flows.c.state.in_([str(s) for s in states]))
        async with self._connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [self.summary_from_row(dict(r)) for r in rows]

    async def delete_flow(self, uuid: str) -> None:
        async with self._begin() as conn:
            await conn.execute(delete(atoms).where(atoms.c.flow_uuid == uuid))
            await conn.execute(delete(signals).where(signals.c.flow_uuid == uuid))
            await conn.execute(delete(flows).where(flows.c.uuid == uuid))


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


#: SQLSTATE classes/codes worth retrying: connection exceptions, the server
#: shutting down, starting up or recovering, resource exhaustion.
_TRANSIENT_STATES = ("08", "53", "57P01", "57P02", "57P03", "40001", "40P01")


def _transient(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            break
        state = getattr(seen, "sqlstate", None) or getattr(seen, "pgcode", None)
        if isinstance(state, str) and state.startswith(_TRANSIENT_STATES):
            return True
        if type(seen).__name__ in ("CannotConnectNowError", "ConnectionDoesNotExistError"):
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


def _short(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
