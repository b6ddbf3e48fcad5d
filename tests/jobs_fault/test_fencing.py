"""Fencing a zombie conductor, delayed jobs, and scheduled jobs keeping their store.

The zombie test (issue 4, "Fencing"): c1 runs a slow task; it is frozen with
SIGSTOP past its session timeout, so its claim node vanishes; c2 claims the
job (its Engine.load claims the flow record with the new fence) and runs it;
then c1 is thawed with SIGCONT. Whatever c1 then tries to write to the flow
record is refused (ConcurrentUpdate): checked through worker.py's save spy,
the final flow record (who produced each result) and the side-effect table.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time

import pytest
from support import eventually

import zag_async as zag

from . import flows
from .conftest import CALL, SESSION, Workers

BOARD = {"session_timeout": SESSION, "call_timeout": CALL}


def _rows(log: list[dict[str, object]], who: str | None = None) -> list[str]:
    return [str(r["entry"]) for r in log if who is None or r["who"] == who]


@pytest.mark.parametrize("thaw", ["after_finish", "while_running"])
async def test_zombie_conductor_is_fenced_off(
    thaw: str,
    zk_url: str,
    pg_url: str,
    backend: zag.persistence.Backend,
    run_id: str,
    workers: Workers,
) -> None:
    """A conductor frozen past its session cannot write once thawed; the job finishes once.

    after_finish: c1 is thawed after c2 consumed the job. while_running: c1 is
    thawed while c2 is still inside task c (the riskier interleaving).
    """
    # b's first execution (c1's) sleeps 2 s: c1 is frozen well inside it. c's first
    # execution (c2's) sleeps 3 s when c1 is to be thawed while c2 is still running.
    sleeps = {"b": [2.0], "c": [3.0] if thaw == "while_running" else []}
    async with zag.jobs.connect(zk_url, backend=backend, **BOARD) as board:
        job = await board.post(
            "fenced", flows.linear, pg_url, run_id, ["a", "b", "c", "d"], kwargs={"sleeps": sleeps}
        )
        c1 = workers.conductor("c1", zk_url, pg_url, spy_saves=True)

        async def entry_seen(entry: str) -> bool:
            return entry in _rows(await flows.read_log(pg_url, run_id))

        await eventually(lambda: entry_seen("b:exec"), within=30, what="c1 inside task b")
        stopped_at = c1.signal(signal.SIGSTOP)
        c1_token = c1.events("claimed", job.uuid)[0]["token"]

        c2 = workers.conductor("c2", zk_url, pg_url, spy_saves=True)
        claimed = await eventually(
            lambda: c2.events("claimed", job.uuid), within=SESSION + 20, what="c2 claims the job"
        )
        # Only once c1's session expired (ZooKeeper counts from c1's last heartbeat).
        assert claimed[0]["t"] - stopped_at > SESSION / 2
        c2_token = claimed[0]["token"]
        assert c2_token > c1_token

        if thaw == "while_running":
            await eventually(lambda: entry_seen("c:exec"), within=20, what="c2 inside task c")
        else:
            async with asyncio.timeout(30):
                assert (await job.wait()).state == "SUCCESS"
        thawed_at = c1.signal(signal.SIGCONT)

        async with asyncio.timeout(30):
            outcome = await job.wait()
        assert outcome.state == "SUCCESS", outcome
        # The zombie notices (lost claim, or a refused write and no claim to give back).
        await eventually(
            lambda: c1.events("lost", job.uuid) or c1.events("abandoned", job.uuid),
            within=SESSION + 15,
            what="c1 gives the job up",
        )
        # Stop both: after this nothing can write any more.
        assert await c1.stop() == 0, c1.output()
        assert await c2.stop() == 0, c2.output()

        # c1's writes: all before the freeze succeeded, every one after the thaw was refused.
        saves = c1.events("save")
        late = [s for s in saves if s["t"] >= thawed_at]
        assert all(s["ok"] for s in saves if s["t"] < stopped_at)
        assert late, "the thawed zombie tried no write at all (expected a refused one)"
        assert all(not s["ok"] and s["error"] == "ConcurrentUpdate" for s in late), late
        assert all(s["ok"] for s in c2.events("save")), c2.events("save")

        # The flow record: finished by c2 under its fence, with c1's a and c2's b, c, d.
        detail = await backend.load_flow(job.flow_id)
        assert detail.state is zag.FlowState.SUCCESS
        assert detail.owner == f"c2#{c2_token}"
        assert outcome.results is not None
        assert [outcome.results[f"{n}_by"] for n in "abcd"] == ["c1", "c2", "c2", "c2"]

        # What really ran: c1 did a, started b (and may have finished b's sleep after
        # the thaw: a side effect in flight is at-least-once), never c or d.
        log = await flows.read_log(pg_url, run_id)
        assert _rows(log, "c1") in (
            ["a:exec", "a:done", "b:exec"],
            ["a:exec", "a:done", "b:exec", "b:done"],
        )
        assert _rows(log, "c2") == ["b:exec", "b:done", "c:exec", "c:done", "d:exec", "d:done"]

        # The board: consumed once, by c2; nothing left.
        assert await board.jobs() == []
        assert [e["kind"] for e in c2.events() if e.get("job") == job.uuid] == [
            "claimed",
            "started",
            "consumed",
        ]
        assert not c1.events("consumed") and not c1.events("trashed")
        print(
            f"\n[{thaw}] c1 token {c1_token} -> c2 token {c2_token}; c1 after thaw: "
            f"{[(s['error'], s['state']) for s in late]}, events "
            f"{[(e['kind'], e.get('detail')) for e in c1.events() if e['t'] >= thawed_at]}"
        )


async def test_delayed_job_is_not_run_early(
    zk_url: str, pg_url: str, backend: zag.persistence.Backend, run_id: str, workers: Workers
) -> None:
    """A job posted with delay=2 runs no earlier than its ZooKeeper creation time + 2 s."""
    conductor = workers.conductor("c1", zk_url, pg_url)
    await conductor.ready()
    async with zag.jobs.connect(zk_url, backend=backend, **BOARD) as board:
        job = await board.post("later", flows.linear, pg_url, run_id, ["a"], delay=2.0)
        assert job.due_at == pytest.approx(job.posted_at + 2.0)
        # Not claimable yet, not listed as due.
        with pytest.raises(zag.errors.NotYetDue) as caught:
            await board.claim(job, "eager")
        assert 0 < caught.value.due_in <= 2.0
        assert job.uuid not in [j.uuid for j in await board.jobs(include_delayed=False)]

        async with asyncio.timeout(20):
            outcome = await job.wait()
        assert outcome.state == "SUCCESS"
        log = await flows.read_log(pg_url, run_id)
        assert _rows(log) == ["a:exec", "a:done"]
        early = log[0]["at"] - job.posted_at  # PostgreSQL's clock vs ZooKeeper's (one machine)
        print(f"\ndelayed job (delay 2 s) started {early:.3f} s after it was posted")
        # Node times are whole milliseconds: allow 5 ms for the rounding.
        assert early >= 2.0 - 0.005, f"ran {2.0 - early:.3f} s early"
        assert early < 2.0 + 8.0
        claimed = conductor.events("claimed", job.uuid)
        assert len(claimed) == 1
        assert await conductor.stop() == 0


async def test_scheduled_job_keeps_its_store_across_runs(
    zk_url: str, pg_url: str, backend: zag.persistence.Backend, run_id: str, workers: Workers
) -> None:
    """An every-second schedule: 3 runs each see the original store; one next run is pending."""
    payload = {"n": 41, "tags": ["x", "y"], "nested": {"k": "v"}}
    conductor = workers.conductor("c1", zk_url, pg_url)
    await conductor.ready()
    async with zag.jobs.connect(zk_url, backend=backend, **BOARD) as board:
        began = time.monotonic()
        first = await board.post_scheduled(
            "* * * * * *", "tick", flows.echo, pg_url, run_id, store={"payload": payload}
        )
        assert first.schedule == "tick"

        async def three_runs() -> list[dict[str, object]] | None:
            log = await flows.read_log(pg_url, run_id)
            return log if len(log) >= 3 else None

        log = await eventually(three_runs, within=20, interval=0.05, what="3 scheduled runs")
        elapsed = time.monotonic() - began
        assert await conductor.stop() == 0, conductor.output()

        seen = [json.loads(str(r["entry"]).removeprefix("seen:")) for r in log]
        assert all(s == payload for s in seen), seen
        consumed = conductor.events("consumed")
        assert len(consumed) >= 3
        assert len({e["job"] for e in consumed}) == len(consumed)  # each run its own job
        for event in consumed[:3]:
            record = await backend.load_flow(event["flow"])
            assert record.store == {"payload": payload}
            assert event["outcome"] == "SUCCESS"
        # After each run exactly the next one was posted: one pending job, for "tick".
        pending = await board.jobs()
        assert [j.schedule for j in pending] == ["tick"]
        assert (await board.schedules()).keys() == {"tick"}
        print(f"\n3 scheduled runs in {elapsed:.1f} s, each saw {seen[0]}")
        await board.reset_schedule({})
        assert await board.jobs() == []
