"""Real process crashes: SIGKILL a worker mid-flow, resume in a new process, check everything.

A subprocess (worker.py) starts a flow from the factory `crash.flows:build`
against PostgreSQL (some cases also SQLite). Its tasks append rows to a
side-effect table in the same database through their own connection (see
flows.py). The test freezes the worker at a checkpoint, kills it with SIGKILL,
checks what the database holds at that instant, resumes the flow with
`Engine.load` in a second process and checks the final flow state, every
atom's state and attempts, and the side-effect log, row for row.

What the log shows (the guarantees of issue 3):
- an atom whose SUCCESS was committed never runs again;
- the atom that was running at the kill runs again from the start
  (at-least-once: its `exec` row appears twice; when it had already finished
  its work but the engine had not recorded it, its `done` row appears twice
  too);
- an atom declared idempotent=False that was running is not run again: it is
  failed with AtomInterrupted and reverted;
- reverts resume where they stopped: a REVERTED atom is not reverted again,
  only the one reverting at the kill is (its `revert` row appears twice);
- a retry controller's attempts survive the crash: the attempt in flight is
  re-run with the same attempt number, never counted twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support import eventually

import zag_async as zag

from . import flows

WORKER = Path(__file__).with_name("worker.py")

LINEAR = ["a:exec", "a:done", "b:exec", "b:done", "c:exec", "c:done"]
REVERT = [
    *LINEAR,
    "boom:exec",
    "boom:revert(Boom)",
    "boom:reverted",
    "c:revert",
    "c:reverted",
    "b:revert",
    "b:reverted",
    "a:revert",
    "a:reverted",
]
RETRY = [
    "a:exec",
    "a:done",
    "r:exec#1",
    "r:revert(Boom)",
    "r:reverted",
    "r:exec#2",
    "r:done#2",
    "c:exec",
    "c:done",
]


def _insert_after(log: list[str], entry: str, *extra: str) -> list[str]:
    """`log` with `extra` repeated right after `entry` (what the crash adds)."""
    i = log.index(entry) + 1
    return [*log[:i], *extra, *log[i:]]


@dataclass(frozen=True)
class Crash:
    """One crash point: where to kill, what is stored then, what the resumed run yields."""

    name: str
    kind: str  # flows.build kind
    hang: str  # the checkpoint the worker freezes at
    at_kill: dict[str, str]  # stored flow state ("flow") and atom states when killed
    log_at_kill: list[str]
    log: list[str]  # the whole side-effect log once resumed
    final: dict[str, str]  # final flow and atom states
    attempts: dict[str, int]  # AtomDetail.attempts at the end (launches, crashed ones included)
    error: str | None = None  # what the resumed run raises (type name)
    history: list[Any] = field(default_factory=list)  # retry controller values at the end


S, R, P = "SUCCESS", "RUNNING", "PENDING"
# A failure loaded from storage has no live exception: run() raises RemoteFailure naming it.
BOOM = "stored Boom"
ALL_REVERTED = dict.fromkeys(("flow", "a", "b", "c", "boom"), "REVERTED")

CRASHES = [
    Crash(
        "first-atom-not-started",
        "linear",
        "a:enter",
        at_kill={"flow": R, "a": R, "b": P, "c": P},
        log_at_kill=[],
        log=LINEAR,
        final={"flow": S, "a": S, "b": S, "c": S},
        attempts={"a": 2, "b": 1, "c": 1},
    ),
    Crash(
        "between-atoms",
        "linear",
        "b:enter",
        at_kill={"flow": R, "a": S, "b": R, "c": P},
        log_at_kill=["a:exec", "a:done"],
        log=LINEAR,
        final={"flow": S, "a": S, "b": S, "c": S},
        attempts={"a": 1, "b": 2, "c": 1},
    ),
    Crash(
        "during-atom",
        "linear",
        "b:exec",
        at_kill={"flow": R, "a": S, "b": R, "c": P},
        log_at_kill=["a:exec", "a:done", "b:exec"],
        log=_insert_after(LINEAR, "b:exec", "b:exec"),
        final={"flow": S, "a": S, "b": S, "c": S},
        attempts={"a": 1, "b": 2, "c": 1},
    ),
    Crash(
        "atom-done-not-recorded",
        "linear",
        "b:done",
        at_kill={"flow": R, "a": S, "b": R, "c": P},
        log_at_kill=["a:exec", "a:done", "b:exec", "b:done"],
        log=_insert_after(LINEAR, "b:done", "b:exec", "b:done"),
        final={"flow": S, "a": S, "b": S, "c": S},
        attempts={"a": 1, "b": 2, "c": 1},
    ),
    Crash(
        "after-flow-finished",
        "linear",
        "flow:finished",
        at_kill={"flow": S, "a": S, "b": S, "c": S},
        log_at_kill=LINEAR,
        log=LINEAR,
        final={"flow": S, "a": S, "b": S, "c": S},
        attempts={"a": 1, "b": 1, "c": 1},
    ),
    Crash(
        "during-failed-atoms-own-revert",
        "revert",
        "boom:revert",
        at_kill={"flow": R, "a": S, "b": S, "c": S, "boom": "REVERTING"},
        log_at_kill=REVERT[: REVERT.index("boom:revert(Boom)") + 1],
        log=_insert_after(REVERT, "boom:revert(Boom)", "boom:revert(Boom)"),
        final=ALL_REVERTED,
        attempts={"a": 1, "b": 1, "c": 1, "boom": 1},
        error=BOOM,
    ),
    Crash(
        "during-revert",
        "revert",
        "b:revert",
        at_kill={"flow": R, "a": S, "b": "REVERTING", "c": "REVERTED", "boom": "REVERTED"},
        log_at_kill=REVERT[: REVERT.index("b:revert") + 1],
        log=_insert_after(REVERT, "b:revert", "b:revert"),
        final=ALL_REVERTED,
        attempts={"a": 1, "b": 1, "c": 1, "boom": 1},
        error=BOOM,
    ),
    Crash(
        "between-reverts",
        "revert",
        "a:revert-enter",
        at_kill={"flow": R, "a": "REVERTING", "b": "REVERTED", "c": "REVERTED", "boom": "REVERTED"},
        log_at_kill=REVERT[: REVERT.index("b:reverted") + 1],
        log=REVERT,
        final=ALL_REVERTED,
        attempts={"a": 1, "b": 1, "c": 1, "boom": 1},
        error=BOOM,
    ),
    Crash(
        "during-retry-attempt-2",
        "retry",
        "r:exec#2",
        at_kill={"flow": R, "a": S, "tries": S, "r": R, "c": P},
        log_at_kill=RETRY[: RETRY.index("r:exec#2") + 1],
        log=_insert_after(RETRY, "r:exec#2", "r:exec#2"),
        final={"flow": S, "a": S, "tries": S, "r": S, "c": S},
        attempts={"a": 1, "tries": 2, "r": 3, "c": 1},
        history=[1, 2],
    ),
    Crash(
        "retry-controller-starting-attempt-2",
        "retry",
        "tries:exec#2",
        at_kill={"flow": R, "a": S, "tries": R, "r": P, "c": P},
        log_at_kill=RETRY[: RETRY.index("r:reverted") + 1],
        log=RETRY,
        final={"flow": S, "a": S, "tries": S, "r": S, "c": S},
        attempts={"a": 1, "tries": 3, "r": 2, "c": 1},
        history=[1, 2],
    ),
    Crash(
        "non-idempotent-atom-running",
        "idem",
        "b:exec",
        at_kill={"flow": R, "a": S, "b": R, "c": P},
        log_at_kill=["a:exec", "a:done", "b:exec"],
        log=[
            "a:exec",
            "a:done",
            "b:exec",
            "b:revert(AtomInterrupted)",
            "b:reverted",
            "a:revert",
            "a:reverted",
        ],
        final={"flow": "REVERTED", "a": "REVERTED", "b": "REVERTED", "c": P},
        attempts={"a": 1, "b": 1, "c": 0},
        error="AtomInterrupted",
    ),
]

# Every crash point on PostgreSQL; a representative few on SQLite too.
SQLITE_TOO = {"during-atom", "during-revert", "during-retry-attempt-2"}
CASES = [
    pytest.param(crash, db, id=f"{db}-{crash.name}")
    for crash in CRASHES
    for db in ("postgres", "sqlite")
    if db == "postgres" or crash.name in SQLITE_TOO
]


async def _worker(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )


async def _stored(url: str, flow_id: str) -> tuple[dict[str, str], zag.FlowDetail]:
    async with zag.connect(url) as backend:
        detail = await backend.load_flow(flow_id)
    states = {"flow": str(detail.state)}
    states.update({name: str(atom.state) for name, atom in detail.atoms.items()})
    return states, detail


@pytest.mark.parametrize(("crash", "db"), CASES)
async def test_kill9_then_resume(crash: Crash, db: str, tmp_path: Path, request: Any) -> None:
    url = (
        request.getfixturevalue("pg_url")
        if db == "postgres"
        else f"sqlite+aiosqlite:///{tmp_path / 'crash.db'}"
    )
    run = uuid.uuid4().hex
    await flows.create_log(url)

    # 1. Start the flow in a worker and SIGKILL it at the checkpoint.
    env = {"ZAG_CRASH_HANG": crash.hang, "ZAG_CRASH_SIGNAL": str(tmp_path)}
    proc = await _worker("start", url, crash.kind, run, str(tmp_path), env=env)
    try:
        await eventually(
            lambda: (tmp_path / "hang").exists() or proc.returncode is not None,
            within=30,
            what=f"worker reaching checkpoint {crash.hang!r}",
        )
        if proc.returncode is not None:
            out, err = await proc.communicate()
            pytest.fail(
                f"worker ended before checkpoint {crash.hang!r}:\n{out.decode()}{err.decode()}"
            )
    finally:
        # Exactly one kill: a second one (Popen.send_signal polls first) could reap
        # the child before asyncio's watcher does, which then reports status 255.
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    flow_id = (tmp_path / "flow_id").read_text()

    # 2. What the database holds at the instant of the crash.
    states, _ = await _stored(url, flow_id)
    assert states == crash.at_kill
    assert await flows.read_log(url, run) == crash.log_at_kill

    # 3. Resume in a fresh process (the hang checkpoint is not set there).
    proc = await _worker("resume", url, flow_id)
    async with asyncio.timeout(40):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result == {"flow_id": flow_id, "state": crash.final["flow"], "error": crash.error}

    # 4. The final record and the side-effect log, row for row.
    states, detail = await _stored(url, flow_id)
    assert states == crash.final
    assert {name: a.attempts for name, a in detail.atoms.items()} == crash.attempts
    assert await flows.read_log(url, run) == crash.log
    if crash.history:
        history = detail.atoms["tries"].history
        assert history is not None
        assert history.values == crash.history
