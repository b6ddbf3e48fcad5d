"""Tasks and flow factories the observability tests run (importable: workers and
conductors find them by `module:name`)."""

from __future__ import annotations

import asyncio
from typing import Any

from opentelemetry import trace

import zag_async as zag

#: Calls of `flaky` so far, by key (cleared by the tests that use it).
CALLS: dict[str, int] = {}
#: Where the tasks' own spans go (the test's provider; set by conftest).
PROVIDER: list[trace.TracerProvider] = []


def _tracer() -> trace.Tracer:
    return trace.get_tracer("tests", tracer_provider=PROVIDER[0] if PROVIDER else None)


class Boom(Exception):
    """The error the steps raise on purpose."""


@zag.task(provides="doubled")
async def double(x: int) -> int:
    zag.progress(0.5)
    # A span the task itself opens: its parent must be the atom's (or remote) span.
    with _tracer().start_as_current_span("user work"):
        await asyncio.sleep(0)
    return x * 2


@zag.task(provides="total")
async def add(doubled: int, y: int = 1) -> int:
    return doubled + y


@zag.task
async def explode(doubled: int) -> None:
    raise Boom(f"cannot use {doubled}")


@zag.task(provides="charged")
async def charge(x: int) -> str:
    return f"charge-{x}"


@charge.revert
async def refund(x: int, **_: Any) -> None:
    return None


@zag.task
async def flaky(key: str, fail_times: int) -> int:
    CALLS[key] = CALLS.get(key, 0) + 1
    if CALLS[key] <= fail_times:
        raise Boom(f"attempt {CALLS[key]} of {key}")
    return CALLS[key]


@zag.task
async def nap(seconds: float) -> None:
    with _tracer().start_as_current_span("user work"):
        await asyncio.sleep(seconds)


def greet(name: str) -> zag.Flow:
    """A job's flow: two atoms that succeed."""
    return zag.linear("greet", double.bind(inject={"x": len(name)}), add)
