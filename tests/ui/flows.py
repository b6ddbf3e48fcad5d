"""Importable flow factories for the UI tests (`zag.resume` rebuilds them by name).

`approval` waits for an "approval" signal and returns its payload; `held`
runs `one -> gate -> two`, stopping in `gate` until `GATE` is set (so a test
can watch it change state); `nasty` has a name, an atom and a result made of
markup and fails, to check the pages escape what they show.
"""

from __future__ import annotations

import asyncio
from typing import Any

import zag_async as zag

GATE: dict[str, asyncio.Event] = {}


def gate_for(tag: str) -> asyncio.Event:
    return GATE.setdefault(tag, asyncio.Event())


@zag.task(provides="recorded")
async def record(approval: Any) -> Any:
    return approval


def approval() -> zag.Flow:
    wait = zag.wait_for("approve", event="approval", timeout=3600, provides="approval")
    return zag.linear("approval", wait, record)


@zag.task(provides="x")
async def one(tag: str) -> str:
    return f"one-{tag}"


@zag.task(provides="y")
async def gate(tag: str, x: str) -> str:
    await gate_for(tag).wait()
    return f"gate-{tag}"


@zag.task(provides="z")
async def two(tag: str, y: str) -> str:
    return f"two-{tag}"


def held() -> zag.Flow:
    return zag.linear("held", one, gate, two)


MARKUP = "<script>alert(1)</script>"


@zag.task(name=MARKUP, provides="m")
async def markup() -> str:
    return MARKUP


@zag.task(name="<b>boom</b>")
async def boom(m: str) -> None:
    raise ValueError(f"bad {MARKUP}")


def nasty() -> zag.Flow:
    return zag.linear(MARKUP, markup, boom)
