"""`zag-async run`: plain lines when piped, a live table on a terminal, exit codes,
--store and factory arguments, durable runs and resuming."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
from collections.abc import Callable

import pytest
from support import eventually_sync

from .conftest import ROOT, Running, cli_env, command, ok, zag


def stored_state(db_path: str, flow_id: str, atom: str) -> str | None:
    """An atom's committed state, read straight from the SQLite file."""
    with contextlib.closing(sqlite3.connect(db_path, timeout=5)) as db:
        row = db.execute(
            "SELECT state FROM zag_atoms WHERE flow_uuid = ? AND name = ?", (flow_id, atom)
        ).fetchone()
    return None if row is None else str(row[0])


def stored_flow_state(db_path: str, flow_id: str) -> str:
    with contextlib.closing(sqlite3.connect(db_path, timeout=5)) as db:
        (state,) = db.execute("SELECT state FROM zag_flows WHERE uuid = ?", (flow_id,)).fetchone()
    return str(state)


def results_of(out: str) -> dict[str, object]:
    line = next(line for line in out.splitlines() if line.startswith("results: "))
    return dict(json.loads(line.removeprefix("results: ")))


def test_piped_run_prints_one_plain_line_per_change(entry: str) -> None:
    result = ok("run", "cli_flows:pipeline", "3", "--store", "start=10", entry=entry)
    lines = result.lines
    assert lines[0] == "flow pipeline RUNNING"
    assert [line.split()[:2] for line in lines[1:7]] == [
        ["step1", "RUNNING"], ["step1", "SUCCESS"],
        ["step2", "RUNNING"], ["step2", "SUCCESS"],
        ["step3", "RUNNING"], ["step3", "SUCCESS"],
    ]  # fmt: skip
    assert re.fullmatch(r"step1 SUCCESS \d+\.\dms", lines[2])  # atom STATE duration
    assert lines[7] == "flow pipeline SUCCESS"
    assert re.fullmatch(r"flow pipeline SUCCESS in \d+\.\dms", lines[8])
    assert results_of(result.out) == {"start": 10, "v1": 11, "v2": 12, "v3": 13}
    assert "\x1b[" not in result.out  # no terminal codes in a pipe
    assert result.err == ""


def test_store_values_and_factory_args_are_json_when_they_parse() -> None:
    result = ok(
        "run", "cli_flows:echo", "3", '"7"', "web-1", "[1, 2]",
        "--store", "n=42", "--store", "s=hello world", "--store", "b=true",
        "--store", "lst=[1, \"x\"]", "--store", 'q="007"', "-s", "ignored=",
    )  # fmt: skip
    results = results_of(result.out)
    assert results["echo"] == {"n": 42, "s": "hello world", "b": True, "lst": [1, "x"], "q": "007"}
    assert results["args"] == [3, "7", "web-1", [1, 2]]
    assert results["ignored"] == ""


def test_a_flow_object_runs_too() -> None:
    assert results_of(ok("run", "cli_flows:FLOW", "--store", "start=0").out)["v2"] == 2


def test_a_failed_flow_exits_1_with_its_failure_summary(entry: str) -> None:
    result = zag("run", "cli_flows:failing", entry=entry)
    assert result.code == 1
    assert "boom FAILURE" in result.out and "RuntimeError: the boom step always fails" in result.out
    assert "prepare REVERTED" in result.out
    assert re.search(r"^flow failing REVERTED in ", result.out, re.M)
    assert result.one_error_line() == (
        "zag-async: flow failing REVERTED: boom failed: RuntimeError: the boom step always fails"
    )


def run_in_pty(args: list[str], columns: int = 120) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as stdin/stdout/stderr; returns (exit code, output)."""
    import fcntl
    import struct
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = cli_env(TERM="xterm-256color")
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [*command(), *args], cwd=ROOT, env=env, stdin=slave, stdout=slave, stderr=slave
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=30), b"".join(chunks).decode("utf-8", "replace")


def test_on_a_terminal_a_live_table_shows_atoms_states_and_failures() -> None:
    code, out = run_in_pty(["run", "cli_flows:failing"])
    assert code == 1
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)
    assert "\x1b[" in out  # drawn with terminal codes, not plain lines
    for header in ("ATOM", "STATE", "ATTEMPTS", "DURATION", "FAILURE"):
        assert header in plain
    assert re.search(r"prepare\s+REVERTED\s+1\s+\d+\.\dms", plain), plain
    assert re.search(r"boom\s+REVERTED\s+1\s+\d+\.\dms\s+RuntimeError: the boom step", plain)
    assert "boom RUNNING" not in plain  # not the piped format

    code, out = run_in_pty(["run", "cli_flows:pipeline", "2", "--store", "start=1"])
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)
    assert code == 0
    assert re.search(r"step2\s+SUCCESS\s+1\s+", plain) and 'results: {"start": 1' in plain


def test_plain_forces_lines_on_a_terminal() -> None:
    code, out = run_in_pty(["run", "cli_flows:pipeline", "1", "--store", "start=1", "--plain"])
    assert code == 0
    assert "step1 RUNNING" in out and "ATTEMPTS" not in out


@pytest.mark.parametrize(
    ("sig", "sigint_ignored"),
    [(signal.SIGINT, False), (signal.SIGINT, True), (signal.SIGTERM, False)],
    ids=["sigint", "sigint-inherited-ignored", "sigterm"],
)
def test_an_interrupted_run_is_suspended_and_resumes(
    sig: signal.Signals, sigint_ignored: bool, sqlite_url: str, spawn: Callable[..., Running]
) -> None:
    args = ["run", "cli_flows:slow", "--store", "start=1", "--store", "slow_pause=30"]
    running: Running = spawn(*args, "--backend", sqlite_url, sigint_ignored=sigint_ignored)
    out = running.wait_for("slow_step RUNNING")
    flow_id = out.splitlines()[0].split()[2]
    # Signal once slow_step's RUNNING mark is committed, not while that commit is in
    # flight (cancelling a commit midway is the engine's business, not the CLI's).
    db_path = sqlite_url.removeprefix("sqlite+aiosqlite:///")
    eventually_sync(
        lambda: stored_state(db_path, flow_id, "slow_step") == "RUNNING", what="RUNNING"
    )
    running.signal(sig)
    code = running.wait()
    assert code == (130 if sig == signal.SIGINT else 143), running.errors()
    assert "flow slow SUSPENDED" in running.output()
    err = running.errors()
    assert "Traceback" not in err
    assert f"resume it with: zag-async run --resume {flow_id} --backend {sqlite_url}" in err

    assert stored_flow_state(db_path, flow_id) == "SUSPENDED"
    assert stored_state(db_path, flow_id, "step1") == "SUCCESS"

    if sig == signal.SIGTERM:
        return  # resuming is the same after either signal
    resumed = ok("run", "--resume", flow_id, "--store", "slow_pause=0", "--backend", sqlite_url)
    assert "step1 RUNNING" not in resumed.out  # finished before: not run again
    assert "slow_step SUCCESS" in resumed.out
    assert results_of(resumed.out)["slow_done"] == 2
