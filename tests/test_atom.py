"""Atoms: `@zag.task`, class-style `zag.Task`, requires/provides, rebind/inject, bind()."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import zag_async as zag
from zag_async.errors import InvalidAtom, ResultMismatch

# -- declaring tasks ---------------------------------------------------------------


def test_bare_decorator_makes_a_task_named_after_the_function() -> None:
    @zag.task
    async def charge(price: float, qty: int = 1) -> float:
        return price * qty

    assert isinstance(charge, zag.Task)
    assert isinstance(charge, zag.Atom)
    assert charge.name == "charge"
    assert charge.provided == {}


def test_decorator_with_keywords() -> None:
    @zag.task(name="charge_card", provides="total", timeout=5)
    async def charge(price: float) -> float:
        return price

    assert charge.name == "charge_card"
    assert set(charge.provided) == {"total"}
    assert charge.timeout_s == 5.0


async def test_decorated_function_is_still_callable() -> None:
    @zag.task(provides="total")
    async def charge(price: float, qty: int = 1) -> float:
        return price * qty

    assert await charge(2.0, qty=3) == 6.0


def test_requires_and_optional_come_from_the_signature() -> None:
    @zag.task
    async def charge(price: float, qty: int = 1, *, currency: str = "EUR") -> float:
        return price

    assert charge.requires == {"price", "qty", "currency"}
    assert charge.optional == {"qty", "currency"}


def test_var_args_are_not_requirements() -> None:
    @zag.task
    async def anything(x: int, *args: Any, **kwargs: Any) -> None:
        return None

    assert anything.requires == {"x"}


async def test_applying_task_twice_gives_two_distinct_atoms() -> None:
    calls: list[int] = []

    async def add(x: int) -> int:
        calls.append(x)
        return x + 1

    first = zag.task(name="first", provides="y")(add)
    second = zag.task(name="second", provides="z", rebind={"x": "y"})(add)
    assert first is not second
    assert (first.name, second.name) == ("first", "second")
    assert first.requires == {"x"} and second.requires == {"y"}

    results = await zag.run(zag.linear("twice", first, second), store={"x": 1})
    assert (results["y"], results["z"]) == (2, 3)
    assert calls == [1, 2]


def test_applying_task_twice_bare_gives_distinct_atoms_with_the_same_name() -> None:
    async def step() -> None:
        return None

    a, b = zag.task(step), zag.task(step)
    assert a is not b
    assert a.name == b.name == "step"


# -- rebind and inject --------------------------------------------------------------


async def test_rebind_as_dict() -> None:
    @zag.task(provides="total", rebind={"price": "net_price"})
    async def charge(price: float, qty: int) -> float:
        return price * qty

    assert charge.requires == {"net_price", "qty"}
    results = await zag.run(charge, store={"net_price": 2.0, "qty": 4})
    assert results["total"] == 8.0


async def test_rebind_as_list_is_positional() -> None:
    @zag.task(provides="total", rebind=["unit", "count"])
    async def charge(price: float, qty: int) -> float:
        return price * qty

    assert charge.requires == {"unit", "count"}
    results = await zag.run(charge, store={"unit": 3.0, "count": 2})
    assert results["total"] == 6.0


async def test_rebind_list_shorter_than_params_keeps_the_rest() -> None:
    @zag.task(provides="total", rebind=["unit"])
    async def charge(price: float, qty: int) -> float:
        return price * qty

    assert charge.requires == {"unit", "qty"}


async def test_inject_removes_the_requirement_and_supplies_the_value() -> None:
    @zag.task(provides="total", inject={"qty": 3})
    async def charge(price: float, qty: int) -> float:
        return price * qty

    assert charge.requires == {"price"}
    results = await zag.run(charge, store={"price": 2.0, "qty": 100})
    assert results["total"] == 6.0  # the injected value wins over the store


# -- provides ---------------------------------------------------------------------


async def test_provides_str_takes_the_whole_result() -> None:
    @zag.task(provides="pair")
    async def make() -> tuple[int, int]:
        return (1, 2)

    assert (await zag.run(make))["pair"] == (1, 2)


async def test_provides_tuple_unpacks_by_position() -> None:
    @zag.task(provides=("a", "b"))
    async def make() -> tuple[int, int]:
        return (1, 2)

    results = await zag.run(make)
    assert (results["a"], results["b"]) == (1, 2)


async def test_provides_set_reads_mapping_keys() -> None:
    @zag.task(provides={"host", "port"})
    async def make() -> dict[str, Any]:
        return {"host": "db", "port": 5432, "unused": True}

    results = await zag.run(make)
    assert (results["host"], results["port"]) == ("db", 5432)
    assert "unused" not in results


async def test_provides_dict_maps_names_to_keys() -> None:
    @zag.task(provides={"address": "host", "first": 0})
    async def make() -> Any:
        return {"host": "db", 0: "zero"}

    results = await zag.run(make)
    assert (results["address"], results["first"]) == ("db", "zero")
    assert "host" not in results


async def test_result_shorter_than_provides_tuple_fails_the_atom() -> None:
    reverted: list[str] = []

    @zag.task(provides="before")
    async def before() -> int:
        return 1

    @before.revert
    async def undo_before(*, result: int, flow_failures: dict[str, zag.Failure]) -> None:
        reverted.append("before")

    @zag.task(provides=("a", "b", "c"))
    async def short() -> list[int]:
        return [1, 2]

    engine = zag.Engine(zag.linear("f", before, short))
    with pytest.raises(ResultMismatch) as info:
        await engine.run()
    assert "short" in str(info.value)
    assert engine.state is zag.FlowState.REVERTED
    assert engine.storage.get("short").state is zag.AtomState.REVERTED
    failure = engine.storage.get("short").failure
    assert failure is not None and failure.check(ResultMismatch)
    assert reverted == ["before"]
    assert "a" not in engine.storage.fetch_all()


async def test_missing_key_for_provides_set_fails_the_atom() -> None:
    @zag.task(provides={"host", "port"})
    async def make() -> dict[str, Any]:
        return {"host": "db"}

    engine = zag.Engine(make)
    with pytest.raises(ResultMismatch, match="port"):
        await engine.run()
    assert engine.state is zag.FlowState.REVERTED


# -- bind -------------------------------------------------------------------------


async def test_bind_makes_a_variant_and_leaves_the_original_alone() -> None:
    @zag.task(provides="total")
    async def charge(price: float, qty: int) -> float:
        return price * qty

    tax = charge.bind(
        name="charge_tax", rebind={"price": "tax"}, inject={"qty": 1}, provides="tax_total"
    )
    assert tax is not charge
    assert (tax.name, tax.requires, set(tax.provided)) == ("charge_tax", {"tax"}, {"tax_total"})
    assert (charge.name, charge.requires, set(charge.provided)) == (
        "charge",
        {"price", "qty"},
        {"total"},
    )

    results = await zag.run(
        zag.linear("order", charge, tax), store={"price": 10.0, "qty": 2, "tax": 1.5}
    )
    assert (results["total"], results["tax_total"]) == (20.0, 1.5)


def test_bind_keeps_declarations_not_overridden() -> None:
    @zag.task(provides="total", timeout=3)
    async def charge(price: float) -> float:
        return price

    other = charge.bind(name="other")
    assert set(other.provided) == {"total"}
    assert other.timeout_s == 3.0
    assert other.requires == {"price"}


def test_bind_validates_like_the_decorator() -> None:
    @zag.task
    async def charge(price: float) -> float:
        return price

    with pytest.raises(InvalidAtom, match="nope"):
        charge.bind(rebind={"nope": "x"})


# -- revert -----------------------------------------------------------------------


async def test_revert_decorator_returns_the_function_and_is_called_on_failure() -> None:
    seen: list[tuple[float, float, list[str]]] = []

    @zag.task(provides="total")
    async def charge(price: float) -> float:
        return price * 2

    async def refund(price: float, *, result: float, flow_failures: dict[str, zag.Failure]) -> None:
        seen.append((price, result, sorted(flow_failures)))

    assert charge.revert(refund) is refund

    @zag.task
    async def ship(total: float) -> None:
        raise RuntimeError("no truck")

    with pytest.raises(RuntimeError, match="no truck"):
        await zag.run(zag.linear("order", charge, ship), store={"price": 4.0})
    assert seen == [(4.0, 8.0, ["ship"])]


async def test_revert_used_as_decorator_keeps_the_name_bound_to_the_function() -> None:
    @zag.task
    async def charge() -> None:
        return None

    @charge.revert
    async def refund(**kwargs: Any) -> str:
        return "refunded"

    assert await refund() == "refunded"
    assert isinstance(charge, zag.Task)


# -- sync tasks -------------------------------------------------------------------


async def test_plain_def_task_runs_in_a_worker_thread() -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []

    @zag.task(provides="doubled")
    def double(x: int) -> int:
        seen.append(threading.get_ident())
        return x * 2

    results = await zag.run(double, store={"x": 21})
    assert results["doubled"] == 42
    assert len(seen) == 1 and seen[0] != loop_thread


async def test_plain_def_revert_runs_in_a_worker_thread() -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []

    @zag.task
    def step() -> None:
        return None

    @step.revert
    def undo(**kwargs: Any) -> None:
        seen.append(threading.get_ident())

    @zag.task
    def boom() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        await zag.run(zag.linear("f", step, boom))
    assert len(seen) == 1 and seen[0] != loop_thread


# -- class style ------------------------------------------------------------------


class Ship(zag.Task):
    provides = ("tracking", "eta")

    def __init__(self, log: list[Any] | None = None, **kwargs: Any) -> None:
        self.log = log if log is not None else []
        super().__init__(**kwargs)

    async def execute(self, total: float) -> tuple[str, int]:
        return (f"T-{total:g}", 3)

    async def revert(self, total: float, *, result: Any, flow_failures: Any) -> None:
        self.log.append(("revert", total, result))


async def test_class_task_uses_class_name_and_class_provides() -> None:
    ship = Ship()
    assert ship.name == "Ship"
    assert ship.requires == {"total"}
    assert set(ship.provided) == {"tracking", "eta"}
    results = await zag.run(ship, store={"total": 9.5})
    assert (results["tracking"], results["eta"]) == ("T-9.5", 3)


async def test_class_task_constructor_overrides_class_declarations() -> None:
    ship = Ship(name="express", provides="label", rebind={"total": "amount"})
    assert ship.name == "express"
    assert ship.requires == {"amount"}
    results = await zag.run(ship, store={"amount": 1.0})
    assert results["label"] == ("T-1", 3)
    assert Ship().name == "Ship"  # the class declarations are untouched
    assert set(Ship().provided) == {"tracking", "eta"}


async def test_class_task_revert_gets_inputs_and_result() -> None:
    log: list[Any] = []

    @zag.task
    async def fail(tracking: str) -> None:
        raise RuntimeError("lost")

    with pytest.raises(RuntimeError):
        await zag.run(zag.linear("f", Ship(log), fail), store={"total": 2.0})
    assert log == [("revert", 2.0, ("T-2", 3))]


async def test_class_task_with_sync_execute_runs_in_a_thread() -> None:
    loop_thread = threading.get_ident()

    class Where(zag.Task):
        provides = "thread"

        def execute(self) -> int:
            return threading.get_ident()

    assert (await zag.run(Where()))["thread"] != loop_thread


def test_class_task_without_execute_is_invalid() -> None:
    class Empty(zag.Task):
        pass

    with pytest.raises(InvalidAtom, match="Empty"):
        Empty()


# -- declaration errors -------------------------------------------------------------


def test_rebind_naming_a_non_parameter_is_invalid() -> None:
    async def charge(price: float) -> float:
        return price

    with pytest.raises(InvalidAtom) as info:
        atom = zag.task(rebind={"prise": "net"})(charge)
        zag.Engine(atom, store={"net": 1})
    assert "charge" in str(info.value) and "prise" in str(info.value)


def test_rebind_list_longer_than_params_is_invalid() -> None:
    async def charge(price: float) -> float:
        return price

    with pytest.raises(InvalidAtom, match="charge"):
        zag.Engine(zag.task(rebind=["a", "b"])(charge), store={"a": 1, "b": 2})


def test_inject_naming_a_non_parameter_is_invalid() -> None:
    async def charge(price: float) -> float:
        return price

    with pytest.raises(InvalidAtom) as info:
        atom = zag.task(inject={"quantity": 2})(charge)
        zag.Engine(atom, store={"price": 1})
    assert "charge" in str(info.value) and "quantity" in str(info.value)


def test_rebind_through_var_keyword_is_allowed() -> None:
    @zag.task(rebind={"extra": "bonus"})
    async def open_ended(**kwargs: Any) -> None:
        return None

    assert open_ended.requires == {"bonus"}


def test_provides_tuple_longer_than_annotated_result_is_invalid() -> None:
    async def split() -> tuple[int, int]:
        return (1, 2)

    with pytest.raises(InvalidAtom) as info:
        zag.Engine(zag.task(provides=("a", "b", "c"))(split))
    assert "split" in str(info.value)


def test_class_provides_tuple_longer_than_annotated_result_is_invalid() -> None:
    class Split(zag.Task):
        provides = ("a", "b", "c")

        async def execute(self) -> tuple[str, int]:
            return ("x", 1)

    with pytest.raises(InvalidAtom, match="Split"):
        zag.Engine(Split())


def test_provides_tuple_with_open_annotation_is_fine() -> None:
    @zag.task(provides=("a", "b", "c"))
    async def split() -> tuple[int, ...]:
        return (1, 2, 3)

    zag.Engine(split)


def test_provides_tuple_within_annotated_result_is_fine() -> None:
    @zag.task(provides=("a", "b"))
    async def split() -> tuple[int, int, int]:
        return (1, 2, 3)

    zag.Engine(split)


def test_provides_tuple_repeating_a_name_is_invalid() -> None:
    async def split() -> tuple[int, int]:
        return (1, 2)

    with pytest.raises(InvalidAtom, match="split"):
        zag.task(provides=("a", "a"))(split)


@pytest.mark.parametrize("provides", [42, [""], {"": "k"}], ids=["int", "empty-name", "empty-key"])
def test_bad_provides_is_invalid(provides: Any) -> None:
    async def make() -> Any:
        return None

    with pytest.raises(InvalidAtom, match="make"):
        zag.task(provides=provides)(make)


@pytest.mark.parametrize("timeout", [0, -1, "soon"])
def test_bad_timeout_is_invalid(timeout: Any) -> None:
    async def slow() -> None:
        return None

    with pytest.raises(InvalidAtom, match="slow"):
        zag.task(timeout=timeout)(slow)


def test_retry_must_be_a_retry_controller() -> None:
    async def flaky() -> None:
        return None

    with pytest.raises(InvalidAtom, match="flaky"):
        zag.task(retry=3)(flaky)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", 5])
def test_bad_name_is_invalid(name: Any) -> None:
    async def step() -> None:
        return None

    with pytest.raises(InvalidAtom):
        zag.task(name=name)(step)


def test_task_needs_a_callable() -> None:
    with pytest.raises(InvalidAtom):
        zag.task("not a function")  # type: ignore[call-overload]
