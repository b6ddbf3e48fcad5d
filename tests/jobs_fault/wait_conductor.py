"""Subprocess entry point: a conductor that can freeze around parking the job of a
WAITING flow, for the test to SIGKILL it there (run with sys.executable, never imported).

    wait_conductor.py CONFIG_JSON

config: board (URL), flows (the flow database's URL), name, events (the JSON-lines
event log, as worker.py writes it), options (for zag.jobs.connect), and hang:
`park:before` or `park:after` freezes the process (until SIGKILL) right before or
after it parks a job, having created `<folder>/hang` (crash.flows.checkpoint).
Jobs run flows of crash.wait_flows. SIGTERM stops the conductor gracefully.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/

from crash.flows import checkpoint  # noqa: E402

import zag_async as zag  # noqa: E402
from jobs_fault.worker import EventLog  # noqa: E402


def _freeze_around_park(board: zag.jobs.JobBoard) -> None:
    park = board.park

    async def parking(claim: zag.jobs.Claim, *, delay: float | None) -> None:
        await checkpoint("park:before")
        await park(claim, delay=delay)
        await checkpoint("park:after")

    board.park = parking  # type: ignore[method-assign]


async def conduct(cfg: dict[str, Any]) -> None:
    if cfg.get("hang"):
        os.environ.update(ZAG_CRASH_HANG=cfg["hang"], ZAG_CRASH_SIGNAL=cfg["folder"])
    log = EventLog(cfg["events"])

    def on_event(event: zag.ConductorEvent) -> None:
        log.write(event.kind, job=event.job.uuid, flow=event.job.flow_id, detail=event.detail)

    async with (
        zag.connect(cfg["flows"]) as backend,
        zag.jobs.connect(cfg["board"], backend=backend, **cfg.get("options", {})) as board,
    ):
        _freeze_around_park(board)
        conductor = zag.Conductor(board, backend=backend, name=cfg["name"], listeners=[on_event])
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, conductor.stop)
        async with conductor:
            log.write("ready")
            await conductor.run()
    log.write("exit")


if __name__ == "__main__":
    asyncio.run(conduct(json.loads(sys.argv[1])))
