"""Running flows that succeed: order, data passing, concurrency of independent atoms."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path

import pytest
from conftest import Step

import zag_async as zag


async def test_linear_flow_runs_in_order_and_passes_data(calls: list[str]) -> None:
    @zag.task(provides="x")
    async def first(start: int) -> int:
        calls.append("first")
        return start + 1

    @zag.task(provides="y")
    async def second(x: int) -> int:
        calls.append("second")
        return x * 10

    @zag.task(provides="z")
    async def third(x: int, y: int) -> int:
        calls.append("third")
        return x + y

    results = await zag.run(zag.linear("f", first, second, third), store={"start": 1})

    assert calls == ["first", "second", "third"]
    assert results == {"start": 1, "x": 2, "y": 20, "z": 22}


async def test_nested_flows_keep_their_order(calls: list[str]) -> None:
    flow = zag.linear(
        "outer",
        Step("a", calls),
        zag.linear("inner", Step("b", calls), Step("c", calls)),
        zag.unordered("fan", Step("d", calls), Step("e", calls)),
        Step("f", calls),
    )

    await zag.run(flow)

    assert calls[:3] == ["a", "b", "c"]
    assert sorted(calls[3:5]) == ["d", "e"]
    assert calls[5:] == ["f"]


async def test_nested_flow_outputs_feed_later_atoms() -> None:
    @zag.task(provides="x")
    async def make() -> int:
        return 5

    @zag.task(provides="y")
    async def use(x: int) -> int:
        return x + 1

    results = await zag.run(zag.linear("outer", zag.linear("inner", make), use))

    assert results == {"x": 5, "y": 6}


def _handshake(name: str, mine: asyncio.Event, theirs: asyncio.Event) -> zag.Task:
    """A task that only finishes once the other one has started: proof of overlap."""

    @zag.task(name=name, provides=name)
    async def meet() -> str:
        mine.set()
        await asyncio.wait_for(theirs.wait(), timeout=5)
        return name

    return meet


async def test_unordered_flow_runs_atoms_concurrently() -> None:
    left, right = asyncio.Event(), asyncio.Event()
    flow = zag.unordered("u", _handshake("a", left, right), _handshake("b", right, left))

    results = await zag.run(flow)

    assert results == {"a": "a", "b": "b"}


async def test_graph_flow_runs_independent_atoms_concurrently(calls: list[str]) -> None:
    left, right = asyncio.Event(), asyncio.Event()

    @zag.task(provides="seed")
    async def root() -> int:
        calls.append("root")
        return 1

    @zag.task(provides="left")
    async def go_left(seed: int) -> int:
        left.set()
        await asyncio.wait_for(right.wait(), timeout=5)
        calls.append("left")
        return seed + 1

    @zag.task(provides="right")
    async def go_right(seed: int) -> int:
        right.set()
        await asyncio.wait_for(left.wait(), timeout=5)
        calls.append("right")
        return seed + 2

    @zag.task(provides="joined")
    async def join(left: int, right: int) -> int:
        calls.append("join")
        return left + right

    # Declared out of order on purpose: the graph orders them by data.
    results = await zag.run(zag.graph("g", join, go_right, go_left, root))

    assert calls[0] == "root"
    assert sorted(calls[1:3]) == ["left", "right"]
    assert calls[3] == "join"
    assert results["joined"] == 5


async def test_results_map_every_provided_name_including_the_store() -> None:
    @zag.task(provides=("low", "high"))
    async def bounds(values: list[int]) -> tuple[int, int]:
        return min(values), max(values)

    @zag.task(provides={"total", "count"})
    async def summary(values: list[int]) -> dict[str, int]:
        return {"total": sum(values), "count": len(values), "ignored": 0}

    @zag.task(provides={"spread": "width"})
    async def spread(low: int, high: int) -> dict[str, int]:
        return {"width": high - low}

    results = await zag.run(zag.linear("f", bounds, summary, spread), store={"values": [3, 1, 4]})

    assert results == {
        "values": [3, 1, 4],
        "low": 1,
        "high": 4,
        "total": 8,
        "count": 3,
        "spread": 3,
    }


async def test_engine_state_moves_from_pending_to_success(calls: list[str]) -> None:
    engine = zag.Engine(zag.linear("f", Step("a", calls, provides="a")))
    assert engine.state is zag.FlowState.PENDING

    results = await engine.run()

    assert engine.state is zag.FlowState.SUCCESS
    assert results == {"a": "a"}
    assert engine.storage.fetch("a") == "a"
    assert engine.storage.get("a").state is zag.AtomState.SUCCESS
    assert engine.storage.get("a").result == "a"


async def test_store_is_optional_and_defaults_fill_missing_inputs() -> None:
    @zag.task(provides="greeting")
    async def greet(name: str = "world") -> str:
        return f"hello {name}"

    assert await zag.run(zag.linear("f", greet)) == {"greeting": "hello world"}
    assert await zag.run(zag.linear("f", greet), store={"name": "zag"}) == {
        "name": "zag",
        "greeting": "hello zag",
    }


async def test_a_single_atom_runs_as_a_flow(calls: list[str]) -> None:
    assert await zag.run(Step("only", calls, provides="out")) == {"out": "only"}
    assert calls == ["only"]


async def test_running_again_after_success_returns_results_without_rerunning(
    calls: list[str],
) -> None:
    engine = zag.Engine(zag.linear("f", Step("a", calls, provides="a"), Step("b", calls)))
    first = await engine.run()

    second = await engine.run()

    assert calls == ["a", "b"]
    assert second == first == {"a": "a"}
    assert engine.state is zag.FlowState.SUCCESS


async def test_sync_tasks_run_in_a_worker_thread_and_pass_data() -> None:
    loop_thread = threading.get_ident()
    threads: list[int] = []

    @zag.task(provides="x")
    def produce() -> int:
        threads.append(threading.get_ident())
        return 20

    @zag.task(provides="y")
    def consume(x: int) -> int:
        threads.append(threading.get_ident())
        return x + 1

    class Double(zag.Task):
        provides = "z"

        def execute(self, y: int) -> int:
            threads.append(threading.get_ident())
            return y * 2

    results = await zag.run(zag.linear("f", produce, consume, Double()))

    assert results == {"x": 20, "y": 21, "z": 42}
    assert len(threads) == 3
    assert loop_thread not in threads


async def test_sync_and_async_tasks_mix_in_an_unordered_flow() -> None:
    @zag.task(provides="a")
    def blocking() -> str:
        return "sync"

    @zag.task(provides="b")
    async def nonblocking() -> str:
        return "async"

    assert await zag.run(zag.unordered("u", blocking, nonblocking)) == {"a": "sync", "b": "async"}


@pytest.mark.parametrize("durable", [False, True], ids=["no backend", "sqlite"])
async def test_a_finished_run_is_freed_without_the_cyclic_collector(
    durable: bool, tmp_path: Path
) -> None:
    """No reference cycle keeps a run's objects alive: with thousands of flows in
    flight, cyclic garbage made every pass of Python's collector costlier."""
    import gc
    import weakref

    @zag.task(provides="y")
    async def double(x: int) -> int:
        return 2 * x

    flow = zag.linear("freed", double)
    async with contextlib.AsyncExitStack() as stack:
        backend = None
        if durable:
            backend = await stack.enter_async_context(
                zag.connect(f"sqlite+aiosqlite:///{tmp_path / 'f.db'}")
            )
        gc.collect()
        gc.disable()
        try:
            engine = zag.Engine(flow, store={"x": 2}, backend=backend)
            assert (await engine.run())["y"] == 4
            storage = weakref.ref(engine.storage)
            ref = weakref.ref(engine)
            del engine
            await asyncio.sleep(0)  # let the run's last callbacks go
            assert ref() is None and storage() is None
        finally:
            gc.enable()
