"""Tasks the remote-worker tests run on workers (in-process and subprocess).

Workers find a task by its key `module:qualname`, so the engine and every
worker must import this very module under the same name; worker subprocesses
get it through PYTHONPATH (see conftest.spawn_worker) and serve `ALL`.

Remember that a worker runs its *own* copy of a task: per-atom settings that
must reach the worker travel as arguments (`inject=`), never as attributes.
In-process tests observe the tasks through the module-level records below
(`reset()` clears them before every test); subprocess tests through files
written into a directory passed as an argument.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

import zag_async as zag

#: What ran, in order: "execute <tag>", "revert <tag>", ...
LOG: list[str] = []
#: Revert calls of Tagged: (tag, result, flow_failures).
REVERTS: list[tuple[str, Any, dict[str, zag.Failure]]] = []
#: Start times (time.monotonic()) of every call of `flaky`, by key.
ATTEMPTS: dict[str, list[float]] = {}
#: Names of the threads the sync task ran in.
THREADS: list[str] = []
#: Concurrency seen by `slow`.
RUNNING = 0
MAX_RUNNING = 0
#: Set while `hold` is running (created per test: events bind to a loop).
HOLDING: asyncio.Event | None = None


def reset() -> None:
    """Forget everything recorded (called before every test)."""
    global RUNNING, MAX_RUNNING, HOLDING
    LOG.clear()
    REVERTS.clear()
    ATTEMPTS.clear()
    THREADS.clear()
    RUNNING = MAX_RUNNING = 0
    HOLDING = None


class Kaboom(ValueError):
    """The error tasks raise on purpose."""


# -- data passing -------------------------------------------------------------------


@zag.task(provides="sum")
async def add(x: int, y: int) -> int:
    return x + y


@zag.task(provides="doubled")
def double(sum: int) -> int:  # noqa: A002 - the name of the value it needs
    """A plain `def` task: the worker must run it in a thread."""
    THREADS.append(threading.current_thread().name)
    return sum * 2


class Describe(zag.Task):
    """Class style, unpacking a tuple result into two names."""

    provides = ("text", "length")

    async def execute(self, doubled: int, label: str = "total") -> tuple[str, int]:
        text = f"{label}={doubled}"
        return text, len(text)


@zag.task(provides="squares")
async def squares(numbers: list[int]) -> dict[str, int]:
    return {str(n): n * n for n in numbers}


@zag.task(provides="report")
async def report(squares: dict[str, int], text: str) -> str:
    return f"{text}; squares {sorted(squares.items())}"


# -- concurrency --------------------------------------------------------------------


@zag.task
async def slow(seconds: float, tag: str) -> str:
    """Sleeps, counting how many run at once in this process."""
    global RUNNING, MAX_RUNNING
    RUNNING += 1
    MAX_RUNNING = max(MAX_RUNNING, RUNNING)
    try:
        await asyncio.sleep(seconds)
    finally:
        RUNNING -= 1
    return f"{tag} done"


# -- revert -------------------------------------------------------------------------


class Tagged(zag.Task):
    """Logs "execute <tag>" and "revert <tag>"; raises Kaboom when `fail` is true."""

    async def execute(self, tag: str, fail: bool = False) -> str:
        LOG.append(f"execute {tag}")
        if fail:
            raise Kaboom(f"{tag} failed on purpose")
        return f"{tag} result"

    async def revert(
        self, tag: str, fail: bool = False, *, result: Any, flow_failures: dict[str, zag.Failure]
    ) -> None:
        LOG.append(f"revert {tag}")
        REVERTS.append((tag, result, dict(flow_failures)))


# -- retry --------------------------------------------------------------------------


@zag.task(provides="flaky_result")
async def flaky(key: str, fails: int) -> str:
    """Fails with Kaboom on its first `fails` calls for `key`, recording when each began."""
    starts = ATTEMPTS.setdefault(key, [])
    starts.append(time.monotonic())
    if len(starts) <= fails:
        raise Kaboom(f"{key}: attempt {len(starts)} fails")
    return f"{key} ok after {len(starts)}"


# -- progress, errors, timeouts -----------------------------------------------------


@zag.task(provides="progressed")
async def progressing() -> str:
    for fraction in (0.25, 0.5, 0.75):
        zag.progress(fraction)
        await asyncio.sleep(0.01)
    return "finished"


@zag.task
async def explode(message: str) -> None:
    raise Kaboom(message)


@zag.task(provides="slept")
async def sleepy(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@zag.task(provides="held")
async def hold(seconds: float) -> str:
    """Signals HOLDING (in-process tests), then sleeps."""
    if HOLDING is not None:
        HOLDING.set()
    await asyncio.sleep(seconds)
    return "held"


@zag.task(provides="unsendable")
async def unsendable() -> object:
    return object()  # cannot travel back as JSON


# -- for worker subprocesses --------------------------------------------------------


@zag.task(provides="marked")
async def mark_and_sleep(signal_dir: str, seconds: float) -> int:
    """Writes a file named after this worker's pid into signal_dir, then sleeps.

    The test waits for the file (the request is running on that worker) and
    may then kill the worker; every execution leaves one file.
    """
    path = Path(signal_dir) / f"{os.getpid()}-{time.monotonic_ns()}"
    path.write_text(str(os.getpid()))
    await asyncio.sleep(seconds)
    return os.getpid()


@zag.task
async def crash_worker(signal_dir: str) -> None:
    """Kills the worker process running it, every time (a poison request)."""
    (Path(signal_dir) / f"crash-{os.getpid()}").write_text(str(os.getpid()))
    os._exit(17)


@zag.task(provides="pid")
async def whoami() -> int:
    return os.getpid()


ALL = [
    add,
    double,
    Describe(),
    squares,
    report,
    slow,
    Tagged(),
    flaky,
    progressing,
    explode,
    sleepy,
    hold,
    unsendable,
    mark_and_sleep,
    crash_worker,
    whoami,
]
