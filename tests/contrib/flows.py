"""Importable flow factories for the service tests (a conductor and `zag.resume`
rebuild flows from `module:function`).

`pipeline` runs `first -> slow -> last`; each execute appends "<atom> <tag>" to
`LOG`. `slow` stops for tags in `HOLD` until `release(tag)`; `started(tag)` is
set when it stops there. `failing` fails in its second step (`Boom`) and is
reverted. `approval` waits for an "approval" signal (an hour at most) and
then `record`s its payload in `APPROVED`. `reset()` (autouse in conftest.py)
clears everything between tests.
"""

from __future__ import annotations

import asyncio
from typing import Any

import zag_async as zag

LOG: list[str] = []
APPROVED: list[Any] = []
HOLD: set[str] = set()
_STARTED: dict[str, asyncio.Event] = {}
_RELEASE: dict[str, asyncio.Event] = {}


class Boom(Exception):
    """The failure `failing` raises on purpose."""


def reset() -> None:
    LOG.clear()
    APPROVED.clear()
    HOLD.clear()
    _STARTED.clear()
    _RELEASE.clear()


def started(tag: str) -> asyncio.Event:
    return _STARTED.setdefault(tag, asyncio.Event())


def release(tag: str) -> None:
    _RELEASE.setdefault(tag, asyncio.Event()).set()


def count(entry: str) -> int:
    return LOG.count(entry)


@zag.task(provides="a")
async def first(tag: str) -> str:
    LOG.append(f"first {tag}")
    return f"a-{tag}"


@zag.task(provides="b")
async def slow(tag: str, a: str) -> str:
    LOG.append(f"slow {tag}")
    if tag in HOLD:
        started(tag).set()
        await _RELEASE.setdefault(tag, asyncio.Event()).wait()
    return f"b-{tag}"


@zag.task(provides="c")
async def last(tag: str, b: str) -> str:
    LOG.append(f"last {tag}")
    return f"c-{tag}"


@zag.task
async def explode(tag: str, a: str) -> None:
    LOG.append(f"explode {tag}")
    raise Boom(f"{tag} exploded")


@first.revert
async def undo_first(tag: str, **kwargs: Any) -> None:
    LOG.append(f"revert first {tag}")


@zag.task(provides="recorded")
async def record(approval: Any) -> Any:
    APPROVED.append(approval)
    return approval


def approval() -> zag.Flow:
    wait = zag.wait_for("approve", event="approval", timeout=3600, provides="approval")
    return zag.linear("approval", wait, record)


def pipeline() -> zag.Flow:
    return zag.linear("pipeline", first, slow, last)


def failing() -> zag.Flow:
    return zag.linear("failing", first, explode)


#: What the in-app RabbitMQ worker serves.
REMOTE_TASKS = [first, slow, last]
