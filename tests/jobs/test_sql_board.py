"""What SQL job boards add to the board contract: leases, takeovers, wake-ups, one database.

Each test runs on SQLite and on PostgreSQL (`board_kind` parametrized here;
the boards come from conftest.py with a short lease). Other processes are real
subprocesses: a claimer killed with SIGKILL, a poster whose change another
board must notice without polling.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from support import eventually

import zag_async as zag
from zag_async.errors import AlreadyClaimed, ClaimLost, ConcurrentUpdate, ConfigurationError
from zag_async.jobs import JobBoard, JobOutcome
from zag_async.jobs.sql import SqlBoard

from . import flows
from .conftest import BoardOpener, wait_outcome

pytestmark = pytest.mark.parametrize("board_kind", ["sqlite", "postgres"])

REPO = Path(__file__).resolve().parents[2]

#: A board in another process: claims the job argv[2] as "doomed" (lease argv[3])
#: and prints the token, or posts a job and prints the time it committed.
OTHER_PROCESS = """
import asyncio, sys, time
import zag_async as zag

async def main() -> None:
    url, what = sys.argv[1], sys.argv[2]
    async with zag.connect("memory://") as backend:
        async with zag.jobs.connect(url, backend=backend, lease=float(sys.argv[3])) as board:
            if what == "post":
                print("ready", flush=True)
                sys.stdin.readline()
                await board.post("remote", "tests.jobs.flows:steps", "r")
                print(time.time(), flush=True)
                sys.stdin.readline()
                return
            claim = await board.claim(what, "doomed")
            print(claim.token, flush=True)
            await asyncio.sleep(120)

asyncio.run(main())
"""


def other_process(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    return subprocess.Popen(
        [sys.executable, "-c", OTHER_PROCESS, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def end(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.communicate()


async def read_line(proc: subprocess.Popen[str], within: float = 20.0) -> str:
    assert proc.stdout is not None
    async with asyncio.timeout(within):
        line = await asyncio.to_thread(proc.stdout.readline)
    assert line, f"the other process ended early (exit {proc.poll()})"
    return line.strip()


async def expire_leases(url: str) -> None:
    """What an owner that stopped renewing leaves behind: leases in the past."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE zag_jobs SET lease_until = 0"))
    finally:
        await engine.dispose()


def success(claim: zag.jobs.Claim) -> JobOutcome:
    return JobOutcome(claim.job.uuid, claim.job.flow_id, "SUCCESS", {})


# -- leases --------------------------------------------------------------------------


async def test_connect_options_and_lease(open_board: BoardOpener) -> None:
    board = await open_board(lease=7.5)
    assert isinstance(board, SqlBoard)
    assert board.lease == 7.5
    with pytest.raises(ConfigurationError):
        zag.jobs.connect(board.url, backend=board.backend, lease=0)


@pytest.mark.services  # a second process
async def test_a_killed_owner_loses_its_claim_when_its_lease_runs_out(
    board: JobBoard, board_url: str
) -> None:
    job = await board.post("j", flows.steps, "j")
    proc = other_process(board_url, job.uuid, "1.0")
    try:
        token = int(await read_line(proc))
        # Longer than one lease: the other process's heartbeat keeps its claim.
        await asyncio.sleep(1.6)
        assert await board.find_owner(job) == "doomed"
        with pytest.raises(AlreadyClaimed):
            await board.claim(job, "survivor")
        proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()

        async def take() -> zag.jobs.Claim | None:
            try:
                return await board.claim(job, "survivor")
            except AlreadyClaimed:
                return None

        mine: zag.jobs.Claim = await eventually(take, within=5, what="takeover after expiry")
        assert time.monotonic() - killed < 3.0  # about one lease (1 s), with slack for load
        assert mine.token > token
        assert await board.find_owner(job) == "survivor"
    finally:
        end(proc)


async def test_takeover_fences_the_old_owner(
    open_board: BoardOpener, board_url: str, backend: zag.persistence.Backend
) -> None:
    old = await open_board(lease=60)  # its heartbeat stays out of the way
    new = await open_board()
    lost: list[str] = []
    old.on_claims_lost(lambda: lost.append("lost"))
    job = await old.post("j", flows.steps, "j")
    claim = await old.claim(job, "old")
    old_flow = await backend.load_flow(job.flow_id)
    await backend.claim_flow(old_flow, claim.fence)

    await expire_leases(board_url)  # the old owner paused for longer than its lease
    taken = await new.claim(job, "new")
    assert taken.token > claim.token
    new_flow = await backend.load_flow(job.flow_id)
    await backend.claim_flow(new_flow, taken.fence)

    with pytest.raises(ConcurrentUpdate):  # the old owner's flow writes are refused
        await backend.save(old_flow, [])
    assert old.holds(claim)  # it does not know yet ...
    assert isinstance(old, SqlBoard)
    assert await old.renew_leases()  # ... until its next renewal
    assert not old.holds(claim)
    assert lost == ["lost"]
    with pytest.raises(ClaimLost):
        await old.consume(claim, success(claim))
    await new.consume(taken, success(taken))
    assert (await wait_outcome(job)).ok


async def test_a_stale_claim_cannot_finish_even_before_it_knows(open_board: BoardOpener) -> None:
    old = await open_board(lease=60)
    new = await open_board()
    job = await old.post("j", flows.steps, "j")
    claim = await old.claim(job, "old")
    assert isinstance(new, SqlBoard)
    assert await new.release_owner("old") == [job.uuid]
    taken = await new.claim(job, "new")
    with pytest.raises(ClaimLost):
        await old.record_build_failure(claim, "stale")
    with pytest.raises(ClaimLost):
        await old.abandon(claim)
    assert new.holds(taken)


async def test_release_owner_hands_a_previous_incarnations_claims_back_at_once(
    open_board: BoardOpener,
) -> None:
    previous = await open_board(lease=60)
    first = await previous.post("a", flows.steps, "a")
    second = await previous.post("b", flows.steps, "b")
    other = await previous.post("c", flows.steps, "c")
    stale = [await previous.claim(first, "svc-1"), await previous.claim(second, "svc-1")]
    await previous.claim(other, "svc-2")

    restarted = await open_board()
    assert isinstance(restarted, SqlBoard) and isinstance(previous, SqlBoard)
    kept = await restarted.claim(await restarted.post("d", flows.steps, "d"), "svc-1")
    released = await restarted.release_owner("svc-1")
    assert sorted(released) == sorted([first.uuid, second.uuid])  # not svc-2's, not its own
    assert restarted.holds(kept)
    again = await restarted.claim(first, "svc-1")
    assert again.token > stale[0].token
    assert await restarted.find_owner(second) is None
    assert await restarted.find_owner(other) == "svc-2"
    await previous.renew_leases()
    assert not any(previous.holds(c) for c in stale)


async def test_heartbeat_keeps_a_claim_past_its_lease(open_board: BoardOpener) -> None:
    board = await open_board(lease=0.6)
    other = await open_board()
    job = await board.post("j", flows.steps, "j")
    claim = await board.claim(job, "alice")
    await asyncio.sleep(1.5)
    assert board.holds(claim)
    with pytest.raises(AlreadyClaimed):
        await other.claim(job, "bob")
    await board.consume(claim, success(claim))


async def test_closing_a_board_gives_its_claims_back(open_board: BoardOpener) -> None:
    doomed = await open_board(lease=60)
    board = await open_board()
    job = await board.post("j", flows.steps, "j")
    await doomed.claim(job, "doomed")
    await doomed.aclose()
    assert await board.find_owner(job) is None
    await board.claim(job, "next")


# -- wake-ups ------------------------------------------------------------------------


@pytest.mark.services  # a second process
async def test_watch_sees_another_process_post_without_polling(
    open_board: BoardOpener, board_url: str, board_kind: str
) -> None:
    # PostgreSQL must not poll at all (LISTEN/NOTIFY); SQLite polls every 0.2 s.
    board = await open_board(poll_interval=60.0 if board_kind == "postgres" else 0.2)
    proc = other_process(board_url, "post", "30")
    try:
        assert await read_line(proc) == "ready"
        seen: asyncio.Queue[float] = asyncio.Queue()

        async def watch() -> None:
            async for _job in board.watch():
                seen.put_nowait(time.time())

        watcher = asyncio.create_task(watch())
        if board_kind == "postgres":
            assert isinstance(board, SqlBoard)
            await eventually(lambda: board.listening, what="listening")
        await asyncio.sleep(0.1)
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.flush()
        posted = float(await read_line(proc))
        async with asyncio.timeout(5):
            arrived = await seen.get()
        latency = arrived - posted
        print(f"{board_kind}: a post in another process seen after {latency * 1000:.0f} ms")
        assert latency < (0.5 if board_kind == "postgres" else 1.0)
        watcher.cancel()
        proc.stdin.write("\n")
        proc.stdin.flush()
    finally:
        end(proc)


async def test_a_watcher_wakes_when_a_lease_runs_out(
    open_board: BoardOpener, board_url: str
) -> None:
    board = await open_board(poll_interval=60.0)  # only its timer can wake it
    holder = await open_board(lease=60)
    job = await board.post("j", flows.steps, "j")
    await holder.claim(job, "hung")
    seen: list[str] = []

    async def watch() -> None:
        async for found in board.watch():
            seen.append(found.uuid)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.3)
    assert seen == []  # claimed, so not yielded
    # The holder hangs: its lease (as another process would have taken it, unannounced)
    # runs out in 0.6 s and nobody renews it.
    await set_leases(board_url, 0.6)
    await eventually(lambda: seen == [job.uuid], within=3, what="watch woken at lease expiry")
    watcher.cancel()


async def set_leases(url: str, seconds: float) -> None:
    """Every lease ends `seconds` from now (the database's clock)."""
    now = (
        "EXTRACT(EPOCH FROM statement_timestamp())"
        if url.startswith("postgresql")
        else "((julianday('now') - 2440587.5) * 86400.0)"
    )
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f"UPDATE zag_jobs SET lease_until = {now} + {seconds}"))
    finally:
        await engine.dispose()


# -- one database ----------------------------------------------------------------------


async def test_conductor_with_flows_and_jobs_in_one_database(
    board_url: str, board_kind: str
) -> None:
    async with (
        zag.connect(board_url) as backend,
        zag.jobs.connect(board_url, backend=backend, lease=1.0) as board,
    ):
        job = await board.post("add", flows.adder, "one-db", store={"x": 2, "y": 3})
        conductor = zag.Conductor(board, backend=backend, name="c1")
        running = asyncio.create_task(conductor.run())
        try:
            outcome = await wait_outcome(job)
        finally:
            conductor.stop()
            await running
        assert outcome.ok and outcome.results is not None and outcome.results["total"] == 5
        assert (await backend.load_flow(job.flow_id)).state is zag.FlowState.SUCCESS
        engine = create_async_engine(board_url)
        try:
            async with engine.connect() as conn:
                rows = await conn.execute(text("SELECT count(*) FROM zag_job_results"))
                assert rows.scalar_one() == 1
                flows_rows = await conn.execute(text("SELECT count(*) FROM zag_flows"))
                assert flows_rows.scalar_one() >= 1
        finally:
            await engine.dispose()


@pytest.mark.services  # a second process
async def test_the_jobs_board_example_prints_the_same_on_one_sql_database(board_url: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    example = REPO / "examples" / "jobs_board.py"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(example), board_url, board_url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=REPO,
    )  # fmt: skip
    async with asyncio.timeout(120):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert out.decode() == (REPO / "examples" / "golden" / "jobs_board.out").read_text()
