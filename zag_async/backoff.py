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

    def attempts(self) -> _Attempts:
        """Attempts to iterate with `async for`; each after the first comes after its pause."""
        return _Attempts(self)


class _Attempts:
    """The schedule being followed (a plain iterator: leaving the loop early leaves
    no suspended generator behind for the event loop to finalize)."""

    __slots__ = ("_deadline", "_number", "_pause", "_policy")

    def __init__(self, policy: Backoff) -> None:
        self._policy = policy
        self._deadline = None if policy.within is None else time.monotonic() + policy.within
        self._number = 0
        self._pause = min(policy.first, policy.cap)

    def __aiter__(self) -> _Attempts:
        return self

    async def __anext__(self) -> Attempt:
        policy = self._policy
        if self._number:
            if self._last():
                raise StopAsyncIteration
            await asyncio.sleep(self._pause)
            self._pause = min(self._pause * policy.factor, policy.cap)
        self._number += 1
        return Attempt(self._number, self._last())

    def _last(self) -> bool:
        limit = self._policy.max_attempts
        deadline = self._deadline
        return (limit is not None and self._number >= limit) or (
            deadline is not None and time.monotonic() + self._pause > deadline
        )
