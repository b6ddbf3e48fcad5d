"""Flow factories for the job fault tests, and the side-effect table their tasks write to.

Imported as `jobs_fault.flows` by the tests and by worker.py (which puts
`tests/` on sys.path), so a conductor in any process rebuilds a posted job's
flow from `jobs_fault.flows:<factory>`.

Every task writes rows to the PostgreSQL table `zag_jobs_fault_log` through
its own connection (not the engine's), so a row is committed the moment the
task writes it, whatever then happens to the engine or the claim:

    run     the test's id (every test uses its own)
    entry   what happened: `<atom>:exec`, `<atom>:done`, a job number, ...
    who     the worker that wrote it (its conductor's name)
    at      PostgreSQL's clock_timestamp() at the insert (one clock for all)

A `Step` can sleep on chosen attempts: `sleeps={"b": [30]}` makes the first
execution of `b` (counted in the table, so across processes) sleep 30 s and
any later one go straight through; that is how a test freezes a conductor
inside a task and lets the next owner finish it.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import zag_async as zag

TABLE = "zag_jobs_fault_log"
WHO = "ZAG_FAULT_WORKER"  # set by worker.py to the conductor's name

_pools: dict[tuple[str, int], Any] = {}


def dsn_of(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def who() -> str:
    return os.environ.get(WHO, f"pid{os.getpid()}")


async def create_log(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn_of(url), timeout=5)
    try:
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (seq BIGSERIAL PRIMARY KEY, run TEXT NOT NULL,"
            " entry TEXT NOT NULL, who TEXT, at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp())"
        )
        await conn.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_run ON {TABLE} (run)")
    finally:
        await conn.close()


async def _pool(url: str) -> Any:
    """One small pool per process and event loop (workers run a single loop)."""
    import asyncpg

    key = (dsn_of(url), id(asyncio.get_running_loop()))
    pool = _pools.get(key)
    if pool is None:
        pool = await asyncpg.create_pool(key[0], min_size=1, max_size=4, timeout=5)
        _pools[key] = pool
    return pool


async def close_pools() -> None:
    """Close the pools made in the running loop (workers call this before exiting)."""
    loop = id(asyncio.get_running_loop())
    for key in [k for k in _pools if k[1] == loop]:
        await _pools.pop(key).close()


async def record(url: str, run: str, entry: str) -> int:
    """Append one row; returns how many rows with this run and entry exist (this one included)."""
    pool = await _pool(url)
    async with pool.acquire() as conn:
        await conn.execute(
            f"INSERT INTO {TABLE} (run, entry, who) VALUES ($1, $2, $3)", run, entry, who()
        )
        count = await conn.fetchval(
            f"SELECT count(*) FROM {TABLE} WHERE run = $1 AND entry = $2", run, entry
        )
    return int(count)


async def read_log(url: str, run: str) -> list[dict[str, Any]]:
    """This run's rows in insertion order: {entry, who, at (epoch seconds)} (own connection)."""
    import asyncpg

    conn = await asyncpg.connect(dsn_of(url), timeout=5)
    try:
        rows = await conn.fetch(
            f"SELECT entry, who, extract(epoch FROM at)::float8 AS at FROM {TABLE}"
            " WHERE run = $1 ORDER BY seq",
            run,
        )
    finally:
        await conn.close()
    return [dict(r) for r in rows]


async def count_log(url: str, run: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(dsn_of(url), timeout=5)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {TABLE} WHERE run = $1", run))
    finally:
        await conn.close()


# -- tasks -----------------------------------------------------------------------------


class Step(zag.Task):
    """Writes `<name>:exec`, sleeps as told for this attempt, writes `<name>:done`.

    Provides `<name>_by`: the worker that ran it to the end.
    """

    def __init__(self, url: str, run: str, name: str, sleeps: Sequence[float] = ()) -> None:
        self.url, self.run, self.sleeps = url, run, list(sleeps)
        super().__init__(name=name, provides=f"{name}_by")

    async def execute(self) -> str:
        attempt = await record(self.url, self.run, f"{self.name}:exec")
        if attempt <= len(self.sleeps) and self.sleeps[attempt - 1] > 0:
            await asyncio.sleep(self.sleeps[attempt - 1])
        await record(self.url, self.run, f"{self.name}:done")
        return who()


class Mark(zag.Task):
    """Sleeps `seconds`, then writes one row `entry` (so an interrupted run leaves none)."""

    def __init__(self, url: str, run: str, entry: str, seconds: float = 0.0) -> None:
        self.url, self.run, self.entry, self.seconds = url, run, entry, seconds
        super().__init__(name="mark", provides="marked_by")

    async def execute(self) -> str:
        if self.seconds:
            await asyncio.sleep(self.seconds)
        await record(self.url, self.run, self.entry)
        return who()


class Echo(zag.Task):
    """Writes what it was given as `payload` (JSON), and provides a changed copy under the
    same name: were a run's results to leak into the next run's store, the next run
    would see the changed value."""

    def __init__(self, url: str, run: str) -> None:
        self.url, self.run = url, run
        super().__init__(name="echo", provides="payload")

    async def execute(self, payload: dict[str, Any]) -> dict[str, Any]:
        await record(self.url, self.run, "seen:" + json.dumps(payload, sort_keys=True))
        return {**payload, "n": payload.get("n", 0) + 1}


# -- factories (what jobs name) -------------------------------------------------------


def linear(
    url: str, run: str, names: Sequence[str], sleeps: Mapping[str, Sequence[float]] | None = None
) -> zag.Flow:
    """A linear flow of `Step`s."""
    sleeps = sleeps or {}
    return zag.linear(f"steps-{run[:8]}", *(Step(url, run, n, sleeps.get(n, ())) for n in names))


def single(url: str, run: str, entry: str, seconds: float = 0.0) -> zag.Flow:
    """One `Mark` writing `entry` (the job's number): duplicates in the table would show."""
    return zag.linear(f"single-{entry}", Mark(url, run, entry, seconds))


def echo(url: str, run: str) -> zag.Flow:
    return zag.linear("echo", Echo(url, run))
