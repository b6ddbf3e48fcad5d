"""Scoped lookup: which provider an atom reads from, and what fetch_all() shows."""

from __future__ import annotations

from typing import Any

import pytest

import zag_async as zag
from zag_async.errors import MissingRequirements, NotFound


def const(name: str, provides: Any, value: Any, log: list[str] | None = None) -> zag.FunctionTask:
    """A task that provides `value` (and records its name in `log`)."""

    async def body() -> Any:
        if log is not None:
            log.append(name)
        return value

    return zag.task(name=name, provides=provides)(body)


def reader(name: str, symbol: str, seen: dict[str, Any], provides: Any = None) -> zag.FunctionTask:
    """A task that records the value of `symbol` it was given."""

    async def body(value: Any) -> Any:
        seen[name] = value
        return value

    return zag.task(name=name, provides=provides, rebind={"value": symbol})(body)


async def boom_task() -> None:
    raise RuntimeError("boom")


# -- linear flows -----------------------------------------------------------------------


async def test_nearest_preceding_provider_wins() -> None:
    seen: dict[str, Any] = {}
    flow = zag.linear("f", const("p1", "x", 1), const("p2", "x", 2), reader("c", "x", seen))
    results = await zag.run(flow)
    assert seen == {"c": 2}
    assert results["x"] == 2


async def test_a_later_provider_does_not_feed_an_earlier_reader() -> None:
    seen: dict[str, Any] = {}
    flow = zag.linear("f", const("p1", "x", 1), reader("c", "x", seen), const("p2", "x", 2))
    engine = zag.Engine(flow)
    await engine.run()
    assert seen == {"c": 1}
    assert engine.storage.fetch("x") == 2  # after the run, the latest output is visible


async def test_atom_output_shadows_the_store() -> None:
    seen: dict[str, Any] = {}
    flow = zag.linear(
        "f", reader("before", "x", seen), const("p", "x", 2), reader("after", "x", seen)
    )
    results = await zag.run(flow, store={"x": 1})
    assert seen == {"before": 1, "after": 2}
    assert results["x"] == 2


async def test_results_include_the_store() -> None:
    results = await zag.run(zag.linear("f", const("p", "x", 1)), store={"y": "kept"})
    assert dict(results) == {"x": 1, "y": "kept"}


# -- nesting --------------------------------------------------------------------------


async def test_nested_flows_see_outer_outputs() -> None:
    seen: dict[str, Any] = {}
    flow = zag.linear(
        "outer",
        const("p", "x", 1),
        zag.linear("inner", reader("lin", "x", seen)),
        zag.unordered("par", reader("un", "x", seen)),
        zag.graph("g", reader("gr", "x", seen)),
    )
    await zag.run(flow)
    assert seen == {"lin": 1, "un": 1, "gr": 1}


async def test_outer_atoms_see_nested_outputs() -> None:
    seen: dict[str, Any] = {}
    flow = zag.linear(
        "outer",
        zag.linear("inner", zag.unordered("deep", const("p", "x", 7))),
        reader("c", "x", seen),
    )
    await zag.run(flow)
    assert seen == {"c": 7}


async def test_nested_provider_is_nearer_than_outer_one() -> None:
    seen: dict[str, Any] = {}
    flow = zag.linear(
        "outer",
        const("outer_p", "x", "outer"),
        zag.linear("inner", const("inner_p", "x", "inner"), reader("c", "x", seen)),
        reader("after", "x", seen),
    )
    await zag.run(flow)
    assert seen == {"c": "inner", "after": "inner"}


# -- unordered siblings ---------------------------------------------------------------


async def test_unordered_siblings_cannot_feed_each_other() -> None:
    ran: list[str] = []
    seen: dict[str, Any] = {}
    flow = zag.unordered("u", const("p", "x", 1, ran), reader("c", "x", seen))
    with pytest.raises(MissingRequirements) as info:
        await zag.run(flow)
    assert info.value.missing == {"c": ["x"]}
    assert ran == [] and seen == {}


async def test_unordered_sibling_reads_the_store_not_its_sibling() -> None:
    ran: list[str] = []
    seen: dict[str, Any] = {}
    flow = zag.unordered("u", const("p", "x", "sibling", ran), reader("c", "x", seen))
    # Serial, with the provider listed first: it has run before the reader starts.
    await zag.run(flow, store={"x": "store"}, max_concurrency=1)
    assert ran == ["p"]
    assert seen == {"c": "store"}


async def test_unordered_siblings_in_nested_linear_flows_are_still_separate() -> None:
    seen: dict[str, Any] = {}
    flow = zag.unordered(
        "u",
        zag.linear("left", const("p", "x", 1)),
        zag.linear("right", reader("c", "x", seen)),
    )
    with pytest.raises(MissingRequirements):
        zag.Engine(flow)


async def test_unordered_sibling_output_does_not_shadow_an_outer_provider() -> None:
    seen: dict[str, Any] = {}
    flow = zag.linear(
        "f",
        const("outer", "x", "outer"),
        zag.unordered("u", const("sibling", "x", "sibling"), reader("c", "x", seen)),
    )
    results = await zag.run(flow, max_concurrency=1)
    assert seen == {"c": "outer"}
    assert results["x"] == "sibling"  # afterwards, the latest provider's value is visible


# -- reverted outputs -------------------------------------------------------------------


async def test_reverted_atom_outputs_vanish_from_fetch_all() -> None:
    flow = zag.linear("f", const("p", "x", 1), const("q", ("y", "z"), (2, 3)), zag.task(boom_task))
    engine = zag.Engine(flow, store={"kept": True})
    with pytest.raises(RuntimeError, match="boom"):
        await engine.run()
    assert engine.state is zag.FlowState.REVERTED
    assert engine.storage.fetch_all() == {"kept": True}
    with pytest.raises(NotFound):
        engine.storage.fetch("x")


async def test_reverted_output_uncovers_the_store_value() -> None:
    flow = zag.linear("f", const("p", "x", "from atom"), zag.task(boom_task))
    engine = zag.Engine(flow, store={"x": "from store"})
    with pytest.raises(RuntimeError):
        await engine.run()
    assert engine.storage.fetch_all() == {"x": "from store"}
    assert engine.storage.fetch("x") == "from store"


# -- retry controllers ---------------------------------------------------------------------


async def test_retry_controller_provides_to_the_atoms_it_guards() -> None:
    tried: list[Any] = []

    @zag.task(provides="used")
    async def connect(host: str) -> str:
        tried.append(host)
        if host != "b":
            raise ConnectionError(host)
        return host

    flow = zag.linear("f", connect, retry=zag.retry.ForEach(["a", "b"], provides="host"))
    results = await zag.run(flow)
    assert tried == ["a", "b"]
    assert (results["used"], results["host"]) == ("b", "b")


async def test_atom_retry_controller_provides_to_its_atom() -> None:
    attempts: list[int] = []

    @zag.task(retry=zag.retry.Times(3, provides="attempt"))
    async def flaky(attempt: int) -> None:
        attempts.append(attempt)
        if attempt < 3:
            raise ConnectionError("again")

    await zag.run(zag.linear("f", flaky))
    assert attempts == [1, 2, 3]


# -- graph flows -----------------------------------------------------------------------


async def test_graph_orders_atoms_by_data_regardless_of_add_order() -> None:
    order: list[str] = []

    @zag.task(provides="report")
    async def publish(summary: str) -> str:
        order.append("publish")
        return f"report({summary})"

    @zag.task(provides="summary")
    async def summarise(rows: list[int]) -> str:
        order.append("summarise")
        return f"sum={sum(rows)}"

    @zag.task(provides="rows")
    async def load() -> list[int]:
        order.append("load")
        return [1, 2, 3]

    results = await zag.run(zag.graph("etl", publish, summarise, load))
    assert order == ["load", "summarise", "publish"]
    assert results["report"] == "report(sum=6)"


async def test_graph_orders_nested_flows_by_data() -> None:
    order: list[str] = []

    def step(name: str, requires: tuple[str, ...], provides: str) -> zag.FunctionTask:
        async def body(**kwargs: Any) -> str:
            order.append(name)
            return name

        return zag.task(name=name, provides=provides, rebind={r: r for r in requires})(body)

    flow = zag.graph(
        "g",
        step("report", ("y", "z"), "r"),
        zag.linear("l", step("a1", ("x",), "m"), step("a2", ("m",), "y")),
        zag.unordered("u", step("u1", ("x",), "z")),
        step("src", (), "x"),
    )
    results = await zag.run(flow, max_concurrency=1)
    assert order[0] == "src" and order[-1] == "report"
    assert order.index("a1") < order.index("a2")
    assert (results["y"], results["z"], results["r"]) == ("a2", "u1", "report")


async def test_graph_provider_is_nearer_than_an_outer_one() -> None:
    seen: dict[str, Any] = {}
    flow = zag.linear(
        "f",
        const("outer", "x", "outer"),
        zag.graph("g", reader("c", "x", seen), const("inner", "x", "inner")),
    )
    await zag.run(flow)
    assert seen == {"c": "inner"}


async def test_graph_atom_may_read_and_update_one_symbol() -> None:
    @zag.task(provides="counter")
    async def increment(counter: int) -> int:
        return counter + 1

    results = await zag.run(zag.graph("g", increment), store={"counter": 1})
    assert results["counter"] == 2


async def test_graph_with_link_orders_atoms_without_data() -> None:
    order: list[str] = []
    first, second = const("first", None, None, order), const("second", None, None, order)
    await zag.run(zag.graph("g", second, first).link(first, second), max_concurrency=None)
    assert order == ["first", "second"]


# -- target ----------------------------------------------------------------------------------


async def test_target_runs_only_the_target_and_what_it_needs() -> None:
    ran: list[str] = []
    seen: dict[str, Any] = {}

    @zag.task
    async def unrelated(never_given: int) -> None:
        ran.append("unrelated")

    flow = zag.graph(
        "g",
        const("a", "x", 1, ran),
        reader("b", "x", seen, provides="y"),
        const("c", "z", 3, ran),
        unrelated,
    )
    engine = zag.Engine(flow, target="b")  # unrelated's missing input does not matter
    results = await engine.run()
    assert ran == ["a"] and seen == {"b": 1}
    assert (results["x"], results["y"]) == (1, 1)
    assert "z" not in results
    assert engine.storage.get("c").state is zag.AtomState.PENDING
    assert engine.storage.get("unrelated").state is zag.AtomState.PENDING


async def test_target_in_a_linear_flow_runs_what_comes_before_it() -> None:
    ran: list[str] = []
    flow = zag.linear(
        "f", const("a", None, None, ran), const("b", None, None, ran), const("c", None, None, ran)
    )
    await zag.run(flow, target="b")
    assert ran == ["a", "b"]


async def test_target_inside_a_retried_subflow_runs_its_controller() -> None:
    ran: list[str] = []
    flow = zag.linear(
        "f",
        const("a", None, None, ran),
        zag.linear("g", const("b", None, None, ran), retry=zag.retry.Times(2)),
        const("c", None, None, ran),
    )
    engine = zag.Engine(flow, target="b")
    await engine.run()
    assert ran == ["a", "b"]
    assert engine.storage.get("g.retry").state is zag.AtomState.SUCCESS
    assert engine.storage.get("c").state is zag.AtomState.PENDING


async def test_target_may_be_given_as_the_atom() -> None:
    ran: list[str] = []
    a, b = const("a", None, None, ran), const("b", None, None, ran)
    await zag.run(zag.unordered("u", a, b), target=b)
    assert ran == ["b"]


def test_unknown_target_is_not_found() -> None:
    with pytest.raises(NotFound, match="nope"):
        zag.Engine(zag.linear("f", const("a", None, None)), target="nope")


async def test_target_still_reports_its_own_missing_inputs() -> None:
    seen: dict[str, Any] = {}
    flow = zag.graph("g", reader("b", "x", seen), const("other", "y", 1))
    with pytest.raises(MissingRequirements) as info:
        zag.Engine(flow, target="b")
    assert info.value.missing == {"b": ["x"]}
