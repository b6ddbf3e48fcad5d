"""Subprocess entry point for the job fault tests (run with sys.executable, never imported).

    worker.py conduct CONFIG_JSON   run a Conductor on a board until SIGTERM
    worker.py lock CONFIG_JSON      take a board lock in rounds, writing enter/exit rows

Both append JSON lines to CONFIG["events"], each with `t` (time.time()) and
`kind`:

    ready                 connected; about to run (conduct) or to contend (lock)
    claimed/started/consumed/abandoned/trashed/lost
                          the conductor's events (job, flow, detail, token)
    save                  (conduct, with "spy_saves") a flow-state write: ok or
                          refused, with the error type and the flow's state
    waiting/entered/left  (lock) around each round
    exit                  leaving cleanly

conduct config: board, pg, name, max_jobs (1), session_timeout, call_timeout,
spy_saves (false). SIGTERM stops the conductor gracefully (running jobs are
handed back) and the process exits 0.

lock config: board, pg, name, lock, run, rounds, hold (seconds inside),
hang (sleep inside the first round until killed), wait_go (wait for SIGUSR1
before contending, so every contender starts together), session_timeout.
Inside the lock the worker writes `enter` and `exit` rows to the side-effect
table (PostgreSQL's clock) with `who` = its name.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, so `jobs_fault` imports

import zag_async as zag  # noqa: E402
from jobs_fault import flows  # noqa: E402


class EventLog:
    def __init__(self, path: str) -> None:
        self.file = open(path, "a", buffering=1)  # noqa: SIM115 (lives as long as the process)

    def write(self, kind: str, **fields: Any) -> None:
        self.file.write(json.dumps({"t": time.time(), "kind": kind, **fields}, default=str) + "\n")


def _spy_saves(backend: Any, log: EventLog) -> None:
    """Log every flow-state write this process makes, and whether it was refused."""
    save = backend.save

    async def spying(flow: Any, atoms: Any) -> None:
        fields = {
            "flow": flow.uuid,
            "state": str(flow.state),
            "atoms": {a.name: str(a.state) for a in atoms},
            "owner": flow.owner,
        }
        try:
            await save(flow, atoms)
        except Exception as exc:
            log.write("save", ok=False, error=type(exc).__name__, **fields)
            raise
        log.write("save", ok=True, **fields)

    backend.save = spying


async def conduct(cfg: dict[str, Any]) -> None:
    os.environ[flows.WHO] = cfg["name"]
    log = EventLog(cfg["events"])

    def on_event(event: zag.ConductorEvent) -> None:
        log.write(
            event.kind,
            job=event.job.uuid,
            flow=event.job.flow_id,
            detail=event.detail,
            token=event.extra.get("token"),
            outcome=None if event.outcome is None else event.outcome.state,
        )

    options = {k: cfg[k] for k in ("session_timeout", "call_timeout") if k in cfg}
    async with zag.connect(cfg["pg"]) as backend:
        if cfg.get("spy_saves"):
            _spy_saves(backend, log)
        async with zag.jobs.connect(cfg["board"], backend=backend, **options) as board:
            conductor = zag.Conductor(
                board,
                backend=backend,
                name=cfg["name"],
                max_jobs=cfg.get("max_jobs", 1),
                listeners=[on_event],
            )
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, conductor.stop)
            async with conductor:
                log.write("ready", session=getattr(getattr(board, "zk", None), "session_id", None))
                await conductor.run()
    await flows.close_pools()
    log.write("exit")


async def lock(cfg: dict[str, Any]) -> None:
    os.environ[flows.WHO] = cfg["name"]
    log = EventLog(cfg["events"])
    options = {k: cfg[k] for k in ("session_timeout", "call_timeout") if k in cfg}
    async with (
        zag.connect("memory://") as backend,
        zag.jobs.connect(cfg["board"], backend=backend, **options) as board,
    ):
        await flows.record(cfg["pg"], cfg["run"], f"connected:{cfg['name']}")
        go = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, go.set)
        log.write("ready")
        if cfg.get("wait_go"):
            await go.wait()
        for i in range(cfg.get("rounds", 1)):
            log.write("waiting", round=i)
            async with board.lock(cfg["lock"]):
                await flows.record(cfg["pg"], cfg["run"], "enter")
                log.write("entered", round=i)
                if cfg.get("hang"):
                    await asyncio.sleep(3600)  # until SIGKILL
                await asyncio.sleep(cfg.get("hold", 0.0))
                await flows.record(cfg["pg"], cfg["run"], "exit")
            log.write("left", round=i)
    await flows.close_pools()
    log.write("exit")


def main(argv: list[str]) -> int:
    command, config = argv
    cfg = json.loads(config)
    if command == "conduct":
        asyncio.run(conduct(cfg))
    elif command == "lock":
        asyncio.run(lock(cfg))
    else:
        print(f"unknown command {command!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
