"""Locks on a SQL job board: a row per held lock, a lease renewed by the board's heartbeat.

`SqlBoard.lock(name)` is this module. Taking a lock is one conditional upsert
(insert the row, or take it over if its lease ran out); the holder's board
renews the lease with its claims. Waiters sleep on the board's wake-ups (a
release notifies) and look again at least when the holder's lease would run
out. If a renewal finds the lock gone, or renewals fail for a whole lease, the
body is cancelled and `LockLost` raised, as on ZooKeeper when the session is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable

from sqlalchemy import delete, select

from ..errors import BoardUnavailable, LockLost
from ..persistence.schema import job_locks
from .sqlclaims import SqlClaims
from .sqldb import BoardDb

__all__ = ["hold_lock"]


@contextlib.asynccontextmanager
async def hold_lock(
    leases: SqlClaims,
    name: str,
    *,
    subscribe: Callable[[Callable[[], None]], Callable[[], None]],
    changed: Callable[[], None],
    poll_interval: float,
) -> AsyncIterator[None]:
    """Hold the lock `name` for the body of `async with`.

    Raises:
        LockLost: the lease was lost while the body ran (the body is cancelled first).
    """
    db = leases.db
    holder = uuid.uuid4().hex
    await _acquire(db, name, holder, leases.lease, subscribe, poll_interval)
    task = asyncio.current_task()
    lost = False

    def on_lost() -> None:
        nonlocal lost
        lost = True
        if task is not None:
            task.cancel()

    leases.keep_lock(holder, on_lost)
    try:
        try:
            yield
        except asyncio.CancelledError:
            if lost and task is not None and task.uncancel() == 0:
                raise LockLost(f"lock {name!r}: its lease was lost") from None
            raise
        if lost:
            raise LockLost(f"lock {name!r}: its lease was lost")
    finally:
        leases.forget_lock(holder)
        with contextlib.suppress(BoardUnavailable):
            async with db.write() as conn:
                await conn.execute(
                    delete(job_locks).where(job_locks.c.name == name, job_locks.c.holder == holder)
                )
                await db.changed(conn)
            changed()


async def _acquire(
    db: BoardDb,
    name: str,
    holder: str,
    lease: float,
    subscribe: Callable[[Callable[[], None]], Callable[[], None]],
    poll_interval: float,
) -> None:
    """Wait until the lock's row is ours: absent, or its holder's lease ran out."""
    now = db.now_sql
    upsert = db.insert(job_locks).values(name=name, holder=holder, lease_until=now + lease)
    take = upsert.on_conflict_do_update(
        index_elements=[job_locks.c.name],
        set_={"holder": upsert.excluded.holder, "lease_until": upsert.excluded.lease_until},
        where=job_locks.c.lease_until <= now,
    ).returning(job_locks.c.holder)
    remaining = select(job_locks.c.lease_until - now).where(job_locks.c.name == name)
    released = asyncio.Event()
    unsubscribe = subscribe(released.set)
    try:
        while True:
            released.clear()
            wait = poll_interval
            try:
                async with db.write() as conn:
                    if (await conn.execute(take)).first() is not None:
                        return
                async with db.read() as conn:
                    left = (await conn.execute(remaining)).scalar_one_or_none()
                if left is not None:
                    wait = min(max(float(left), 0.0) + 0.005, poll_interval * 4)
            except BoardUnavailable:
                pass  # look again after the pause
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await released.wait()
    finally:
        unsubscribe()
