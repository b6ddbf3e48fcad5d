"""Job boards for the tests: every test taking `board` runs on memory:// and on
a real ZooKeeper (127.0.0.1:2181, or ZAG_TEST_ZK=host:port).

Each test gets its own board: a named memory:// board, or a fresh root path
zookeeper://.../zag-test/<uuid> (deleted afterwards), so tests never see each
other's jobs. `open_board()` opens more board objects on the same board (on
ZooKeeper: more sessions). Flow records go to a memory:// backend unless the
test sets `persistence` to "postgres" (`@pytest.mark.parametrize("persistence",
["postgres"])`), or asks for `pg_backend` directly.

Without a reachable ZooKeeper (or PostgreSQL) those cases skip, unless CI is
set: then they fail, because CI must run them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

import zag_async as zag

from . import flows

ZK_SERVER = os.environ.get("ZAG_TEST_ZK", "127.0.0.1:2181")
PG_SERVER = os.environ.get("ZAG_TEST_PG", "postgres@127.0.0.1:5432")
BOARDS = ["memory", "zookeeper"]

T = TypeVar("T")


def _unavailable(what: str, why: str) -> None:
    reason = f"{what} is not usable: {why}"
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is an error, not a skip)")
    pytest.skip(f"{reason} (start it with: bash scripts/services.sh)")


def _zk_ruok(server: str) -> str | None:
    """None when the ZooKeeper at `server` answers ruok with imok, else why not."""
    host, _, port = server.partition(":")
    try:
        with socket.create_connection((host, int(port or 2181)), timeout=2) as sock:
            sock.sendall(b"ruok")
            sock.settimeout(2)
            reply = sock.recv(16)
    except OSError as exc:
        return f"no answer on {server}: {exc!r}"
    if reply != b"imok":
        return f"{server} answered {reply!r} to ruok"
    return None


@pytest.fixture(scope="session")
def zk_server() -> str:
    """host:port of a ZooKeeper that answers (skip, or fail under CI, otherwise)."""
    why = _zk_ruok(ZK_SERVER)
    if why is not None:
        _unavailable(f"ZooKeeper at {ZK_SERVER}", why)
    return ZK_SERVER


async def _delete_root(server: str, path: str) -> None:
    import aiozk

    client = aiozk.ZKClient(server, session_timeout=5)
    try:
        async with asyncio.timeout(10):
            await client.start()
            with contextlib.suppress(Exception):
                await client.deleteall(path)
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await client.close()


# -- PostgreSQL -------------------------------------------------------------------


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(f"postgresql://{PG_SERVER}/test", timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _admin(sql: str) -> None:
    """One statement on the server's `test` database, from a plain thread (the caller
    may be inside the test's event loop, where asyncio.run is not allowed)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _pg_admin(sql)).result()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this session, as a zag URL."""
    name = f"zag_jobs_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        _admin(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        _unavailable(f"PostgreSQL at {PG_SERVER}", repr(exc))
    yield f"postgresql+asyncpg://{PG_SERVER}/{name}"
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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


@pytest.fixture
async def board_url(board_kind: str, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A board of its own for this test (deleted afterwards on ZooKeeper)."""
    name = uuid.uuid4().hex
    if board_kind == "memory":
        yield f"memory://zag-test-{name}"
        return
    server = request.getfixturevalue("zk_server")
    yield f"zookeeper://{server}/zag-test/{name}"
    await _delete_root(server, f"/zag-test/{name}")


BoardOpener = Callable[..., Awaitable[zag.jobs.JobBoard]]


@pytest.fixture
async def open_board(
    board_url: str, backend: zag.persistence.Backend
) -> AsyncIterator[BoardOpener]:
    """`await open_board(**options)`: another open board object on this test's board
    (on ZooKeeper: another session); closed at the end of the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def opener(**options: Any) -> zag.jobs.JobBoard:
            return await stack.enter_async_context(
                zag.jobs.connect(board_url, persistence=backend, **options)
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


async def eventually(
    check: Callable[[], Any],
    *,
    within: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
) -> Any:
    """Poll `check()` (sync or async) until it returns something truthy without
    raising AssertionError; return that. Fails after `within` seconds with the
    last assertion (or `what`)."""
    last: AssertionError | None = None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            value = check()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            last = None
        except AssertionError as exc:
            last = exc
        if loop.time() >= deadline:
            detail = f": {last}" if last is not None else ""
            pytest.fail(f"{what} not reached within {within:g}s{detail}")
        await asyncio.sleep(interval)


async def wait_outcome(job: zag.jobs.Job, within: float = 10.0) -> zag.jobs.JobOutcome:
    """`job.wait()` bounded by `within` seconds."""
    async with asyncio.timeout(within):
        return await job.wait()
