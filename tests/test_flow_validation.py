"""Flow validation: every definition error surfaces before any atom runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import zag_async as zag
from zag_async.errors import (
    AmbiguousProvider,
    DependencyCycle,
    DuplicateAtomName,
    FlowDefinitionError,
    MissingRequirements,
)


def recorder(ran: list[str]) -> Callable[..., zag.FunctionTask]:
    """`step(name, requires, provides)`: a task that records its name when it runs."""

    def step(name: str, requires: tuple[str, ...] = (), provides: Any = None) -> zag.FunctionTask:
        async def body(**kwargs: Any) -> Any:
            ran.append(name)
            return name

        return zag.task(name=name, provides=provides, rebind={r: r for r in requires})(body)

    return step


# -- missing requirements -------------------------------------------------------------


async def test_all_missing_requirements_in_one_error() -> None:
    ran: list[str] = []
    step = recorder(ran)

    @zag.task
    async def charge(price: float, qty: int) -> None:
        ran.append("charge")

    flow = zag.linear(
        "order",
        step("fine"),
        charge,
        zag.unordered("notify", step("email", ("address",)), step("sms", ("phone",))),
    )
    with pytest.raises(MissingRequirements) as info:
        zag.Engine(flow, store={"qty": 1})
    err = info.value
    assert {atom: sorted(names) for atom, names in err.missing.items()} == {
        "charge": ["price"],
        "email": ["address"],
        "sms": ["phone"],
    }
    message = str(err)
    for word in ("order", "charge", "price", "email", "address", "sms", "phone"):
        assert word in message
    assert "qty" not in message

    with pytest.raises(MissingRequirements):
        await zag.run(flow, store={"qty": 1})
    assert ran == []


def test_missing_requirement_of_one_atom_lists_all_its_symbols() -> None:
    @zag.task
    async def charge(price: float, qty: int, currency: str) -> None:
        return None

    with pytest.raises(MissingRequirements) as info:
        zag.Engine(zag.linear("order", charge))
    assert sorted(info.value.missing["charge"]) == ["currency", "price", "qty"]


def test_missing_requirement_uses_the_rebound_symbol() -> None:
    @zag.task(rebind={"price": "net_price"})
    async def charge(price: float) -> None:
        return None

    with pytest.raises(MissingRequirements) as info:
        zag.Engine(zag.linear("order", charge))
    assert info.value.missing == {"charge": ["net_price"]}


def test_missing_revert_requirement_is_reported() -> None:
    @zag.task
    async def charge() -> None:
        return None

    @charge.revert
    async def refund(account: str, *, result: Any, flow_failures: Any) -> None:
        return None

    with pytest.raises(MissingRequirements) as info:
        zag.Engine(zag.linear("order", charge))
    # `.missing` holds symbols (what a caller would put in the store), not prose.
    assert info.value.missing == {"charge": ["account"]}
    assert "account" in str(info.value)


def test_missing_input_of_a_retry_controller_is_reported_with_the_atoms() -> None:
    @zag.task
    async def connect(host: str, port: int) -> None:
        return None

    controller = zag.retry.ParameterizedForEach(rebind={"values": "hosts"}, provides="host")
    with pytest.raises(MissingRequirements) as info:
        zag.Engine(zag.linear("f", connect, retry=controller))
    assert info.value.missing == {"f.retry": ["hosts"], "connect": ["port"]}


async def test_store_satisfies_requirements() -> None:
    @zag.task(provides="total")
    async def charge(price: float, qty: int) -> float:
        return price * qty

    results = await zag.run(zag.linear("order", charge), store={"price": 2.0, "qty": 3})
    assert results["total"] == 6.0


async def test_requirement_provided_by_an_earlier_atom_is_not_missing() -> None:
    ran: list[str] = []
    step = recorder(ran)
    await zag.run(zag.linear("f", step("a", provides="x"), step("b", ("x",))))
    assert ran == ["a", "b"]


async def test_optional_parameters_are_not_missing() -> None:
    seen: list[tuple[float, int]] = []

    @zag.task
    async def charge(price: float, qty: int = 1) -> None:
        seen.append((price, qty))

    await zag.run(zag.linear("order", charge), store={"price": 2.0})
    assert seen == [(2.0, 1)]


# -- duplicate names ---------------------------------------------------------------------


def _noop(name: str) -> zag.FunctionTask:
    async def body() -> None:
        return None

    return zag.task(name=name)(body)


def test_duplicate_atom_names() -> None:
    with pytest.raises(DuplicateAtomName) as info:
        zag.Engine(zag.linear("order", _noop("step"), _noop("step")))
    assert "order" in str(info.value) and "step" in str(info.value)


def test_duplicate_atom_names_across_nested_flows() -> None:
    flow = zag.linear(
        "outer",
        _noop("a"),
        zag.unordered("middle", _noop("b"), zag.graph("inner", _noop("a"))),
    )
    with pytest.raises(DuplicateAtomName, match="'a'"):
        zag.Engine(flow)


def test_same_atom_added_twice_is_a_duplicate() -> None:
    step = _noop("step")
    with pytest.raises(DuplicateAtomName, match="step"):
        zag.Engine(zag.linear("f", step, zag.linear("g", step)))


def test_retry_controller_name_clashing_with_an_atom_is_a_duplicate() -> None:
    flow = zag.linear("f", _noop("f.retry"), retry=zag.retry.Times(2))
    with pytest.raises(DuplicateAtomName, match="f.retry"):
        zag.Engine(flow)


async def test_duplicate_names_raise_before_anything_runs() -> None:
    ran: list[str] = []
    step = recorder(ran)
    with pytest.raises(DuplicateAtomName):
        await zag.run(zag.linear("f", step("a"), step("b"), step("a")))
    assert ran == []


# -- graph flows ---------------------------------------------------------------------


async def test_ambiguous_provider_in_graph() -> None:
    ran: list[str] = []
    step = recorder(ran)
    flow = zag.graph(
        "build",
        step("fetch_a", provides="src"),
        step("fetch_b", provides="src"),
        step("compile", ("src",)),
    )
    with pytest.raises(AmbiguousProvider) as info:
        zag.Engine(flow)
    message = str(info.value)
    for word in ("build", "compile", "src", "fetch_a", "fetch_b"):
        assert word in message
    with pytest.raises(AmbiguousProvider):
        await zag.run(flow)
    assert ran == []


async def test_cycle_via_link() -> None:
    ran: list[str] = []
    step = recorder(ran)
    a, b, c = step("a"), step("b"), step("c")
    flow = zag.graph("loop", a, b, c).link(a, b).link(b, c).link(c, a)
    with pytest.raises(DependencyCycle) as info:
        zag.Engine(flow)
    err = info.value
    assert err.cycle[0] == err.cycle[-1]
    assert set(err.cycle) == {"a", "b", "c"}
    assert "loop" in str(err)
    assert " -> ".join(err.cycle) in str(err)
    with pytest.raises(DependencyCycle):
        await zag.run(flow)
    assert ran == []


async def test_cycle_inferred_from_requires_and_provides() -> None:
    ran: list[str] = []
    step = recorder(ran)
    flow = zag.graph("loop", step("a", ("y",), provides="x"), step("b", ("x",), provides="y"))
    with pytest.raises(DependencyCycle) as info:
        await zag.run(flow, store={"x": 0, "y": 0})
    assert set(info.value.cycle) == {"a", "b"}
    message = str(info.value)
    assert "a -> b" in message or "b -> a" in message
    assert ran == []


def test_cycle_mixing_inferred_edge_and_link() -> None:
    ran: list[str] = []
    step = recorder(ran)
    a, b = step("a", provides="x"), step("b", ("x",))
    flow = zag.graph("mixed", a, b).link(b, a)
    with pytest.raises(DependencyCycle, match="mixed"):
        zag.Engine(flow)


def test_link_within_a_linear_order_that_agrees_is_fine() -> None:
    step = recorder([])
    a, b = step("a", provides="x"), step("b", ("x",))
    zag.Engine(zag.graph("ok", a, b).link(a, b))


# -- bad items and links ----------------------------------------------------------------


def test_plain_function_in_a_flow_is_rejected_with_a_hint() -> None:
    async def not_a_task() -> None:
        return None

    with pytest.raises(FlowDefinitionError) as info:
        zag.linear("f", _noop("ok"), not_a_task)  # type: ignore[arg-type]
    assert "zag.task" in str(info.value)
    assert "'f'" in str(info.value)


def test_plain_function_added_later_is_rejected() -> None:
    flow = zag.unordered("u")
    with pytest.raises(FlowDefinitionError, match="zag.task"):
        flow.add(print)  # type: ignore[arg-type]


def test_non_callable_item_is_rejected() -> None:
    with pytest.raises(FlowDefinitionError, match="'g'"):
        zag.graph("g", 42)  # type: ignore[arg-type]


def test_retry_controller_as_an_item_is_rejected() -> None:
    with pytest.raises(FlowDefinitionError, match="retry="):
        zag.linear("f", zag.retry.Times(2))


def test_link_to_a_non_member_is_rejected() -> None:
    inside, outside = _noop("inside"), _noop("outside")
    flow = zag.graph("g", inside)
    with pytest.raises(FlowDefinitionError, match="outside"):
        flow.link(inside, outside)
        zag.Engine(flow)


def test_link_from_a_non_member_is_rejected() -> None:
    inside, outside = _noop("inside"), _noop("outside")
    flow = zag.graph("g", inside)
    with pytest.raises(FlowDefinitionError, match="outside"):
        flow.link(outside, inside)
        zag.Engine(flow)


def test_link_to_itself_is_rejected() -> None:
    a = _noop("a")
    flow = zag.graph("g", a)
    with pytest.raises(FlowDefinitionError, match="'a'"):
        flow.link(a, a)
        zag.Engine(flow)


def test_flow_needs_a_name() -> None:
    with pytest.raises(FlowDefinitionError):
        zag.linear("")


# -- retry controllers --------------------------------------------------------------------


def test_retry_controller_default_name_for_a_flow() -> None:
    engine = zag.Engine(zag.linear("pay", _noop("charge"), retry=zag.retry.Times(3)))
    assert engine.storage.get("pay.retry").kind == "retry"


def test_retry_controller_default_name_for_an_atom() -> None:
    @zag.task(retry=zag.retry.Times(3))
    async def charge() -> None:
        return None

    engine = zag.Engine(zag.linear("pay", charge))
    assert engine.storage.get("charge.retry").kind == "retry"


def test_retry_controller_explicit_name_is_kept() -> None:
    engine = zag.Engine(zag.linear("pay", _noop("charge"), retry=zag.retry.Times(3, name="again")))
    assert engine.storage.get("again").kind == "retry"
    with pytest.raises(zag.errors.NotFound):
        engine.storage.get("pay.retry")


def test_one_controller_object_shared_by_two_flows_gets_two_names() -> None:
    times = zag.retry.Times(2)
    flow = zag.linear(
        "outer",
        zag.linear("left", _noop("a"), retry=times),
        zag.linear("right", _noop("b"), retry=times),
    )
    engine = zag.Engine(flow)
    assert engine.storage.get("left.retry").kind == "retry"
    assert engine.storage.get("right.retry").kind == "retry"


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_max_concurrency_must_be_a_whole_number_from_one(bad: Any) -> None:
    with pytest.raises(zag.errors.ConfigurationError, match="max_concurrency"):
        zag.Engine(zag.linear("f", _noop("a")), max_concurrency=bad)


@pytest.mark.parametrize("ok", [None, 1, 8])
def test_max_concurrency_accepts_none_and_positive(ok: int | None) -> None:
    zag.Engine(zag.linear("f", _noop("a")), max_concurrency=ok)
