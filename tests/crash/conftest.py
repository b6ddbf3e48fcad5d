"""Fixtures for the crash and outage tests: real processes, real PostgreSQL.

Tests that need PostgreSQL fail when the environment variable CI is set and
the server is unreachable (CI starts it through scripts/services.sh), and
skip with the reason otherwise.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import glob
import inspect
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import pytest

PG_URL = os.environ.get("ZAG_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


def unavailable(reason: str) -> NoReturn:
    """Fail under CI (the service must be there), skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is an error; CI runs scripts/services.sh)")
    pytest.skip(f"{reason}; run scripts/services.sh postgres")


async def eventually(
    check: Callable[[], Any | Awaitable[Any]],
    *,
    within: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
) -> Any:
    """Poll `check` (sync or async) until it returns something truthy; return that."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {within} s")
        await asyncio.sleep(interval)


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The shared PostgreSQL (database `test`), checked once per session."""
    error = _probe_postgres(PG_URL)
    if error is not None:
        unavailable(f"PostgreSQL at {PG_URL} is unreachable: {error}")
    return PG_URL


def _probe_postgres(url: str) -> str | None:
    try:
        import asyncpg
    except ImportError as exc:
        return f"asyncpg is not installed ({exc})"

    async def probe() -> None:
        dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
        conn = await asyncpg.connect(dsn, timeout=3)
        await conn.close()

    try:
        # In a thread: the fixture may be requested from inside a running event loop.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, probe()).result()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.fixture(scope="session")
def pg_bindir() -> str:
    """The directory holding initdb and pg_ctl (Debian keeps them off PATH)."""
    initdb = shutil.which("initdb")
    if initdb is None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        initdb = found[-1] if found else None
    if initdb is None:
        unavailable("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    return os.path.dirname(initdb)
