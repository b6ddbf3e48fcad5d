"""Waiting flows woken through the job board: nothing held while they wait.

A conductor parks the job of a flow left WAITING (due at its earliest deadline,
or never); a signal wakes the job, and the deadline comes due on the board's
clock, so whichever conductor is alive resumes the flow, across restarts too.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import eventually, fresh_pg_database

import zag_async as zag
from zag_async import ZagService
from zag_async.jobs import conductor as conductor_module
from zag_async.jobs.base import PARKED

PAID: list[Any] = []


@zag.task(provides="paid")
async def pay(approval: Any) -> str:
    PAID.append(approval)
    return f"paid after {approval}"


def approval(timeout: float | None = None) -> zag.Flow:
    wait = zag.wait_for(
        "approve", event="approval", provides="approval", timeout=timeout, default="timeout"
    )
    return zag.linear("approval", wait, pay)


def nap(delay: float) -> zag.Flow:
    return zag.linear("nap", zag.sleep("nap", delay=delay), pay.bind(inject={"approval": "nap"}))


FACTORY = f"{__name__}:approval"


@pytest.fixture(autouse=True)
def _clear() -> None:
    PAID.clear()


async def _ended(service: ZagService, flow_id: str) -> Any:
    status = await service.flow_status(flow_id)
    return status if status.done else None


async def _waiting(service: ZagService, flow_id: str) -> bool:
    return (await service.flow_status(flow_id)).state == "WAITING"


async def _parked(service: ZagService) -> bool:
    jobs = await service.board.jobs(state=zag.jobs.JobState.UNCLAIMED)
    now = await service.board.now()
    return bool(jobs) and all(j.due_at > now for j in jobs)


async def _no_jobs(service: ZagService) -> bool:
    return await service.board.jobs() == []


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"


async def test_a_started_flow_is_parked_on_the_board_and_a_signal_resumes_it(
    tmp_path: Path,
) -> None:
    async with ZagService(backend=_sqlite(tmp_path)) as service:  # the embedded default
        flow_id = await service.start(FACTORY)
        await eventually(lambda: _waiting(service, flow_id), what="the flow to wait")
        await eventually(lambda: _parked(service), what="the job to be parked")
        assert service.running_flows == []  # nothing held while it waits
        jobs = await service.board.jobs()
        assert [j.flow_id for j in jobs] == [flow_id]
        assert jobs[0].due_at == pytest.approx(PARKED)
        assert jobs[0].state is zag.jobs.JobState.UNCLAIMED
        await service.signal(flow_id, "approval", "yes")
        done = await eventually(lambda: _ended(service, flow_id), what="the flow to end")
        assert done.state == "SUCCESS"
        assert done.results["paid"] == "paid after yes"
        await eventually(lambda: _no_jobs(service), what="the job to be consumed")
    assert PAID == ["yes"]


async def test_a_timeout_is_woken_by_the_boards_delayed_job(tmp_path: Path) -> None:
    async with ZagService(backend=_sqlite(tmp_path)) as service:
        flow_id = await service.start(FACTORY, 0.5)
        await eventually(lambda: _parked(service), what="the job to be parked")
        job = (await service.board.jobs())[0]
        assert 0 < job.due_at - await service.board.now() <= 0.5
        done = await eventually(lambda: _ended(service, flow_id), what="the timeout to fire")
        assert done.results["paid"] == "paid after timeout"


async def test_a_durable_timer_fires_after_a_restart(tmp_path: Path) -> None:
    async with ZagService(backend=_sqlite(tmp_path)) as service:
        flow_id = await service.start(nap, 1.0)
        await eventually(lambda: _parked(service), what="the job to be parked")
    assert PAID == []
    async with ZagService(backend=_sqlite(tmp_path)) as service:  # a new process, say
        done = await eventually(lambda: _ended(service, flow_id), what="the timer to fire")
        assert done.state == "SUCCESS"
    assert PAID == ["nap"]


async def test_a_signal_sent_while_the_service_is_down_resumes_it_after(tmp_path: Path) -> None:
    async with ZagService(backend=_sqlite(tmp_path)) as service:
        flow_id = await service.start(FACTORY)
        await eventually(lambda: _parked(service), what="the job to be parked")
    async with zag.connect(_sqlite(tmp_path)) as backend:  # a client with no board at hand
        await zag.signal(flow_id, "approval", "offline", backend=backend)
    async with ZagService(backend=_sqlite(tmp_path)) as service:  # its sweep finds the signal
        done = await eventually(lambda: _ended(service, flow_id), what="the flow to end")
        assert done.results["paid"] == "paid after offline"


async def test_an_awaited_flow_that_waits_is_handed_to_the_board(tmp_path: Path) -> None:
    async with ZagService(backend=_sqlite(tmp_path)) as service:
        status = await service.run(FACTORY)
        assert status.state == "WAITING"
        assert [j.flow_id for j in await service.board.jobs()] == [status.flow_id]
        await service.signal(status.flow_id, "approval", "later")
        done = await eventually(lambda: _ended(service, status.flow_id), what="the flow to end")
        assert done.results["paid"] == "paid after later"
        await eventually(lambda: _no_jobs(service), what="the job to be consumed")


async def test_on_a_memory_board_the_service_takes_back_its_own_parked_jobs() -> None:
    async with ZagService(backend=f"memory://{uuid.uuid4().hex}") as service:
        first = await service.start(FACTORY)
        second = await service.start(FACTORY, 0.3)
        await eventually(lambda: _waiting(service, first), what="the flow to wait")
        await service.signal(first, "approval", "yes")
        done = await eventually(lambda: _ended(service, first), what="the signalled flow")
        assert done.results["paid"] == "paid after yes"
        timed = await eventually(lambda: _ended(service, second), what="the timed-out flow")
        assert timed.results["paid"] == "paid after timeout"


async def test_a_signal_sent_without_a_board_is_found_by_the_sweep(tmp_path: Path) -> None:
    async with ZagService(backend=_sqlite(tmp_path)) as service:
        flow_id = await service.start(FACTORY)
        await eventually(lambda: _parked(service), what="the job to be parked")
        async with zag.connect(_sqlite(tmp_path)) as backend:
            await zag.signal(flow_id, "approval", "swept", backend=backend)  # wakes nothing
        # Every conductor sweeps for signals no wait took (here every 0.5 s, not 10).
        done = await eventually(lambda: _ended(service, flow_id), what="the sweep")
        assert done.results["paid"] == "paid after swept"


@pytest.mark.services
async def test_zookeeper_board_and_postgres_flows(pg_url: str, zk_server: str) -> None:
    board = f"zookeeper://{zk_server}/zag-test-waits-{uuid.uuid4().hex[:8]}"
    async with ZagService(backend=pg_url, board=board, conductor=True) as service:
        flow_id = await service.start(FACTORY)
        await eventually(lambda: _parked(service), what="the job to be parked")
        # A client elsewhere: the signal goes to PostgreSQL, the wake to ZooKeeper.
        async with (
            zag.connect(pg_url) as backend,
            zag.jobs.connect(board, backend=backend) as client_board,
        ):
            await zag.signal(flow_id, "approval", "zk", backend=backend, board=client_board)
        done = await eventually(lambda: _ended(service, flow_id), what="the flow to end")
        assert done.results["paid"] == "paid after zk"
        timed = await service.start(FACTORY, 0.5)
        done = await eventually(lambda: _ended(service, timed), what="the timeout on ZooKeeper")
        assert done.results["paid"] == "paid after timeout"


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with fresh_pg_database("zag_waits") as url:
        yield url


@pytest.fixture(autouse=True)
def _quick_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conductor_module, "RECOVER_EVERY", 0.5)


async def test_a_wake_from_another_client_reaches_a_conductor_of_its_own_jobs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(conductor_module, "RECOVER_EVERY", 1000.0)  # no sweep to help
    async with ZagService(backend=f"memory://{uuid.uuid4().hex}") as service:  # claim_new False
        flow_id = await service.start(FACTORY)
        await eventually(lambda: _parked(service), what="the job to be parked")
        # Not through service.signal: as a client holding the same board would.
        await zag.signal(flow_id, "approval", "c", backend=service.backend, board=service.board)
        done = await eventually(lambda: _ended(service, flow_id), what="the flow to end")
        assert done.results["paid"] == "paid after c"
