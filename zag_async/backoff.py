"""One way to retry infrastructure calls: growing pauses, bounded by count or time.

Storage commits, ZooKeeper calls and reconnects, and AMQP publishes all retry
transient trouble the same way; this module is that way, written once, so a
bound is never forgotten and every loop reads alike::

    async for attempt in Backoff(first=0.1, cap=1.0, max_attempts=5).attempts():
        try:
            return await call()
        except Transient:
            if attempt.last:
                raise

Each `Attempt` after the first is preceded by a pause; `attempt.last` says the
schedule has no further attempt (the count is used up, or the next pause would
end past the deadline), so the caller re-raises instead of swallowing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

__all__ = ["Attempt", "Backoff"]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try of a retried call: its number (from 1) and whether it is the last."""

    number: int
    last: bool


@dataclass(frozen=True, slots=True)
class Backoff:
    """Pauses of `first` seconds growing by `factor` up to `cap`.

    Args:
        first: the pause before the second attempt.
        factor: each pause is the previous one times this.
        cap: no pause is longer than this.
        max_attempts: at most this many attempts (None: no bound by count).
        within: no attempt starts later than this many seconds after the first
            (None: no bound by time). With neither bound the schedule never ends.
    """

    first: float = 0.1
    factor: float = 2.0
    cap: float = 1.0
    max_attempts: int | None = None
    within: float | None = None

    async def attempts(self) -> AsyncIterator[Attempt]:
        """Yield attempts, sleeping the next pause before each one after the first."""
        deadline = None if self.within is None else time.monotonic() + self.within
        number = 1
        pause = min(self.first, self.cap)
        while True:
            last = (self.max_attempts is not None and number >= self.max_attempts) or (
                deadline is not None and time.monotonic() + pause > deadline
            )
            yield Attempt(number, last)
            if last:
                return
            await asyncio.sleep(pause)
            pause = min(pause * self.factor, self.cap)
            number += 1
