"""Backends for the persistence tests: every test taking `backend` runs on each of
memory://, SQLite and PostgreSQL.

PostgreSQL is the server at 127.0.0.1:5432 (trust auth). Each test session gets
its own database (dropped at the end), so parallel sessions and other suites
never see each other's rows; the zag tables are emptied before every test.
Without a reachable server the postgres cases skip, unless CI is set: then
they fail, because CI must run them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from support import fresh_pg_database

import zag_async as zag

from . import flows

BACKENDS = ["memory", "sqlite", "postgres"]


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this session, as a zag URL."""
    with fresh_pg_database("zag_persist") as url:
        yield url


async def _empty_pg_tables(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"), timeout=5)
    try:
        await conn.execute(
            "DELETE FROM zag_atoms; DELETE FROM zag_flows; DELETE FROM zag_logbooks; "
            "DELETE FROM zag_signals; DELETE FROM zag_actions"
        )
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
