"""Locks held across processes, as queues of ephemeral sequential nodes in ZooKeeper.

`ZooKeeperBoard.lock(name)` is this module: a lock needs only the session (not
the board's jobs or claims), and its waiting and loss rules are subtle enough
to deserve a room of their own. Each holder or waiter owns one node under
`locks/<name>/`; the first in line holds the lock, each other one watches the
node just before its own. A place in line lasts as long as the session, so an
outage is waited out, while a lost session ends the wait (or cancels the body)
with `LockLost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiozk import exc as zk_exc

from ..errors import BoardUnavailable, LockLost
from .zknodes import EV
from .zksession import ZkSession

__all__ = ["hold_lock"]

logger = logging.getLogger("zag_async.jobs")


@contextlib.asynccontextmanager
async def hold_lock(zk: ZkSession, name: str) -> AsyncIterator[None]:
    """Hold the lock `name` (one path segment) for the body of `async with`.

    Raises:
        LockLost: the session was lost while waiting, or while the body ran
            (the body is cancelled first).
    """
    base = f"/locks/{name}"
    await zk.call(zk.c.ensure_path, base)
    me = await zk.call(zk.c.create, f"{base}/lock-", b"", ephemeral=True, sequential=True)
    mine = me.rsplit("/", 1)[1]
    lost_at_start = zk.lost_count
    try:
        await _acquire(zk, base, mine, lost_at_start)
        task = asyncio.current_task()
        lost = False

        def on_lost() -> None:
            nonlocal lost
            lost = True
            if task is not None:
                task.cancel()

        zk.on_lost.append(on_lost)
        try:
            yield
        except asyncio.CancelledError:
            if lost and task is not None and task.uncancel() == 0:
                raise LockLost(f"lock {name!r} was lost with the ZooKeeper session") from None
            raise
        finally:
            zk.on_lost.remove(on_lost)
        if lost:
            raise LockLost(f"lock {name!r} was lost with the ZooKeeper session")
    finally:
        with contextlib.suppress(zk_exc.NoNode, BoardUnavailable):
            await zk.call(zk.c.delete, f"{base}/{mine}", True)


async def _acquire(zk: ZkSession, base: str, mine: str, lost_at_start: int) -> None:
    """Wait until our node is first in line, re-checking after every reconnect."""
    gone = asyncio.Event()
    while True:
        if zk.lost_count != lost_at_start:
            raise LockLost(f"lock {base} lost its session while waiting")
        generation = zk.generation
        gone.clear()
        try:
            children = sorted(await zk.call(zk.c.get_children, base))
        except BoardUnavailable as exc:
            await _ride_out(zk, base, exc, gone, generation)
            continue
        if mine not in children:
            raise LockLost(f"lock {base}: our place in line vanished (session expired)")
        index = children.index(mine)
        if index == 0:
            return
        before = f"{base}/{children[index - 1]}"
        remove = zk.watch([EV.DELETED], before, lambda _p: gone.set())
        try:
            if not await zk.call(zk.c.exists, before, watch=True):
                continue
            await zk.event_or_reconnect(gone, generation)
        except BoardUnavailable as exc:
            await _ride_out(zk, base, exc, gone, generation)
        finally:
            remove()


async def _ride_out(
    zk: ZkSession, base: str, exc: BoardUnavailable, gone: asyncio.Event, generation: int
) -> None:
    """The server is away: a place in line lasts as long as the session (checked
    at the top of the loop), so wait for the reconnect (or a second) and look again."""
    logger.warning("lock %s: waiting out an outage: %s", base, exc)
    await zk.event_or_reconnect(gone, generation, within=1.0)
