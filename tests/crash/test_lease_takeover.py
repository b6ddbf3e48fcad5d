"""Two processes and one stored flow: the second waits out the first's lease, never runs beside it.

Process A starts the `crash.flows` linear flow (a, b, c; each task appends
rows to a side-effect table in the same database) and freezes inside b.
Process B tries to resume the flow: `FlowBusy`, naming A's lease. Then A stops
for good, in two ways:

- frozen (SIGSTOP, as a hung host would be): its lease is no longer renewed,
  and once it expires B resumes; A is then killed with SIGKILL;
- killed (SIGKILL): A was a process of this machine that no longer exists,
  so B resumes at once, without waiting for the (long) lease to expire.

Either way the log shows a run exactly once and c exactly once; b, which was
running when A stopped, runs again (at-least-once for the atom in flight).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import eventually, fresh_pg_database

import zag_async as zag

from . import flows

TESTS = Path(__file__).resolve().parents[1]

WORKER = """
import asyncio, json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import zag_async as zag
from crash import flows

async def start(url, run, signal_dir, lease):
    async with zag.connect(url, lease=float(lease)) as backend:
        engine = zag.Engine.from_factory(flows.build, args=("linear", url, run), backend=backend)
        (Path(signal_dir) / "flow_id").write_text(engine.flow_id)
        await engine.run()
        return {"state": str(engine.state)}

async def resume(url, flow_id):
    async with zag.connect(url) as backend:
        try:
            engine = await zag.Engine.load(flow_id, backend=backend)
        except zag.errors.FlowBusy as busy:
            return {"busy": busy.owner, "expires_in": busy.expires_in, "message": str(busy)}
        await engine.run()
        return {"state": str(engine.state)}

command, *args = sys.argv[2:]
out = asyncio.run(start(*args) if command == "start" else resume(*args))
print(json.dumps(out), flush=True)
"""


@pytest.fixture(scope="module")
def private_pg() -> Iterator[str]:
    """A database of its own: this suite's schema and rows stay out of every other's."""
    with fresh_pg_database("zag_lease") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'lease.db'}"
    return str(request.getfixturevalue("private_pg"))


async def _python(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WORKER,
        str(TESTS),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )


async def _resume(url: str, flow_id: str) -> dict[str, Any]:
    proc = await _python("resume", url, flow_id)
    async with asyncio.timeout(40):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def _start_frozen_in_b(url: str, run: str, signals: Path, lease: float) -> Any:
    """Process A: start the flow and stop inside task b (its heartbeat still beating)."""
    env = {"ZAG_CRASH_HANG": "b:exec", "ZAG_CRASH_SIGNAL": str(signals)}
    proc = await _python("start", url, run, str(signals), str(lease), env=env)
    await eventually(
        lambda: (signals / "hang").exists() or proc.returncode is not None,
        within=30,
        what="process A inside task b",
    )
    assert proc.returncode is None, (await proc.communicate())[1].decode()
    return proc


async def _kill(proc: Any) -> None:
    if proc.returncode is None:
        proc.kill()
    await proc.wait()


@pytest.mark.parametrize("stop", ["frozen", "killed"])
async def test_a_second_process_resumes_only_once_the_first_is_gone(
    url: str, stop: str, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex
    await flows.create_log(url)
    lease = 3.0 if stop == "frozen" else 60.0
    a = await _start_frozen_in_b(url, run, tmp_path, lease)
    try:
        flow_id = (tmp_path / "flow_id").read_text()
        await asyncio.sleep(1.5)  # with the short lease, a renewal: A holds it by its heartbeat
        busy = await _resume(url, flow_id)
        assert busy["busy"].split(":")[1] == str(a.pid), busy
        assert 0 < busy["expires_in"] <= lease, busy
        assert "is being run by" in busy["message"]
        assert await flows.read_log(url, run) == ["a:exec", "a:done", "b:exec"]

        if stop == "frozen":
            a.send_signal(signal.SIGSTOP)
            stopped = time.monotonic()
            resumed = await eventually(
                lambda: _resumed_or_none(url, flow_id), within=30, what="the lease to lapse"
            )
            assert time.monotonic() - stopped > lease / 3  # not before A's lease expired
        else:
            await _kill(a)
            resumed = await _resume(url, flow_id)  # at once: A's process is gone
        assert resumed == {"state": "SUCCESS"}
    finally:
        await _kill(a)

    log = await flows.read_log(url, run)
    assert log == ["a:exec", "a:done", "b:exec", "b:exec", "b:done", "c:exec", "c:done"]
    async with zag.connect(url) as backend:
        detail = await backend.load_flow(flow_id)
    assert detail.state is zag.FlowState.SUCCESS and detail.lease_owner is None
    assert {n: atom.attempts for n, atom in detail.atoms.items()} == {"a": 1, "b": 2, "c": 1}


async def _resumed_or_none(url: str, flow_id: str) -> dict[str, Any] | None:
    result = await _resume(url, flow_id)
    return None if "busy" in result else result
