"""The flows the compensation crash tests run, and the business effects their tasks leave.

Imported as `crash.compensation_flows` by the test and by `compensation_child.py`,
so `build` is a factory every process can rebuild the flow from.

Two records, both in the flow's own database, each row committed at once
through a connection of its own (whatever happens to the engine afterwards):

- the effect table `zag_comp_effects`, one row per business effect, keyed
  (run, atom, effect) by a primary key: `did` when an atom's work took effect
  (a card charged, stock reserved, a parcel shipped), `undid` when its
  compensation did (the refund). Effects are written as a real service would
  with an idempotency key: INSERT ... ON CONFLICT DO NOTHING, so a call that
  runs again after a crash cannot apply its effect twice, only try to;
- the call log table of `crash.flows` (append-only, `zag_crash_log`), one row
  per call and outcome, which the test counts:

      <atom>:exec                 execute started
      <atom>:undo                 a revert try reached the revert function
      <atom>:undo-failed          ... and raised (the flaky part: before any effect)
      <atom>:undone / :undone-dup ... and applied its effect / found it applied already
      <atom>:call                 a forward try of the atom after the pivot
      <atom>:call-failed          ... and raised

Flakiness is counted from that log, so it survives crashes: the k-th revert
call of an atom (crashed ones included) fails when k <= fails[atom], and the
same for the k-th call of the failing atom after the pivot.

The `crash.flows` checkpoints (`ZAG_CRASH_HANG`) freeze a child at a named
point for the test to SIGKILL it there.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Mapping
from typing import Any

import zag_async as zag

from . import flows

EFFECTS = "zag_comp_effects"
#: The compensation policy the tests hold the engine to: 3 tries, pauses 0.05 s then 0.1 s.
REVERT_POLICY = zag.retry.RevertRetry(attempts=3, delay=0.05, backoff=2.0)
#: Tries the failing atom after the pivot gets in all (its controller's attempts).
FORWARD_ATTEMPTS = 3
WORK = 0.01  # seconds of "work" inside each call


class Boom(Exception):
    """A planned failure."""


# -- the records ----------------------------------------------------------------------------

#: asyncpg pools by (URL, event loop): a PostgreSQL connection is a server process,
#: too dear to start for every row on a loaded machine.
_POOLS: dict[tuple[str, int], Any] = {}


async def _pg(url: str) -> Any:
    import asyncpg

    key = (url, id(asyncio.get_running_loop()))
    if key not in _POOLS:
        pool = await asyncpg.create_pool(flows.asyncpg_dsn(url), min_size=1, max_size=4)
        if key in _POOLS:  # another task of this loop made one meanwhile
            await pool.close()
        else:
            _POOLS[key] = pool
    return _POOLS[key]


async def close_pools() -> None:
    """Close this event loop's pools (before the loop ends)."""
    loop = id(asyncio.get_running_loop())
    for key in [k for k in _POOLS if k[1] == loop]:
        await _POOLS.pop(key).close()


def _sqlite(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]] | int:
    """One statement in its own transaction: the rows it selects, or its row count."""
    path = flows.sqlite_path(url)
    assert path is not None
    db = sqlite3.connect(path, timeout=10)
    try:
        with db:
            cur = db.execute(sql, args)
            return cur.fetchall() if cur.description else cur.rowcount
    finally:
        db.close()


async def create_tables(url: str) -> None:
    """The call log of `crash.flows` and the effect table (idempotent)."""
    await flows.create_log(url)
    ddl = (
        f"CREATE TABLE IF NOT EXISTS {EFFECTS} (run TEXT NOT NULL, atom TEXT NOT NULL,"
        " effect TEXT NOT NULL, PRIMARY KEY (run, atom, effect))"
    )
    if flows.sqlite_path(url) is not None:
        _sqlite(url, ddl)
    else:
        await (await _pg(url)).execute(ddl)


async def note(url: str, run: str, entry: str) -> None:
    """Append one row to the call log (committed at once)."""
    sql = f"INSERT INTO {flows.TABLE} (run, entry) VALUES "
    if flows.sqlite_path(url) is not None:
        _sqlite(url, sql + "(?, ?)", run, entry)
    else:
        await (await _pg(url)).execute(sql + "($1, $2)", run, entry)


async def read_log(url: str, run: str) -> list[str]:
    sql = f"SELECT entry FROM {flows.TABLE} WHERE run = "
    if flows.sqlite_path(url) is not None:
        rows = _sqlite(url, sql + "? ORDER BY seq", run)
        assert isinstance(rows, list)
        return [r[0] for r in rows]
    return [r["entry"] for r in await (await _pg(url)).fetch(sql + "$1 ORDER BY seq", run)]


async def apply_effect(url: str, run: str, atom: str, effect: str) -> bool:
    """Record one business effect under its idempotency key; False if it was there."""
    sql = f"INSERT INTO {EFFECTS} (run, atom, effect) VALUES "
    if flows.sqlite_path(url) is not None:
        return _sqlite(url, sql + "(?, ?, ?) ON CONFLICT DO NOTHING", run, atom, effect) == 1
    pool = await _pg(url)
    status = await pool.execute(sql + "($1, $2, $3) ON CONFLICT DO NOTHING", run, atom, effect)
    return bool(status == "INSERT 0 1")


async def read_effects(url: str, run: str) -> list[tuple[str, str]]:
    """(atom, effect) pairs of one run, sorted."""
    sql = f"SELECT atom, effect FROM {EFFECTS} WHERE run = "
    if flows.sqlite_path(url) is not None:
        rows = _sqlite(url, sql + "?", run)
        assert isinstance(rows, list)
        return sorted((r[0], r[1]) for r in rows)
    return sorted((r["atom"], r["effect"]) for r in await (await _pg(url)).fetch(sql + "$1", run))


# -- tasks ---------------------------------------------------------------------------------


class Business(zag.Task):
    """One step of an order: its work takes effect (`did`); no revert."""

    def __init__(self, name: str, url: str, run: str, fails: int = 0, **kw: Any) -> None:
        self.url, self.run, self.fails = url, run, fails
        super().__init__(name=name, provides=name, **kw)

    async def note(self, entry: str) -> None:
        await note(self.url, self.run, f"{self.name}:{entry}")

    async def execute(self) -> str:
        name = self.name
        await self.note("exec")
        await flows.checkpoint(f"{name}:before-effect")
        await asyncio.sleep(WORK)
        await apply_effect(self.url, self.run, name, "did")
        await flows.checkpoint(f"{name}:after-effect")  # took effect; result not recorded
        return name


class Refundable(Business):
    """A step its revert undoes (`undid`), failing its first `fails` calls first."""

    async def revert(self, **kwargs: Any) -> None:
        name = self.name
        await self.note("undo")
        calls = (await read_log(self.url, self.run)).count(f"{name}:undo")
        await flows.checkpoint(f"{name}:undo#{calls}")
        await asyncio.sleep(WORK)
        if calls <= self.fails:
            await self.note("undo-failed")
            raise Boom(f"refund of {name} failed (call {calls})")
        fresh = await apply_effect(self.url, self.run, name, "undid")
        await self.note("undone" if fresh else "undone-dup")
        await flows.checkpoint(f"{name}:undone")  # undone; not recorded REVERTED yet


class Pivot(Business):
    """An irreversible step (a parcel handed to the carrier)."""

    def __init__(self, name: str, url: str, run: str, *, idempotent: bool = True) -> None:
        super().__init__(name, url, run, irreversible=True, idempotent=idempotent)


class Ship(Business):
    """The step that fails every time (the carrier refuses the parcel)."""

    async def execute(self) -> str:
        await self.note("exec")
        await asyncio.sleep(WORK)
        raise Boom(f"{self.name} failed")


class Notify(Business):
    """After the pivot: fails its first `fails` calls, retried forward by its controller."""

    async def execute(self) -> str:
        name = self.name
        await self.note("call")
        calls = (await read_log(self.url, self.run)).count(f"{name}:call")
        await flows.checkpoint(f"{name}:call#{calls}")
        await asyncio.sleep(WORK)
        if calls <= self.fails:
            await self.note("call-failed")
            raise Boom(f"{name} failed (call {calls})")
        await apply_effect(self.url, self.run, name, "did")
        return name


def build(kind: str, url: str, run: str, fails: Mapping[str, int]) -> zag.Flow:
    """The factory saved with every flow of these tests.

    - "refund": charge -> reserve -> ship; ship always fails, so reserve's and
      charge's reverts (flaky: `fails[name]` failed calls first) run under
      `REVERT_POLICY`;
    - "pivot": charge -> reserve -> ship (irreversible) -> notify, notify
      failing its first `fails["notify"]` calls under Times(FORWARD_ATTEMPTS);
    - "pivot-once": the same with ship declared idempotent=False (a launch cut
      off by a crash is not run again: it may have taken effect).
    """
    policy = REVERT_POLICY

    def step(name: str) -> Refundable:
        return Refundable(name, url, run, fails.get(name, 0), revert_retry=policy)

    if kind == "refund":
        return zag.linear("refund", step("charge"), step("reserve"), Ship("ship", url, run))
    if kind in ("pivot", "pivot-once"):
        retry = zag.retry.Times(FORWARD_ATTEMPTS, delay=0.03, backoff=2.0)
        notify = Notify("notify", url, run, fails.get("notify", 0), retry=retry)
        ship = Pivot("ship", url, run, idempotent=kind == "pivot")
        return zag.linear("pivot", step("charge"), step("reserve"), ship, notify)
    raise ValueError(f"unknown flow kind {kind!r}")
