"""A service on the embedded default takes back what its previous incarnation left.

Work interrupted by a shutdown (the same path a crash takes, minus the lease
that the dead process leaves behind, which tests/crash covers with kill -9) is
finished by the next service on the same database without user code, and no
finished atom runs again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from support import eventually

from zag_async.errors import ConfigurationError
from zag_async.service import ZagService
from zag_async.states import FlowState

from . import flows


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/app.db"


async def state_of(service: ZagService, flow_id: str) -> str | None:
    status = await service.flow_status(flow_id)
    return status.state if status.done else None


def test_a_sql_backend_brings_its_own_board_and_conductor(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    service = ZagService(backend=url)
    assert service.board_url == url
    in_memory = ZagService()
    assert in_memory.board_url == "memory://"
    explicit = ZagService(backend=url, board="memory://other", conductor=False)
    assert explicit.board_url == "memory://other"


async def test_the_conductor_takes_any_job_only_when_asked(tmp_path: Path) -> None:
    async with ZagService(backend=sqlite_url(tmp_path)) as service:
        assert service.conductor is not None and service.conductor.claim_new
    async with ZagService() as service:  # memory: runs its own jobs only
        assert service.conductor is not None and not service.conductor.claim_new


async def test_a_background_flow_cut_by_a_shutdown_finishes_after_the_restart(
    tmp_path: Path,
) -> None:
    url = sqlite_url(tmp_path)
    flows.HOLD.add("bg")
    service = ZagService(backend=url, shutdown_timeout=0.1)
    await service.__aenter__()
    flow_id = await service.start(flows.pipeline, store={"tag": "bg"})
    await flows.started("bg").wait()
    await service.aclose()  # slow is cancelled; the job goes back on the board
    assert (await _stored_state(url, flow_id)) == FlowState.SUSPENDED

    flows.release("bg")
    async with ZagService(backend=url) as again:
        state = await eventually(lambda: state_of(again, flow_id), what="the flow to end")
    assert state == "SUCCESS"
    assert flows.LOG == ["first bg", "slow bg", "slow bg", "last bg"]


async def test_an_awaited_flow_cut_by_a_shutdown_finishes_after_the_restart(
    tmp_path: Path,
) -> None:
    url = sqlite_url(tmp_path)
    flows.HOLD.add("req")
    service = ZagService(backend=url, shutdown_timeout=0.1)
    await service.__aenter__()
    request = asyncio.create_task(service.run(flows.pipeline, store={"tag": "req"}))
    await flows.started("req").wait()
    [flow_id] = service.running_flows
    await service.aclose()
    with pytest.raises(asyncio.CancelledError):
        await request  # the server answers this request with an error; the flow is kept

    flows.release("req")
    async with ZagService(backend=url) as again:
        state = await eventually(lambda: state_of(again, flow_id), what="the flow to end")
    assert state == "SUCCESS"
    assert flows.count("first req") == 1 and flows.count("last req") == 1


async def test_start_says_where_engine_options_go_with_a_board(tmp_path: Path) -> None:
    async with ZagService(backend=sqlite_url(tmp_path)) as service:
        with pytest.raises(ConfigurationError, match="engine_options"):
            await service.start(flows.pipeline, store={"tag": "x"}, max_concurrency=2)


async def _stored_state(url: str, flow_id: str) -> FlowState:
    import zag_async as zag

    async with zag.connect(url) as db:
        return (await db.load_flow(flow_id)).state
