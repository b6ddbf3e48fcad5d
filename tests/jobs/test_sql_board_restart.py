"""A SQL board (and its flows) on a PostgreSQL that crashes and comes back.

A private server (tests/crash/conftest.py's PrivatePostgres: `pg_ctl -m
immediate stop` is a crash) holds both the jobs and the flows; a conductor runs
jobs through the crash. Afterwards every job has ended exactly once (one
result each, every flow SUCCESS), none is left on the board, and the board
serves new posts again within a bounded time after the restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from crash.conftest import PrivatePostgres, pg_bindir, private_pg  # noqa: F401 (fixtures)
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from support import eventually

import zag_async as zag
from zag_async.errors import BoardUnavailable

from . import flows
from .conftest import wait_outcome

JOBS = 16


@pytest.fixture
async def server(private_pg: PrivatePostgres) -> AsyncIterator[PrivatePostgres]:  # noqa: F811
    if not private_pg.running():
        await private_pg.start()
    yield private_pg


async def results_per_job(url: str) -> dict[str, int]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT job_uuid, count(*) FROM zag_job_results GROUP BY job_uuid")
            )
            return {str(job): int(n) for job, n in rows}
    finally:
        await engine.dispose()


async def test_board_and_conductor_ride_out_a_postgres_crash(server: PrivatePostgres) -> None:
    url = server.url
    async with (
        zag.connect(url) as backend,
        zag.jobs.connect(url, backend=backend, lease=2.0, poll_interval=0.3) as board,
    ):
        posted = [
            await board.post("busy", flows.busy, f"b{i}", kwargs={"seconds": 0.15})
            for i in range(JOBS)
        ]
        events: list[str] = []
        conductor = zag.Conductor(
            board,
            backend=backend,
            name="c1",
            max_jobs=3,
            listeners=[lambda event: events.append(event.kind)],
        )
        running = asyncio.create_task(conductor.run())
        try:
            await eventually(
                lambda: flows.LOG.count("b5:work") > 0, within=20, what="a few jobs done"
            )
            await server.stop()  # crash, with jobs in flight
            await asyncio.sleep(3.0)  # longer than a lease: the claims are lost
            await server.start()
            restarted = time.monotonic()

            async def post_again() -> zag.jobs.Job | None:
                try:
                    return await board.post("busy", flows.busy, "late", kwargs={"seconds": 0})
                except BoardUnavailable:
                    return None

            late = await eventually(post_again, within=15, interval=0.2, what="posting again")
            posted.append(late)
            outcomes = [await wait_outcome(job, within=40) for job in posted]
            recovered = time.monotonic() - restarted
        finally:
            conductor.stop()
            async with asyncio.timeout(20):
                await running

        assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
        assert await board.jobs() == []
        for job in posted:
            assert (await backend.load_flow(job.flow_id)).state is zag.FlowState.SUCCESS
    counts = await results_per_job(url)
    assert counts == {job.uuid: 1 for job in posted}  # every job ended, and once
    print(
        f"all {len(posted)} jobs ended {recovered:.1f} s after the restart; conductor events: "
        f"{ {kind: events.count(kind) for kind in sorted(set(events))} }"
    )
    assert recovered < 30
