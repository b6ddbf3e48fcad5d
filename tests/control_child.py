"""A conductor in a process of its own, for tests/test_control_remote.py:
`python control_child.py DB_FILE` runs jobs from the SQL board in DB_FILE with
a 1.5 s flow lease (so a control request is seen within 0.5 s) until killed."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import zag_async as zag

DONE = Path(sys.argv[1] if len(sys.argv) > 1 else ".").with_suffix(".log")


def note(line: str) -> None:
    with DONE.open("a") as out:
        out.write(line + "\n")


@zag.task(provides="a")
async def first() -> str:
    note("a")
    return "a"


@first.revert
async def undo_first(**_: object) -> None:
    note("undo a")


@zag.task(provides="b")
async def slow(a: str, gate: str) -> str:
    note("b started")
    opened = Path(gate)
    while not opened.exists():  # noqa: ASYNC110, ASYNC240 (another process opens the gate)
        await asyncio.sleep(0.05)
    note("b")
    return "b"


@slow.revert
async def undo_slow(**_: object) -> None:
    note("undo b")


@zag.task
async def last(b: str) -> None:
    note("c")


def remote() -> zag.Flow:
    return zag.linear("remote", first, slow, last)


async def main(db: str) -> None:
    url = f"sqlite+aiosqlite:///{db}"
    async with (
        zag.connect(url, lease=1.5) as backend,
        zag.jobs.connect(url, backend=backend) as board,
        zag.Conductor(board, backend=backend, name="child") as conductor,
    ):
        await conductor.run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
