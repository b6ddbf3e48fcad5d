"""`ZagService.signal`: a signal is stored and the waiting flow resumed in the background."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from support import eventually

import zag_async as zag
from zag_async import ZagService
from zag_async.errors import SignalRefused

PAID: list[Any] = []


@zag.task(provides="paid")
async def pay(approval: Any) -> str:
    PAID.append(approval)
    return f"paid after {approval}"


def approval_flow() -> zag.Flow:
    return zag.linear(
        "approval", zag.wait_for("approve", event="approval", provides="approval"), pay
    )


FACTORY = f"{__name__}:approval_flow"


@pytest.fixture(autouse=True)
def _clear() -> None:
    PAID.clear()


async def _ended(service: ZagService, flow_id: str) -> Any:
    status = await service.flow_status(flow_id)
    return status if status.done else None


@pytest.mark.parametrize("backend", ["memory://", "sqlite"])
async def test_a_signal_wakes_the_waiting_flow(backend: str, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'w.db'}" if backend == "sqlite" else backend
    async with ZagService(backend=url, board=None) as service:
        status = await service.run(FACTORY)
        assert status.state == "WAITING"
        stored = await service.signal(status.flow_id, "approval", "yes", signal_id="s1")
        assert stored.id == "s1"
        done = await eventually(lambda: _ended(service, status.flow_id), what="the flow to end")
        assert done.state == "SUCCESS"
        assert done.results["paid"] == "paid after yes"
        # the same signal again is stored once and wakes nothing new
        again = await service.signal(status.flow_id, "approval", "yes", signal_id="s1")
        assert (again.id, again.seq) == (stored.id, stored.seq)
        with pytest.raises(SignalRefused, match="finished"):
            await service.signal(status.flow_id, "approval", "no")
    assert PAID == ["yes"]


async def test_a_signal_for_a_flow_running_here_is_taken_when_its_run_stops() -> None:
    gate = asyncio.Event()

    async with ZagService(board=None) as service:
        engine = zag.Engine(
            zag.unordered(
                "mixed",
                zag.wait_for("approve", event="approval", provides="approval"),
                zag.task(_held(gate), name="held"),
            ),
            backend=service.backend,
            owner=service.name,
        )
        async with asyncio.TaskGroup() as tg:
            running = tg.create_task(engine.run())
            await asyncio.sleep(0.05)
            await zag.signal(engine.flow_id, "approval", "early", backend=service.backend)
            gate.set()
        # the run itself took the signal before it stopped: nothing left waiting
        assert engine.state is zag.FlowState.SUCCESS
        assert running.result()["approval"] == "early"


def _held(gate: asyncio.Event) -> Any:
    async def held() -> None:
        await gate.wait()

    return held
