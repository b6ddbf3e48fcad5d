"""`zag-async signal FLOW_ID EVENT --data JSON`: a waiting flow run by `zag-async run`
takes the signal when resumed; bad input and refused signals are one clear line."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Callable

from .conftest import Running, ok, zag, zag_many


def waiting_flow(db_url: str) -> str:
    """Run cli_flows:approval until it waits; returns its id."""
    run = ok("run", "cli_flows:approval", "--backend", db_url)
    assert re.match(r"flow approval WAITING in ", run.lines[-2]), run.out
    return run.lines[0].split()[2]


def test_a_signal_ends_the_wait_when_the_flow_resumes(db_url: str) -> None:
    flow_id = waiting_flow(db_url)
    sent = ok(
        "signal", flow_id, "approval", "--data", '{"by": "ann"}',
        "--signal-id", f"click-{flow_id}", "--backend", db_url,
    )  # fmt: skip
    when = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00"
    line = rf"signal approval click-{flow_id} for flow {flow_id} stored at {when}"
    assert re.fullmatch(line, sent.out.strip()), sent.out
    again = ok(
        "signal", flow_id, "approval", "--data", '{"by": "bob"}',
        "--signal-id", f"click-{flow_id}", "--backend", db_url,
    )  # fmt: skip
    assert again.out == sent.out  # the first signal, nothing new stored

    resumed = ok("run", "--resume", flow_id, "--backend", db_url)
    assert "flow approval SUCCESS in " in resumed.out
    results = json.loads(resumed.lines[-1].removeprefix("results: "))
    assert results["paid"] == "paid, approved by ann"

    finished = zag("signal", flow_id, "approval", "--backend", db_url)
    assert finished.code == 1
    assert f"signal 'approval' for flow {flow_id}: the flow has finished (SUCCESS)" in (
        finished.one_error_line()
    )


def test_bad_input_and_refused_signals_are_one_line(sqlite_url: str) -> None:
    flow_id = waiting_flow(sqlite_url)
    bad_json, unknown, undeclared, long_id, no_backend = zag_many(
        ("signal", flow_id, "approval", "--data", "{by: ann}", "--backend", sqlite_url),
        ("signal", "no-such-flow", "approval", "--backend", sqlite_url),
        ("signal", flow_id, "payment", "--data", "1", "--backend", sqlite_url),
        ("signal", flow_id, "approval", "--signal-id", "x" * 201, "--backend", sqlite_url),
        ("signal", flow_id, "approval"),
    )
    assert bad_json.code == 2
    assert "--data must be JSON" in bad_json.one_error_line()
    assert unknown.code == 1
    assert "signal 'approval' for flow no-such-flow: no such flow" in unknown.one_error_line()
    assert undeclared.code == 1
    assert "no wait of the flow declares it (it waits for 'approval')" in (
        undeclared.one_error_line()
    )
    assert long_id.code == 2
    assert "signal_id must be a string of 1 to 200 characters" in long_id.one_error_line()
    assert no_backend.code == 2
    assert "Missing option '--backend'" in no_backend.one_error_line()
    # nothing refused was stored: the flow still waits, for the next good signal
    ok("signal", flow_id, "approval", "--data", '{"by": "cron"}', "--signal-id", "s-1",
       "--backend", sqlite_url)  # fmt: skip
    # a signal id is unique across flows: reusing it for another flow is refused
    other = waiting_flow(sqlite_url)
    reused = zag("signal", other, "approval", "--signal-id", "s-1", "--backend", sqlite_url)
    assert reused.code == 1
    assert f"'s-1' is already used by signal 'approval' of flow {flow_id}" in (
        reused.one_error_line()
    )
    resumed = ok("run", "--resume", flow_id, "--backend", sqlite_url)
    assert '"paid": "paid, approved by cron"' in resumed.lines[-1]


def test_with_board_the_signal_wakes_the_parked_job(
    board_url: str, pg_url: str, spawn: Callable[..., Running]
) -> None:
    """ZooKeeper board, PostgreSQL flows: the conductor parks the waiting flow's job;
    `signal --board` makes it due, and the conductor finishes the flow."""
    where = ("--board", board_url, "--backend", pg_url)
    conductor = spawn("conductor", *where, "--name", "c1")
    conductor.wait_for("conductor c1 running jobs from zookeeper://")
    posted = ok("jobs", "post", "cli_flows:approval", *where).out.split()
    job_id, flow_id = posted[2], posted[5]
    conductor.wait_for(f"parked job approval {job_id}: flow waits for a signal or ")
    sent = ok("signal", flow_id, "approval", "--data", '{"by": "ann"}', *where)
    assert sent.out.startswith("signal approval ") and f"for flow {flow_id}" in sent.out
    # woken at once (the conductors' sweep, every 10 s, would be later)
    conductor.wait_for(f"consumed job approval {job_id} SUCCESS", within=8)
    shown = ok("jobs", "show", job_id, *where)
    assert re.search(r"^pay_expense\s+SUCCESS\s+1\s", shown.out, re.M), shown.out
    conductor.signal(signal.SIGTERM)
    assert conductor.wait() == 0, conductor.errors()
