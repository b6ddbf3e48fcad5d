"""Deciders on graph links: skipping atoms, how far the skip spreads, what deciders see."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import ALWAYS, Boom, Step

import zag_async as zag

S = zag.AtomState


def never(history: dict[str, Any]) -> bool:
    return False


async def test_false_decider_ignores_the_target_without_running_it(calls: list[str]) -> None:
    a, b = Step("a", calls), Step("b", calls)
    flow = zag.graph("g", a, b).link(a, b, decider=never)
    engine = zag.Engine(flow)

    await engine.run()

    assert calls == ["a"]
    assert engine.storage.get("b").state is S.IGNORE
    assert engine.state is zag.FlowState.SUCCESS


async def test_true_decider_runs_the_target(calls: list[str]) -> None:
    a, b = Step("a", calls), Step("b", calls)
    flow = zag.graph("g", a, b).link(a, b, decider=lambda history: True)

    await zag.run(flow)

    assert calls == ["a", "b"]


async def test_ignored_atoms_are_not_reverted(calls: list[str]) -> None:
    a, skipped = Step("a", calls), Step("skipped", calls)
    boom = Step("boom", calls, fails=ALWAYS)
    flow = zag.graph("g", a, skipped, boom)
    flow.link(a, skipped, decider=never, depth=zag.Depth.ATOM).link(skipped, boom)
    engine = zag.Engine(flow)

    with pytest.raises(Boom):
        await engine.run()

    assert calls[:2] == ["a", "boom"]
    assert sorted(calls[2:]) == ["revert a", "revert boom"]
    assert engine.storage.get("skipped").state is S.IGNORE
    assert engine.state is zag.FlowState.REVERTED


async def test_reverse_order_holds_across_an_ignored_atom(calls: list[str]) -> None:
    """boom ran after a (through skipped), so boom is undone before a."""
    a, skipped = Step("a", calls), Step("skipped", calls)

    @zag.task
    async def boom() -> None:
        calls.append("boom")
        raise Boom("boom")

    @boom.revert
    async def slow_undo(**kwargs: Any) -> None:
        await asyncio.sleep(0.01)  # a revert that takes a moment: a must still wait for it
        calls.append("revert boom")

    flow = zag.graph("g", a, skipped, boom)
    flow.link(a, skipped, decider=never, depth=zag.Depth.ATOM).link(skipped, boom)

    with pytest.raises(Boom):
        await zag.run(flow)

    assert calls == ["a", "boom", "revert boom", "revert a"]


async def test_decider_receives_source_results_by_atom_name(calls: list[str]) -> None:
    received: list[dict[str, Any]] = []

    def decide(history: dict[str, Any]) -> bool:
        received.append(history)
        return history["price"] > 10

    price = Step("price", calls, value=42)
    buy = Step("buy", calls)
    await zag.run(zag.graph("g", price, buy).link(price, buy, decider=decide))

    assert received == [{"price": 42}]
    assert calls == ["price", "buy"]


async def test_async_decider_is_awaited(calls: list[str]) -> None:
    async def decide(history: dict[str, Any]) -> bool:
        return history["a"] == "go"

    a, b = Step("a", calls, value="stop"), Step("b", calls)
    engine = zag.Engine(zag.graph("g", a, b).link(a, b, decider=decide))

    await engine.run()

    assert calls == ["a"]
    assert engine.storage.get("b").state is S.IGNORE


@pytest.mark.parametrize(
    ("depth", "ran"),
    [
        (zag.Depth.ALL, ["a"]),
        (zag.Depth.FLOW, ["a", "d"]),
        (zag.Depth.NEIGHBORS, ["a", "e", "d"]),
        (zag.Depth.ATOM, ["a", "c", "e", "d"]),
    ],
)
async def test_depth_limits_how_far_the_skip_spreads(
    calls: list[str], depth: zag.Depth, ran: list[str]
) -> None:
    # linear(graph(a -> b -> c -> e), d); the decider on a -> b says no.
    a, b, c, e = (Step(n, calls) for n in "abce")
    inner = zag.graph("inner", a, b, c, e)
    inner.link(a, b, decider=never, depth=depth).link(b, c).link(c, e)
    engine = zag.Engine(zag.linear("outer", inner, Step("d", calls)))

    await engine.run()

    assert calls == ran
    for name in "abcde":
        expected = S.SUCCESS if name in ran else S.IGNORE
        assert engine.storage.get(name).state is expected, name
    assert engine.state is zag.FlowState.SUCCESS


async def test_depth_can_be_given_as_a_string(calls: list[str]) -> None:
    a, b, c = Step("a", calls), Step("b", calls), Step("c", calls)
    flow = zag.graph("g", a, b, c).link(a, b, decider=never, depth="ATOM").link(b, c)

    await zag.run(flow)

    assert calls == ["a", "c"]


async def test_decider_sees_only_its_own_link_sources(calls: list[str]) -> None:
    received: list[dict[str, Any]] = []

    def decide(history: dict[str, Any]) -> bool:
        received.append(history)
        return True

    x, y, z = Step("x", calls, value=1), Step("y", calls, value=2), Step("z", calls)
    await zag.run(zag.graph("g", x, y, z).link(x, z, decider=decide).link(y, z))

    assert received == [{"x": 1}]
    assert calls[-1] == "z"
