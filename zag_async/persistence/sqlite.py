"""The embedded default: flow state in one SQLite file, through the standard `sqlite3` module.

`sqlite+aiosqlite:///path.db` (the URL keeps its old name). A commit runs on
the event loop's own connection while the file is free (tens of microseconds,
no thread hop); when another writer holds the file the work goes to the
backend's one thread, which answers with one call per batch. Writes queued in
one turn of the loop are committed together (group commit): many flows in one
process share a transaction and its WAL write, and a lone write never waits
for company.

The file runs in WAL mode with synchronous=NORMAL: a commit survives a crash
of the process (not of the machine's power, which the WAL's next checkpoint
covers). Statements are prepared once per connection (the module's statement
cache). SQLAlchemy is imported only to create or upgrade the schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..codec import Codec
from ..errors import (
    ConcurrentUpdate,
    ConfigurationError,
    NotFound,
    StorageError,
    StorageUnavailable,
)
from ..models import LogBook
from ..states import FlowState
from .base import Backend, Listing, Row, like_pattern
from .leases import DEFAULT_LEASE, Holder
from .names import ATOM_COLUMNS, FLOW_COLUMNS, SCHEMA_VERSION, SUMMARY_COLUMNS

__all__ = ["SqliteBackend", "open_connection", "sqlite_path"]

T = TypeVar("T")

SCHEME = "sqlite+aiosqlite"
#: How long a statement waits for another process's write lock on the file.
BUSY_TIMEOUT = 10.0
#: Most writes committed in one transaction (the rest wait for the next one).
MAX_BATCH = 512
#: ... on the event loop's connection: the loop is busy while it commits (about
#: 30 us a write), so a turn commits at most this many and the next turn the rest.
LOOP_BATCH = 128
#: Flows whose steady columns this process remembers (see `_STEADY`).
STEADY_CACHE = 10_000
#: Commits on the loop's connection between two WAL checkpoints in the thread.
CHECKPOINT_EVERY = 200
#: How long `aclose()` waits for the thread to finish what was queued.
CLOSE_TIMEOUT = BUSY_TIMEOUT + 5.0

_NOW = "((julianday('now') - 2440587.5) * 86400.0)"


def sqlite_path(url: str) -> str:
    """The file a `sqlite+aiosqlite:///path.db` URL names (ConfigurationError otherwise).

    As with SQLAlchemy URLs, `sqlite+aiosqlite:///flows.db` is relative to
    the working directory and `sqlite+aiosqlite:////var/lib/flows.db` absolute.
    """
    scheme, sep, rest = url.partition("://")
    if scheme.lower() != SCHEME or not sep:
        raise ConfigurationError(
            f"unsupported database URL {url!r}: use sqlite+aiosqlite:///path.db or "
            f"postgresql+asyncpg://user@host/db"
        )
    host, slash, path = rest.partition("/")
    path, _, query = path.partition("?")
    if host or not slash or path in ("", ":memory:"):
        raise ConfigurationError(
            f"SQLite URL {url!r} names no file: use sqlite+aiosqlite:///path.db "
            f"(an in-memory database would lose the flows it exists to keep)"
        )
    if query:
        raise ConfigurationError(f"SQLite URL {url!r}: options after '?' are not supported")
    return path


# -- the statements ------------------------------------------------------------------

#: Flow columns that rarely change after the insert. Setting an indexed column
#: rewrites its index entries even when the value is the same, so an update
#: leaves these out when this process wrote the same values last.
_STEADY = ("logbook", "name", "state", "created_at")
_ALWAYS = tuple(c for c in FLOW_COLUMNS if c not in _STEADY)


@functools.cache
def _update_flow(changed: tuple[str, ...], releasing: bool) -> str:
    """The conditional UPDATE setting the `changed` steady columns and the rest."""
    sets = ", ".join(f"{c} = :{c}" for c in (*changed, *_ALWAYS))
    if releasing:
        sets += ", lease_owner = NULL, lease_expires = NULL"
    return f"UPDATE zag_flows SET {sets} WHERE uuid = :uuid AND version = :expected"


_INSERT_FLOW = (
    f"INSERT INTO zag_flows (uuid, {', '.join(FLOW_COLUMNS)}) "
    f"VALUES (:uuid, {', '.join(':' + c for c in FLOW_COLUMNS)}) ON CONFLICT (uuid) DO NOTHING"
)
_INSERT_LEASED_FLOW = (
    f"INSERT INTO zag_flows (uuid, {', '.join(FLOW_COLUMNS)}, lease_owner, lease_expires) "
    f"VALUES (:uuid, {', '.join(':' + c for c in FLOW_COLUMNS)}, :lease_owner, "
    f"{_NOW} + :lease_seconds) ON CONFLICT (uuid) DO NOTHING"
)
_UPSERT_ATOMS = (
    f"INSERT INTO zag_atoms (flow_uuid, name, {', '.join(ATOM_COLUMNS)}) "
    f"VALUES (:flow_uuid, :name, {', '.join(':' + c for c in ATOM_COLUMNS)}) "
    f"ON CONFLICT (flow_uuid, name) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in ATOM_COLUMNS)
)
_RENEW = f"UPDATE zag_flows SET lease_expires = {_NOW} + ? WHERE uuid = ? AND lease_owner = ?"
_SUMMARY = f"SELECT {', '.join(SUMMARY_COLUMNS)} FROM zag_flows"


# -- the connections -----------------------------------------------------------------


@dataclass(slots=True)
class _Job:
    """One piece of work, and where its answer goes."""

    run: Callable[[sqlite3.Connection], Any]
    writes: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    #: atom rows to upsert once `run` succeeded (a batch writes them all at once)
    atoms: list[Row] | None = None
    outcome: Any = None
    error: BaseException | None = field(default=None)


_STOP = object()


def open_connection(path: str, *, busy: float, autocheckpoint: bool) -> sqlite3.Connection:
    """A connection to the file with our pragmas: every connection the backend uses
    comes from here (a test may wrap it to trace statements)."""
    conn = sqlite3.connect(path, timeout=busy, isolation_level=None, check_same_thread=False)
    deadline = time.monotonic() + busy
    while True:
        try:
            conn.execute(f"PRAGMA busy_timeout={int(busy * 1000)}")
            # Switching a new file to WAL takes an exclusive lock, and SQLite may
            # answer "locked" at once instead of waiting: wait out the busy timeout here.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            if not autocheckpoint:
                conn.execute("PRAGMA wal_autocheckpoint=0")
            return conn
        except sqlite3.OperationalError as exc:
            if _busy(exc) and time.monotonic() < deadline:
                time.sleep(0.01)
                continue
            conn.close()
            raise
        except BaseException:
            conn.close()
            raise


def _busy(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


class _Connection:
    """The file's two connections: one on the event loop, one in a thread of its own.

    Short work runs on the loop's connection when no other connection holds
    the file (a commit there costs tens of microseconds, less than a hop to a
    thread and back): writes queued in one turn of the loop are committed
    together at its end (group commit), and one write's error fails only that
    write (see `_run_batch`). That
    connection never waits: it has no busy timeout and leaves WAL
    checkpoints (which fsync) to the thread. When the file is busy (another
    process, or a job board on the same file, is writing), or while the
    thread still has work queued, the work goes to the thread, which waits
    out the busy timeout and answers with one call per batch. Large reads
    always run in the thread.
    """

    def __init__(self, path: str, display: str) -> None:
        self._path = path
        self._display = display
        self._jobs: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name="zag-sqlite", daemon=True)
        self._conn: sqlite3.Connection | None = None  # the thread's
        self._local: sqlite3.Connection | None = None  # the loop's
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queued: list[_Job] = []  # writes for the loop's next commit
        self._in_thread = 0  # jobs handed to the thread and not answered yet
        self._since_checkpoint = 0
        self._stopped: asyncio.Future[None] | None = None
        self.batches = 0  # write transactions committed (a figure for benchmarks)

    def start(self) -> None:
        self._thread.start()

    def open_local(self) -> None:
        """Open the loop's own connection (after the schema is in place)."""
        self._loop = asyncio.get_running_loop()
        try:
            self._local = open_connection(self._path, busy=0.0, autocheckpoint=False)
        except sqlite3.Error:
            self._local = None  # everything goes through the thread

    async def call(
        self,
        run: Callable[[sqlite3.Connection], T],
        *,
        writes: bool,
        local: bool = True,
        atoms: list[Row] | None = None,
    ) -> T:
        loop = asyncio.get_running_loop()
        job = _Job(run, writes, loop, loop.create_future(), atoms)
        if local and self._local is not None and self._in_thread == 0 and loop is self._loop:
            if writes:
                self._queued.append(job)
                if len(self._queued) == 1:
                    loop.call_soon(self._commit_local)
            else:
                self._read_local(job)
        else:
            self._to_thread([job])
        result: T = await job.future
        return result

    def _to_thread(self, jobs: list[_Job]) -> None:
        self._in_thread += len(jobs)
        for job in jobs:
            job.future.add_done_callback(self._answered)
            self._jobs.put(job)

    def _answered(self, _future: asyncio.Future[Any]) -> None:
        self._in_thread -= 1

    def _read_local(self, job: _Job) -> None:
        assert self._local is not None
        try:
            job.outcome = job.run(self._local)
        except BaseException as exc:
            _rollback(self._local)
            if _busy(exc):
                self._to_thread([job])
                return
            job.error = self._mapped(exc)
        _settle(job.future, job.outcome, job.error)

    def _commit_local(self) -> None:
        batch, self._queued = self._queued[:LOOP_BATCH], self._queued[LOOP_BATCH:]
        if not batch:
            return
        if self._queued:
            asyncio.get_running_loop().call_soon(self._commit_local)
        conn = self._local
        if conn is None or self._in_thread:
            self._to_thread(batch)
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            if _busy(exc):
                self._to_thread(batch)
                return
            for job in batch:
                job.error = self._mapped(exc)
        else:
            self._run_batch(conn, batch)
            self._since_checkpoint += 1
            if self._since_checkpoint >= CHECKPOINT_EVERY:
                self._since_checkpoint = 0
                self._jobs.put(_CHECKPOINT)
        for job in batch:
            _settle(job.future, job.outcome, job.error)

    async def stop(self) -> None:
        """Let the thread finish what is queued, close the file, and end (bounded)."""
        loop = asyncio.get_running_loop()
        while self._queued:  # the loop's last writes
            self._commit_local()
        if self._local is not None:
            _rollback(self._local)
            self._local.close()
            self._local = None
        self._stopped = loop.create_future()
        stopped = self._stopped
        self._jobs.put(_STOP)
        if not self._thread.is_alive():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await asyncio.shield(stopped)

    # -- in the thread -----------------------------------------------------------

    def _main(self) -> None:
        waiting: _Job | object | None = None
        while True:
            job = waiting if waiting is not None else self._jobs.get()
            waiting = None
            if job is _STOP:
                break
            if job is _CHECKPOINT:
                self._checkpoint()
                continue
            assert isinstance(job, _Job)
            if not job.writes:
                self._run_alone(job)
                _deliver([job])
                continue
            batch = [job]
            while len(batch) < MAX_BATCH:
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if isinstance(more, _Job) and more.writes:
                    batch.append(more)
                else:
                    waiting = more
                    break
            try:
                conn = self._connection()
                conn.execute("BEGIN IMMEDIATE")  # waits out the busy timeout
            except BaseException as exc:
                error = self._mapped(exc)
                for job in batch:
                    job.error = error
            else:
                self._run_batch(conn, batch)
            _deliver(batch)
        self._close()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = open_connection(self._path, busy=BUSY_TIMEOUT, autocheckpoint=True)
        return self._conn

    def _checkpoint(self) -> None:
        """Copy the WAL into the file (the fsyncs the loop's connection never does)."""
        with contextlib.suppress(sqlite3.Error):
            self._connection().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _run_alone(self, job: _Job) -> None:
        conn: sqlite3.Connection | None = None
        try:
            conn = self._connection()
            job.outcome = job.run(conn)
        except BaseException as exc:  # delivered to the caller
            job.error = self._mapped(exc)
            if conn is not None:
                _rollback(conn)

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        """Run the writes inside the open transaction, and commit it.

        Fast way first: each job's own statements, then the atom rows of all of
        them in one `executemany`. A job refused by our own check (a stale
        version, a missing flow) changed nothing and fails alone. Any other
        error undoes the lot and the batch runs again, each job in a savepoint
        of its own, so only the job at fault fails.
        """
        try:
            if len(batch) == 1:  # alone: its error fails the transaction and only it
                self._run_fast(conn, batch)
            else:
                conn.execute("SAVEPOINT zag_batch")
                try:
                    self._run_fast(conn, batch)
                except Exception:
                    conn.execute("ROLLBACK TO zag_batch")
                    self._run_each(conn, batch)
                conn.execute("RELEASE zag_batch")
            conn.execute("COMMIT")
            self.batches += 1
        except BaseException as exc:
            error = self._mapped(exc)
            for job in batch:
                job.outcome, job.error = None, error
            _rollback(conn)

    @staticmethod
    def _run_fast(conn: sqlite3.Connection, batch: list[_Job]) -> None:
        rows: list[Row] = []
        for job in batch:
            job.outcome, job.error = None, None
            try:
                job.outcome = job.run(conn)
            except (ConcurrentUpdate, NotFound) as exc:
                job.error = exc  # raised before the job changed anything
                continue
            if job.atoms:
                rows.extend(job.atoms)
        if rows:
            conn.executemany(_UPSERT_ATOMS, rows)

    def _run_each(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        for job in batch:
            job.outcome, job.error = None, None
            conn.execute("SAVEPOINT zag_write")
            try:
                job.outcome = job.run(conn)
                if job.atoms:
                    conn.executemany(_UPSERT_ATOMS, job.atoms)
            except Exception as exc:
                conn.execute("ROLLBACK TO zag_write")
                job.outcome, job.error = None, self._mapped(exc)
            finally:
                conn.execute("RELEASE zag_write")

    def _mapped(self, exc: BaseException) -> BaseException:
        """Our errors pass; the file being busy, missing or failing -> StorageUnavailable."""
        if isinstance(exc, (ConcurrentUpdate, NotFound, StorageError)):
            return exc
        if isinstance(exc, sqlite3.OperationalError):
            return StorageUnavailable(f"{self._display}: {exc}")
        if isinstance(exc, sqlite3.Error):
            return StorageError(f"{self._display}: {exc}")
        return exc

    def _close(self) -> None:
        try:
            if self._conn is not None:
                _rollback(self._conn)
                self._conn.close()
                self._conn = None
        finally:
            stopped = self._stopped
            if stopped is not None:
                with contextlib.suppress(RuntimeError):  # the loop has closed
                    stopped.get_loop().call_soon_threadsafe(_settle, stopped, None, None)
            while True:  # anything queued after the stop fails rather than hangs
                try:
                    late = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if isinstance(late, _Job):
                    late.error = StorageError(f"storage backend {self._display!r} is closed")
                    _deliver([late])


_CHECKPOINT = object()


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _deliver(jobs: list[_Job]) -> None:
    """Hand the thread's answers back to their loops: one call per loop for the batch."""
    loop = jobs[0].loop
    if all(job.loop is loop for job in jobs):
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
            loop.call_soon_threadsafe(_settle_all, jobs)
        return
    for job in jobs:
        with contextlib.suppress(RuntimeError):
            job.loop.call_soon_threadsafe(_settle_all, [job])


def _settle_all(jobs: list[_Job]) -> None:
    for job in jobs:
        _settle(job.future, job.outcome, job.error)


def _settle(future: asyncio.Future[Any], outcome: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled; the work is done all the same
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(outcome)


# -- the backend ---------------------------------------------------------------------


class SqliteBackend(Backend):
    """Flow state in one SQLite file (WAL), through one connection in its own thread.

    Args:
        url: `sqlite+aiosqlite:///path.db`.
        upgrade: bring the schema up to date on open (default); with False,
            open fails unless `zag-async db upgrade URL` has been run.
        connect_timeout: accepted for the same options as PostgreSQL; a
            statement waits up to 10 s for another process's write lock.
        pool_size: accepted and ignored (one connection serves the process).
        lease: seconds an engine's lease on a flow lasts unless renewed.
    """

    dialect = "sqlite"

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
        self.path = sqlite_path(url)
        self._display = url
        self._auto_upgrade = upgrade
        self._db: _Connection | None = None
        # flow id -> the steady columns as this process last wrote them (newest last)
        self._steady: dict[str, tuple[Any, ...]] = {}

    @property
    def commits(self) -> int:
        """Write transactions committed so far by this backend (for benchmarks)."""
        return 0 if self._db is None else self._db.batches

    # -- lifecycle ---------------------------------------------------------------

    async def open(self) -> None:
        self._check_open()
        if self._db is not None:
            return
        db = _Connection(self.path, self._display)
        db.start()
        self._db = db
        try:
            version = await db.call(_schema_version, writes=False, local=False)
            if version != SCHEMA_VERSION:
                if version > SCHEMA_VERSION or not self._auto_upgrade:
                    raise StorageError(_version_message(self._display, version))
                await self.upgrade()
            db.open_local()
        except BaseException:
            self._db = None
            await db.stop()
            raise

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        db, self._db = self._db, None
        if db is not None:
            await db.stop()

    async def upgrade(self) -> int:
        return await self._call(
            lambda conn: _migrate(conn, self._display), writes=False, local=False
        )

    async def _call(
        self,
        run: Callable[[sqlite3.Connection], T],
        *,
        writes: bool = True,
        local: bool = True,
        atoms: list[Row] | None = None,
    ) -> T:
        """Run `run` on the file, then upsert `atoms` (a write's atom rows) if it
        succeeded; `local=False` for work that may take long (listings)."""
        self._check_open()
        if self._db is None:
            raise StorageError(f"{self._display} is not open; use 'async with' or await open()")
        return await self._db.call(run, writes=writes, local=local, atoms=atoms)

    # -- logbooks ----------------------------------------------------------------

    async def save_logbook(self, book: LogBook) -> None:
        row = self.logbook_row(book)
        await self._call(
            lambda conn: conn.execute(
                "INSERT INTO zag_logbooks (uuid, name, meta, created_at) "
                "VALUES (:uuid, :name, :meta, :created_at) ON CONFLICT (uuid) DO UPDATE "
                "SET name = excluded.name, meta = excluded.meta",
                row,
            )
        )

    async def get_logbook(self, uuid: str) -> LogBook:
        row = await self._call(
            lambda conn: _one(conn, "SELECT * FROM zag_logbooks WHERE uuid = ?", (uuid,)),
            writes=False,
        )
        if row is None:
            raise NotFound(f"no logbook {uuid!r} in {self._display}")
        return self.logbook_from_row(row)

    async def list_logbooks(self) -> list[LogBook]:
        rows = await self._call(
            lambda conn: _rows(conn, "SELECT * FROM zag_logbooks ORDER BY created_at"),
            writes=False,
            local=False,
        )
        return [self.logbook_from_row(r) for r in rows]

    async def delete_logbook(self, uuid: str) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            ids = "SELECT uuid FROM zag_flows WHERE logbook = ?"
            conn.execute(f"DELETE FROM zag_atoms WHERE flow_uuid IN ({ids})", (uuid,))
            conn.execute(f"DELETE FROM zag_signals WHERE flow_uuid IN ({ids})", (uuid,))
            conn.execute("DELETE FROM zag_flows WHERE logbook = ?", (uuid,))
            conn.execute("DELETE FROM zag_logbooks WHERE uuid = ?", (uuid,))

        await self._call(delete, local=False)

    # -- flows -------------------------------------------------------------------

    async def _write(self, flow_row: Row, atom_rows: list[Row], expected: int) -> None:
        row = dict(flow_row)
        lease_seconds = row.pop("lease_seconds", None)
        if expected == 0:
            if "lease_owner" in row and lease_seconds is not None:
                row["lease_seconds"] = lease_seconds
                statement = _INSERT_LEASED_FLOW
            else:
                row.pop("lease_owner", None)
                statement = _INSERT_FLOW
        else:
            last = self._steady.get(row["uuid"])
            changed = _STEADY if last is None else _changed(last, row)
            statement = _update_flow(changed, "lease_owner" in row)
            row.pop("lease_owner", None)
            row["expected"] = expected
        uuid = row["uuid"]

        def write(conn: sqlite3.Connection) -> None:
            if conn.execute(statement, row).rowcount != 1:
                raise self.stale(uuid, expected)

        steady = self._steady
        steady.pop(uuid, None)  # unknown until this write is known to have landed
        await self._call(write, atoms=atom_rows)
        steady[uuid] = tuple(row[c] for c in _STEADY)
        if len(steady) > STEADY_CACHE:
            del steady[next(iter(steady))]

    async def _read(self, uuid: str) -> tuple[Row, list[Row]]:
        def read(conn: sqlite3.Connection) -> tuple[Row | None, list[Row]]:
            conn.execute("BEGIN")  # one snapshot for the flow and its atoms
            try:
                flow = _one(conn, "SELECT * FROM zag_flows WHERE uuid = ?", (uuid,))
                atoms = (
                    []
                    if flow is None
                    else _rows(conn, "SELECT * FROM zag_atoms WHERE flow_uuid = ?", (uuid,))
                )
            finally:
                conn.execute("COMMIT")
            return flow, atoms

        flow, atoms = await self._call(read, writes=False)
        if flow is None:
            raise NotFound(f"no flow {uuid!r} in {self._display}")
        return flow, atoms

    async def _claim(self, uuid: str, owner: str, expected: int) -> None:
        def claim(conn: sqlite3.Connection) -> None:
            done = conn.execute(
                "UPDATE zag_flows SET owner = ?, version = ? WHERE uuid = ? AND version = ?",
                (owner, expected + 1, uuid, expected),
            )
            if done.rowcount == 1:
                return
            if conn.execute("SELECT 1 FROM zag_flows WHERE uuid = ?", (uuid,)).fetchone() is None:
                raise NotFound(f"no flow {uuid!r} in {self._display}")
            raise self.stale(uuid, expected)

        await self._call(claim)

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
        sets = f"lease_owner = :owner, lease_expires = {_NOW} + :seconds, version = :next"
        if claim is not None:
            sets += ", owner = :claim"
        where = "uuid = :uuid AND version = :expected"
        if steal is not True:
            free = f"lease_owner IS NULL OR lease_owner = :owner OR lease_expires < {_NOW}"
            if steal:
                free += " OR lease_owner = :steal"
            where += f" AND ({free})"
        params = {
            "owner": owner,
            "seconds": seconds,
            "next": expected + 1,
            "claim": claim,
            "uuid": uuid,
            "expected": expected,
            "steal": steal if isinstance(steal, str) else None,
        }

        def take(conn: sqlite3.Connection) -> tuple[Any, ...] | None:
            if conn.execute(f"UPDATE zag_flows SET {sets} WHERE {where}", params).rowcount == 1:
                return None
            found = conn.execute(
                f"SELECT version, lease_owner, lease_expires, {_NOW} FROM zag_flows WHERE uuid = ?",
                (uuid,),
            ).fetchone()
            if found is None:
                raise NotFound(f"no flow {uuid!r} in {self._display}")
            return tuple(found)

        found = await self._call(take)
        if found is None:
            return None
        version, holder, expires, db_now = found
        return self.refused_take(uuid, expected, owner, steal, version, holder, expires, db_now)

    async def _renew(self, uuid: str, owner: str, seconds: float) -> bool:
        return await self._call(
            lambda conn: conn.execute(_RENEW, (seconds, uuid, owner)).rowcount == 1
        )

    async def _list_flows(self, query: Listing) -> list[Row]:
        sql, params = _listing_sql(query)
        return await self._call(lambda conn: _rows(conn, sql, params), writes=False, local=False)

    async def _count_flows(self, created_after: float | None) -> dict[str, int]:
        sql, params = "SELECT state, count(*) FROM zag_flows", list[Any]()
        if created_after is not None:
            # +state: read the range of the creation index (state is in it), not
            # every row through the state index (what SQLite picks to group by)
            sql += " WHERE created_at >= ? GROUP BY +state"
            params.append(created_after)
        else:
            sql += " GROUP BY state"
        rows = await self._call(
            lambda conn: conn.execute(sql, params).fetchall(), writes=False, local=False
        )
        return {str(state): int(n) for state, n in rows}

    async def _failures_over_time(
        self, since: float, bucket: float, states: list[str]
    ) -> dict[int, int]:
        # updated_at >= since, so the cast (which truncates) is the floor
        sql = (
            "SELECT CAST((updated_at - ?) / ? AS INTEGER) AS bucket, count(*) FROM zag_flows "
            f"WHERE state IN ({', '.join('?' * len(states))}) AND updated_at >= ? "
            "GROUP BY bucket"
        )
        params = [since, bucket, *states, since]
        rows = await self._call(
            lambda conn: conn.execute(sql, params).fetchall(), writes=False, local=False
        )
        return {int(index): int(n) for index, n in rows}

    async def delete_flow(self, uuid: str) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM zag_atoms WHERE flow_uuid = ?", (uuid,))
            conn.execute("DELETE FROM zag_signals WHERE flow_uuid = ?", (uuid,))
            conn.execute("DELETE FROM zag_flows WHERE uuid = ?", (uuid,))

        await self._call(delete)

    # -- the record of operator actions -------------------------------------------

    async def _insert_action(self, row: Row) -> Row:
        sql = (
            "INSERT INTO zag_actions (at, who, action, target, detail) "
            f"VALUES ({_NOW}, :who, :action, :target, :detail) RETURNING *"
        )
        return await self._call(lambda conn: _rows(conn, sql, row)[0])

    async def _action_rows(self, target: str | None, limit: int) -> list[Row]:
        sql, params = "SELECT * FROM zag_actions", list[Any]()
        if target is not None:
            sql += " WHERE target = ?"
            params.append(target)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        return await self._call(lambda conn: _rows(conn, sql, params), writes=False)

    # -- signals and the clock -----------------------------------------------------

    async def clock(self) -> float:
        return await self._call(
            lambda conn: float(conn.execute(f"SELECT {_NOW}").fetchone()[0]), writes=False
        )

    async def _insert_signal(self, row: Row) -> tuple[Row, bool]:
        def insert(conn: sqlite3.Connection) -> tuple[Row, bool]:
            # Writes are serialized on the file, so no take can slip between the
            # stamp of created_at and the commit.
            new = conn.execute(
                "INSERT INTO zag_signals (id, flow_uuid, event, payload, created_at) "
                f"VALUES (:id, :flow_uuid, :event, :payload, {_NOW}) ON CONFLICT (id) DO NOTHING",
                row,
            ).rowcount
            stored = _one(conn, "SELECT * FROM zag_signals WHERE id = ?", (row["id"],))
            assert stored is not None
            return stored, new == 1

        return await self._call(insert)

    async def _take_signal(
        self, flow_id: str, event: str, taker: str, arrived_by: float | None
    ) -> Row | None:
        mine = "SELECT * FROM zag_signals WHERE flow_uuid = ? AND taken_by = ?"
        oldest = (
            "SELECT min(seq) FROM zag_signals WHERE flow_uuid = ? AND event = ? "
            "AND taken_by IS NULL"
        )
        params: list[Any] = [taker, flow_id, event]
        if arrived_by is not None:
            oldest += " AND created_at <= ?"
            params.append(arrived_by)
        take = f"UPDATE zag_signals SET taken_by = ? WHERE seq = ({oldest}) AND taken_by IS NULL"

        def take_one(conn: sqlite3.Connection) -> Row | None:
            found = _one(conn, mine, (flow_id, taker))
            if found is None and conn.execute(take, params).rowcount == 1:
                found = _one(conn, mine, (flow_id, taker))
            return found

        return await self._call(take_one)

    async def _signal_row(self, signal_id: str) -> Row | None:
        return await self._call(
            lambda conn: _one(conn, "SELECT * FROM zag_signals WHERE id = ?", (signal_id,)),
            writes=False,
        )

    async def _signalled_flows(self) -> dict[str, int]:
        query = (
            "SELECT s.flow_uuid, max(s.seq) FROM zag_signals AS s "
            "JOIN zag_flows AS f ON f.uuid = s.flow_uuid "
            "WHERE s.taken_by IS NULL AND f.state = ? GROUP BY s.flow_uuid"
        )
        rows = await self._call(
            lambda conn: conn.execute(query, (str(FlowState.WAITING),)).fetchall(),
            writes=False,
            local=False,
        )
        return {str(flow_id): int(seq) for flow_id, seq in rows}

    async def _signal_rows(self, flow_id: str) -> list[Row]:
        return await self._call(
            lambda conn: _rows(
                conn, "SELECT * FROM zag_signals WHERE flow_uuid = ? ORDER BY seq", (flow_id,)
            ),
            writes=False,
            local=False,
        )


def _listing_sql(query: Listing) -> tuple[str, list[Any]]:
    """The SELECT for a flow listing: only the filters given, ordered by the
    (created_at, uuid, state, name) index, so a page reads its rows and no more:
    SQLite checks the state and name filters in the index and reads a flow's row
    only once it passed them."""
    where: list[str] = []
    params: list[Any] = []
    if query.logbook is not None:
        where.append("logbook = ?")
        params.append(query.logbook)
    if query.states is not None:
        # A page walks the creation index, checking state in it (`+state` keeps
        # SQLite off the state index, which would fetch and sort every flow in the
        # state: 17 ms for 70,000); a whole listing (a recovery sweep) uses it.
        unary = "+" if query.limit is not None else ""
        where.append(f"{unary}state IN ({', '.join('?' * len(query.states))})")
        params.extend(query.states)
    if query.name_contains is not None:
        where.append("name LIKE ? ESCAPE '\\'")  # LIKE ignores the case of ASCII letters
        params.append(like_pattern(query.name_contains))
    if query.created_after is not None:
        where.append("created_at >= ?")
        params.append(query.created_after)
    if query.before is not None:
        where.append("(created_at, uuid) < (?, ?)")
        params.extend(query.before)
    sql = _SUMMARY
    if where:
        sql += " WHERE " + " AND ".join(where)
    order = " DESC" if query.newest_first else ""
    sql += f" ORDER BY created_at{order}, uuid{order}"
    if query.limit is not None:
        sql += " LIMIT ?"
        params.append(query.limit)
    return sql, params


def _changed(last: tuple[Any, ...], row: Row) -> tuple[str, ...]:
    return tuple(c for c, was in zip(_STEADY, last, strict=True) if row[c] != was)


def _one(conn: sqlite3.Connection, query: str, params: Sequence[Any] = ()) -> Row | None:
    cursor = conn.execute(query, params)
    row = cursor.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cursor.description], row, strict=True))


def _rows(conn: sqlite3.Connection, query: str, params: Sequence[Any] | Row = ()) -> list[Row]:
    cursor = conn.execute(query, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


# -- the schema ----------------------------------------------------------------------


def _schema_version(conn: sqlite3.Connection) -> int:
    try:
        row = conn.execute("SELECT version FROM zag_schema_version").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return 0
        raise
    return int(row[0]) if row is not None and row[0] is not None else 0


def _version_message(display: str, version: int) -> str:
    if version > SCHEMA_VERSION:
        return (
            f"{display}: the database schema is version {version}, newer than this zag-async "
            f"(which knows up to {SCHEMA_VERSION}); upgrade zag-async"
        )
    return (
        f"{display}: schema is at version {version}, this zag-async needs "
        f"{SCHEMA_VERSION}; run: zag-async db upgrade URL"
    )


def _create_fresh(conn: sqlite3.Connection) -> bool:
    """Create the current schema on a file with no zag tables, as plain SQL (no
    SQLAlchemy import); False when zag tables were there (another process may
    have just made them): those go through the migrations."""
    from .sqlite_schema import FRESH

    conn.execute("BEGIN IMMEDIATE")  # waits out the busy timeout
    try:
        found = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name LIKE 'zag\\_%' ESCAPE '\\'"
        ).fetchone()
        if found is not None:
            conn.execute("ROLLBACK")
            return False
        for statement in FRESH:
            conn.execute(statement)
    except BaseException:
        _rollback(conn)
        raise
    conn.execute("COMMIT")
    return True


def _migrate(conn: sqlite3.Connection, display: str) -> int:
    """Create or upgrade the schema inside BEGIN IMMEDIATE (so two processes opening
    a new file take turns), through SQLAlchemy's migration steps."""
    version = _schema_version(conn)
    if version == SCHEMA_VERSION:
        return version
    if version > SCHEMA_VERSION:
        raise StorageError(_version_message(display, version))
    if version == 0 and _create_fresh(conn):
        return SCHEMA_VERSION
    from sqlalchemy import create_engine
    from sqlalchemy.pool import StaticPool

    from . import schema

    # SQLAlchemy drives our own connection inside our transaction (so it must not
    # roll back when it hands the connection back).
    engine = create_engine(
        "sqlite://",
        creator=lambda: conn,
        poolclass=StaticPool,
        isolation_level="AUTOCOMMIT",
        pool_reset_on_return=None,
    )
    try:
        with engine.connect() as sa_conn:  # (its first connect commits: begin after it)
            conn.execute("BEGIN IMMEDIATE")  # waits out the busy timeout
            try:
                reached = int(schema.migrate(sa_conn))
            except RuntimeError as exc:
                conn.execute("ROLLBACK")
                raise StorageError(f"{display}: {exc}") from exc
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return reached
    finally:
        engine.dispose(close=False)
