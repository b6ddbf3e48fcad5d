"""Backends for the persistence tests: every test taking `backend` runs on each of
memory://, SQLite and PostgreSQL.

PostgreSQL is the server at 127.0.0.1:5432 (trust auth). Each test session gets
its own database (dropped at the end), so parallel sessions and other suites
never see each other's rows; the zag tables are emptied before every test.
Without a reachable server the postgres cases skip, unless CI is set: then
they fail, because CI must run them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import zag_async as zag

from . import flows

PG_SERVER = os.environ.get("ZAG_TEST_PG", "postgres@127.0.0.1:5432")
BACKENDS = ["memory", "sqlite", "postgres"]


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(f"postgresql://{PG_SERVER}/test", timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _admin(sql: str) -> None:
    """Run one statement on the server's `test` database, from a plain thread (the
    caller may be inside the test's event loop, where asyncio.run is not allowed)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _pg_admin(sql)).result()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this session, as a zag URL."""
    name = f"zag_persist_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        _admin(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        reason = f"PostgreSQL at {PG_SERVER} is not usable: {exc!r}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set, so this is an error, not a skip)")
        pytest.skip(reason)
    yield f"postgresql+asyncpg://{PG_SERVER}/{name}"
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _empty_pg_tables(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"), timeout=5)
    try:
        await conn.execute("DELETE FROM zag_atoms; DELETE FROM zag_flows; DELETE FROM zag_logbooks")
    finally:
        await conn.close()


@pytest.fixture(params=BACKENDS)
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[zag.persistence.Backend]:
    """An open backend with no flows or logbooks in it."""
    url = _url_for(request, tmp_path)
    async with zag.connect(url) as opened:
        if request.param == "postgres":
            await _empty_pg_tables(url)
        yield opened


def _url_for(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    kind = request.param
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'flows.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(autouse=True)
def _reset_flows() -> Iterator[None]:
    """Clear the module-level switches and logs of tests/persistence/flows.py."""
    flows.reset()
    yield
    flows.reset()
