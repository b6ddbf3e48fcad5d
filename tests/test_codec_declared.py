"""Into the types the tasks declared: plain JSON in the store (a web hook, the CLI's
`--store`, a job's arguments) reaches a task as the type its parameter names,
locally and through the worker protocol; other parameters are left alone."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import uuid
from typing import Any, NamedTuple

import pydantic
import pytest

import zag_async as zag
from zag_async.errors import SerializationError
from zag_async.workers import LoopbackExecutor


class Size(enum.Enum):
    S = "s"
    L = "l"


class Grid(NamedTuple):
    row: int
    at: datetime.date


@dataclasses.dataclass
class Item:
    sku: str
    size: Size
    price: decimal.Decimal


@dataclasses.dataclass
class Order:
    id: uuid.UUID
    placed: datetime.datetime
    items: list[Item]
    gift: Item | None = None
    tags: tuple[str, ...] = ()


class Buyer(pydantic.BaseModel):
    name: str
    since: datetime.date


SEEN: dict[str, Any] = {}

WEB_HOOK = json.loads(
    """{
      "order": {"id": "c9bf9e57-1685-4c89-bafb-ff5af830be8a", "placed": "2026-12-06T09:30:00+00:00",
                "items": [{"sku": "pen", "size": "s", "price": "2.10"}],
                "gift": {"sku": "card", "size": "l", "price": 0.5}, "tags": ["a", "b"]},
      "buyer": {"name": "Ada", "since": "2020-01-31"},
      "size": "l",
      "when": "2026-12-24T18:00:00",
      "amount": "12.50",
      "span": 90,
      "ids": ["00000000-0000-0000-0000-000000000007"],
      "grid": [3, "2026-01-02"],
      "by_name": {"x": {"sku": "x", "size": "s", "price": "1"}},
      "maybe": null,
      "raw": {"left": "as it is"}
    }"""
)


@zag.task(provides="seen")
async def take(
    order: Order,
    buyer: Buyer,
    size: Size,
    when: datetime.datetime,
    amount: decimal.Decimal,
    span: datetime.timedelta,
    ids: set[uuid.UUID],
    grid: Grid,
    by_name: dict[str, Item],
    maybe: Item | None,
    raw: dict[str, Any],
) -> int:
    SEEN.clear()
    SEEN.update(locals())
    return len(SEEN)


def assert_typed() -> None:
    order = SEEN["order"]
    assert type(order) is Order
    assert order.id == uuid.UUID("c9bf9e57-1685-4c89-bafb-ff5af830be8a")
    assert order.placed == datetime.datetime(2026, 12, 6, 9, 30, tzinfo=datetime.UTC)
    assert order.items == [Item("pen", Size.S, decimal.Decimal("2.10"))]
    assert order.gift == Item("card", Size.L, decimal.Decimal("0.5"))
    assert order.tags == ("a", "b")
    assert SEEN["buyer"] == Buyer(name="Ada", since=datetime.date(2020, 1, 31))
    assert SEEN["size"] is Size.L
    assert SEEN["when"] == datetime.datetime(2026, 12, 24, 18, 0)
    assert SEEN["amount"] == decimal.Decimal("12.50")
    assert SEEN["span"] == datetime.timedelta(seconds=90)
    assert SEEN["ids"] == {uuid.UUID(int=7)}
    assert SEEN["grid"] == Grid(3, datetime.date(2026, 1, 2))
    assert type(SEEN["grid"]) is Grid
    assert SEEN["by_name"] == {"x": Item("x", Size.S, decimal.Decimal("1"))}
    assert SEEN["maybe"] is None
    assert SEEN["raw"] == {"left": "as it is"}


async def test_plain_json_in_the_store_reaches_the_task_as_declared() -> None:
    await zag.run(zag.linear("hook", take), store=WEB_HOOK)
    assert_typed()


async def test_the_same_through_the_worker_protocol() -> None:
    executor = LoopbackExecutor(tasks=[take])
    await zag.Engine(zag.linear("hook", take), store=WEB_HOOK, executor=executor).run()
    assert_typed()


async def test_values_already_of_the_type_are_passed_as_they_are() -> None:
    order = Order(uuid.UUID(int=1), datetime.datetime(2026, 1, 1), [])
    store = {**WEB_HOOK, "order": order, "size": Size.S}
    await zag.run(zag.linear("typed", take), store=store)
    assert SEEN["order"] is order
    assert SEEN["size"] is Size.S


class Refund(zag.Task):
    async def execute(self, order: Order) -> str:
        return f"refund {order.items[0].sku}"

    async def revert(self, order: Order, result: Any) -> None:
        SEEN["reverted"] = (type(order), result)


@zag.task
async def fail() -> None:
    raise RuntimeError("later step fails")


async def test_task_classes_and_reverts_get_the_declared_types_too() -> None:
    SEEN.clear()
    with pytest.raises(RuntimeError):
        flow = zag.linear("refund", Refund(provides="refund"), fail)
        await zag.run(flow, store={"order": WEB_HOOK["order"]})
    assert SEEN["reverted"] == (Order, "refund pen")


async def test_a_value_that_cannot_be_made_the_declared_type_fails_the_atom() -> None:
    store = {**WEB_HOOK, "size": "XXL"}
    with pytest.raises(SerializationError, match=r"atom 'take': argument 'size' \(a str\)"):
        await zag.run(zag.linear("bad", take), store=store)


@zag.task(provides="size")
async def pick_size() -> Size:
    raise RuntimeError("no size today")


@pick_size.revert
async def unpick(result: Size) -> None:
    SEEN["revert got"] = result


async def test_a_failure_handed_to_a_revert_is_not_converted() -> None:
    SEEN.clear()
    with pytest.raises(RuntimeError, match="no size today"):
        await zag.run(zag.linear("sizes", pick_size))
    assert isinstance(SEEN["revert got"], zag.Failure)


@dataclasses.dataclass
class Invoice:
    number: int


def _taker(kind: type) -> zag.Atom:
    async def take_one(value: kind) -> None:  # type: ignore[valid-type]
        SEEN["one"] = value

    take_one.__annotations__ = {"value": kind, "return": None}  # as without the __future__ import
    return zag.task(name=f"take_{kind.__name__}")(take_one)


async def test_closures_of_one_def_convert_by_their_own_annotations() -> None:
    for kind, raw in [(Item, {"sku": "a", "size": "s", "price": "1"}), (Invoice, {"number": 3})]:
        await zag.run(zag.linear("one", _taker(kind)), store={"value": raw})
        assert type(SEEN["one"]) is kind
