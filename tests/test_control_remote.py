"""A cancel asked from one process reaches the engine running the flow in another
(a conductor in a child process) at its next lease renewal, and the flow is reverted:
the running step finishes, the next never starts."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from support import eventually

import zag_async as zag
from zag_async.states import AtomState

HERE = Path(__file__).resolve().parent


async def test_a_cancel_from_another_process_reverts_the_flow(tmp_path: Path) -> None:
    db = tmp_path / "flows.db"
    url = f"sqlite+aiosqlite:///{db}"
    gate = tmp_path / "gate"
    log = db.with_suffix(".log")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE)])}
    async with zag.connect(url) as backend, zag.jobs.connect(url, backend=backend) as board:
        job = await board.post("remote", "control_child:remote", store={"gate": str(gate)})
        command = [sys.executable, str(HERE / "control_child.py"), str(db)]
        child = subprocess.Popen(command, env=env)  # noqa: ASYNC220 (started once, not awaited)
        try:

            async def b_running() -> bool:
                detail = await backend.load_flow(job.flow_id)
                return "slow" in detail.atoms and detail.atoms["slow"].state is AtomState.RUNNING

            await eventually(b_running, within=30, what="the child running step b")
            await zag.cancel_flow(job.flow_id, backend=backend, by="ops", reason="remote test")
            # The child's engine notices it at a lease beat (every 0.5 s) and takes it
            # at its next step: when step b, which holds the run, ends.
            await asyncio.sleep(2.0)
            gate.touch()
            outcome = await asyncio.wait_for(board.wait(job.uuid), 30)
        finally:
            child.kill()
            child.wait(10)
    assert outcome.state == "REVERTED"
    assert "cancelled by ops: remote test" in (outcome.error or "")
    assert log.read_text().split() == ["a", "b", "started", "b", "undo", "b", "undo", "a"]
