"""Subprocess entry point for the wait crash tests (run with sys.executable, never imported).

    wait_worker.py start  URL KIND RUN TIMEOUT DIR   start crash.wait_flows:build(KIND, ...)
    wait_worker.py resume URL FLOW_ID                Engine.load(FLOW_ID).run()
    wait_worker.py signal URL FLOW_ID PAYLOAD SIGNAL_ID [resume]
                                                     zag.signal, then (with `resume`) resume
    wait_worker.py race   URL ROLE PLAN              act on each flow of PLAN at its time

`start` writes the flow's id to DIR/flow_id before running it. Each prints one
JSON line when done: {"flow_id", "state", "error"} (error: null, the exception's
type name, or `stored <type>` for a failure loaded from storage), plus
"signal" (the stored signal's id, or "refused") for `signal`.

`race` waits for PLAN to exist, reads it (JSON: a list of {"flow_id", "at"}, `at` in epoch seconds),
at each `at` (each trial a task of its own) and, as ROLE `signal`, sends the flow one signal (id
`race-<flow_id>`) and then resumes it, as a signal sender that wakes the flow
would; as ROLE `resume`, it resumes it. It prints one JSON line per flow.

The backend is instrumented (crash.wait_flows.instrument): ZAG_CRASH_HANG
freezes the process at a point around a wait, `signal:stored` right after
the signal is stored; ZAG_CRASH_PAUSE pauses it (`take:none`, and for
`signal`, `signal:commit`: the signal inserted, not yet committed).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, so `crash` imports

import zag_async as zag  # noqa: E402
from crash import flows, wait_flows  # noqa: E402
from zag_async.persistence.base import Backend  # noqa: E402


async def _resume(backend: Backend, flow_id: str) -> dict[str, Any]:
    state, error = None, None
    try:
        engine = await zag.Engine.load(flow_id, backend=backend)
        try:
            await engine.run()
        finally:
            state = str(engine.state)
    except Exception as exc:
        stored = isinstance(exc.__cause__, zag.errors.RemoteFailure)
        error = f"stored {type(exc).__name__}" if stored else type(exc).__name__
    return {"flow_id": flow_id, "state": state, "error": error}


async def start(url: str, kind: str, run: str, seconds: str, folder: str) -> dict[str, Any]:
    async with zag.connect(url) as backend:
        wait_flows.instrument(backend)
        engine = zag.Engine.from_factory(
            wait_flows.build, args=(kind, url, run, float(seconds)), backend=backend
        )
        (Path(folder) / "flow_id").write_text(engine.flow_id)
        error = None
        try:
            await engine.run()
        except Exception as exc:
            error = type(exc).__name__
        return {"flow_id": engine.flow_id, "state": str(engine.state), "error": error}


async def resume(url: str, flow_id: str) -> dict[str, Any]:
    async with zag.connect(url) as backend:
        wait_flows.instrument(backend)
        return await _resume(backend, flow_id)


async def _signal(backend: Backend, flow_id: str, payload: str, signal_id: str) -> str:
    try:
        stored = await zag.signal(
            flow_id, wait_flows.EVENT, payload, backend=backend, signal_id=signal_id
        )
    except zag.errors.SignalRefused:
        return "refused"
    return stored.id


async def signal(
    url: str, flow_id: str, payload: str, signal_id: str, then: str = ""
) -> dict[str, Any]:
    if os.environ.get("ZAG_CRASH_PAUSE") == "signal:commit":
        wait_flows.pause_signal_commits()
    async with zag.connect(url) as backend:
        wait_flows.instrument(backend)
        sent = await _signal(backend, flow_id, payload, signal_id)
        await flows.checkpoint("signal:stored")
        out: dict[str, Any] = {"flow_id": flow_id, "state": None, "error": None}
        if then == "resume" and sent != "refused":
            out = await _resume(backend, flow_id)
        return {**out, "signal": sent}


async def race(url: str, role: str, plan: list[dict[str, Any]]) -> None:
    async with zag.connect(url) as backend:
        await backend.clock()  # connected before the first trial

        async def trial(item: dict[str, Any]) -> None:
            await asyncio.sleep(max(0.0, item["at"] - time.time()))
            flow_id, late = item["flow_id"], time.time() - item["at"]
            if role == "signal":
                sent = await _signal(backend, flow_id, "close call", f"race-{flow_id}")
                out = await _resume(backend, flow_id) if sent != "refused" else {}
                out = {"flow_id": flow_id, **out, "signal": sent}
            else:
                out = await _resume(backend, flow_id)
            print(json.dumps({**out, "late": late}), flush=True)

        async with asyncio.TaskGroup() as tg:  # each trial on time, whatever the others take
            for item in plan:
                tg.create_task(trial(item))


def main(argv: list[str]) -> int:
    command, *args = argv
    if command == "race":
        url, role, plan_file = args
        for _ in range(6000):  # the test writes it once its flows exist (within 60 s)
            if Path(plan_file).exists():
                break
            time.sleep(0.01)
        plan = sorted(json.loads(Path(plan_file).read_text()), key=lambda p: p["at"])
        asyncio.run(race(url, role, plan))
        return 0
    commands = {"start": start, "resume": resume, "signal": signal}
    if command not in commands:
        print(f"unknown command {command!r}", file=sys.stderr)
        return 2
    print(json.dumps(asyncio.run(commands[command](*args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
