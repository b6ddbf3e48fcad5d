"""One codec across the wire: arguments and results keep their types on remote workers.

A worker subprocess (over the real RabbitMQ) and the in-process loopback both
make every kind of value the codec keeps, receive them back as typed
arguments (checked on the worker), and return them to the engine, which stores
them on SQLite. The worker subprocess imports this module by the same name
(`workers.test_codec_worker`) to find its tasks and the value classes.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import sys
import uuid
from pathlib import Path
from typing import Any, NamedTuple

import pydantic
import pytest

import zag_async as zag
from zag_async.errors import SerializationError
from zag_async.workers import LoopbackExecutor

from .conftest import HERE, TASKS_ROOT, Remote, WorkerProcess, _popen, wait_for_workers


class Status(enum.StrEnum):
    NEW = "new"
    PAID = "paid"


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 9


class Point(NamedTuple):
    x: float
    y: float


@dataclasses.dataclass(frozen=True)
class Line:
    sku: str
    price: decimal.Decimal
    at: Point


@dataclasses.dataclass
class Parcel:
    id: uuid.UUID
    status: Status
    lines: tuple[Line, ...]
    flags: frozenset[str]
    due: datetime.datetime
    window: tuple[datetime.time, datetime.timedelta]
    label: bytes
    seen_by: dict[int, datetime.date]


class Courier(pydantic.BaseModel):
    name: str
    priority: Priority
    hired: datetime.date
    parcels: list[uuid.UUID]


PARCEL = Parcel(
    id=uuid.UUID(int=42),
    status=Status.PAID,
    lines=(Line("pen", decimal.Decimal("2.10"), Point(0.5, -1.0)),),
    flags=frozenset({"fragile"}),
    due=datetime.datetime(2026, 12, 24, 18, 0, tzinfo=datetime.UTC),
    window=(datetime.time(9, 0), datetime.timedelta(hours=2)),
    label=b"\x89PNG",
    seen_by={7: datetime.date(2026, 12, 6)},
)
COURIER = Courier(
    name="Bo", priority=Priority.HIGH, hired=datetime.date(2021, 5, 1), parcels=[uuid.UUID(int=42)]
)
TAGS = {"set": {1, 2}, "tuple": (1, "a"), "amount": decimal.Decimal("0.10")}


@zag.task(provides=("parcel", "courier", "tags"))
async def dispatch() -> tuple[Parcel, Courier, dict[str, Any]]:
    return PARCEL, COURIER, TAGS


@zag.task(provides="delivered")
async def deliver(parcel: Parcel, courier: Courier, tags: dict[str, Any]) -> dict[str, Any]:
    """Runs on the worker: its arguments must have arrived as the declared types."""
    wrong = [
        name
        for name, got, want in [("parcel", parcel, PARCEL), ("courier", courier, COURIER)]
        if type(got) is not type(want) or got != want
    ]
    if type(parcel.lines[0].at) is not Point or type(parcel.status) is not Status:
        wrong.append("parcel fields")
    if type(tags["set"]) is not set or type(tags["amount"]) is not decimal.Decimal:
        wrong.append("tags")
    if wrong:
        raise TypeError(f"arrived with the wrong types: {wrong}")
    return {"parcel": parcel, "courier": courier, "priority": courier.priority, **tags}


class Socket:
    """Not storable: a plain object."""


@zag.task(provides="socket")
async def connect_socket() -> Socket:
    return Socket()


ALL = [dispatch, deliver, connect_socket]


def shipping() -> zag.Flow:
    return zag.linear("shipping", dispatch, deliver)


def assert_delivered(results: dict[str, Any] | Any) -> None:
    got = results["delivered"]
    assert type(got["parcel"]) is Parcel and got["parcel"] == PARCEL
    assert type(got["parcel"].lines[0]) is Line
    assert type(got["parcel"].window[1]) is datetime.timedelta
    assert list(got["parcel"].seen_by) == [7]
    assert type(got["courier"]) is Courier and got["courier"] == COURIER
    assert got["priority"] is Priority.HIGH
    assert got["set"] == {1, 2} and type(got["set"]) is set
    assert got["tuple"] == (1, "a") and type(got["tuple"]) is tuple
    assert type(got["amount"]) is decimal.Decimal and str(got["amount"]) == "0.10"


async def test_loopback_keeps_every_type_both_ways(tmp_path: Path) -> None:
    executor = LoopbackExecutor(tasks=ALL)
    async with zag.connect(f"sqlite+aiosqlite:///{tmp_path / 'flows.db'}") as db:
        engine = zag.Engine(shipping(), executor=executor, backend=db)
        assert_delivered(await engine.run())
        stored = await db.load_flow(engine.flow_id)
    assert stored.atoms["deliver"].result["parcel"] == PARCEL
    assert executor.seen["result"] == 2


async def test_an_unsendable_result_fails_on_the_worker_saying_how_to_fix_it() -> None:
    engine = zag.Engine(zag.linear("socket", connect_socket), executor=LoopbackExecutor(tasks=ALL))

    with pytest.raises(zag.errors.ZagError) as caught:
        await engine.run()

    failure = engine.storage.get("connect_socket").failure
    assert failure is not None and failure.check(SerializationError), caught.value
    assert f"{__name__}.Socket" in failure.message
    assert "dataclass" in failure.message and "codec=" in failure.message
    assert engine.state is zag.FlowState.REVERTED


@pytest.fixture
async def worker_process(amqp_url: str, topic: str, tmp_path: Path) -> Any:
    """A worker subprocess serving this module's ALL on the test's topic."""
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TASKS_ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    name = "codec-worker"
    cmd = [
        sys.executable, str(HERE / "worker_main.py"), "--module", __name__,
        "--topic", topic, "--url", amqp_url, "--name", name,
    ]  # fmt: skip
    worker = WorkerProcess(name, _popen(cmd, tmp_path / "worker.log", env), tmp_path / "worker.log")
    try:
        await worker.ready()
        yield worker
    finally:
        worker.kill()


async def test_a_worker_process_keeps_every_type_both_ways(
    worker_process: WorkerProcess, remote: Remote, tmp_path: Path
) -> None:
    executor = await remote()
    await wait_for_workers(executor, worker_process.name)
    async with zag.connect(f"sqlite+aiosqlite:///{tmp_path / 'flows.db'}") as db:
        engine = zag.Engine(shipping(), executor=executor, backend=db)
        results = await engine.run()
        stored = await db.load_flow(engine.flow_id)

    assert_delivered(results)
    assert_delivered({"delivered": stored.atoms["deliver"].result})
