"""Subprocess entry point for the crash tests (run with sys.executable, never imported).

    worker.py start  URL KIND RUN SIGNAL_DIR   start a new flow from crash.flows:build
    worker.py resume URL FLOW_ID               Engine.load(FLOW_ID).run() in this process

`start` writes the new flow's id to SIGNAL_DIR/flow_id before running it, so
the test knows what to resume after killing this process. Both print one JSON
line when the run ends: {"flow_id", "state", "error"}, error being null, the
exception's type name, or `stored <type>` for a failure that was loaded from
storage (re-raised as its original type, with RemoteFailure as its cause).
A ZAG_CRASH_HANG checkpoint (see flows.py) freezes the process for the test to
kill; `flow:finished` freezes it after run() returned.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, so `crash` imports

import zag_async as zag  # noqa: E402
from crash import flows  # noqa: E402


async def _run(engine: zag.Engine) -> str | None:
    try:
        await engine.run()
    except Exception as exc:
        if isinstance(exc.__cause__, zag.errors.RemoteFailure):  # loaded from storage
            return f"stored {type(exc).__name__}"
        return type(exc).__name__
    return None


async def start(url: str, kind: str, run: str, signal_dir: str) -> dict[str, object]:
    async with zag.connect(url) as backend:
        engine = zag.Engine.from_factory(flows.build, args=(kind, url, run), backend=backend)
        (Path(signal_dir) / "flow_id").write_text(engine.flow_id)
        error = await _run(engine)
        await flows.checkpoint("flow:finished")
        return {"flow_id": engine.flow_id, "state": str(engine.state), "error": error}


async def resume(url: str, flow_id: str) -> dict[str, object]:
    async with zag.connect(url) as backend:
        engine = await zag.Engine.load(flow_id, backend=backend)
        error = await _run(engine)
        return {"flow_id": flow_id, "state": str(engine.state), "error": error}


def main(argv: list[str]) -> int:
    command, *args = argv
    if command == "start":
        out = asyncio.run(start(*args))
    elif command == "resume":
        out = asyncio.run(resume(*args))
    else:
        print(f"unknown command {command!r}", file=sys.stderr)
        return 2
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
