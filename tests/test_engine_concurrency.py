"""Concurrency limits, timeouts, cancellation and suspension."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from conftest import Step

import zag_async as zag

S = zag.AtomState


class Gauge:
    """Counts atoms inside execute right now, and the most there ever were."""

    def __init__(self) -> None:
        self.live = 0
        self.peak = 0

    def tasks(self, count: int) -> list[zag.Task]:
        def make(i: int) -> zag.Task:
            @zag.task(name=f"t{i}")
            async def work() -> None:
                self.live += 1
                self.peak = max(self.peak, self.live)
                try:
                    await asyncio.sleep(0.005)
                finally:
                    self.live -= 1

            return work

        return [make(i) for i in range(count)]


@pytest.mark.parametrize("limit", [1, 3, 7])
async def test_max_concurrency_is_never_exceeded(limit: int) -> None:
    gauge = Gauge()

    await zag.run(zag.unordered("u", *gauge.tasks(20)), max_concurrency=limit)

    assert gauge.peak == limit


async def test_max_concurrency_one_runs_a_graph_serially(calls: list[str]) -> None:
    gauge = Gauge()
    flow = zag.graph("g", *gauge.tasks(5))

    await zag.run(flow, max_concurrency=1)

    assert gauge.peak == 1


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_max_concurrency_must_be_a_positive_whole_number(bad: Any, calls: list[str]) -> None:
    with pytest.raises(zag.ZagError, match="max_concurrency"):
        zag.Engine(zag.linear("f", Step("a", calls)), max_concurrency=bad)


async def test_unbounded_concurrency_runs_many_sleepers_at_once() -> None:
    @zag.task
    async def nap() -> None:
        await asyncio.sleep(0.01)

    flow = zag.unordered("u", *(nap.bind(name=f"nap{i}") for i in range(200)))

    started = time.monotonic()
    await zag.run(flow)

    assert time.monotonic() - started < 1.0


async def test_atom_timeout_fails_the_atom_and_reverts(calls: list[str]) -> None:
    reverted_with: list[Any] = []

    @zag.task(timeout=0.05)
    async def hang() -> None:
        await asyncio.sleep(30)

    @hang.revert
    async def undo(*, result: Any, flow_failures: Any) -> None:
        reverted_with.append(result)

    engine = zag.Engine(zag.linear("f", Step("a", calls), hang))

    with pytest.raises(zag.errors.AtomTimeout) as caught:
        await engine.run()

    assert isinstance(caught.value, TimeoutError)
    assert "hang" in str(caught.value)
    assert calls == ["a", "revert a"]
    assert len(reverted_with) == 1
    assert reverted_with[0].check(zag.errors.AtomTimeout)
    assert engine.storage.get("hang").state is S.REVERTED
    assert engine.state is zag.FlowState.REVERTED


async def test_timed_out_atom_is_retried(calls: list[str]) -> None:
    attempts: list[int] = []

    @zag.task(provides="answer", timeout=0.05, retry=zag.retry.Times(3))
    async def slow_then_fast() -> int:
        attempts.append(1)
        if len(attempts) == 1:
            await asyncio.sleep(30)
        return 42

    results = await zag.run(zag.linear("f", slow_then_fast))

    assert len(attempts) == 2
    assert results == {"answer": 42}


async def test_sync_task_timeout_fails_the_atom() -> None:
    release = asyncio.Event()
    loop = asyncio.get_running_loop()

    @zag.task(timeout=0.05)
    def blocking() -> None:
        # Blocks its worker thread until the test lets it go.
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result(timeout=5)

    run = asyncio.ensure_future(zag.run(zag.linear("f", blocking)))
    try:
        with pytest.raises(zag.errors.AtomTimeout):
            await asyncio.wait_for(asyncio.shield(run), timeout=2)
    finally:
        release.set()
        await asyncio.gather(run, return_exceptions=True)


async def test_cancelling_the_caller_suspends_and_run_resumes(calls: list[str]) -> None:
    started = asyncio.Event()
    blocked = [True]

    @zag.task(provides="slow")
    async def slow() -> str:
        calls.append("slow")
        if blocked[0]:
            started.set()
            await asyncio.sleep(30)
        return "done"

    engine = zag.Engine(zag.linear("f", Step("a", calls), slow, Step("c", calls)))
    runner = asyncio.ensure_future(engine.run())
    await asyncio.wait_for(started.wait(), timeout=5)

    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner

    assert engine.state is zag.FlowState.SUSPENDED
    assert calls == ["a", "slow"]

    blocked[0] = False
    results = await engine.run()

    assert calls == ["a", "slow", "slow", "c"]
    assert results == {"slow": "done"}
    assert engine.state is zag.FlowState.SUCCESS


async def test_cancelling_while_parallel_atoms_run(calls: list[str]) -> None:
    started = asyncio.Event()
    blocked = [True]
    cancelled: list[str] = []

    @zag.task
    async def slow() -> None:
        calls.append("slow")
        if blocked[0]:
            started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.append("slow")
                raise

    @zag.task
    async def quick() -> None:
        calls.append("quick")

    engine = zag.Engine(zag.unordered("u", slow, quick))
    runner = asyncio.ensure_future(engine.run())
    await asyncio.wait_for(started.wait(), timeout=5)

    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner

    assert cancelled == ["slow"]
    assert engine.state is zag.FlowState.SUSPENDED
    assert engine.storage.get("quick").state is S.SUCCESS

    blocked[0] = False
    await engine.run()

    assert sorted(calls) == ["quick", "slow", "slow"]
    assert engine.state is zag.FlowState.SUCCESS


async def test_suspend_lets_running_atoms_finish_and_starts_nothing_new(calls: list[str]) -> None:
    started, gate = asyncio.Event(), asyncio.Event()

    @zag.task(provides="first")
    async def first() -> str:
        calls.append("first")
        started.set()
        await asyncio.wait_for(gate.wait(), timeout=5)
        return "one"

    engine = zag.Engine(zag.linear("f", first, Step("second", calls)))
    runner = asyncio.ensure_future(engine.run())
    await asyncio.wait_for(started.wait(), timeout=5)

    engine.suspend()
    gate.set()
    partial = await runner

    assert partial == {"first": "one"}
    assert calls == ["first"]
    assert engine.state is zag.FlowState.SUSPENDED
    assert engine.storage.get("first").state is S.SUCCESS
    assert engine.storage.get("second").state is S.PENDING

    await engine.run()

    assert calls == ["first", "second"]
    assert engine.state is zag.FlowState.SUCCESS


async def test_suspend_while_parallel_atoms_run_waits_for_all_of_them(calls: list[str]) -> None:
    started = {"left": asyncio.Event(), "right": asyncio.Event()}
    gate = asyncio.Event()

    def branch(name: str) -> zag.Task:
        @zag.task(name=name)
        async def work() -> None:
            started[name].set()
            await asyncio.wait_for(gate.wait(), timeout=5)
            calls.append(name)

        return work

    engine = zag.Engine(
        zag.linear("f", zag.unordered("u", branch("left"), branch("right")), Step("z", calls))
    )
    runner = asyncio.ensure_future(engine.run())
    await asyncio.wait_for(started["left"].wait(), timeout=5)
    await asyncio.wait_for(started["right"].wait(), timeout=5)

    engine.suspend()
    gate.set()
    await runner

    assert sorted(calls) == ["left", "right"]
    assert engine.state is zag.FlowState.SUSPENDED

    await engine.run()

    assert calls[-1] == "z"
    assert len(calls) == 3


async def test_suspend_on_a_finished_or_idle_flow_is_a_no_op(calls: list[str]) -> None:
    engine = zag.Engine(zag.linear("f", Step("a", calls, provides="a")))
    engine.suspend()  # not running yet: ignored

    assert await engine.run() == {"a": "a"}
    engine.suspend()  # finished: ignored

    assert engine.state is zag.FlowState.SUCCESS
    assert await engine.run() == {"a": "a"}
    assert calls == ["a"]
