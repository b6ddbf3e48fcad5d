"""Wake-ups for SQL job boards: telling watchers that jobs changed, without idle polling.

A board's `watch()`, its conductors and `wait()` sleep until the board says
something changed. ZooKeeper pushes watch events; a database has to be made to:

- In this process, a change made through any SQL board object wakes every
  board object on the same database at once (an in-process hub).
- PostgreSQL: every change transaction runs `pg_notify('zag_jobs', '')`; one
  dedicated asyncpg connection per board LISTENs, so other processes' changes
  arrive when they commit, with no polling while idle. While that connection is
  down, watchers are woken every `poll_interval` seconds (bounded polling)
  until it is back.
- SQLite has no cross-process notifications: while someone watches, the board
  reads the "changes" counter (bumped by every change transaction) every
  `poll_interval` seconds (default 0.5 s) and wakes watchers when it moved.

Time alone changes things too: a delayed job falls due, a lease runs out. A
timer sleeps until the earliest such moment (database clock) and wakes the
watchers then; it looks again after each change and at least every lease/2
seconds (another process's claim is not announced, yet its lease may run out).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.engine import make_url

from ..background import Background
from ..backoff import Backoff
from ..errors import BoardUnavailable
from .sqldb import NOTIFY_CHANNEL, BoardDb

__all__ = ["Wakeups"]

logger = logging.getLogger("zag_async.jobs")

#: database -> the wake-up callbacks of this process's open boards on it
_HUBS: dict[str, set[Callable[[], None]]] = {}

#: seconds the timer lets a burst of changes settle before it looks again
_SETTLE = 0.05

#: seconds between checks that the listening connection still answers
_LISTEN_CHECK = 5.0


def _database_key(url: str) -> str:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return "sqlite:" + os.path.abspath(parsed.database or "")
    return parsed.set(drivername="postgresql").render_as_string(hide_password=True)


class Wakeups:
    """Wakes one board's watchers when its jobs may have changed.

    Args:
        db: the board's database.
        notify: wakes the board's subscribers.
        tasks: the board's task group (the listener, poller and timer run there).
        poll_interval: seconds between polls (SQLite, or PostgreSQL without its listener).
        recheck: the timer looks for due times and lease expiries at least this often.
        next_event: seconds until the next due time or lease expiry (None: none).
    """

    def __init__(
        self,
        db: BoardDb,
        *,
        notify: Callable[[], None],
        tasks: Background,
        poll_interval: float,
        recheck: float,
        next_event: Callable[[], Awaitable[float | None]],
    ) -> None:
        self.db = db
        self.poll_interval = poll_interval
        self.recheck = recheck
        self._notify = notify
        self._tasks = tasks
        self._next_event = next_event
        self._hub = _HUBS.setdefault(_database_key(db.url), set())
        self._kick = asyncio.Event()  # something changed: look at the timer again
        self._watchers = 0
        self._watched = asyncio.Event()
        self._started = False
        self.listening = False  #: PostgreSQL: the LISTEN connection is up

    def open(self) -> None:
        self._hub.add(self.wake)

    def close(self) -> None:
        self._hub.discard(self.wake)

    def wake(self) -> None:
        """Wake this board's watchers (and re-arm the timer)."""
        self._kick.set()
        self._notify()

    def changed(self) -> None:
        """This process changed jobs: wake every board on the database in this process."""
        for wake in list(self._hub):
            wake()

    def watch(self) -> Callable[[], None]:
        """Someone watches: start listening (or polling) if not yet; returns the unwatch."""
        self._watchers += 1
        self._watched.set()
        if not self._started and self._tasks.running:
            self._started = True
            if self.db.postgres:
                self._tasks.spawn(self._listen(), name="zag-sqlboard-listen")
            else:
                self._tasks.spawn(self._poll(), name="zag-sqlboard-poll")
            self._tasks.spawn(self._timer(), name="zag-sqlboard-timer")
        done = False

        def unwatch() -> None:
            nonlocal done
            if not done:
                done = True
                self._watchers -= 1
                if self._watchers == 0:
                    self._watched.clear()

        return unwatch

    # -- the tasks -------------------------------------------------------------------

    async def _poll(self) -> None:
        """SQLite: wake watchers when another process's change moved the counter."""
        last: int | None = None
        while True:
            await self._watched.wait()
            try:
                count: int | None = await self.db.change_count()
            except BoardUnavailable as exc:
                logger.warning("board %s: polling for changes: %s", self.db.display, exc)
                count = None
            if last is not None and count != last:
                self.wake()
            last = count
            await asyncio.sleep(self.poll_interval)

    async def _timer(self) -> None:
        """Wake watchers when the next delayed job falls due or the next lease runs out.

        It looks again after every change, and at least every `recheck` seconds:
        claims made in other processes are not announced, so their leases are
        found by looking.
        """
        while True:
            await self._watched.wait()
            self._kick.clear()
            try:
                delay = await self._next_event()
            except Exception as exc:  # BoardUnavailable, or a bug: look again later
                logger.debug("board %s: next event: %s", self.db.display, exc)
                delay = None
            wait = self.recheck if delay is None else min(max(delay, 0.0) + 0.005, self.recheck)
            try:
                async with asyncio.timeout(wait):
                    await self._kick.wait()
            except TimeoutError:
                if delay is not None and wait >= delay:
                    self._notify()
                continue
            await asyncio.sleep(_SETTLE)  # one look for a burst of changes

    async def _listen(self) -> None:
        """PostgreSQL: LISTEN on a dedicated connection; poll while it is down."""
        import asyncpg  # type: ignore[import-untyped]

        backoff = Backoff(first=0.1, cap=self.poll_interval)
        while True:
            conn: Any = None
            async for _attempt in backoff.attempts():
                try:
                    conn = await asyncpg.connect(
                        self.db.asyncpg_dsn(), timeout=self.db.connect_timeout
                    )
                    break
                except Exception as exc:  # down, refusing, starting up: all the same here
                    logger.debug("board %s: no listener yet: %s", self.db.display, exc)
                    self.wake()  # the fallback: watchers look again each attempt
            try:
                await self._listen_on(conn)
            except Exception as exc:  # whatever ended it, listen again
                logger.warning("board %s: listening connection lost: %s", self.db.display, exc)
            finally:
                self.listening = False
                with contextlib.suppress(Exception):
                    conn.terminate()
            self.wake()

    async def _listen_on(self, conn: Any) -> None:
        closed = asyncio.Event()
        conn.add_termination_listener(lambda _conn: closed.set())
        await conn.add_listener(NOTIFY_CHANNEL, lambda *_args: self.wake())
        self.listening = True
        self.wake()  # changes made while we were not listening
        while not closed.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_LISTEN_CHECK):
                    await closed.wait()
            if not closed.is_set():
                async with asyncio.timeout(self.db.connect_timeout):
                    await conn.fetchval("SELECT 1")
