"""Flows with waits that the wait crash tests run in subprocesses, and the hooks
that freeze a subprocess at a point of a wait for the test to SIGKILL it.

Imported as `crash.wait_flows` by the tests and by `wait_worker.py`, so
`crash.wait_flows:build` rebuilds the flow in any process. Tasks are the
logging steps of `crash.flows` (rows in `zag_crash_log`, committed through
their own connection), so the log shows every task's effect and revert.

The engine never calls a wait, so the points around one are reached by
wrapping the child's own backend methods (`instrument`); when the environment
variable ZAG_CRASH_HANG names one, the process creates `$ZAG_CRASH_SIGNAL/hang`
and sleeps until killed (`crash.flows.checkpoint`):

    arm:before / arm:after      the write that records the wait as reached
                                (its meta["wait"]: event, deadline, token)
    take:after                  take_signal returned a signal (not yet recorded)
    waited:before:<how>         the write recording how the wait ended
    waited:after:<how>          (<how>: signal, timeout, rejected)

ZAG_CRASH_PAUSE names a point where the process pauses instead, until the test
creates `$ZAG_CRASH_SIGNAL/go` (it announces the pause with `.../paused`):

    take:none                   take_signal found no signal for the wait
    signal:commit               a signal's row is inserted, its transaction not
                                yet committed (`pause_signal_commits`; blocks
                                the whole process, which only sends the signal)
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import zag_async as zag
from zag_async.persistence.base import Backend

from .flows import Step, checkpoint, record

EVENT = "approval"
KINDS = ("approval", "approval-default", "sleep")


class Pay(Step):
    """Logs `pay:exec(<decision>)` and `pay:done`: which payload reached it, once."""

    def __init__(self, url: str, run: str) -> None:
        super().__init__("pay", url, run)

    async def execute(self, decision: Any) -> str:  # type: ignore[override]
        await record(self.url, self.run, f"pay:exec({decision})")
        await record(self.url, self.run, "pay:done")
        return "paid"


def build(kind: str, url: str, run: str, timeout: float) -> zag.Flow:
    """The factory saved with every flow: a -> wait -> pay (or c after a sleep)."""
    a = Step("a", url, run)
    if kind == "approval":
        wait = zag.wait_for("approve", event=EVENT, timeout=timeout, provides="decision")
        return zag.linear("approval", a, wait, Pay(url, run))
    if kind == "approval-default":
        wait = zag.wait_for(
            "approve", event=EVENT, timeout=timeout, provides="decision", default="auto"
        )
        return zag.linear("approval-default", a, wait, Pay(url, run))
    if kind == "sleep":
        return zag.linear("sleep", a, zag.sleep("approve", delay=timeout), Step("c", url, run))
    raise ValueError(f"unknown flow kind {kind!r}")


async def pause(name: str, within: float = 60) -> None:
    """Pause here until the test says go, if this is the pause point it asked for."""
    if os.environ.get("ZAG_CRASH_PAUSE") != name:
        return
    folder = Path(os.environ["ZAG_CRASH_SIGNAL"])
    (folder / "paused").write_text(name)
    for _ in range(int(within / 0.01)):
        if (folder / "go").exists():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"pause {name!r} was never released")


def pause_signal_commits(within: float = 60) -> None:
    """Make the `signal:commit` pause apply to this process's SQL engines (SQLAlchemy's,
    the SQLite backend's own connections and PostgresBackend's asyncpg ones)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from zag_async.persistence import sqlite as zag_sqlite

    inserted: list[bool] = []
    opened = zag_sqlite.open_connection

    def traced(path: str, **options: Any) -> Any:
        conn = opened(path, **options)

        def on_statement(statement: str) -> None:
            text = statement.lstrip().upper()
            if text.startswith("INSERT INTO ZAG_SIGNALS"):
                inserted.append(True)
            elif text.startswith("COMMIT"):
                on_commit(conn)

        conn.set_trace_callback(on_statement)
        return conn

    zag_sqlite.open_connection = traced  # type: ignore[assignment]

    def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO ZAG_SIGNALS"):
            inserted.append(True)

    def on_commit(conn: Any) -> None:
        if not inserted:
            return
        inserted.clear()
        folder = Path(os.environ["ZAG_CRASH_SIGNAL"])
        (folder / "paused").write_text("signal:commit")
        for _ in range(int(within / 0.01)):
            if (folder / "go").exists():
                return
            time.sleep(0.01)  # blocking on purpose: the transaction stays open
        raise AssertionError("pause 'signal:commit' was never released")

    event.listen(Engine, "before_cursor_execute", on_execute)
    event.listen(Engine, "commit", on_commit)
    _pause_asyncpg_commits(inserted, on_commit)


def _pause_asyncpg_commits(inserted: list[bool], on_commit: Callable[[Any], None]) -> None:
    """PostgresBackend talks to asyncpg itself: it inserts a signal with `fetchrow`
    and commits with asyncpg's `execute("COMMIT;")`, which no SQLAlchemy event sees."""
    import asyncpg

    fetchrow, execute = asyncpg.Connection.fetchrow, asyncpg.Connection.execute

    async def fetching(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        if query.lstrip().upper().startswith("INSERT INTO ZAG_SIGNALS"):
            inserted.append(True)
        return await fetchrow(self, query, *args, **kwargs)

    async def executing(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        if query.strip().upper().startswith("COMMIT"):
            on_commit(self)
        return await execute(self, query, *args, **kwargs)

    asyncpg.Connection.fetchrow, asyncpg.Connection.execute = fetching, executing


def _waits_in(atoms: Sequence[zag.AtomDetail]) -> tuple[set[str], dict[str, str]]:
    """Tokens of reached waits, and how ended waits ended (by atom), in `atoms`."""
    armed, ended = set(), {}
    for atom in atoms:
        meta = atom.meta or {}
        if "wait" in meta:
            armed.add(meta["wait"]["token"])
        if "waited" in meta:
            ended[atom.name] = meta["waited"]["ended_by"]
    return armed, ended


def instrument(backend: Backend) -> None:
    """Wrap this process's backend so the checkpoints above can freeze it.

    Each fires on the first write of what this process did not load: `arm:*`
    on a new wait token (the wait recorded as reached), `waited:*` on a wait's
    end (recorded with its result).
    """
    save, take_signal, load_flow = backend.save, backend.take_signal, backend.load_flow
    known: set[str] = set()
    ended_known: set[str] = set()

    async def loading(uuid: str) -> zag.FlowDetail:
        detail = await load_flow(uuid)
        armed, ended = _waits_in(list(detail.atoms.values()))
        known.update(armed)
        ended_known.update(ended)
        return detail

    async def saving(flow: zag.FlowDetail, atoms: Sequence[zag.AtomDetail]) -> None:
        armed, ended = _waits_in(atoms)
        new = armed - known
        known.update(armed)
        hows = [how for name, how in ended.items() if name not in ended_known]
        ended_known.update(ended)
        for how in hows:
            await checkpoint(f"waited:before:{how}")
        if new:
            await checkpoint("arm:before")
        await save(flow, atoms)
        if new:
            await checkpoint("arm:after")
        for how in hows:
            await checkpoint(f"waited:after:{how}")

    async def taking(*args: Any, **kwargs: Any) -> zag.Signal | None:
        got = await take_signal(*args, **kwargs)
        if got is not None:
            await checkpoint("take:after")
        else:
            await pause("take:none")
        return got

    backend.save = saving  # type: ignore[method-assign]
    backend.take_signal = taking  # type: ignore[method-assign]
    backend.load_flow = loading  # type: ignore[method-assign]
