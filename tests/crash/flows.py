"""Flows the crash tests run in a subprocess, and the side-effect log their tasks write.

Imported as `crash.flows` both by the tests and by `worker.py` (which puts
`tests/` on sys.path), so `crash.flows:build` is a factory any process can
rebuild the flow from.

Every task appends rows to the table `zag_crash_log` in the same database as
the engine's state, through its own connection (asyncpg or sqlite3), so a row
is committed the moment the task writes it, whatever happens to the engine:

    <atom>:exec[#n]   the task started its work (n: the attempt it was given)
    <atom>:done[#n]   the task finished its work (its result is not recorded yet)
    <atom>:revert     the revert started; `(Boom)` when `result` was a Failure
    <atom>:reverted   the revert finished

Checkpoints are where a test may freeze the process to SIGKILL it: when the
environment variable ZAG_CRASH_HANG names the checkpoint, the task creates
the file `$ZAG_CRASH_SIGNAL/hang` and sleeps until it is killed. Nothing about
the hang is saved with the flow, so the resuming process runs straight through.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path
from typing import Any

import zag_async as zag

TABLE = "zag_crash_log"
WORK = 0.02  # seconds of "work" per task; the tests never wait for it

KINDS = ("linear", "revert", "retry", "idem")


class Boom(Exception):
    """The planned failure (revert and retry flows)."""


# -- the side-effect log -----------------------------------------------------------


def sqlite_path(url: str) -> str | None:
    prefix = "sqlite+aiosqlite:///"
    return url[len(prefix) :] if url.startswith(prefix) else None


def asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def create_log(url: str) -> None:
    path = sqlite_path(url)
    if path is not None:
        db = sqlite3.connect(path, timeout=10)
        try:
            with db:
                db.execute(
                    f"CREATE TABLE IF NOT EXISTS {TABLE} (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                    " run TEXT NOT NULL, entry TEXT NOT NULL)"
                )
        finally:
            db.close()
        return
    import asyncpg

    conn = await asyncpg.connect(asyncpg_dsn(url), timeout=5)
    try:
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} "
            "(seq BIGSERIAL PRIMARY KEY, run TEXT NOT NULL, entry TEXT NOT NULL)"
        )
    finally:
        await conn.close()


def record_sqlite(path: str, run: str, entry: str, timeout: float = 10) -> None:
    """`record` on a SQLite file (blocking: waits up to `timeout` s for the write lock)."""
    db = sqlite3.connect(path, timeout=timeout)
    try:
        with db:
            db.execute(f"INSERT INTO {TABLE} (run, entry) VALUES (?, ?)", (run, entry))
    finally:
        db.close()


async def record(url: str, run: str, entry: str) -> None:
    """Append one row and commit it (a separate connection from the engine's)."""
    path = sqlite_path(url)
    if path is not None:
        record_sqlite(path, run, entry)
        return
    import asyncpg

    conn = await asyncpg.connect(asyncpg_dsn(url), timeout=5)
    try:
        await conn.execute(f"INSERT INTO {TABLE} (run, entry) VALUES ($1, $2)", run, entry)
    finally:
        await conn.close()


async def read_log(url: str, run: str) -> list[str]:
    path = sqlite_path(url)
    if path is not None:
        db = sqlite3.connect(path, timeout=10)
        try:
            rows = db.execute(
                f"SELECT entry FROM {TABLE} WHERE run = ? ORDER BY seq", (run,)
            ).fetchall()
        finally:
            db.close()
        return [r[0] for r in rows]
    import asyncpg

    conn = await asyncpg.connect(asyncpg_dsn(url), timeout=5)
    try:
        rows = await conn.fetch(f"SELECT entry FROM {TABLE} WHERE run = $1 ORDER BY seq", run)
    finally:
        await conn.close()
    return [r["entry"] for r in rows]


async def checkpoint(name: str) -> None:
    """Freeze here (until SIGKILL) if this is the checkpoint the test asked for."""
    if os.environ.get("ZAG_CRASH_HANG") != name:
        return
    signal_dir = Path(os.environ["ZAG_CRASH_SIGNAL"])
    (signal_dir / "hang").write_text(name)
    await asyncio.sleep(3600)
    raise AssertionError(f"checkpoint {name!r} was not killed")


# -- tasks -------------------------------------------------------------------------


def _failure_tag(result: Any) -> str:
    if isinstance(result, zag.Failure):
        return "(" + result.exception_types[0].rsplit(".", 1)[-1] + ")"
    return ""


class Step(zag.Task):
    """Logs `exec`/`done`, returns its name; `fail=True` raises Boom after `exec`."""

    def __init__(self, name: str, url: str, run: str, *, fail: bool = False, **kw: Any):
        self.url, self.run, self.fail = url, run, fail
        super().__init__(name=name, provides=name, **kw)

    async def execute(self) -> str:
        return await self.work("", self.fail)

    async def work(self, tag: str, fail: bool) -> str:
        name = self.name
        await checkpoint(f"{name}:enter{tag}")
        await record(self.url, self.run, f"{name}:exec{tag}")
        await checkpoint(f"{name}:exec{tag}")
        await asyncio.sleep(WORK)
        if fail:
            raise Boom(f"{name} failed")
        await record(self.url, self.run, f"{name}:done{tag}")
        await checkpoint(f"{name}:done{tag}")
        return name

    async def revert(self, **kwargs: Any) -> None:
        name = self.name
        await checkpoint(f"{name}:revert-enter")
        await record(self.url, self.run, f"{name}:revert{_failure_tag(kwargs.get('result'))}")
        await checkpoint(f"{name}:revert")
        await asyncio.sleep(WORK)
        await record(self.url, self.run, f"{name}:reverted")


class FlakyStep(Step):
    """Fails on attempt 1 of its retry controller, succeeds from attempt 2."""

    async def execute(self, attempt: int) -> str:  # type: ignore[override]
        return await self.work(f"#{attempt}", fail=attempt == 1)


class Tries(zag.retry.Times):
    """Times(n) with a checkpoint where it hands out attempt n (after its delay)."""

    async def execute(self, history: zag.History, **kwargs: Any) -> Any:
        await checkpoint(f"{self.name}:exec#{len(history) + 1}")
        return await super().execute(history, **kwargs)


def build(kind: str, url: str, run: str) -> zag.Flow:
    """The flow factory saved with every crash-test flow."""
    if kind == "linear":
        return zag.linear("linear", *(Step(n, url, run) for n in ("a", "b", "c")))
    if kind == "revert":
        steps = [Step(n, url, run) for n in ("a", "b", "c")]
        return zag.linear("revert", *steps, Step("boom", url, run, fail=True))
    if kind == "retry":
        guarded = zag.linear(
            "guarded",
            FlakyStep("r", url, run),
            retry=Tries(3, provides="attempt", name="tries"),
        )
        return zag.linear("retry", Step("a", url, run), guarded, Step("c", url, run))
    if kind == "idem":
        return zag.linear(
            "idem",
            Step("a", url, run),
            Step("b", url, run, idempotent=False),
            Step("c", url, run),
        )
    raise ValueError(f"unknown flow kind {kind!r}")
