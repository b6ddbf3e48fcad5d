"""Flow state in PostgreSQL straight through asyncpg, with group commit across flows.

Through SQLAlchemy a commit paid its per-statement cost, a transaction of
three round trips, and one pooled session per concurrent writer. Here every
query is a prepared asyncpg statement, and every flow write (`save`, through
`_write`) and lease renewal goes through one writer:

- a write is ONE statement in autocommit (data-modifying CTEs: the conditional
  UPDATE of the flow row, or its INSERT ... ON CONFLICT DO NOTHING, then the
  upsert of its atoms from `unnest` of array parameters, guarded by what the
  flow statement returned), so a commit is one round trip and one transaction;
- writes that arrive while one is in flight queue up, and the writer sends
  everything queued (at most `BATCH_LIMIT`) as one such statement: one round
  trip and one commit for many flows. Each caller gets its own outcome: a
  flow whose stored version moved fails alone with `ConcurrentUpdate`; a lost
  connection fails the whole batch with `StorageUnavailable` (the engine
  retries, and finds out whether its write had landed). A lone write is sent
  at once (no linger timer); two writes of one flow never share a batch.

The writer is a task owned by the backend (started by `open()`, drained and
stopped by `aclose()`), rather than a leader/follower hand-off between
callers: a caller cancelled while its batch is in flight cannot cut the batch
short, and there is one place that holds the write connection.

Sessions: ONE asyncpg pool of `pool_size` connections serves everything,
the writer included (it takes a connection per batch), so a process never
opens more than `pool_size` sessions per backend whatever the number of
flows. SQLAlchemy is imported only to create or upgrade the schema.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import asyncpg  # type: ignore[import-untyped]

from ..codec import Codec
from ..errors import (
    ConfigurationError,
    NotFound,
    StorageError,
    StorageUnavailable,
)
from ..models import LogBook
from ..states import FlowState
from .base import Backend, Listing, Row, check_key, fold, like_pattern
from .leases import DEFAULT_LEASE, Holder
from .names import ATOM_COLUMNS, FLOW_COLUMNS, SCHEMA_VERSION, SUMMARY_COLUMNS
from .urls import hide_password

__all__ = ["BATCH_LIMIT", "PostgresBackend"]

logger = logging.getLogger("zag_async")

#: Most writes (and renewals) one group commit carries.
BATCH_LIMIT = 500

_NOW = "EXTRACT(EPOCH FROM statement_timestamp())::float8"
#: Parameter types of the columns that are not text.
_TYPES = dict.fromkeys(("created_at", "updated_at", "duration", "lease_seconds"), "float8") | (
    dict.fromkeys(("attempts", "position", "expected", "lease"), "int4")
)
_FLOW_DATA = tuple(c for c in FLOW_COLUMNS if c != "version")  # what a flow write carries
#: One flow write, as the group commit takes it (an array per column): `lease` = 1
#: clears the lease on update; an insert carries its lease (owner, seconds), if any.
_WRITE = ("uuid", "expected", *_FLOW_DATA, "lease", "lease_owner", "lease_seconds")
_ATOM_ROW = ("flow_uuid", "name", *ATOM_COLUMNS)
_SUMMARY = ", ".join(SUMMARY_COLUMNS)


def _unnest(first: int, columns: Sequence[str], alias: str) -> str:
    """`unnest($first::type[], ...) AS alias(columns)`: rows from one array per column."""
    params = ", ".join(f"${first + i}::{_TYPES.get(c, 'text')}[]" for i, c in enumerate(columns))
    return f"unnest({params}) AS {alias}({', '.join(columns)})"


_ATOMS_AT = 1 + len(_WRITE)
_RENEWALS_AT = _ATOMS_AT + len(_ATOM_ROW)

#: The group commit: flow writes (one array element per flow), their atoms (one
#: element per atom) and lease renewals, in one statement and one transaction.
#: Returns the uuid of every flow written or renewed (no flow appears twice).
_GROUP_COMMIT = f"""
WITH w AS (
    SELECT * FROM {_unnest(1, _WRITE, "w")}
),
updated AS (
    UPDATE zag_flows AS f SET
        {
    ", ".join(
        "version = w.expected + 1" if c == "version" else f"{c} = w.{c}" for c in FLOW_COLUMNS
    )
},
        lease_owner = CASE WHEN w.lease = 1 THEN NULL ELSE f.lease_owner END,
        lease_expires = CASE WHEN w.lease = 1 THEN NULL ELSE f.lease_expires END
    FROM w
    WHERE w.expected > 0 AND f.uuid = w.uuid AND f.version = w.expected
    RETURNING f.uuid
),
inserted AS (
    INSERT INTO zag_flows (uuid, {", ".join(FLOW_COLUMNS)}, lease_owner, lease_expires)
    SELECT uuid, {", ".join("1" if c == "version" else c for c in FLOW_COLUMNS)},
           lease_owner, {_NOW} + lease_seconds
    FROM w WHERE w.expected = 0
    ON CONFLICT (uuid) DO NOTHING
    RETURNING uuid
),
written AS (
    SELECT uuid FROM updated UNION ALL SELECT uuid FROM inserted
),
atoms AS (
    INSERT INTO zag_atoms ({", ".join(_ATOM_ROW)})
    SELECT a.* FROM {_unnest(_ATOMS_AT, _ATOM_ROW, "a")}
    WHERE a.flow_uuid IN (SELECT uuid FROM written)
    ON CONFLICT (flow_uuid, name) DO UPDATE SET
        {", ".join(f"{c} = EXCLUDED.{c}" for c in ATOM_COLUMNS)}
),
renewed AS (
    UPDATE zag_flows AS f SET lease_expires = {_NOW} + r.lease_seconds
    FROM {_unnest(_RENEWALS_AT, ("uuid", "owner", "lease_seconds"), "r")}
    WHERE f.uuid = r.uuid AND f.lease_owner = r.owner
    RETURNING f.uuid
)
SELECT uuid FROM written UNION ALL SELECT uuid FROM renewed
"""

_TAKE = f"""
UPDATE zag_flows SET lease_owner = $2, lease_expires = {_NOW} + $4,
    version = $3 + 1, owner = COALESCE($5, owner)
WHERE uuid = $1 AND version = $3 AND (
    $6 OR lease_owner IS NULL OR lease_owner = $2 OR lease_expires < {_NOW}
    OR lease_owner = $7
)
RETURNING 1
"""

#: SQLSTATE classes/codes worth retrying: connection exceptions, the server
#: shutting down, starting up or recovering, resource exhaustion, serialization.
_TRANSIENT_STATES = ("08", "53", "57P01", "57P02", "57P03", "40001", "40P01")


def asyncpg_dsn(url: str) -> str:
    """`postgresql+asyncpg://...` as the `postgresql://...` DSN asyncpg takes;
    ConfigurationError at once for a URL that cannot name a server (bad port, other driver)."""
    hidden = hide_password(url)
    scheme, sep, rest = url.partition("://")
    if scheme.lower() != "postgresql+asyncpg" or not sep:
        raise ConfigurationError(
            f"unsupported database URL {hidden!r}: use postgresql+asyncpg://user@host/db"
        )
    try:
        urlsplit(url).port  # noqa: B018 - parsing checks the port too
    except ValueError as exc:
        raise ConfigurationError(f"malformed database URL {hidden!r}: {exc}") from None
    return f"postgresql://{rest}"


@dataclass(eq=False, slots=True)
class _Op:
    """One flow write or lease renewal waiting for the writer."""

    uuid: str
    future: asyncio.Future[bool]
    flow: tuple[Any, ...] | None = None  # a write's values, in `_WRITE` order
    atoms: list[Row] = field(default_factory=list)
    renew: tuple[str, float] | None = None  # (owner, seconds)


class PostgresBackend(Backend):
    """Flow state in PostgreSQL, written through asyncpg with group commit.

    Args:
        url: `postgresql+asyncpg://user[:password]@host[:port]/db`.
        upgrade: bring the schema up to date on open (default); with False,
            open fails unless `zag-async db upgrade URL` has been run.
        connect_timeout: seconds to wait for a connection (new, or free in the
            pool) before the call fails with `StorageUnavailable`.
        pool_size: the most sessions this backend opens, whatever the number
            of flows (the group-commit writer uses one of them per batch).
        lease: seconds an engine's lease on a flow lasts unless renewed.

    Attributes:
        commits: group commits sent so far (each one statement, one transaction).
        writes: writes and renewals those commits carried.
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
        self._dsn = asyncpg_dsn(url)
        if not (isinstance(pool_size, int) and pool_size >= 1):
            raise ConfigurationError(f"pool_size must be an int >= 1, got {pool_size!r}")
        self._display = hide_password(url)
        self._auto_upgrade = upgrade
        self._connect_timeout = float(connect_timeout)
        self._pool_size = pool_size
        self._pool: Any = None
        self._queue: collections.deque[_Op] = collections.deque()
        self._wake = asyncio.Event()
        self._stopping = False
        self._writer: asyncio.Task[None] | None = None
        self.commits = 0
        self.writes = 0

    # -- lifecycle ---------------------------------------------------------------

    async def open(self) -> None:
        self._check_open()
        if self._pool is not None:
            return
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=self._pool_size,
                timeout=self._connect_timeout,
                reset=_no_reset,
                # Every statement here is fixed, its plan does not depend on the
                # values: plan once per connection. Left to itself the server keeps
                # re-planning the group commit (its CTEs take longer to plan than
                # to run). PostgreSQL 12 or newer.
                server_settings={"plan_cache_mode": "force_generic_plan"},
            )
        except Exception as exc:
            raise self._error(exc) from exc
        try:
            version = await self._schema_version()
            if version != SCHEMA_VERSION:
                if not self._auto_upgrade:
                    raise StorageError(
                        f"{self._display}: schema is at version {version}, this zag-async "
                        f"needs {SCHEMA_VERSION}; run: zag-async db upgrade URL"
                    )
                await self._migrate()
        except BaseException:
            pool, self._pool = self._pool, None
            pool.terminate()
            raise
        self._writer = asyncio.get_running_loop().create_task(
            self._write_loop(), name=f"zag-pg-writer {self._display}"
        )

    async def aclose(self) -> None:
        """Finish the writes already queued (bounded by `connect_timeout` + 5 s: what
        is left then fails with `StorageUnavailable`), then close the pool."""
        if self._closed:
            return
        self._closed = True
        writer, self._writer = self._writer, None
        pool = self._pool
        try:
            if writer is not None:
                self._stopping = True
                self._wake.set()
                await asyncio.wait({writer}, timeout=self._connect_timeout + 5.0)
                if not writer.done():
                    logger.warning("%r: writes still in flight at close; failing them", self)
        finally:
            if writer is not None:
                if not writer.done():
                    writer.cancel()  # its batch's callers get StorageUnavailable
                await asyncio.wait({writer})  # raises only our own cancellation
                if not writer.cancelled() and writer.exception() is not None:
                    logger.error("%r: the writer failed", self, exc_info=writer.exception())
            self._fail_queued(StorageUnavailable(f"{self._display}: backend closed"))
            self._pool = None
            if pool is not None:
                try:
                    async with asyncio.timeout(self._connect_timeout):
                        await pool.close()
                except Exception as exc:
                    pool.terminate()
                    logger.debug("%r: pool closed by force after %r", self, exc)
                except BaseException:
                    pool.terminate()
                    raise

    def __repr__(self) -> str:
        return f"PostgresBackend({self._display!r})"

    async def upgrade(self) -> int:
        version = await self._schema_version()
        if version == SCHEMA_VERSION:
            return version
        return await self._migrate()

    async def _schema_version(self) -> int:
        async with self._conn() as conn:
            if await conn.fetchval("SELECT to_regclass('zag_schema_version')") is None:
                return 0
            return int(await conn.fetchval("SELECT max(version) FROM zag_schema_version") or 0)

    async def _migrate(self) -> int:
        """Run `schema.migrate` through a short-lived SQLAlchemy engine (no pool),
        under an advisory lock, so two processes take turns."""
        from sqlalchemy.exc import DBAPIError, SQLAlchemyError
        from sqlalchemy.ext.asyncio import create_async_engine
        from sqlalchemy.pool import NullPool

        from . import schema

        engine = create_async_engine(
            self.url, poolclass=NullPool, connect_args={"timeout": self._connect_timeout}
        )
        try:
            async with engine.begin() as conn:
                await conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7263540192)")
                return int(await conn.run_sync(schema.migrate))
        except RuntimeError as exc:
            raise StorageError(f"{self._display}: {exc}") from exc
        except DBAPIError as exc:
            raise self._error(exc.orig if exc.orig is not None else exc) from exc
        except SQLAlchemyError as exc:
            raise StorageError(f"{self._display}: {exc}") from exc
        except (OSError, TimeoutError) as exc:
            raise StorageUnavailable(f"{self._display}: {exc!r}") from exc
        finally:
            await engine.dispose()

    # -- plumbing ----------------------------------------------------------------

    def _error(self, exc: BaseException) -> StorageError:
        """The zag error for a driver error: connection trouble -> StorageUnavailable."""
        if isinstance(exc, StorageError):
            return exc
        text = str(exc).strip().splitlines()
        short = text[0] if text else type(exc).__name__
        if isinstance(exc, TimeoutError) and not str(exc):
            return StorageUnavailable(
                f"{self._display}: no connection within {self._connect_timeout:g} s"
            )
        if isinstance(exc, asyncpg.DataError | ValueError):  # a value that cannot be stored
            return StorageError(f"{self._display}: {short}")
        if _transient(exc) or isinstance(
            exc, asyncpg.InterfaceError | OSError | TimeoutError | asyncpg.PostgresConnectionError
        ):
            return StorageUnavailable(f"{self._display}: {short or repr(exc)}")
        if isinstance(exc, asyncpg.PostgresError):
            return StorageError(f"{self._display}: {short}")
        if type(exc).__module__.startswith("asyncpg"):
            return StorageUnavailable(f"{self._display}: {exc!r}")
        return StorageError(f"{self._display}: {exc!r}")

    def _pool_or_fail(self) -> Any:
        self._check_open()
        if self._pool is None:
            raise StorageError(f"{self._display} is not open; use 'async with' or await open()")
        return self._pool

    @contextlib.asynccontextmanager
    async def _conn(self, *, writer: bool = False) -> AsyncIterator[Any]:
        """A pooled connection; driver errors come out as zag errors. The writer
        may use one while `aclose()` drains it, after the backend counts as closed."""
        pool = self._pool if writer and self._pool is not None else self._pool_or_fail()
        try:
            async with pool.acquire(timeout=self._connect_timeout) as conn:
                yield conn
        except (NotFound, StorageError):
            raise
        except Exception as exc:
            raise self._error(exc) from exc

    @contextlib.asynccontextmanager
    async def _begin(self) -> AsyncIterator[Any]:
        async with self._conn() as conn, conn.transaction():
            yield conn

    # -- logbooks ----------------------------------------------------------------

    async def save_logbook(self, book: LogBook) -> None:
        row = self.logbook_row(book)
        async with self._conn() as conn:
            await conn.execute(
                "INSERT INTO zag_logbooks (uuid, name, meta, created_at) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (uuid) DO UPDATE SET name = EXCLUDED.name, meta = EXCLUDED.meta",
                row["uuid"],
                row["name"],
                row["meta"],
                row["created_at"],
            )

    async def get_logbook(self, uuid: str) -> LogBook:
        async with self._conn() as conn:
            row = await conn.fetchrow("SELECT * FROM zag_logbooks WHERE uuid = $1", uuid)
        if row is None:
            raise NotFound(f"no logbook {uuid!r} in {self._display}")
        return self.logbook_from_row(dict(row))

    async def list_logbooks(self) -> list[LogBook]:
        async with self._conn() as conn:
            rows = await conn.fetch("SELECT * FROM zag_logbooks ORDER BY created_at")
        return [self.logbook_from_row(dict(r)) for r in rows]

    async def delete_logbook(self, uuid: str) -> None:
        ids = "SELECT uuid FROM zag_flows WHERE logbook = $1"
        async with self._begin() as conn:
            await conn.execute(f"DELETE FROM zag_atoms WHERE flow_uuid IN ({ids})", uuid)
            await conn.execute(f"DELETE FROM zag_signals WHERE flow_uuid IN ({ids})", uuid)
            await conn.execute("DELETE FROM zag_flows WHERE logbook = $1", uuid)
            await conn.execute("DELETE FROM zag_logbooks WHERE uuid = $1", uuid)

    # -- flows: the group-commit writer --------------------------------------------

    async def _write(self, flow_row: Row, atom_rows: list[Row], expected: int) -> None:
        row = flow_row
        lease, lease_owner, lease_seconds = 0, None, None
        if expected == 0:
            if row.get("lease_owner") is not None and row.get("lease_seconds") is not None:
                lease_owner, lease_seconds = row["lease_owner"], row["lease_seconds"]
        elif "lease_owner" in row:
            lease = 1
        uuid = row["uuid"]
        values = (uuid, expected, *(row[c] for c in _FLOW_DATA), lease, lease_owner, lease_seconds)
        if not await self._submit(_Op(uuid, self._future(), flow=values, atoms=atom_rows)):
            raise self.stale(uuid, expected)

    async def _renew(self, uuid: str, owner: str, seconds: float) -> bool:
        return await self._submit(_Op(uuid, self._future(), renew=(owner, seconds)))

    def _future(self) -> asyncio.Future[bool]:
        return asyncio.get_running_loop().create_future()

    async def _submit(self, op: _Op) -> bool:
        """Queue `op` for the writer and wait for its outcome (True: written/renewed).

        A caller cancelled before the writer takes its op drops it; once taken,
        the batch goes on without it.
        """
        self._pool_or_fail()
        if self._writer is None or self._writer.done() or self._stopping:
            raise StorageError(f"storage backend {self.url!r} is closed")
        self._queue.append(op)
        self._wake.set()
        return await op.future

    async def _write_loop(self) -> None:
        """Send what is queued, batch after batch, until `aclose()` and the queue is empty."""
        try:
            while True:
                if not self._queue:
                    if self._stopping:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                batch = self._take_batch()
                if batch:
                    await self._commit(batch)
        finally:
            # Stopped (or broken): nobody may wait for a writer that is gone.
            self._fail_queued(StorageUnavailable(f"{self._display}: backend closed"))

    def _take_batch(self) -> list[_Op]:
        """Up to BATCH_LIMIT queued ops, in order, one per flow (later ops of a flow
        already in the batch stay queued, in order, for the next one)."""
        queue = self._queue
        batch: dict[str, _Op] = {}
        deferred: list[_Op] = []
        while queue and len(batch) < BATCH_LIMIT:
            op = queue.popleft()
            if op.future.done():  # its caller was cancelled while it was queued
                continue
            if op.uuid in batch:
                deferred.append(op)
            else:
                batch[op.uuid] = op
        queue.extendleft(reversed(deferred))
        return list(batch.values())

    async def _commit(self, batch: list[_Op]) -> None:
        """One group commit; on a non-connection error, each op again alone, so a
        write the database refuses fails alone."""
        try:
            done = await self._send(batch)
        except StorageUnavailable as exc:
            _fail(batch, exc)
            return
        except StorageError as exc:
            if len(batch) == 1:
                _fail(batch, exc)
                return
            for op in batch:
                await self._commit([op])
            return
        except BaseException as exc:
            # The writer was cancelled (aclose gave up) or hit a bug: the batch
            # may or may not have landed; its callers retry, or see the failure.
            _fail(batch, StorageUnavailable(f"{self._display}: write interrupted: {exc!r}"))
            raise
        for op in batch:
            if not op.future.done():
                op.future.set_result(op.uuid in done)

    async def _send(self, batch: list[_Op]) -> set[str]:
        flows: list[list[Any]] = [[] for _ in _WRITE]
        atoms: list[list[Any]] = [[] for _ in _ATOM_ROW]
        renewals: list[list[Any]] = [[], [], []]
        for op in batch:
            if op.flow is not None:
                for column, value in zip(flows, op.flow, strict=True):
                    column.append(value)
                for row in op.atoms:
                    for column, name in zip(atoms, _ATOM_ROW, strict=True):
                        column.append(row[name])
            elif op.renew is not None:
                renewals[0].append(op.uuid)
                renewals[1].append(op.renew[0])
                renewals[2].append(op.renew[1])
        async with self._conn(writer=True) as conn:
            rows = await conn.fetch(_GROUP_COMMIT, *flows, *atoms, *renewals)
        self.commits += 1
        self.writes += len(batch)
        return {r[0] for r in rows}

    def _fail_queued(self, exc: StorageError) -> None:
        queued = list(self._queue)
        self._queue.clear()
        _fail(queued, exc)

    # -- flows: reads and the other writes --------------------------------------------

    async def _read(self, uuid: str) -> tuple[Row, list[Row]]:
        async with self._conn() as conn:
            row = await conn.fetchrow("SELECT * FROM zag_flows WHERE uuid = $1", uuid)
            if row is None:
                raise NotFound(f"no flow {uuid!r} in {self._display}")
            rows = await conn.fetch("SELECT * FROM zag_atoms WHERE flow_uuid = $1", uuid)
        return dict(row), [dict(r) for r in rows]

    async def load_flow_row(self, uuid: str) -> Row:
        """The flow's own row, in one query (signals and the engine's retry check
        read it; the base method would read the atoms too)."""
        self._check_open()
        check_key("flow", uuid)
        async with self._conn() as conn:
            row = await conn.fetchrow("SELECT * FROM zag_flows WHERE uuid = $1", uuid)
        if row is None:
            raise NotFound(f"no flow {uuid!r} in {self._display}")
        return dict(row)

    async def _claim(self, uuid: str, owner: str, expected: int) -> None:
        async with self._conn() as conn:
            done = await conn.fetchval(
                "UPDATE zag_flows SET owner = $2, version = $3 + 1 "
                "WHERE uuid = $1 AND version = $3 RETURNING 1",
                uuid,
                owner,
                expected,
            )
            if done is not None:
                return
            exists = await conn.fetchval("SELECT 1 FROM zag_flows WHERE uuid = $1", uuid)
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
        steal_any = steal is True
        steal_from = steal if isinstance(steal, str) else None
        async with self._conn() as conn:
            taken = await conn.fetchval(
                _TAKE, uuid, owner, expected, float(seconds), claim, steal_any, steal_from
            )
            if taken is not None:
                return None
            found = await conn.fetchrow(
                f"SELECT version, lease_owner, lease_expires, {_NOW} AS now "
                "FROM zag_flows WHERE uuid = $1",
                uuid,
            )
        if found is None:
            raise NotFound(f"no flow {uuid!r} in {self._display}")
        holder, expires, db_now = found["lease_owner"], found["lease_expires"], found["now"]
        return self.refused_take(
            uuid, expected, owner, steal, found["version"], holder, expires, db_now
        )

    async def _list_flows(self, query: Listing) -> list[Row]:
        sql, args = _listing_sql(query)
        async with self._conn() as conn:
            rows = await conn.fetch(sql, *args)
        return [dict(r) for r in rows]

    async def _count_flows(self, created_after: float | None) -> dict[str, int]:
        sql, args = "SELECT state, count(*) FROM zag_flows", list[Any]()
        if created_after is not None:
            sql += " WHERE created_at >= $1"
            args.append(created_after)
        async with self._conn() as conn:
            rows = await conn.fetch(sql + " GROUP BY state", *args)
        return {str(state): int(n) for state, n in rows}

    async def _failures_over_time(
        self, since: float, bucket: float, states: list[str]
    ) -> dict[int, int]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT floor((updated_at - $1) / $2)::int8 AS bucket, count(*) "
                "FROM zag_flows WHERE state = ANY($3::text[]) AND updated_at >= $1 "
                "GROUP BY 1",
                since,
                bucket,
                states,
            )
        return {int(index): int(n) for index, n in rows}

    async def delete_flow(self, uuid: str) -> None:
        async with self._begin() as conn:
            await conn.execute("DELETE FROM zag_atoms WHERE flow_uuid = $1", uuid)
            await conn.execute("DELETE FROM zag_signals WHERE flow_uuid = $1", uuid)
            await conn.execute("DELETE FROM zag_flows WHERE uuid = $1", uuid)

    # -- the record of operator actions -------------------------------------------

    async def _insert_action(self, row: Row) -> Row:
        async with self._conn() as conn:
            stored = await conn.fetchrow(
                "INSERT INTO zag_actions (at, who, action, target, detail) "
                f"VALUES ({_NOW}, $1, $2, $3, $4) RETURNING *",
                row["who"],
                row["action"],
                row["target"],
                row["detail"],
            )
        return dict(stored)

    async def _action_rows(self, target: str | None, limit: int) -> list[Row]:
        sql, args = "SELECT * FROM zag_actions", list[Any]()
        if target is not None:
            args.append(target)
            sql += " WHERE target = $1"
        args.append(limit)
        sql += f" ORDER BY id DESC LIMIT ${len(args)}"
        async with self._conn() as conn:
            rows = await conn.fetch(sql, *args)
        return [dict(r) for r in rows]

    # -- signals and the clock -----------------------------------------------------

    async def clock(self) -> float:
        async with self._conn() as conn:
            return float(await conn.fetchval(f"SELECT {_NOW}"))

    async def _insert_signal(self, row: Row) -> tuple[Row, bool]:
        async with self._begin() as conn:
            # The signal is stamped (created_at) after the flow's row is locked and
            # before the commit: a take (which locks the row FOR UPDATE) waits for
            # this commit rather than miss a signal stamped before a deadline it
            # has seen pass.
            await conn.execute(
                "SELECT 1 FROM zag_flows WHERE uuid = $1 FOR KEY SHARE", row["flow_uuid"]
            )
            stored = await conn.fetchrow(
                "INSERT INTO zag_signals (id, flow_uuid, event, payload, created_at) "
                f"VALUES ($1, $2, $3, $4, {_NOW}) ON CONFLICT (id) DO NOTHING RETURNING *",
                row["id"],
                row["flow_uuid"],
                row["event"],
                row["payload"],
            )
            if stored is not None:
                return dict(stored), True
            stored = await conn.fetchrow("SELECT * FROM zag_signals WHERE id = $1", row["id"])
        return dict(stored), False

    async def _take_signal(
        self, flow_id: str, event: str, taker: str, arrived_by: float | None
    ) -> Row | None:
        mine = "SELECT * FROM zag_signals WHERE flow_uuid = $1 AND taken_by = $2"
        async with self._begin() as conn:
            await conn.execute("SELECT 1 FROM zag_flows WHERE uuid = $1 FOR UPDATE", flow_id)
            found = await conn.fetchrow(mine, flow_id, taker)
            if found is None:
                took = await conn.fetchrow(
                    "UPDATE zag_signals SET taken_by = $3 WHERE taken_by IS NULL AND seq = ("
                    "SELECT min(seq) FROM zag_signals WHERE flow_uuid = $1 AND event = $2 "
                    "AND taken_by IS NULL AND ($4::float8 IS NULL OR created_at <= $4)"
                    ") RETURNING *",
                    flow_id,
                    event,
                    taker,
                    arrived_by,
                )
                found = took
        return None if found is None else dict(found)

    async def _signal_row(self, signal_id: str) -> Row | None:
        async with self._conn() as conn:
            found = await conn.fetchrow("SELECT * FROM zag_signals WHERE id = $1", signal_id)
        return None if found is None else dict(found)

    async def _signalled_flows(self) -> dict[str, int]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT s.flow_uuid, max(s.seq) FROM zag_signals AS s "
                "JOIN zag_flows AS f ON f.uuid = s.flow_uuid "
                "WHERE s.taken_by IS NULL AND f.state = $1 GROUP BY s.flow_uuid",
                str(FlowState.WAITING),
            )
        return {str(flow_id): int(seq) for flow_id, seq in rows}

    async def _signal_rows(self, flow_id: str) -> list[Row]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT * FROM zag_signals WHERE flow_uuid = $1 ORDER BY seq", flow_id
            )
        return [dict(r) for r in rows]


def _listing_sql(query: Listing) -> tuple[str, list[Any]]:
    """The SELECT for a flow listing: only the filters given (so that the generic
    plan can use their indexes), ordered by the (created_at, uuid, state, name) index.

    A page (a `limit`) picks its uuids in an index-only scan first, the filters on
    state and name checked in the index, and reads only those rows: a filter that
    matches nothing then reads the index, not the page of every row. The name
    filter folds ASCII letters only (`lower` under the C collation), as SQLite does.
    """
    where: list[str] = []
    args: list[Any] = []

    def arg(value: Any, cast: str = "") -> str:
        args.append(value)
        return f"${len(args)}{cast}"

    if query.logbook is not None:
        where.append(f"logbook = {arg(query.logbook)}")
    if query.states is not None:
        where.append(f"state = ANY({arg(list(query.states), '::text[]')})")
    if query.name_contains is not None:
        # LIKE's default escape character is the backslash like_pattern uses
        pattern = fold(like_pattern(query.name_contains))
        where.append(f'lower(name COLLATE "C") LIKE {arg(pattern)}')
    if query.created_after is not None:
        where.append(f"created_at >= {arg(query.created_after, '::float8')}")
    if query.before is not None:
        created, uuid = query.before
        where.append(f"(created_at, uuid) < ({arg(created, '::float8')}, {arg(uuid, '::text')})")
    order = " DESC" if query.newest_first else ""
    order_by = f" ORDER BY created_at{order}, uuid{order}"
    filters = " WHERE " + " AND ".join(where) if where else ""
    if query.limit is None:
        return f"SELECT {_SUMMARY} FROM zag_flows{filters}{order_by}", args
    page = f"SELECT uuid FROM zag_flows{filters}{order_by} LIMIT {arg(query.limit)}"
    return f"SELECT {_SUMMARY} FROM zag_flows WHERE uuid = ANY(ARRAY({page})){order_by}", args


async def _no_reset(conn: Any) -> None:
    """Skip asyncpg's reset query (RESET ALL, UNLISTEN *, ...) on each release: a
    round trip per query here, for session state this backend never sets. asyncpg
    still rolls back a transaction left open."""


def _fail(ops: Sequence[_Op], exc: StorageError) -> None:
    """Fail each op with its own copy of `exc` (one exception object raised in
    many tasks would collect all their tracebacks)."""
    for op in ops:
        if not op.future.done():
            mine = type(exc)(str(exc))
            mine.__cause__ = exc.__cause__
            op.future.set_exception(mine)
            op.future.exception()  # retrieved: a caller gone (cancelled) must not warn


def _transient(exc: BaseException) -> bool:
    state = getattr(exc, "sqlstate", None)
    if isinstance(state, str) and state.startswith(_TRANSIENT_STATES):
        return True
    return type(exc).__name__ in ("CannotConnectNowError", "ConnectionDoesNotExistError")
