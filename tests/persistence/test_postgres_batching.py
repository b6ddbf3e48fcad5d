"""Group commit on PostgreSQL (`PostgresBackend`), on the real server.

Concurrent writes of many flows share one statement and one commit; each
caller still gets its own outcome (a stale flow fails alone), a lone write
goes out at once, a connection killed mid-batch fails the batch's callers with
`StorageUnavailable` and the engine's retry lands, and the pool bounds the
sessions whatever the number of flows.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from support import eventually

import zag_async as zag
from zag_async.errors import ConcurrentUpdate, StorageError, StorageUnavailable
from zag_async.persistence.postgres import PostgresBackend

from .conftest import _empty_pg_tables

pytestmark = pytest.mark.services


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


def _db(url: str) -> str:
    return url.rsplit("/", 1)[1]


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[PostgresBackend]:
    async with zag.connect(pg_url) as backend:
        assert isinstance(backend, PostgresBackend)
        await _empty_pg_tables(pg_url)
        yield backend


@pytest.fixture
async def admin(pg_url: str) -> AsyncIterator[Any]:
    """A plain asyncpg session on the test database (not from the backend's pool)."""
    conn = await asyncpg.connect(_dsn(pg_url), timeout=5)
    try:
        yield conn
    finally:
        await conn.close()


def _flow(atoms: int = 2) -> zag.FlowDetail:
    detail = zag.FlowDetail("batched")
    for i in range(atoms):
        detail.atoms[f"a{i}"] = zag.AtomDetail(f"a{i}", kind="task", position=i)
    return detail


async def _save(backend: PostgresBackend, flow: zag.FlowDetail) -> None:
    await backend.save(flow, list(flow.atoms.values()))


def three_atom_flow() -> zag.Flow:
    @zag.task(name="a", provides="x")
    async def a() -> int:
        return 1

    @zag.task(name="b", provides="y")
    async def b(x: int) -> int:
        return x + 1

    @zag.task(name="c", provides="z")
    async def c(y: int) -> int:
        return y + 1

    return zag.linear("three", a, b, c)


async def test_concurrent_writes_of_many_flows_share_commits(pg: PostgresBackend) -> None:
    flows = [_flow() for _ in range(300)]
    commits = pg.commits
    await asyncio.gather(*(_save(pg, f) for f in flows))  # inserts
    for flow in flows:
        flow.state = zag.FlowState.RUNNING
        flow.atoms["a0"].state = zag.AtomState.SUCCESS
        flow.atoms["a0"].result = flow.uuid
    await asyncio.gather(*(_save(pg, f) for f in flows))  # conditional updates
    assert pg.commits - commits <= 4, f"{pg.commits - commits} commits for 600 writes"
    for flow in flows[::37]:
        stored = await pg.load_flow(flow.uuid)
        assert stored.version == 2 and stored.state is zag.FlowState.RUNNING
        assert stored.atoms["a0"].result == flow.uuid
        assert stored.atoms["a1"].state is zag.AtomState.PENDING


async def test_a_stale_flow_in_a_batch_fails_alone(pg: PostgresBackend, admin: Any) -> None:
    flows = [_flow() for _ in range(50)]
    await asyncio.gather(*(_save(pg, f) for f in flows))
    stale = flows[17]
    await admin.execute("UPDATE zag_flows SET version = version + 1 WHERE uuid = $1", stale.uuid)
    for flow in flows:
        flow.atoms["a1"].result = "second"
    commits = pg.commits
    outcomes = await asyncio.gather(*(_save(pg, f) for f in flows), return_exceptions=True)
    assert pg.commits - commits == 1  # one batch carried all fifty
    failed = [i for i, o in enumerate(outcomes) if o is not None]
    assert failed == [17], outcomes[:3]
    assert isinstance(outcomes[17], ConcurrentUpdate)
    assert (await pg.load_flow(stale.uuid)).atoms["a1"].result is None  # nothing of it landed
    assert (await pg.load_flow(flows[18].uuid)).atoms["a1"].result == "second"


async def test_a_write_the_database_refuses_fails_alone(pg: PostgresBackend) -> None:
    flows = [_flow() for _ in range(20)]
    flows[5].logbook = "x" * 40  # longer than the column: the server refuses the statement
    flows[9].logbook = 12345  # type: ignore[assignment]  # asyncpg cannot even send it
    outcomes = await asyncio.gather(*(_save(pg, f) for f in flows), return_exceptions=True)
    assert [i for i, o in enumerate(outcomes) if o is not None] == [5, 9]
    assert type(outcomes[5]) is StorageError  # not retried as unavailable, nor stale
    assert type(outcomes[9]) is StorageError
    refused = {flows[5].uuid, flows[9].uuid}
    assert {s.uuid for s in await pg.list_flows()} == {f.uuid for f in flows} - refused


async def test_a_lone_write_goes_out_at_once(pg: PostgresBackend) -> None:
    flow = _flow()
    await _save(pg, flow)
    took = []
    for _ in range(30):
        commits, writes = pg.commits, pg.writes
        started = time.perf_counter()
        await _save(pg, flow)
        took.append(time.perf_counter() - started)
        assert (pg.commits - commits, pg.writes - writes) == (1, 1)
    # No linger timer: a lone write costs one round trip (well under a millisecond
    # unloaded); the bound is generous for a busy CI machine.
    assert statistics.median(took) < 0.05, took


async def test_a_write_and_a_renewal_of_one_flow_never_share_a_batch(
    pg: PostgresBackend,
) -> None:
    flow = _flow()
    lease = pg.lease_for()
    flow.lease_owner, flow.lease_term = lease.owner, lease.seconds
    await _save(pg, flow)
    flow.lease_term = None
    commits = pg.commits
    renewed, _ = await asyncio.gather(pg.renew_lease(flow.uuid, lease), _save(pg, flow))
    assert renewed is True
    assert pg.commits - commits == 2
    assert (await pg.load_flow(flow.uuid)).version == 2
    assert await pg.renew_lease(flow.uuid, pg.lease_for()) is False  # someone else's


async def _writer_waiting_on_lock(admin: Any, db: str) -> int:
    async def waiting() -> int | None:
        pid: int | None = await admin.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
            db,
        )
        return pid

    return int(await eventually(waiting, within=10, what="the writer blocked on the lock"))


async def test_a_connection_killed_mid_batch_fails_the_batch_as_unavailable(
    pg: PostgresBackend, admin: Any, pg_url: str
) -> None:
    flows = [_flow() for _ in range(20)]
    await asyncio.gather(*(_save(pg, f) for f in flows))
    locker = await asyncpg.connect(_dsn(pg_url), timeout=5)
    try:
        tx = locker.transaction()
        await tx.start()
        await locker.execute("LOCK TABLE zag_flows IN EXCLUSIVE MODE")
        saves = [asyncio.ensure_future(_save(pg, f)) for f in flows]
        pid = await _writer_waiting_on_lock(admin, _db(pg_url))
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
        outcomes = await asyncio.gather(*saves, return_exceptions=True)
        await tx.rollback()
    finally:
        await locker.close()
    assert all(isinstance(o, StorageUnavailable) for o in outcomes), outcomes[:3]
    assert {(await pg.load_flow_row(f.uuid))["version"] for f in flows} == {1}
    await asyncio.gather(*(_save(pg, f) for f in flows))  # the pool has a fresh connection
    assert {(await pg.load_flow_row(f.uuid))["version"] for f in flows} == {2}


async def test_engines_retry_a_killed_batch_and_land_once(
    pg: PostgresBackend, admin: Any, pg_url: str
) -> None:
    flow = three_atom_flow()
    locker = await asyncpg.connect(_dsn(pg_url), timeout=5)
    try:
        tx = locker.transaction()
        await tx.start()
        await locker.execute("LOCK TABLE zag_flows IN EXCLUSIVE MODE")
        engines = [zag.Engine(flow, backend=pg) for _ in range(20)]
        runs = [asyncio.ensure_future(e.run()) for e in engines]
        pid = await _writer_waiting_on_lock(admin, _db(pg_url))
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
        await tx.rollback()  # the engines' retries (after 0.2 s) find the table free
    finally:
        await locker.close()
    results = await asyncio.gather(*runs)
    assert all(r["z"] == 3 for r in results)
    for engine in engines:
        stored = await pg.load_flow(engine.flow_id)
        assert stored.state is zag.FlowState.SUCCESS
        assert stored.version == engine.storage.flow.version  # each write landed exactly once
        assert {a.state for a in stored.atoms.values()} == {zag.AtomState.SUCCESS}


async def test_cancelled_callers_do_not_stop_the_others(pg: PostgresBackend) -> None:
    flows = [_flow() for _ in range(40)]
    saves = [asyncio.ensure_future(_save(pg, f)) for f in flows]
    await asyncio.sleep(0)  # all queued; the writer has not run yet
    for task in saves[::2]:
        task.cancel()
    outcomes = await asyncio.gather(*saves, return_exceptions=True)
    assert all(o is None for o in outcomes[1::2])
    assert all(isinstance(o, asyncio.CancelledError) for o in outcomes[::2])
    await _save(pg, _flow())  # the writer goes on
    stored = {s.uuid for s in await pg.list_flows()}
    assert {f.uuid for f in flows[1::2]} <= stored


async def test_close_finishes_queued_writes(pg_url: str) -> None:
    backend = zag.connect(pg_url)
    await backend.open()
    flows = [_flow() for _ in range(100)]
    saves = [asyncio.ensure_future(_save(backend, f)) for f in flows]  # type: ignore[arg-type]
    await asyncio.sleep(0)
    await backend.aclose()
    assert await asyncio.gather(*saves) == [None] * 100
    async with zag.connect(pg_url) as again:
        assert {f.uuid for f in flows} <= {s.uuid for s in await again.list_flows()}
    with pytest.raises(StorageError, match="closed"):
        await _save(backend, _flow())  # type: ignore[arg-type]


async def test_close_does_not_hang_on_a_stuck_write(
    pg_url: str, admin: Any, pg: PostgresBackend
) -> None:
    backend = zag.connect(pg_url, connect_timeout=0.5)
    await backend.open()
    locker = await asyncpg.connect(_dsn(pg_url), timeout=5)
    try:
        tx = locker.transaction()
        await tx.start()
        await locker.execute("LOCK TABLE zag_flows IN EXCLUSIVE MODE")
        save = asyncio.ensure_future(_save(backend, _flow()))  # type: ignore[arg-type]
        await _writer_waiting_on_lock(admin, _db(pg_url))
        started = time.monotonic()
        await backend.aclose()
        assert time.monotonic() - started < 10
        with pytest.raises(StorageUnavailable):
            await save
        await tx.rollback()
    finally:
        await locker.close()


@pytest.mark.timeout(180)
async def test_a_thousand_flows_stay_within_the_pool(pg_url: str, admin: Any) -> None:
    db = _db(pg_url)
    flow = three_atom_flow()
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            count = await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> "
                "pg_backend_pid()",
                db,
            )
            peak = max(peak, int(count))
            await asyncio.sleep(0.005)

    async with zag.connect(pg_url, pool_size=3) as backend:
        assert isinstance(backend, PostgresBackend)
        commits = backend.commits
        watcher = asyncio.ensure_future(watch())
        try:
            engines = [zag.Engine(flow, backend=backend) for _ in range(1000)]
            async with asyncio.TaskGroup() as tg:
                for engine in engines:
                    tg.create_task(engine.run())
        finally:
            watcher.cancel()
        per_atom = (backend.commits - commits) / 3000
    assert all(e.state is zag.FlowState.SUCCESS for e in engines)
    assert peak <= 3, f"{peak} sessions for a pool of 3"
    assert per_atom <= 0.2, f"{per_atom:.3f} commits per atom"
