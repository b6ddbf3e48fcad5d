"""Reverting: order, what reverts receive, end states and what the caller sees."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import ALWAYS, Boom, Step

import zag_async as zag


async def test_linear_flow_reverts_in_reverse_order(calls: list[str]) -> None:
    flow = zag.linear("f", Step("a", calls), Step("b", calls), Step("c", calls, fails=ALWAYS))

    with pytest.raises(Boom, match="c failed"):
        await zag.run(flow)

    assert calls == ["a", "b", "c", "revert c", "revert b", "revert a"]


async def test_failing_atom_revert_gets_its_failure_as_result() -> None:
    seen: dict[str, Any] = {}

    @zag.task(provides="x")
    async def ok() -> int:
        return 7

    @zag.task
    async def broken(x: int) -> None:
        raise ValueError("no good")

    @ok.revert
    async def undo_ok(*, result: Any, flow_failures: dict[str, zag.Failure]) -> None:
        seen["ok"] = (result, flow_failures)

    @broken.revert
    async def undo_broken(x: int, *, result: Any, flow_failures: dict[str, zag.Failure]) -> None:
        seen["broken"] = (x, result, flow_failures)

    with pytest.raises(ValueError, match="no good"):
        await zag.run(zag.linear("f", ok, broken))

    x, result, failures = seen["broken"]
    assert x == 7
    assert isinstance(result, zag.Failure)
    assert result.check(ValueError) is ValueError
    assert result.message == "no good"
    assert list(failures) == ["broken"]
    assert failures["broken"].check(ValueError)

    ok_result, ok_failures = seen["ok"]
    assert ok_result == 7
    assert list(ok_failures) == ["broken"]
    assert ok_failures["broken"].message == "no good"


async def test_reverts_get_the_values_execute_got(calls: list[str]) -> None:
    """Store values, upstream outputs, defaults and a retry controller's value."""
    executed: list[tuple[Any, ...]] = []
    reverted: list[tuple[Any, ...]] = []

    @zag.task(provides="size")
    async def measure(base: int) -> int:
        return base * 2

    @zag.task
    async def place(size: int, zone: str, copies: int = 3) -> None:
        executed.append((size, zone, copies))
        raise Boom("no room")

    @place.revert
    async def unplace(
        size: int, zone: str, copies: int, *, result: Any, flow_failures: Any
    ) -> None:
        reverted.append((size, zone, copies))

    flow = zag.linear(
        "f",
        measure,
        zag.linear("try_zones", place, retry=zag.retry.ForEach(["eu", "us"], provides="zone")),
    )

    with pytest.raises(Boom):
        await zag.run(flow, store={"base": 5})

    assert executed == [(10, "eu", 3), (10, "us", 3)]
    assert reverted == executed


async def test_atoms_that_never_ran_are_not_reverted(calls: list[str]) -> None:
    engine = zag.Engine(
        zag.linear("f", Step("a", calls), Step("b", calls, fails=ALWAYS), Step("c", calls))
    )

    with pytest.raises(Boom):
        await engine.run()

    assert calls == ["a", "b", "revert b", "revert a"]
    assert engine.storage.get("c").state is zag.AtomState.PENDING
    assert engine.storage.get("b").state is zag.AtomState.REVERTED
    assert engine.storage.get("a").state is zag.AtomState.REVERTED


async def test_flow_ends_reverted_and_the_original_exception_is_reraised() -> None:
    original = KeyError("missing thing")

    @zag.task
    async def fail() -> None:
        raise original

    engine = zag.Engine(zag.linear("f", fail))

    with pytest.raises(KeyError) as caught:
        await engine.run()

    assert caught.value is original
    assert engine.state is zag.FlowState.REVERTED
    assert engine.storage.get("fail").failure is not None
    assert engine.storage.get("fail").failure.exception is original


async def test_reverted_outputs_disappear_from_fetch_all(calls: list[str]) -> None:
    engine = zag.Engine(
        zag.linear("f", Step("a", calls, provides="a"), Step("b", calls, fails=ALWAYS)),
        store={"s": 1},
    )

    with pytest.raises(Boom):
        await engine.run()

    assert engine.storage.fetch_all() == {"s": 1}


async def test_two_parallel_failures_raise_wrapped_failure_with_both() -> None:
    started = {"left": asyncio.Event(), "right": asyncio.Event()}

    def failing(name: str, other: str) -> zag.Task:
        @zag.task(name=name)
        async def fail() -> None:
            started[name].set()
            await asyncio.wait_for(started[other].wait(), timeout=5)
            raise Boom(f"{name} broke")

        return fail

    engine = zag.Engine(zag.unordered("u", failing("left", "right"), failing("right", "left")))

    with pytest.raises(zag.WrappedFailure) as caught:
        await engine.run()

    assert set(caught.value.failures) == {"left", "right"}
    assert caught.value.failures["left"].message == "left broke"
    assert caught.value.failures["right"].check(Boom)
    assert len(caught.value) == 2
    assert engine.state is zag.FlowState.REVERTED


async def test_revert_that_keeps_raising_ends_the_flow_uncompensated() -> None:
    original = Boom("execute failed")
    revert_error = RuntimeError("revert failed too")

    @zag.task(revert_retry=zag.retry.RevertRetry(attempts=2, delay=0))
    async def fragile() -> None:
        raise original

    @fragile.revert
    async def undo(*, result: Any, flow_failures: Any) -> None:
        raise revert_error

    engine = zag.Engine(zag.linear("f", fragile))

    with pytest.raises(RuntimeError) as caught:
        await engine.run()

    assert caught.value is revert_error
    assert caught.value.__context__ is original
    assert engine.state is zag.FlowState.UNCOMPENSATED
    assert engine.storage.get("fragile").state is zag.AtomState.REVERT_FAILURE
    assert engine.storage.flow.meta["unreverted"] == ["fragile"]


async def test_revert_failure_stops_further_reverts(calls: list[str]) -> None:
    @zag.task(revert_retry=zag.retry.RevertRetry(attempts=1))
    async def middle() -> None:
        calls.append("middle")

    @middle.revert
    async def undo_middle(**kwargs: Any) -> None:
        calls.append("revert middle")
        raise RuntimeError("stuck")

    engine = zag.Engine(zag.linear("f", Step("a", calls), middle, Step("c", calls, fails=ALWAYS)))

    with pytest.raises(RuntimeError, match="stuck"):
        await engine.run()

    assert calls == ["a", "middle", "c", "revert c", "revert middle"]
    assert engine.state is zag.FlowState.UNCOMPENSATED
    assert engine.storage.get("a").state is zag.AtomState.SUCCESS
    # What is left to compensate, by name: the failed revert and what it held back.
    assert engine.storage.flow.meta["unreverted"] == ["a", "middle"]


async def test_graph_reverts_in_reverse_dependency_order(calls: list[str]) -> None:
    # root -> (left, right) -> tip; tip fails
    flow = zag.graph(
        "g",
        Step("tip", calls, requires=("l", "r"), fails=ALWAYS),
        Step("left", calls, requires=("seed",), provides="l"),
        Step("right", calls, requires=("seed",), provides="r"),
        Step("root", calls, provides="seed"),
    )

    with pytest.raises(Boom):
        await zag.run(flow)

    reverts = [c for c in calls if c.startswith("revert")]
    assert reverts[0] == "revert tip"
    assert sorted(reverts[1:3]) == ["revert left", "revert right"]
    assert reverts[3] == "revert root"


async def test_graph_independent_reverts_overlap() -> None:
    started = {"left": asyncio.Event(), "right": asyncio.Event()}
    reverted: list[str] = []

    def branch(name: str, other: str) -> zag.Task:
        @zag.task(name=name, provides=name)
        async def work() -> str:
            return name

        @work.revert
        async def undo(**kwargs: Any) -> None:
            started[name].set()
            await asyncio.wait_for(started[other].wait(), timeout=5)
            reverted.append(name)

        return work

    @zag.task
    async def tip(left: str, right: str) -> None:
        raise Boom("tip")

    with pytest.raises(Boom):
        await zag.run(zag.graph("g", branch("left", "right"), branch("right", "left"), tip))

    assert sorted(reverted) == ["left", "right"]


async def test_revert_receives_everything_through_kwargs() -> None:
    received: dict[str, Any] = {}

    class Reserve(zag.Task):
        provides = "booking"

        async def execute(self, room: int, nights: int = 2) -> str:
            return f"room {room} x{nights}"

        async def revert(self, **kwargs: Any) -> None:
            received.update(kwargs)

    @zag.task
    async def pay(booking: str) -> None:
        raise Boom("card declined")

    with pytest.raises(Boom):
        await zag.run(zag.linear("f", Reserve(), pay), store={"room": 12})

    assert received["room"] == 12
    assert received["nights"] == 2
    assert received["result"] == "room 12 x2"
    assert set(received["flow_failures"]) == {"pay"}
    assert received["flow_failures"]["pay"].message == "card declined"


async def test_sync_revert_runs_too(calls: list[str]) -> None:
    @zag.task
    def blocking() -> None:
        calls.append("blocking")

    @blocking.revert
    def undo(*, result: Any, flow_failures: Any) -> None:
        calls.append("revert blocking")

    with pytest.raises(Boom):
        await zag.run(zag.linear("f", blocking, Step("boom", calls, fails=ALWAYS)))

    assert calls == ["blocking", "boom", "revert boom", "revert blocking"]
