"""The one retry schedule every infrastructure loop uses."""

from __future__ import annotations

import time

from zag_async.backoff import Attempt, Backoff


async def test_count_bound_marks_the_last_attempt() -> None:
    seen = [a async for a in Backoff(first=0.001, max_attempts=3).attempts()]
    assert seen == [Attempt(1, False), Attempt(2, False), Attempt(3, True)]


async def test_pauses_grow_to_the_cap() -> None:
    started = time.monotonic()
    numbers = [
        a.number async for a in Backoff(first=0.01, factor=3, cap=0.02, max_attempts=4).attempts()
    ]
    assert numbers == [1, 2, 3, 4]
    assert time.monotonic() - started >= 0.01 + 0.02 + 0.02


async def test_time_bound_stops_before_the_deadline() -> None:
    started = time.monotonic()
    attempts = [a async for a in Backoff(first=0.02, factor=1, within=0.05).attempts()]
    assert attempts[-1].last
    assert len(attempts) == 3  # at 0, 0.02 and 0.04 s; a fourth would start after 0.05 s
    assert time.monotonic() - started < 0.5


async def test_an_early_exit_needs_no_cleanup() -> None:
    async for attempt in Backoff(first=0.001).attempts():  # unbounded
        if attempt.number == 2:
            break
    assert attempt.number == 2 and not attempt.last
