"""Job boards for the tests: every test taking `board` runs on memory://, on
a real ZooKeeper (127.0.0.1:2181, or ZAG_TEST_ZK=host:port), on SQLite and on
PostgreSQL (the SQL boards, with a short lease).

Each test gets its own board: a named memory:// board, a fresh root path
zookeeper://.../zag-test/<uuid> (deleted afterwards), a fresh SQLite file, or
the session's PostgreSQL database with its job tables emptied first (the suite
runs one test at a time), so tests never see each other's jobs.
`open_board()` opens more board objects on the same board (on ZooKeeper: more
sessions). Flow records go to a memory:// backend unless the
test sets `persistence` to "postgres" (`@pytest.mark.parametrize("persistence",
["postgres"])`), or asks for `pg_backend` directly.

Without a reachable ZooKeeper (or PostgreSQL) those cases skip, unless CI is
set: then they fail, because CI must run them.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from support import delete_zk_path, fresh_pg_database

import zag_async as zag

from . import flows

BOARDS = ["memory", "zookeeper", "sqlite", "postgres"]

#: The SQL boards' lease in tests: short, so takeovers happen within a test.
TEST_LEASE = 1.0

SQL_JOB_TABLES = "zag_jobs, zag_job_keys, zag_job_results, zag_job_schedules, zag_job_locks"


# -- PostgreSQL (zk_server is in tests/conftest.py) -------------------------------


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this session, as a zag URL."""
    with fresh_pg_database("zag_jobs") as url:
        yield url


@pytest.fixture
async def pg_backend(pg_url: str) -> AsyncIterator[zag.persistence.Backend]:
    """An open PostgreSQL backend (flow ids are fresh uuids, so no emptying needed)."""
    async with zag.connect(pg_url) as opened:
        yield opened


# -- boards -----------------------------------------------------------------------


@pytest.fixture
def persistence() -> str:
    """Where flow records go: "memory" (default) or "postgres" (parametrize to change)."""
    return "memory"


@pytest.fixture
async def backend(
    persistence: str, request: pytest.FixtureRequest
) -> AsyncIterator[zag.persistence.Backend]:
    url = str(request.getfixturevalue("pg_url")) if persistence == "postgres" else "memory://"
    async with zag.connect(url) as opened:
        yield opened


@pytest.fixture(params=BOARDS)
def board_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def empty_pg_job_tables(url: str) -> None:
    """Create the schema if needed, then delete every job, key, result, schedule and lock."""
    import asyncpg
    from sqlalchemy.engine import make_url

    await zag.persistence.upgrade(url)
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.execute(f"TRUNCATE {SQL_JOB_TABLES}")
    finally:
        await conn.close()


@pytest.fixture
async def board_url(
    board_kind: str, request: pytest.FixtureRequest, tmp_path: Any
) -> AsyncIterator[str]:
    """A board of its own for this test (deleted afterwards on ZooKeeper)."""
    name = uuid.uuid4().hex
    if board_kind == "memory":
        yield f"memory://zag-test-{name}"
        return
    if board_kind == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/board-{name[:8]}.db"
        return
    if board_kind == "postgres":
        url = str(request.getfixturevalue("pg_url"))
        await empty_pg_job_tables(url)
        yield url
        return
    server = request.getfixturevalue("zk_server")
    yield f"zookeeper://{server}/zag-test/{name}"
    await delete_zk_path(server, f"/zag-test/{name}")


BoardOpener = Callable[..., Awaitable[zag.jobs.JobBoard]]


@pytest.fixture
async def open_board(
    board_url: str, backend: zag.persistence.Backend
) -> AsyncIterator[BoardOpener]:
    """`await open_board(**options)`: another open board object on this test's board
    (on ZooKeeper: another session); closed at the end of the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def opener(**options: Any) -> zag.jobs.JobBoard:
            if not board_url.startswith(("memory", "zookeeper")):
                options.setdefault("lease", TEST_LEASE)
            return await stack.enter_async_context(
                zag.jobs.connect(board_url, backend=backend, **options)
            )

        yield opener


@pytest.fixture
async def board(open_board: BoardOpener) -> zag.jobs.JobBoard:
    """This test's board, open, with no jobs on it."""
    return await open_board()


@pytest.fixture(autouse=True)
def _reset_flows() -> Iterator[None]:
    flows.reset()
    yield
    flows.reset()


# -- helpers ----------------------------------------------------------------------


async def wait_outcome(job: zag.jobs.Job, within: float = 10.0) -> zag.jobs.JobOutcome:
    """`job.wait()` bounded by `within` seconds."""
    async with asyncio.timeout(within):
        return await job.wait()
