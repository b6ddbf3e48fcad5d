"""Flows the CLI tests run in subprocesses (importable there as `cli_flows`)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import zag_async as zag


@zag.task
async def add_one(value: int, pause: float = 0.0) -> int:
    await asyncio.sleep(pause)
    return value + 1


def pipeline(n: int = 3) -> zag.Flow:
    """step1..stepN, each adding one to what the one before gave (`start` feeds step1)."""
    steps = [
        add_one.bind(
            name=f"step{i}", rebind={"value": "start" if i == 1 else f"v{i - 1}"}, provides=f"v{i}"
        )
        for i in range(1, n + 1)
    ]
    return zag.linear("pipeline", *steps)


@zag.task(provides="echo")
async def echo_store(
    n: Any = None, s: Any = None, b: Any = None, lst: Any = None, q: Any = None
) -> dict[str, Any]:
    return {"n": n, "s": s, "b": b, "lst": lst, "q": q}


def echo(*args: Any) -> zag.Flow:
    """A flow whose results show the factory's arguments and some store values."""
    return zag.linear("echo", echo_store.bind(name="echo_store"), _constant("args", list(args)))


def _constant(name: str, value: Any) -> zag.Atom:
    @zag.task(name=name, provides=name)
    async def give() -> Any:
        return value

    return give


@zag.task(provides="prepared")
async def prepare() -> str:
    return "ready"


@prepare.revert
async def unprepare(*, result: Any, flow_failures: Any) -> None:
    pass


@zag.task
async def boom(prepared: str) -> None:
    raise RuntimeError("the boom step always fails")


def failing() -> zag.Flow:
    """prepare, then boom fails: the flow ends REVERTED."""
    return zag.linear("failing", prepare, boom)


@zag.task(provides="slow_done")
async def slow_step(v1: int, slow_pause: float = 0.0) -> int:
    await asyncio.sleep(slow_pause)
    return v1


def slow() -> zag.Flow:
    """step1, slow_step sleeping `slow_pause` seconds (from the store), then finish."""
    finish = add_one.bind(name="finish", rebind={"value": "slow_done"}, provides="finished")
    return zag.linear("slow", pipeline(1).items[0], slow_step, finish)


def picture() -> zag.Flow:
    """Every feature a picture shows: nested patterns, data, ordering, deciders, retries."""

    @zag.task(provides="a_out")
    async def a(start: int) -> int:
        return start

    @zag.task(provides="b_out")
    async def b(a_out: int) -> int:
        return a_out

    @zag.task(provides="c_out")
    async def c(a_out: int) -> int:
        return a_out

    @zag.task(provides="d_out", retry=zag.retry.Times(2))
    async def d(b_out: int, c_out: int) -> int:
        return b_out + c_out

    @zag.task(name='odd "name" | <x>')
    async def odd() -> None:
        return None

    def positive(history: Mapping[str, Any]) -> bool:
        return bool(history["a"] > 0)

    inner = zag.graph("inner", a, b, c).link(a, c, decider=positive)
    return zag.linear("outer", inner, zag.unordered("tail", d, odd))


FLOW = pipeline(2)  # a flow object, not a factory
NOT_A_FLOW = 42


def broken_factory() -> zag.Flow:
    raise ValueError("this factory is broken")


@zag.task(provides="paid")
async def pay_expense(approval: Any) -> str:
    return f"paid, approved by {approval['by']}"


def approval() -> zag.Flow:
    """Waits for an "approval" signal (a day at most), then pays."""
    wait = zag.wait_for("approve", event="approval", timeout=86400, provides="approval")
    return zag.linear("approval", wait, pay_expense)


@zag.task(provides="held", revert_retry=zag.retry.RevertRetry(attempts=1))
async def hold() -> str:
    return "held"


@hold.revert
async def release(*, result: Any) -> None:
    raise RuntimeError("the hold cannot be released")


def uncompensated() -> zag.Flow:
    """prepare -> hold (its revert always fails) -> boom: compensation stops at hold."""
    return zag.linear("uncompensated", prepare, hold, boom)
