"""Named locks held across processes: `async with board.lock("volume-42"):`.

On both boards: mutual exclusion between tasks and between board objects (on
ZooKeeper: separate sessions, as separate processes would have), checked with
an overlap detector; release on exit and on exceptions. ZooKeeper only: a
holder whose session goes away lets the next waiter in, and a holder whose
session is declared lost gets `LockLost` in its body.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from zag_async.errors import LockLost
from zag_async.jobs import JobBoard

from .conftest import BoardOpener


class Boom(Exception):
    pass


class OverlapDetector:
    """Counts holders inside a critical section; remembers the most at once."""

    def __init__(self) -> None:
        self.inside = 0
        self.most = 0
        self.entries = 0
        self.intervals: list[tuple[float, float]] = []

    async def hold(self, board: JobBoard, name: str, *, rounds: int, pause: float) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(rounds):
            async with board.lock(name):
                start = loop.time()
                self.inside += 1
                self.entries += 1
                self.most = max(self.most, self.inside)
                # Give the others every chance to (wrongly) get in.
                for _ in range(3):
                    await asyncio.sleep(pause)
                self.inside -= 1
                self.intervals.append((start, loop.time()))

    def check(self, entries: int) -> None:
        assert self.entries == entries
        assert self.most == 1
        ordered = sorted(self.intervals)
        for (_, end), (start, _) in zip(ordered, ordered[1:], strict=False):
            assert start >= end, "two holders overlapped"


async def acquire_within(board: JobBoard, name: str, within: float = 5.0) -> None:
    """Take and release `name`, failing if that takes longer than `within` seconds."""
    async with asyncio.timeout(within):
        async with board.lock(name):
            pass


async def still_waiting(task: asyncio.Task[Any], seconds: float = 0.3) -> bool:
    done, _ = await asyncio.wait({task}, timeout=seconds)
    return not done


def zookeeper_only(board_kind: str) -> None:
    if board_kind != "zookeeper":
        pytest.skip("about ZooKeeper sessions")


# -- both boards ---------------------------------------------------------------------


async def test_mutual_exclusion_between_tasks(board: JobBoard) -> None:
    detector = OverlapDetector()
    async with asyncio.timeout(30):
        await asyncio.gather(
            *(detector.hold(board, "volume-42", rounds=4, pause=0.005) for _ in range(3))
        )
    detector.check(entries=12)


async def test_mutual_exclusion_between_board_objects(
    board: JobBoard, open_board: BoardOpener
) -> None:
    """Two board objects: on ZooKeeper two sessions, as two processes would have."""
    other = await open_board()
    third = await open_board()
    detector = OverlapDetector()
    async with asyncio.timeout(30):
        await asyncio.gather(
            *(detector.hold(b, "volume-42", rounds=4, pause=0.005) for b in (board, other, third))
        )
    detector.check(entries=12)


async def test_different_names_do_not_block_each_other(
    board: JobBoard, open_board: BoardOpener
) -> None:
    other = await open_board()
    async with board.lock("volume-1"):
        await acquire_within(other, "volume-2")
        await acquire_within(board, "volume-3")


async def test_released_on_exit(board: JobBoard, open_board: BoardOpener) -> None:
    other = await open_board()
    entered = asyncio.Event()
    leave = asyncio.Event()

    async def holder() -> None:
        async with board.lock("vol"):
            entered.set()
            await leave.wait()

    holding = asyncio.create_task(holder())
    async with asyncio.timeout(5):
        await entered.wait()
    waiter = asyncio.create_task(acquire_within(other, "vol", within=10))
    assert await still_waiting(waiter)
    leave.set()
    async with asyncio.timeout(10):
        await holding
        await waiter


async def test_released_on_exception(board: JobBoard, open_board: BoardOpener) -> None:
    other = await open_board()
    with pytest.raises(Boom):
        async with board.lock("vol"):
            raise Boom("inside the lock")
    await acquire_within(other, "vol")
    await acquire_within(board, "vol")


async def test_released_when_the_holder_is_cancelled(
    board: JobBoard, open_board: BoardOpener
) -> None:
    other = await open_board()
    entered = asyncio.Event()

    async def holder() -> None:
        async with board.lock("vol"):
            entered.set()
            await asyncio.Event().wait()

    holding = asyncio.create_task(holder())
    async with asyncio.timeout(5):
        await entered.wait()
    holding.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holding
    await acquire_within(other, "vol")


# -- ZooKeeper sessions --------------------------------------------------------------


async def test_closing_the_holders_session_lets_the_waiter_in(
    board: JobBoard, open_board: BoardOpener, board_kind: str
) -> None:
    zookeeper_only(board_kind)
    doomed = await open_board()
    entered = asyncio.Event()

    async def holder() -> None:
        async with doomed.lock("vol"):
            entered.set()
            await asyncio.Event().wait()

    holding = asyncio.create_task(holder())
    async with asyncio.timeout(5):
        await entered.wait()
    waiter = asyncio.create_task(acquire_within(board, "vol", within=10))
    assert await still_waiting(waiter)

    await doomed.aclose()  # its session ends; its ephemeral lock node goes with it

    async with asyncio.timeout(10):
        await waiter
    holding.cancel()
    done, _ = await asyncio.wait({holding}, timeout=5)
    assert done  # the holder ends (how exactly: see the next test)
    if not holding.cancelled():
        holding.exception()  # retrieved: the next test pins what it is


async def test_holder_of_a_closed_board_leaves_the_lock_cleanly(
    board: JobBoard, open_board: BoardOpener, board_kind: str, request: pytest.FixtureRequest
) -> None:
    zookeeper_only(board_kind)
    doomed = await open_board()
    entered = asyncio.Event()

    async def holder() -> None:
        async with doomed.lock("vol"):
            entered.set()
            await asyncio.Event().wait()

    holding = asyncio.create_task(holder())
    async with asyncio.timeout(5):
        await entered.wait()
    await doomed.aclose()
    holding.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holding


async def test_lock_lost_raised_in_the_holder_when_its_session_is_lost(
    board: JobBoard, open_board: BoardOpener, board_kind: str
) -> None:
    """The session's loss path is driven directly (ZkSession.declare_lost, what its monitor calls
    after session_timeout without a connection or on a changed session id); the real
    outage is the fault tests' business."""
    zookeeper_only(board_kind)
    holder_board = await open_board()
    entered = asyncio.Event()
    after_body: list[str] = []

    async def holder() -> None:
        async with holder_board.lock("vol"):
            entered.set()
            await asyncio.Event().wait()
        after_body.append("left the lock normally")  # must not happen

    holding = asyncio.create_task(holder())
    async with asyncio.timeout(5):
        await entered.wait()

    holder_board.zk.declare_lost("declared lost by the test")  # type: ignore[attr-defined]

    with pytest.raises(LockLost):
        async with asyncio.timeout(5):
            await holding
    assert after_body == []
    # The holder gave its place up on the way out: another session gets the lock.
    await acquire_within(board, "vol")
