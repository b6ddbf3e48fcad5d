"""A conductor SIGKILLed as its job's flow goes WAITING; a signal still resumes the
flow, through another conductor, once.

The flow (crash.wait_flows "approval": a -> wait for "approval" -> pay) is posted
as a job; conductor c1 (wait_conductor.py) runs it until it waits and freezes
right before or right after parking the job. A second conductor c2 is running.
The test kills c1 and sends the signal (with the board, or without it: then
c2's sweep of the flow database finds it). The job must end SUCCESS, consumed
by c2 alone; the signal taken once; every task's effect logged once.

Boards: ZooKeeper (a private server; flows on the shared PostgreSQL) and a SQL
board on a SQLite file (flows in the same file), both with 2 s claims.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from crash import flows as crash_flows
from crash import wait_flows
from support import eventually

import zag_async as zag

from .conftest import CALL, SESSION, Worker

SCRIPT = Path(__file__).with_name("wait_conductor.py")


@pytest.fixture(params=["zookeeper", "sqlite"])
def urls(request: Any, tmp_path: Path) -> tuple[str, str, dict[str, Any]]:
    """(board URL, flow database URL, board options)."""
    if request.param == "zookeeper":
        options = {"session_timeout": SESSION, "call_timeout": CALL}
        return request.getfixturevalue("zk_url"), request.getfixturevalue("pg_url"), options
    url = f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}"
    return url, url, {"lease": 2.0, "poll_interval": 0.2}


@pytest.fixture
def conductors(tmp_path: Path) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    try:
        yield started
    finally:
        for worker in started:
            if worker.alive():
                worker.proc.kill()
            worker.proc.wait(10)


def spawn(
    started: list[Worker], base: Path, name: str, urls: tuple[str, str, dict[str, Any]], **cfg: Any
) -> Worker:
    board, flows_url, options = urls
    config = {
        "name": name,
        "events": str(base / f"{name}.events"),
        "board": board,
        "flows": flows_url,
        "options": options,
        "folder": str(base),
        **cfg,
    }
    with open(base / f"{name}.out", "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), json.dumps(config)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    worker = Worker(name, proc, base)
    started.append(worker)
    return worker


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("hang", "via_board"),
    [("park:before", True), ("park:after", True), ("park:after", False)],
    ids=["before-park", "after-park", "after-park-signal-without-board"],
)
async def test_conductor_killed_as_its_flow_waits(
    urls: tuple[str, str, dict[str, Any]],
    conductors: list[Worker],
    tmp_path: Path,
    hang: str,
    via_board: bool,
) -> None:
    board_url, flows_url, options = urls
    await crash_flows.create_log(flows_url)
    run = uuid.uuid4().hex
    async with (
        zag.connect(flows_url) as backend,
        zag.jobs.connect(board_url, backend=backend, **options) as board,
    ):
        job = await board.post("waits", wait_flows.build, "approval", flows_url, run, 60.0)
        c1 = spawn(conductors, tmp_path, "c1", urls, hang=hang)
        hang_file = tmp_path / "hang"

        def frozen() -> bool:
            if not c1.alive():
                raise AssertionError(f"c1 exited before {hang!r}:\n{c1.output()}")
            return hang_file.exists()

        await eventually(frozen, within=30, what=f"c1 reaching {hang!r}")
        c2 = spawn(conductors, tmp_path, "c2", urls)
        await c2.ready(within=30)

        detail = await backend.load_flow(job.flow_id)
        assert detail.state is zag.FlowState.WAITING
        assert detail.lease_owner is None  # a waiting flow holds no lease
        if hang == "park:before":  # c1 still holds the job's claim
            assert await board.find_owner(job) == "c1"
        else:  # given back, due at the wait's deadline (60 s on) unless woken
            assert await board.find_owner(job) is None
            assert (await board.get(job.uuid)).due_at > time.time() + 30
        c1.kill()
        assert await c1.exited() == -9

        if via_board:
            await zag.signal(job.flow_id, wait_flows.EVENT, "yes", backend=backend, board=board)
        else:  # c2's sweep of the flow database (every RECOVER_EVERY = 10 s) finds it
            await zag.signal(job.flow_id, wait_flows.EVENT, "yes", backend=backend)

        async with asyncio.timeout(60):
            outcome = await board.wait(job.uuid)
        assert outcome.state == "SUCCESS", outcome

        detail = await backend.load_flow(job.flow_id)
        assert detail.state is zag.FlowState.SUCCESS
        waited = (detail.atoms["approve"].meta or {})["waited"]
        (signal,) = await backend.list_signals(job.flow_id)
        assert signal.taken_by is not None
        assert waited["ended_by"] == "signal"
        assert waited["signal"] == signal.id
        assert await crash_flows.read_log(flows_url, run) == [
            "a:exec",
            "a:done",
            "pay:exec(yes)",
            "pay:done",
        ]
        assert await board.jobs() == []
        c1_kinds = [e["kind"] for e in c1.events() if e.get("job") == job.uuid]
        c2_kinds = [e["kind"] for e in c2.events() if e.get("job") == job.uuid]
        assert c1_kinds == ["claimed", "started"]  # killed before it could say more
        assert c2_kinds.count("consumed") == 1
        assert c2_kinds[-3:] == ["claimed", "started", "consumed"]
        assert await c2.stop() == 0, c2.output()
