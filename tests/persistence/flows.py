"""Importable flow factories for the persistence tests.

`Engine.from_factory` saves a factory by its `module:function` path and
`Engine.load` imports it again, so the factories live in a module rather than
inside the tests. What a test wants to observe or control across a rebuild
lives here at module level (the rebuilt flow is a new set of objects):

- `LOG` is the side-effect log: "name" when an atom's execute starts,
  "done name" when it returns, "revert name" / "reverted name" for reverts;
- `HOLD_EXEC` / `HOLD_REVERT` name atoms ("s1", or "s1#2" for its second
  execute only) that stop mid-call, after logging their start, until the test
  cancels the run or calls `release(key)`; `started(key)` is set when they stop
  ("s1" or "revert s1");
- `FAILS` maps an atom name to how many more of its calls should raise `Boom`,
  `REVERT_FAILS` the same for its reverts (held reverts count from "s1#2" too);
- `UNSTORABLE` names atoms that return a value no codec can store;
- `EXTRA` names atoms the factories append, to simulate a changed flow.

`reset()` (an autouse fixture in conftest.py) clears all of it between tests.
"""

from __future__ import annotations

import asyncio
from typing import Any

import zag_async as zag

LOG: list[str] = []
HOLD_EXEC: set[str] = set()
HOLD_REVERT: set[str] = set()
FAILS: dict[str, int] = {}
REVERT_FAILS: dict[str, int] = {}
UNSTORABLE: set[str] = set()
EXTRA: list[str] = []
_STARTED: dict[str, asyncio.Event] = {}
_RELEASE: dict[str, asyncio.Event] = {}


class Boom(Exception):
    """The error the steps raise on purpose."""


class Unstorable:
    """A result the JSON codec cannot write."""


def reset() -> None:
    LOG.clear()
    HOLD_EXEC.clear()
    HOLD_REVERT.clear()
    FAILS.clear()
    REVERT_FAILS.clear()
    UNSTORABLE.clear()
    EXTRA.clear()
    _STARTED.clear()
    _RELEASE.clear()


def started(key: str) -> asyncio.Event:
    """Set once the call logged as `key` ("s1" or "revert s1") has started."""
    return _STARTED.setdefault(key, asyncio.Event())


def release(key: str) -> None:
    """Let the held call `key` go on."""
    _RELEASE.setdefault(key, asyncio.Event()).set()


def count(entry: str) -> int:
    return LOG.count(entry)


async def _hold(key: str) -> None:
    started(key).set()
    await _RELEASE.setdefault(key, asyncio.Event()).wait()  # or the test cancels the run


class Step(zag.Task):
    """Logs its calls, provides `name` (its result is `value` or "<name>-out")."""

    def __init__(self, name: str, *, value: Any = None, **kwargs: Any) -> None:
        self.value = f"{name}-out" if value is None else value
        super().__init__(name=name, provides=name, **kwargs)

    async def execute(self) -> Any:
        LOG.append(self.name)
        if self.name in HOLD_EXEC or f"{self.name}#{LOG.count(self.name)}" in HOLD_EXEC:
            await _hold(self.name)
        if FAILS.get(self.name, 0) > 0:
            FAILS[self.name] -= 1
            raise Boom(f"{self.name} failed")
        LOG.append(f"done {self.name}")
        if self.name in UNSTORABLE:
            return Unstorable()
        return self.value

    async def revert(self, **kwargs: Any) -> None:
        key = f"revert {self.name}"
        LOG.append(key)
        if self.name in HOLD_REVERT or f"{self.name}#{LOG.count(key)}" in HOLD_REVERT:
            await _hold(key)
        if REVERT_FAILS.get(self.name, 0) > 0:
            REVERT_FAILS[self.name] -= 1
            raise Boom(f"revert of {self.name} failed")
        LOG.append(f"reverted {self.name}")


class Pivot(zag.Task):
    """An irreversible step (no revert): logs "name" and "done name" like `Step`."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name, provides=name, irreversible=True)

    async def execute(self) -> str:
        LOG.append(self.name)
        if self.name in HOLD_EXEC:
            await _hold(self.name)
        LOG.append(f"done {self.name}")
        return f"{self.name}-out"


def linear_steps(n: int, prefix: str = "s") -> zag.Flow:
    """`n` steps in a row, named s0, s1, ... (plus any names in EXTRA)."""
    names = [f"{prefix}{i}" for i in range(n)] + list(EXTRA)
    return zag.linear("steps", *(Step(name) for name in names))


def parallel_then_fail() -> zag.Flow:
    """p0, p1, p2 side by side, then `boom` (make it fail with FAILS["boom"])."""
    return zag.linear(
        "compensate", zag.unordered("par", Step("p0"), Step("p1"), Step("p2")), Step("boom")
    )


def store_user() -> zag.Flow:
    """A step that needs the store's `items` and `when`, then a second step."""

    @zag.task(provides="summary")
    async def summarise(items: tuple[int, ...], when: Any) -> dict[str, Any]:
        LOG.append("summarise")
        return {"items": items, "when": when}

    return zag.linear("store-user", Step("first"), summarise, Step("last"))


def with_retry(attempts: int = 3) -> zag.Flow:
    """before -> [guarded: r0 -> r1 under Times(attempts)] -> after."""
    guarded = zag.linear("guarded", Step("r0"), Step("r1"), retry=zag.retry.Times(attempts))
    return zag.linear("retrying", Step("before"), guarded, Step("after"))


def shaky_refund(attempts: int) -> zag.Flow:
    """reserve -> charge (its revert tried `attempts` times, no pause) -> ship."""
    policy = zag.retry.RevertRetry(attempts=attempts, delay=0)
    return zag.linear("refund", Step("reserve"), Step("charge", revert_retry=policy), Step("ship"))


def order_with_pivot(attempts: int) -> zag.Flow:
    """reserve -> charge -> ship (irreversible) -> notify under Times(attempts)."""
    notify = Step("notify", retry=zag.retry.Times(attempts))
    return zag.linear("order", Step("reserve"), Step("charge"), Pivot("ship"), notify)


def non_idempotent() -> zag.Flow:
    """a -> charge (idempotent=False) -> c."""
    return zag.linear("payments", Step("a"), Step("charge", idempotent=False), Step("c"))


def wide(n: int) -> zag.Flow:
    """`n` independent no-op coroutine atoms."""

    @zag.task
    async def noop() -> int:
        return 1

    return zag.unordered("wide", *(noop.bind(name=f"w{i}") for i in range(n)))


def wide_sync(n: int) -> zag.Flow:
    """`n` independent no-op plain functions (run in worker threads, so they finish
    at scattered moments, as in benchmark scenario S4)."""

    @zag.task
    def noop() -> int:
        return 1

    return zag.unordered("wide", *(noop.bind(name=f"w{i}") for i in range(n)))


def wide_staggered(n: int) -> zag.Flow:
    """`n` independent atoms finishing over about 10 ms, in 50 separate waves."""

    @zag.task
    async def io(i: int) -> int:
        await asyncio.sleep(0.01 * (i % 50) / 50)
        return i

    return zag.unordered("wide", *(io.bind(name=f"w{i}", inject={"i": i}) for i in range(n)))


@zag.task(provides="answer")
async def _ask() -> str:
    LOG.append("ask")
    return "asked"


@zag.task(provides="done")
async def _act(answer: str, reply: Any) -> str:
    LOG.append(f"act {reply}")
    return f"{answer}: {reply}"


def approval() -> zag.Flow:
    """ask -> wait for the event "reply" -> act (on the reply's payload)."""
    return zag.linear(
        "approval", _ask, zag.wait_for("reply", event="reply", provides="reply"), _act
    )
