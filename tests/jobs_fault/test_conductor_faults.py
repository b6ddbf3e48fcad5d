"""Conductors dying and racing: kill -9 mid-flow, and four conductors over 1,000 jobs.

Conductors run in worker.py subprocesses against a private ZooKeeper and the
shared PostgreSQL; tasks write to the side-effect table (flows.py), so what
really ran is checked row by row, independently of what the engine recorded.
"""

from __future__ import annotations

import asyncio
import collections
import time

import pytest
from support import eventually

import zag_async as zag

from . import flows
from .conftest import CALL, SESSION, Workers, all_events


async def test_kill9_mid_flow_next_conductor_takes_over(
    zk_url: str, pg_url: str, backend: zag.persistence.Backend, run_id: str, workers: Workers
) -> None:
    """c1 is SIGKILLed inside task b; c2 claims within session timeout + 2 s and finishes.

    a (done by c1) is not re-run: its result comes from durable state; b, the
    atom running at the kill, runs again exactly once; c runs once, in c2.
    """
    async with zag.jobs.connect(
        zk_url, backend=backend, session_timeout=SESSION, call_timeout=CALL
    ) as board:
        job = await board.post(
            "kill9",
            flows.linear,
            pg_url,
            run_id,
            ["a", "b", "c"],
            kwargs={"sleeps": {"b": [3600]}},
        )
        c1 = workers.conductor("c1", zk_url, pg_url)

        async def b_running() -> bool:
            return any(r["entry"] == "b:exec" for r in await flows.read_log(pg_url, run_id))

        await eventually(b_running, within=30, what="c1 running task b")
        c2 = workers.conductor("c2", zk_url, pg_url)
        await c2.ready()
        assert await board.find_owner(job) == "c1"
        killed_at = c1.kill()

        claimed = await eventually(
            lambda: c2.events("claimed", job.uuid), within=SESSION + 10, what="c2 claims the job"
        )
        takeover = claimed[0]["t"] - killed_at
        print(f"\ntakeover after kill -9: {takeover:.2f} s (session timeout {SESSION} s)")
        assert takeover < SESSION + 2.0, f"took {takeover:.2f} s to take over"

        async with asyncio.timeout(30):
            outcome = await job.wait()
        assert outcome.state == "SUCCESS", outcome
        # a's result was loaded from the record c1 committed; b and c ran in c2.
        assert outcome.results is not None
        assert (outcome.results["a_by"], outcome.results["b_by"], outcome.results["c_by"]) == (
            "c1",
            "c2",
            "c2",
        )

        log = [(r["entry"], r["who"]) for r in await flows.read_log(pg_url, run_id)]
        assert log == [
            ("a:exec", "c1"),
            ("a:done", "c1"),
            ("b:exec", "c1"),
            ("b:exec", "c2"),
            ("b:done", "c2"),
            ("c:exec", "c2"),
            ("c:done", "c2"),
        ]
        detail = await backend.load_flow(job.flow_id)
        assert detail.state is zag.FlowState.SUCCESS
        assert detail.owner == f"c2#{claimed[0]['token']}"
        assert {n: a.state for n, a in detail.atoms.items()} == dict.fromkeys(
            "abc", zag.AtomState.SUCCESS
        )
        assert await board.jobs() == []
        assert [e["kind"] for e in c2.events() if e.get("job") == job.uuid] == [
            "claimed",
            "started",
            "consumed",
        ]
        assert [e["kind"] for e in c1.events() if e.get("job") == job.uuid] == [
            "claimed",
            "started",
        ]
        assert await c2.stop() == 0


@pytest.mark.timeout(120)
async def test_four_conductors_race_over_1000_jobs(
    zk_url: str, pg_url: str, backend: zag.persistence.Backend, run_id: str, workers: Workers
) -> None:
    """Every one of 1,000 jobs completes exactly once with 4 conductors (max_jobs=8) racing."""
    total = 1000
    async with zag.jobs.connect(
        zk_url, backend=backend, session_timeout=SESSION, call_timeout=CALL
    ) as board:
        began = time.monotonic()
        limit = asyncio.Semaphore(20)

        async def post(n: int) -> zag.jobs.Job:
            async with limit:
                return await board.post(f"job-{n}", flows.single, pg_url, run_id, str(n))

        jobs = await asyncio.gather(*(post(n) for n in range(total)))
        posted = time.monotonic() - began

        spawned = time.time()
        conductors = [workers.conductor(f"c{i}", zk_url, pg_url, max_jobs=8) for i in range(1, 5)]
        for c in conductors:
            await c.ready(within=30)
        first_ready = min(c.events("ready")[0]["t"] for c in conductors)

        async def done() -> bool:
            return await flows.count_log(pg_url, run_id) >= total and not await board.jobs()

        await eventually(done, within=120, interval=0.1, what=f"{total} jobs completed")
        finished = time.time()
        consumed = all_events(*conductors, kind="consumed")
        last = max(e["t"] for e in consumed) if consumed else finished
        for c in conductors:
            assert await c.stop() == 0, c.output()

        rows = await flows.read_log(pg_url, run_id)
        counts = collections.Counter(r["entry"] for r in rows)
        doubled = {entry: n for entry, n in counts.items() if n != 1}
        assert not doubled, f"jobs whose task ran more than once: {doubled}"
        assert sorted(counts, key=int) == [str(n) for n in range(total)]

        assert await board.jobs() == []
        outcomes = await asyncio.gather(*(board.outcome(j.uuid) for j in jobs))
        assert collections.Counter(o.state if o else None for o in outcomes) == {"SUCCESS": total}
        per_job = collections.Counter(e["job"] for e in consumed)
        assert len(per_job) == total and set(per_job.values()) == {1}
        share = collections.Counter(e["who"] for e in rows)
        wall = last - first_ready
        print(
            f"\n{total} jobs: posted in {posted:.1f} s ({total / posted:.0f}/s); 4 conductors "
            f"x max_jobs=8 consumed them in {wall:.1f} s after the first was ready "
            f"({total / wall:.0f} jobs/s; {finished - spawned:.1f} s from spawning them); "
            f"share {dict(sorted(share.items()))}"
        )
