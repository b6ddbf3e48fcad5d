"""`zag-async jobs list|post|show|trash` and `zag-async conductor`, on a real
ZooKeeper board with flow records in PostgreSQL (and the memory:// board)."""

from __future__ import annotations

import re
import signal
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from .conftest import Result, Running, ok, zag_many


def posted(result: Result) -> tuple[str, str]:
    """(job id, flow id) from `posted job JOB NAME flow FLOW`."""
    assert result.code == 0, result.err
    m = re.fullmatch(r"posted job (\S+) (\S+) flow (\S+)\n", result.out)
    assert m, result.out
    return m.group(1), m.group(3)


def test_post_list_show_trash(board_url: str, pg_url: str) -> None:
    board = ("--board", board_url)  # list and trash need the board alone
    where = (*board, "--backend", pg_url)
    first, _flow = posted(
        ok("jobs", "post", "cli_flows:pipeline", "2", "-s", "start=1", "--key", "k-1",
           "--priority", "1", *where)
    )  # fmt: skip
    again, later, spare = zag_many(
        ("jobs", "post", "cli_flows:pipeline", "--key", "k-1", *where),
        ("jobs", "post", "cli_flows:slow", "--name", "later", "--delay", "3600", *where),
        ("jobs", "post", "cli_flows:slow", "--name", "spare", "--priority", "-1", *where),
        entry="script",
    )
    # the idempotency key returns the job already posted, and says so
    assert again.code == 0 and again.out.startswith(f"job {first} pipeline flow ")
    assert "was already posted with key 'k-1'" in again.out
    later_id, later_flow = posted(later)
    spare_id, _ = posted(spare)

    listed, shown = zag_many(("jobs", "list", *board), ("jobs", "show", later_id, *where))
    assert listed.lines[0].split() == ["JOB", "NAME", "STATE", "PRIORITY", "DUE", "OWNER", "FLOW"]
    rows = [line.split() for line in listed.lines[1:]]
    # newest first (later and spare were posted at the same time, in either order)
    assert sorted(r[:4] for r in rows[:2]) == sorted(
        [[later_id, "later", "UNCLAIMED", "0"], [spare_id, "spare", "UNCLAIMED", "-1"]]
    )
    assert rows[2][:4] == [first, "pipeline", "UNCLAIMED", "1"]
    assert rows[2][4] == "now"
    assert re.search(
        rf"^{later_id}\s+later\s+UNCLAIMED\s+0\s+in 3[56]\d\d\.\ds\s", listed.out, re.M
    )
    fields = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in shown.lines if "  " in line)
    assert fields["job"] == later_id and fields["state"] == "UNCLAIMED"
    assert fields["flow"] == later_flow and fields["factory"] == "cli_flows:slow()"
    assert "flow later" in shown.out and "PENDING" in shown.out  # its flow record, not yet run

    trashed, too_early = zag_many(
        ("jobs", "trash", spare_id, "--reason", "not needed", *board),
        ("jobs", "trash", later_id, *board),
    )
    assert trashed.out == f"trashed job {spare_id}\n"
    assert too_early.code == 1
    assert "a delayed job can be trashed once it is due" in too_early.one_error_line()
    shown, listed = zag_many(("jobs", "show", spare_id, *where), ("jobs", "list", *board))
    assert re.search(r"^state\s+TRASHED$", shown.out, re.M)
    assert re.search(r"^error\s+not needed$", shown.out, re.M)
    assert [line.split()[0] for line in listed.lines[1:]] == [later_id, first]


def test_conductor_runs_jobs_and_stops_gracefully(
    board_url: str, pg_url: str, spawn: Callable[..., Running]
) -> None:
    where = ("--board", board_url, "--backend", pg_url)
    conductor = spawn("conductor", *where, "--max-jobs", "2", "--name", "c1")
    conductor.wait_for("conductor c1 running jobs from zookeeper://")
    quick, _ = posted(ok("jobs", "post", "cli_flows:pipeline", "2", "-s", "start=1", *where))
    conductor.wait_for(f"consumed job pipeline {quick} SUCCESS")

    slow, slow_flow = posted(
        ok("jobs", "post", "cli_flows:slow", "-s", "start=1", "-s", "slow_pause=1", *where)
    )
    conductor.wait_for(f"started job slow {slow}")
    conductor.signal(signal.SIGINT)  # stop claiming; the running atom finishes; job handed back
    assert conductor.wait() == 0, conductor.errors()
    out = conductor.output()
    assert f"abandoned job slow {slow}" in out and out.endswith("conductor stopped\n")
    assert conductor.errors() == ""

    # Another conductor (the installed script) resumes the handed-back job and serves
    # Prometheus metrics; SIGTERM stops it.
    second = spawn("conductor", *where, "--name", "c2", "--metrics-port", "0", entry="script")
    found = re.search(r"metrics at (\S+)", second.wait_for("metrics at "))
    assert found, second.output()
    url = found.group(1)
    second.wait_for(f"consumed job slow {slow} SUCCESS")
    scraped = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(httpx.get(url, timeout=10).text)
        for s in family.samples
    }
    assert scraped[("zag_jobs_claimed_total", (("job", "slow"),))] == 1
    assert scraped[("zag_jobs_consumed_total", (("job", "slow"),))] == 1
    # slow_step finished under c1 before the hand-back: c2 ran only `finish`.
    assert scraped[("zag_atoms_succeeded_total", (("atom", "finish"), ("flow", "slow")))] == 1
    assert ("zag_atoms_started_total", (("atom", "slow_step"), ("flow", "slow"))) not in scraped
    second.signal(signal.SIGTERM)
    assert second.wait() == 0, second.errors()
    assert second.output().endswith("conductor stopped\n")

    first_job, handed_back = zag_many(
        ("jobs", "show", quick, *where), ("jobs", "show", slow, *where)
    )
    assert re.search(r"^state\s+COMPLETE$", first_job.out, re.M)
    assert re.search(r"^outcome\s+SUCCESS$", first_job.out, re.M)
    assert re.search(r"^step2\s+SUCCESS\s+1\s", first_job.out, re.M)  # its flow, from PostgreSQL
    assert re.search(rf"^flow slow {slow_flow} SUCCESS", handed_back.out, re.M)
    assert re.search(r"^slow_step\s+SUCCESS\s+1\s", handed_back.out, re.M)  # run once, not twice


def test_memory_board_is_per_process() -> None:
    listed, post = zag_many(
        ("jobs", "list", "--board", "memory://"),
        ("jobs", "post", "cli_flows:pipeline", "-s", "start=1", "--board", "memory://"),
    )
    assert listed.code == 0 and listed.lines == ["JOB  NAME  STATE  PRIORITY  DUE  OWNER  FLOW"]
    posted(post)
