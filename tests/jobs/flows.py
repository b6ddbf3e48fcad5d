"""Importable flow factories for the job board and conductor tests.

A conductor rebuilds each job's flow from its `module:function` reference, so
the factories live here. Every factory takes a `tag` (one per job) so a test
can tell the jobs' work apart in the shared, module-level records:

- `LOG`: "<tag>:<atom>" when an atom's execute starts, "done <tag>:<atom>"
  when it returns, "revert <tag>:<atom>" for reverts;
- `STARTS`: (entry, time.time()) at each execute start;
- `HOLD`: entries ("<tag>:<atom>") whose execute stops after logging its start
  until `release(entry)` (or until the run is cancelled); `started(entry)` is
  set when it stops there;
- `SEEN`: what `echo` found in the store, per run;
- `ACTIVE` / `PEAK`: how many `busy` atoms run now / at most.

`reset()` (an autouse fixture in conftest.py) clears all of it between tests.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import zag_async as zag

LOG: list[str] = []
STARTS: list[tuple[str, float]] = []
HOLD: set[str] = set()
SEEN: list[tuple[str, Any]] = []
_STARTED: dict[str, asyncio.Event] = {}
_RELEASE: dict[str, asyncio.Event] = {}
_BUSY = {"active": 0, "peak": 0}


class Boom(Exception):
    """The error the steps raise on purpose."""


def reset() -> None:
    LOG.clear()
    STARTS.clear()
    HOLD.clear()
    SEEN.clear()
    _STARTED.clear()
    _RELEASE.clear()
    _BUSY.update(active=0, peak=0)


def started(entry: str) -> asyncio.Event:
    """Set once the held execute `entry` ("<tag>:<atom>") has started."""
    return _STARTED.setdefault(entry, asyncio.Event())


def release(entry: str) -> None:
    """Let the held execute `entry` go on."""
    _RELEASE.setdefault(entry, asyncio.Event()).set()


def count(entry: str) -> int:
    return LOG.count(entry)


def peak() -> int:
    """The most `busy` atoms seen running at once."""
    return _BUSY["peak"]


class Step(zag.Task):
    """Logs its calls and provides `name` ("<tag>:<name>-out").

    `fail=True` makes execute raise Boom; `revert_fails=True` makes revert raise.
    """

    def __init__(
        self, name: str, tag: str, *, fail: bool = False, revert_fails: bool = False
    ) -> None:
        self.entry = f"{tag}:{name}"
        self.fail = fail
        self.revert_fails = revert_fails
        super().__init__(name=name, provides=name)

    async def execute(self) -> str:
        LOG.append(self.entry)
        STARTS.append((self.entry, time.time()))
        if self.entry in HOLD:
            started(self.entry).set()
            await _RELEASE.setdefault(self.entry, asyncio.Event()).wait()
        if self.fail:
            raise Boom(f"{self.entry} failed")
        LOG.append(f"done {self.entry}")
        return f"{self.entry}-out"

    async def revert(self, **kwargs: Any) -> None:
        LOG.append(f"revert {self.entry}")
        if self.revert_fails:
            raise Boom(f"revert of {self.entry} failed")


def steps(tag: str, n: int = 2) -> zag.Flow:
    """s0 -> s1 -> ... (n steps)."""
    return zag.linear(f"steps-{tag}", *(Step(f"s{i}", tag) for i in range(n)))


def adder(tag: str) -> zag.Flow:
    """Logs, then total = x + y from the store."""

    @zag.task(provides="total")
    async def add(x: int, y: int) -> int:
        return x + y

    return zag.linear(f"adder-{tag}", Step("s0", tag), add)


def reverting(tag: str) -> zag.Flow:
    """s0 -> boom (raises): the flow reverts cleanly and ends REVERTED."""
    return zag.linear(f"reverting-{tag}", Step("s0", tag), Step("boom", tag, fail=True))


def bad_revert(tag: str) -> zag.Flow:
    """s0 (its revert raises) -> boom (raises): the flow ends FAILURE."""
    return zag.linear(
        f"bad-revert-{tag}", Step("s0", tag, revert_fails=True), Step("boom", tag, fail=True)
    )


def busy(tag: str, seconds: float = 0.1) -> zag.Flow:
    """One atom that counts how many of its kind run at once, for `seconds`."""

    @zag.task
    async def work() -> None:
        LOG.append(f"{tag}:work")
        _BUSY["active"] += 1
        _BUSY["peak"] = max(_BUSY["peak"], _BUSY["active"])
        try:
            await asyncio.sleep(seconds)
        finally:
            _BUSY["active"] -= 1

    return zag.linear(f"busy-{tag}", work)


def echo(tag: str) -> zag.Flow:
    """Records the store's `payload` in SEEN and provides it as `echo`."""

    @zag.task(provides="echo")
    async def look(payload: Any) -> Any:
        LOG.append(f"{tag}:look")
        STARTS.append((f"{tag}:look", time.time()))
        SEEN.append((tag, payload))
        return payload

    return zag.linear(f"echo-{tag}", look)


def not_a_flow(tag: str) -> Any:
    """A factory that returns something else than a flow (the build fails)."""
    return tag
