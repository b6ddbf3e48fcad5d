"""Background: tasks that live from a resource's open to its close, owned by one task group."""

from __future__ import annotations

import asyncio

import pytest

from zag_async.background import Background


async def test_tasks_run_until_the_group_is_closed() -> None:
    tasks = Background("test")
    assert not tasks.running
    await tasks.start()
    assert tasks.running
    started = asyncio.Event()
    cancelled: list[str] = []

    async def forever(name: str) -> None:
        try:
            started.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    tasks.spawn(forever("a"), name="a")
    tasks.spawn(forever("b"), name="b")
    async with asyncio.timeout(5):
        await started.wait()
        await tasks.aclose()
    assert sorted(cancelled) == ["a", "b"]
    assert not tasks.running
    await tasks.aclose()  # idempotent


async def test_close_from_another_task_than_start() -> None:
    tasks = Background("test")
    await asyncio.create_task(tasks.start())
    tasks.spawn(asyncio.sleep(3600), name="sleeper")
    async with asyncio.timeout(5):
        await asyncio.create_task(tasks.aclose())


async def test_a_failed_task_is_raised_at_close() -> None:
    tasks = Background("test")
    await tasks.start()

    async def fail() -> None:
        raise ValueError("boom")

    tasks.spawn(fail(), name="fail")
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="boom"):
        await tasks.aclose()


async def test_spawn_outside_start_and_close_is_refused() -> None:
    tasks = Background("test")

    async def nothing() -> None:
        return None

    with pytest.raises(RuntimeError):
        tasks.spawn(nothing(), name="early")
    await tasks.start()
    await tasks.aclose()
    with pytest.raises(RuntimeError):
        tasks.spawn(nothing(), name="late")


async def test_close_before_start_does_nothing() -> None:
    await Background("test").aclose()
