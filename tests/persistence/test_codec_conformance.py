"""One codec everywhere: what a task may return comes back as itself on every backend.

Each kind of value the codec keeps (dataclasses, Enums, named tuples, pydantic
models, datetimes, decimals, UUIDs, tuples, sets, bytes, non-str dict keys) is
returned by one atom and checked by type in a later one; the same flow runs on
memory://, SQLite and PostgreSQL, with no backend at all, and across a resume
that reads every value back from the database. A value the codec cannot store
fails its atom at once on all of them, the same way, and the flow reverts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import decimal
import enum
import uuid
from typing import Any, NamedTuple

import pydantic
import pytest

import zag_async as zag
from zag_async.codec import JsonCodec
from zag_async.errors import SerializationError

F = zag.FlowState
S = zag.AtomState
Backend = zag.persistence.Backend


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Mode(enum.StrEnum):
    FAST = "fast"


class Pair(NamedTuple):
    left: int
    right: str


@dataclasses.dataclass(frozen=True)
class Money:
    amount: decimal.Decimal
    currency: str


@dataclasses.dataclass
class Order:
    id: uuid.UUID
    placed: datetime.datetime
    items: tuple[str, ...]
    tags: set[str]
    total: Money
    color: Color
    label: bytes
    by_line: dict[int, str]
    note: str = dataclasses.field(default="", init=False)


class Customer(pydantic.BaseModel):
    name: str
    since: datetime.date
    level: Level
    orders: list[Money]


def _order() -> Order:
    order = Order(
        id=uuid.UUID("c9bf9e57-1685-4c89-bafb-ff5af830be8a"),
        placed=datetime.datetime(2026, 12, 6, 9, 30, tzinfo=datetime.UTC),
        items=("pen", "ink"),
        tags={"gift"},
        total=Money(decimal.Decimal("12.50"), "EUR"),
        color=Color.BLUE,
        label=b"\x00\xff",
        by_line={1: "pen", 2: "ink"},
    )
    order.note = "set after init"
    return order


#: name -> a value of each kind; every one is returned by atom make_<name>.
SAMPLES: dict[str, Any] = {
    "order": _order(),
    "money": Money(decimal.Decimal("-0.10"), "USD"),
    "color": Color.RED,
    "level": Level.HIGH,
    "mode": Mode.FAST,
    "pair": Pair(1, "one"),
    "customer": Customer(
        name="Ada",
        since=datetime.date(2020, 1, 31),
        level=Level.LOW,
        orders=[Money(decimal.Decimal("1.5"), "EUR")],
    ),
    "when": datetime.datetime(2024, 2, 29, 23, 59, 59, 999999),
    "day": datetime.date(2000, 1, 1),
    "clock": datetime.time(8, 15, 0, 7),
    "span": datetime.timedelta(days=2, microseconds=3),
    "price": decimal.Decimal("1E+3"),
    "ident": uuid.UUID(int=7),
    "point": (1, (2.5, "x")),
    "seen": {1, 2, 3},
    "frozen": frozenset({"a"}),
    "blob": bytes(range(256)),
    "counts": {("a", 1): 2, 3: [Color.BLUE]},
}

#: What the checking atom saw, by name: (type, value).
SEEN: dict[str, tuple[type, Any]] = {}
#: While set, `check` waits on it (the test cancels the run: an interrupted run)
#: after setting STARTED.
HOLD: asyncio.Event | None = None
STARTED = asyncio.Event()


def _maker(name: str) -> zag.Atom:
    async def make() -> Any:
        return SAMPLES[name]

    return zag.task(name=f"make_{name}", provides=name)(make)


@zag.task(provides="checked")
async def check(
    order: Order,
    money: Money,
    color: Color,
    level: Level,
    mode: Mode,
    pair: Pair,
    customer: Customer,
    when: datetime.datetime,
    day: datetime.date,
    clock: datetime.time,
    span: datetime.timedelta,
    price: decimal.Decimal,
    ident: uuid.UUID,
    point: tuple[int, tuple[float, str]],
    seen: set[int],
    frozen: frozenset[str],
    blob: bytes,
    counts: dict[Any, Any],
) -> int:
    values = dict(locals())
    if HOLD is not None:
        STARTED.set()
        await HOLD.wait()
    SEEN.clear()
    SEEN.update({name: (type(value), value) for name, value in values.items()})
    return len(values)


def codec_flow() -> zag.Flow:
    """Every sample made by its own atom, then all checked by one."""
    return zag.linear("codec", *[_maker(name) for name in SAMPLES], check)


def assert_same(got: Any, want: Any, where: str) -> None:
    assert type(got) is type(want), f"{where}: {type(got)} is not {type(want)}"
    assert got == want, where


def assert_all_seen() -> None:
    assert set(SEEN) == set(SAMPLES)
    for name, want in SAMPLES.items():
        kind, got = SEEN[name]
        assert kind is type(want), name
        assert_same(got, want, name)
    order = SEEN["order"][1]
    assert type(order.total.amount) is decimal.Decimal
    assert type(order.items) is tuple
    assert order.note == "set after init"
    assert list(order.by_line) == [1, 2]
    customer = SEEN["customer"][1]
    assert type(customer.orders[0]) is Money
    assert customer.level is Level.LOW
    assert type(next(iter(SEEN["counts"][1]))) is tuple


@pytest.fixture(autouse=True)
def _clean() -> None:
    global HOLD, STARTED
    SEEN.clear()
    HOLD, STARTED = None, asyncio.Event()


# -- every kind round-trips ------------------------------------------------------------


async def test_every_kind_reaches_the_next_atom_as_itself(backend: Backend) -> None:
    engine = zag.Engine.from_factory(codec_flow, backend=backend)

    results = await engine.run()

    assert results["checked"] == len(SAMPLES)
    assert_all_seen()


async def test_every_kind_is_stored_as_itself(backend: Backend) -> None:
    engine = zag.Engine.from_factory(codec_flow, backend=backend)
    await engine.run()

    stored = await backend.load_flow(engine.flow_id)

    for name, want in SAMPLES.items():
        assert_same(stored.atoms[f"make_{name}"].result, want, name)


async def test_a_resumed_run_gets_every_kind_back_from_storage(backend: Backend) -> None:
    global HOLD
    HOLD = asyncio.Event()
    first = zag.Engine.from_factory(codec_flow, backend=backend)
    run = asyncio.ensure_future(first.run())
    await asyncio.wait_for(STARTED.wait(), 20)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    HOLD = None

    resumed = await zag.Engine.load(first.flow_id, backend=backend)
    results = await resumed.run()

    assert results["checked"] == len(SAMPLES)
    assert_all_seen()


async def test_every_kind_round_trips_without_a_backend() -> None:
    results = await zag.run(codec_flow())

    assert results["checked"] == len(SAMPLES)
    assert_all_seen()


async def test_a_store_of_every_kind_round_trips(backend: Backend) -> None:
    flow = zag.linear("from-store", check)
    engine = zag.Engine(flow, store=SAMPLES, backend=backend)
    await engine.run()

    stored = await backend.load_flow(engine.flow_id)

    assert_all_seen()
    for name, want in SAMPLES.items():
        assert_same(stored.store[name], want, name)


# -- anything else fails the atom at once ------------------------------------------------


class Handle:
    """Not storable: a plain object."""


REVERTED: list[str] = []


@zag.task(provides="reserved")
async def reserve() -> str:
    return "seat 1"


@reserve.revert
async def unreserve(result: str) -> None:
    REVERTED.append(result)


@zag.task(provides="handle")
async def open_handle(reserved: str) -> Handle:
    return Handle()


@zag.task
async def never() -> None:
    raise AssertionError("an atom after the unstorable one ran")


def _failing_flow() -> zag.Flow:
    return zag.linear("unstorable", reserve, open_handle, never)


def assert_refusal_says_how(error: BaseException) -> None:
    text = str(error)
    assert "'open_handle'" in text  # the atom
    assert f"{__name__}.Handle" in text  # the value's type
    assert "dataclass" in text  # how to make it storable
    assert "pydantic" in text
    assert "codec=" in text  # how to plug in a codec


async def test_an_unstorable_result_fails_its_atom_and_reverts(backend: Backend) -> None:
    REVERTED.clear()
    engine = zag.Engine(_failing_flow(), backend=backend)

    with pytest.raises(SerializationError) as caught:
        await engine.run()

    assert_refusal_says_how(caught.value)
    assert engine.state is F.REVERTED
    assert REVERTED == ["seat 1"]
    stored = await backend.load_flow(engine.flow_id)
    assert stored.atoms["open_handle"].failure is not None
    assert stored.atoms["open_handle"].failure.check(SerializationError)
    assert stored.atoms["never"].state is S.PENDING


async def test_an_unstorable_result_fails_its_atom_without_a_backend() -> None:
    REVERTED.clear()
    engine = zag.Engine(_failing_flow())

    with pytest.raises(SerializationError) as caught:
        await engine.run()

    assert_refusal_says_how(caught.value)
    assert engine.state is F.REVERTED
    assert REVERTED == ["seat 1"]
    assert engine.storage.get("open_handle").failure is not None


def test_a_class_defined_in_a_function_is_refused_with_the_fix() -> None:
    @dataclasses.dataclass
    class Local:
        x: int

    with pytest.raises(SerializationError, match="module level"):
        JsonCodec().dumps(Local(1))
