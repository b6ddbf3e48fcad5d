"""Helpers every test directory shares: the real services, polling, skipping.

Import it as `support` (`from support import eventually`): tests/ has no
`__init__.py`, so pytest puts it on sys.path for every test below it (the
subprocess scripts of tests/crash and tests/jobs_fault, which put tests/ there
themselves, could too). The session fixtures built on it (`zk_server`,
`amqp_url`) are in tests/conftest.py.

The servers are 127.0.0.1 unless ZAG_TEST_PG, ZAG_TEST_ZK or ZAG_TEST_AMQP say
otherwise. A test needing one that is not there skips, unless CI is set: then
it fails, because CI starts every service (scripts/services.sh) and must run it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import os
import socket
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, NoReturn, TypeVar

import pytest

ZK_SERVER = os.environ.get("ZAG_TEST_ZK", "127.0.0.1:2181")
PG_SERVER = os.environ.get("ZAG_TEST_PG", "postgres@127.0.0.1:5432")
AMQP_URL = os.environ.get("ZAG_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")

T = TypeVar("T")


def unavailable(reason: str, service: str) -> NoReturn:
    """Fail under CI (the service must be there), skip elsewhere.

    `service` is what scripts/services.sh calls it (postgres, zookeeper, rabbitmq).
    """
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is an error, not a skip)")
    pytest.skip(f"{reason} (start it with: bash scripts/services.sh {service})")


# -- polling --------------------------------------------------------------------------------


async def eventually(
    check: Callable[[], Any],
    *,
    within: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
) -> Any:
    """Poll `check()` (sync or async) until it returns something truthy; return that.

    An exception from `check` (say an AssertionError that a process died) ends
    the wait at once; nothing truthy within `within` seconds raises AssertionError.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() >= deadline:
            raise AssertionError(f"{what} not reached within {within:g}s")
        await asyncio.sleep(interval)


def eventually_sync(
    check: Callable[[], T],
    *,
    within: float = 10.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """`eventually` for synchronous tests (the CLI's, which only watch subprocesses)."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not reached within {within:g}s")
        time.sleep(interval)


def run_in_thread(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on a private event loop in a plain thread: the caller (a fixture,
    say) may be inside the test's own loop, where asyncio.run is not allowed."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


# -- PostgreSQL -----------------------------------------------------------------------------


async def _pg_fetchval(sql: str, *args: Any) -> Any:
    import asyncpg

    conn = await asyncpg.connect(f"postgresql://{PG_SERVER}/test", timeout=5)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


def pg_admin(sql: str, *args: Any) -> Any:
    """One statement on the server's `test` database; returns its first value."""
    return run_in_thread(_pg_fetchval(sql, *args))


async def _pg_reset_newer_schema(known: int) -> int | None:
    import asyncpg

    conn = await asyncpg.connect(f"postgresql://{PG_SERVER}/test", timeout=5)
    try:
        exists = await conn.fetchval("SELECT to_regclass('zag_schema_version') IS NOT NULL")
        if not exists:
            return None
        version = await conn.fetchval("SELECT version FROM zag_schema_version")
        if version is None or version <= known:
            return None
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
            "AND tablename LIKE 'zag\\_%'"
        )
        for row in tables:
            await conn.execute(f'DROP TABLE IF EXISTS "{row["tablename"]}" CASCADE')
        await conn.execute("DROP SEQUENCE IF EXISTS zag_job_tokens")
        return int(version)
    finally:
        await conn.close()


def reset_shared_pg_if_newer(known: int) -> int | None:
    """Drop zag's tables from the shared `test` database when another checkout left
    them at a newer schema than this code knows (the database is the suite's
    scratch space); returns the version found, or None when nothing was done."""
    try:
        return run_in_thread(_pg_reset_newer_schema(known))
    except Exception:
        return None  # unreachable: the tests that need it say so themselves


@contextlib.contextmanager
def fresh_pg_database(prefix: str) -> Iterator[str]:
    """A new database named `<prefix>_<pid>_<random>`, as a zag URL; dropped afterwards.

    A session fixture of its own keeps each suite's rows (and open sessions)
    away from every other suite's.
    """
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        pg_admin(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        unavailable(f"PostgreSQL at {PG_SERVER} is not usable: {exc!r}", "postgres")
    yield f"postgresql+asyncpg://{PG_SERVER}/{name}"
    pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- ZooKeeper ------------------------------------------------------------------------------


def zk_ruok(server: str) -> str | None:
    """None when the ZooKeeper at host:port answers ruok with imok, else why not."""
    host, _, port = server.partition(":")
    try:
        with socket.create_connection((host, int(port or 2181)), timeout=2) as sock:
            sock.sendall(b"ruok")
            sock.settimeout(2)
            reply = sock.recv(16)
    except OSError as exc:
        return f"no answer on {server}: {exc!r}"
    return None if reply == b"imok" else f"{server} answered {reply!r} to ruok"


async def delete_zk_path(server: str, path: str) -> None:
    """Delete `path` and everything below it (best effort: for test teardown)."""
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


# -- RabbitMQ -------------------------------------------------------------------------------


def amqp_answers(host: str, port: int, timeout: float = 2.0) -> str | None:
    """None when host:port answers the AMQP 0-9-1 header with Connection.Start, else why not."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            sock.settimeout(timeout)
            reply = sock.recv(11)
    except OSError as exc:
        return f"no answer on {host}:{port}: {exc!r}"
    if len(reply) < 11 or reply[0] != 1 or reply[7:11] != b"\x00\x0a\x00\x0a":
        return f"{host}:{port} does not speak AMQP 0-9-1 (answered {reply!r})"
    return None


# -- the rest -------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (right now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
