"""A fork server for the compensation crash tests (run with sys.executable, never imported).

    python compensation_child.py [URL ...]

The tests kill dozens of flow runs with SIGKILL and resume each in a fresh
process. Starting a fresh interpreter for each (importing zag_async,
SQLAlchemy and the drivers, then a first connect that sets up the dialect)
costs about 0.7 s of CPU, several seconds on a loaded machine; so this process
does all of that once (it runs a small flow on a scratch SQLite file and
connects to each URL given), then forks one child per run, which then spends
about 0.05 s of CPU. Each child is a real process of its own: it opens its
own connections, runs one engine and dies by SIGKILL like any other. The
warm-up's loop, threads and connections are all closed before the first fork.

Protocol: one JSON object a line.

    stdin   {"op": "spawn", "tag": T, "argv": [...], "env": {...}, "out": DIR}
            {"op": "kill", "pid": P}     SIGKILL P, unless it has ended already
    stdout  {"tag": T, "pid": P}         the child for spawn T is running
            {"pid": P, "status": S}      P ended: its exit code, or -signal

Children are reaped here and only here, as SIGCHLD arrives, and "kill" is
refused for a reaped PID: so a PID the kernel has handed to some other
process since is never signalled. A killed child is reported only once
reaped, so its lease's owner (its PID) is gone when a test resumes the flow.

A child runs `argv` (below) with stdin from /dev/null and stdout and stderr
to DIR/<tag>.log, writes DIR/<tag>.json when the run ends, and `_exit`s:

    start  URL KIND RUN FAILS_JSON   create and run a flow of crash.compensation_flows
    resume URL FLOW_ID               Engine.load(FLOW_ID).run()

The JSON is {"flow_id", "state", "error"}, error being the type name of what
run() raised (None when it returned). `start` writes DIR/<tag>.flow_id first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, so `crash` imports

# The drivers, SQLAlchemy and zag's SQL backend are what a run imports lazily:
# imported here once (F401), children do not pay for them.
import aiosqlite  # noqa: E402, F401
import asyncpg  # noqa: E402, F401
import sqlalchemy.ext.asyncio  # noqa: E402, F401

import zag_async as zag  # noqa: E402
import zag_async.persistence.postgres  # noqa: E402, F401
import zag_async.persistence.sqlite  # noqa: E402, F401
from crash import compensation_flows  # noqa: E402

# -- in the child ------------------------------------------------------------------------


async def _run(engine: zag.Engine) -> str | None:
    try:
        await engine.run()
    except Exception as exc:
        return type(exc).__name__
    return None


async def start(out: Path, url: str, kind: str, run: str, fails: str) -> dict[str, Any]:
    async with zag.connect(url) as backend:
        engine = zag.Engine.from_factory(
            compensation_flows.build, args=(kind, url, run, json.loads(fails)), backend=backend
        )
        out.with_suffix(".flow_id").write_text(engine.flow_id)
        error = await _run(engine)
        return {"flow_id": engine.flow_id, "state": str(engine.state), "error": error}


async def resume(out: Path, url: str, flow_id: str) -> dict[str, Any]:
    async with zag.connect(url) as backend:
        engine = await zag.Engine.load(flow_id, backend=backend)
        error = await _run(engine)
        return {"flow_id": flow_id, "state": str(engine.state), "error": error}


async def run_closing(out: Path, command: str, *args: str) -> dict[str, Any]:
    try:
        if command == "start":
            return await start(out, *args)
        return await resume(out, *args)
    finally:
        await compensation_flows.close_pools()


def child(out: Path, argv: list[str]) -> int:
    result = asyncio.run(run_closing(out, *argv))
    out.with_suffix(".json").write_text(json.dumps(result))
    return 0


def _become_child(msg: dict[str, Any], wakeup: int) -> None:
    """In the forked child: fresh signals and files, run, and never return."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.close(wakeup)
        out = Path(msg["out"]) / str(msg["tag"])
        null = os.open(os.devnull, os.O_RDONLY)
        log = os.open(out.with_suffix(".log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)
        os.environ.update(msg.get("env") or {})
        code = child(out, list(msg["argv"]))
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


# -- the fork server ---------------------------------------------------------------------


async def _warm(urls: list[str]) -> None:
    """Do once what every child would do first (see the module docstring)."""

    @zag.task
    async def hello() -> str:  # async: a plain function would run in a worker thread
        return "hello"

    with tempfile.TemporaryDirectory() as scratch:
        async with zag.connect(f"sqlite+aiosqlite:///{scratch}/warm.db") as backend:
            engine = zag.Engine(zag.linear("warm", hello), backend=backend)
            await engine.run()
            await zag.Engine.load(engine.flow_id, backend=backend, flow=zag.linear("warm", hello))
    for url in urls:
        async with zag.connect(url) as backend:
            await backend.list_flows()


def _say(msg: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def serve(urls: list[str]) -> None:
    asyncio.run(_warm(urls))
    for thread in threading.enumerate():  # nothing to inherit (aiosqlite's are ending)
        if thread is not threading.main_thread():
            thread.join(10)
    assert threading.active_count() == 1, threading.enumerate()
    live: set[int] = set()
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    stdin = sys.stdin.fileno()
    pending = b""
    while True:
        ready, _, _ = select.select([stdin, read_end], [], [])
        if read_end in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(read_end, 1024)
        while live:  # reap whatever ended
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            live.discard(pid)
            _say({"pid": pid, "status": os.waitstatus_to_exitcode(status)})
        if stdin not in ready:
            continue
        data = os.read(stdin, 65536)
        if not data:  # the test went away: take the children along
            for pid in live:
                os.kill(pid, signal.SIGKILL)
            return
        pending += data
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            msg = json.loads(line)
            if msg["op"] == "kill":
                if msg["pid"] in live:
                    os.kill(msg["pid"], signal.SIGKILL)
            elif msg["op"] == "spawn":
                pid = os.fork()
                if pid == 0:
                    os.close(read_end)
                    _become_child(msg, write_end)
                live.add(pid)
                _say({"tag": msg["tag"], "pid": pid})


if __name__ == "__main__":
    serve(sys.argv[1:])
