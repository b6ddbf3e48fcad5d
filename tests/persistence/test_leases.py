"""Flow leases on every backend: one live engine per stored flow, and takeover after it stops.

Each test runs on memory://, SQLite and PostgreSQL (see conftest.py). Leases
are short here (a fraction of a second) so expiry is quick to wait out.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest
from support import eventually

import zag_async as zag
from zag_async.errors import ConcurrentUpdate, ConfigurationError, FlowBusy
from zag_async.persistence import Backend
from zag_async.persistence.leases import Lease, engine_name
from zag_async.states import FlowState as F

from . import flows


async def held_at(engine: zag.Engine, key: str) -> asyncio.Future[Any]:
    """Start `engine.run()` with atom `key` held mid-call; returns the run."""
    flows.HOLD_EXEC.add(key)
    run = asyncio.ensure_future(engine.run())
    await asyncio.wait_for(flows.started(key).wait(), 20)
    return run


async def lease_row(backend: Backend, flow_id: str) -> tuple[str | None, float | None]:
    row = await backend.load_flow_row(flow_id)
    return row["lease_owner"], row["lease_expires"]


async def test_a_second_engine_gets_flow_busy_and_nothing_runs_twice(backend: Backend) -> None:
    first = zag.Engine.from_factory(flows.linear_steps, args=(3,), backend=backend)
    run = await held_at(first, "s1")
    owner = first.storage.lease.owner if first.storage.lease else None

    for attempt in (
        lambda: zag.Engine.load(first.flow_id, backend=backend),
        lambda: zag.resume(first.flow_id, backend=backend),
        lambda: zag.Engine.load(first.flow_id, backend=backend, owner="someone-else"),
    ):
        with pytest.raises(FlowBusy) as busy:
            await attempt()
        assert busy.value.owner == owner
        assert 0 < busy.value.expires_in <= 30
        assert f"is being run by {owner}; its lease expires at " in str(busy.value)
        assert f"(in {round(busy.value.expires_in)} s)" in str(busy.value)

    flows.release("s1")
    assert (await run)["s2"] == "s2-out"
    assert [flows.count(f"s{i}") for i in range(3)] == [1, 1, 1]
    assert await lease_row(backend, first.flow_id) == (None, None)  # released at the end
    done = await zag.Engine.load(first.flow_id, backend=backend)
    assert done.state is F.SUCCESS


async def test_a_stopped_owner_s_lease_expires_and_a_paused_one_is_fenced(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = zag.Engine.from_factory(flows.linear_steps, args=(3,), backend=backend, lease=0.3)

    async def frozen(flow_id: str, lease: Lease) -> bool:
        return True  # as if this process were paused: the stored lease is not extended

    monkeypatch.setattr(backend, "renew_lease", frozen)
    run = await held_at(first, "s1")
    with pytest.raises(FlowBusy):
        await zag.Engine.load(first.flow_id, backend=backend)

    second = await eventually(
        lambda: _load_or_none(backend, first.flow_id), within=5, what="the lease to lapse"
    )
    monkeypatch.undo()
    flows.HOLD_EXEC.clear()
    flows.release("s1")  # the paused owner wakes up; its next write is refused
    with pytest.raises(ConcurrentUpdate):
        await run
    assert flows.count("s2") == 0

    await second.run()
    assert [flows.count(f"s{i}") for i in range(3)] == [1, 2, 1]  # s1 was in flight
    stored = await backend.load_flow(first.flow_id)
    assert stored.state is F.SUCCESS and stored.lease_owner is None


async def _load_or_none(backend: Backend, flow_id: str) -> zag.Engine | None:
    try:
        return await zag.Engine.load(flow_id, backend=backend)
    except FlowBusy:
        return None


async def test_the_heartbeat_keeps_a_long_atom_s_lease(backend: Backend) -> None:
    engine = zag.Engine.from_factory(flows.linear_steps, args=(2,), backend=backend, lease=0.5)
    run = await held_at(engine, "s0")
    _, first_expiry = await lease_row(backend, engine.flow_id)
    deadline = time.monotonic() + 1.5  # three terms
    while time.monotonic() < deadline:
        with pytest.raises(FlowBusy):
            await zag.Engine.load(engine.flow_id, backend=backend)
        await asyncio.sleep(0.1)
    owner, expiry = await lease_row(backend, engine.flow_id)
    assert engine.storage.lease is not None and owner == engine.storage.lease.owner
    assert first_expiry is not None and expiry is not None and expiry > first_expiry + 0.8
    flows.release("s0")
    await run
    assert [flows.count("s0"), flows.count("s1")] == [1, 1]


async def test_the_same_owner_takes_its_flow_back_once_its_engine_stopped(
    backend: Backend,
) -> None:
    """A stable owner (a service's name) gets its flow back at once from an earlier
    engine of its own, but not while that engine still runs in this process: two
    engines of one service never run a flow together."""
    before = zag.Engine.from_factory(flows.linear_steps, args=(3,), backend=backend, owner="svc-1")
    run = await held_at(before, "s1")
    assert (await backend.load_flow(before.flow_id)).owner == "svc-1"
    with pytest.raises(FlowBusy):
        await zag.Engine.load(before.flow_id, backend=backend, owner="svc-1")

    run.cancel()  # the earlier engine stops without releasing (as a crash would)
    with contextlib.suppress(asyncio.CancelledError):
        await run
    again = await zag.Engine.load(before.flow_id, backend=backend, owner="svc-1")
    flows.HOLD_EXEC.clear()
    flows.release("s1")
    await again.run()
    assert [flows.count(f"s{i}") for i in range(3)] == [1, 2, 1]


async def test_a_lease_taken_over_stops_the_run(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    first = zag.Engine.from_factory(flows.linear_steps, args=(3,), backend=backend, lease=0.3)
    run = await held_at(first, "s1")
    await zag.Engine.load(first.flow_id, backend=backend, owner="board", takeover=True)
    # The next renewal finds the lease gone and suspends the run: nothing new starts.
    await eventually(lambda: "lease was taken over" in caplog.text, within=5, what="a renewal")
    flows.release("s1")
    with pytest.raises(ConcurrentUpdate):
        await run
    assert flows.count("s2") == 0
    assert str((await lease_row(backend, first.flow_id))[0]).startswith("board@")


async def test_a_run_that_ended_leaves_its_flow_free(backend: Backend) -> None:
    engine = zag.Engine.from_factory(flows.linear_steps, args=(3,), backend=backend)
    run = await held_at(engine, "s1")
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    stored = await backend.load_flow(engine.flow_id)
    assert stored.state is F.SUSPENDED and stored.lease_owner is None
    flows.HOLD_EXEC.clear()
    await zag.resume(engine.flow_id, backend=backend)
    assert [flows.count(f"s{i}") for i in range(3)] == [1, 2, 1]


async def test_a_lease_left_by_a_dead_process_of_this_host_is_free_at_once(
    backend: Backend,
) -> None:
    engine = zag.Engine.from_factory(flows.linear_steps, args=(2,), backend=backend, lease=60)
    flows.HOLD_EXEC.add("s0")
    run = asyncio.ensure_future(engine.run())
    await asyncio.wait_for(flows.started("s0").wait(), 20)
    # Hand the lease to a process of this machine that has exited since.
    gone = await asyncio.create_subprocess_exec("true")
    await gone.wait()  # reaped: its PID names no process now
    host, _, token = engine_name().split(":")
    ghost = backend.lease_for()
    ghost.owner = f"{host}:{gone.pid}:{token}"
    await backend.take_lease(await backend.load_flow(engine.flow_id), ghost, takeover=True)
    run.cancel()
    with pytest.raises((asyncio.CancelledError, ConcurrentUpdate)):
        await run
    assert (await lease_row(backend, engine.flow_id))[0] == ghost.owner

    flows.HOLD_EXEC.clear()
    resumed = await zag.Engine.load(engine.flow_id, backend=backend)  # no wait for 60 s
    await resumed.run()
    assert (await backend.load_flow(engine.flow_id)).state is F.SUCCESS


async def test_engines_without_a_backend_hold_no_lease() -> None:
    engine = zag.Engine(flows.linear_steps(2))
    assert engine.storage.lease is None
    await engine.run()
    assert engine.storage.flow.lease_owner is None


async def test_the_lease_term_is_configurable(tmp_path: Any) -> None:
    async with zag.connect(f"sqlite+aiosqlite:///{tmp_path / 'l.db'}", lease=5) as backend:
        assert zag.Engine(flows.linear_steps(1), backend=backend).storage.lease.seconds == 5  # type: ignore[union-attr]
        engine = zag.Engine(flows.linear_steps(1), backend=backend, lease=2)
        assert engine.storage.lease is not None and engine.storage.lease.seconds == 2
        assert engine.storage.lease.renew_every == pytest.approx(2 / 3)
    async with zag.connect("memory://", lease=7) as memory:
        assert memory.lease_seconds == 7
    with pytest.raises(ConfigurationError, match="lease"):
        zag.connect("memory://", lease=0)
    with pytest.raises(ConfigurationError, match="lease"):
        zag.Engine(flows.linear_steps(1), backend=memory, lease=-1)


async def test_a_version_1_database_gets_the_lease_columns(tmp_path: Any) -> None:
    from sqlalchemy import create_engine

    from zag_async.persistence import schema

    path = tmp_path / "old.db"
    sync = create_engine(f"sqlite:///{path}")
    with sync.begin() as conn:  # the schema as zag-async 1 left it, with one flow
        schema.schema_version.create(conn)
        conn.execute(schema.schema_version.insert().values(version=1))
        schema.MIGRATIONS[0](conn)
        for column in ("lease_owner", "lease_expires"):
            conn.exec_driver_sql(f"ALTER TABLE zag_flows DROP COLUMN {column}")
        conn.exec_driver_sql(
            "INSERT INTO zag_flows (uuid, name, state, store, meta, created_at, updated_at, "
            "version) VALUES ('f1', 'old', 'SUSPENDED', '{}', '{}', 1, 1, 3)"
        )
    sync.dispose()

    async with zag.connect(f"sqlite+aiosqlite:///{path}") as backend:
        assert await backend.upgrade() == schema.SCHEMA_VERSION >= 2
        detail = await backend.load_flow("f1")
        assert (detail.version, detail.lease_owner) == (3, None)
        await backend.take_lease(detail, Lease("me", 5))
        assert str((await lease_row(backend, "f1"))[0]).startswith("me@")
        assert detail.version == 4


async def test_a_busy_flow_is_busy_even_to_a_stale_reader(backend: Backend) -> None:
    first = zag.Engine.from_factory(flows.linear_steps, args=(2,), backend=backend)
    run = await held_at(first, "s0")
    stale = await backend.load_flow(first.flow_id)
    stale.version -= 1  # the running engine wrote again since this was read
    with pytest.raises(FlowBusy):
        await backend.take_lease(stale, backend.lease_for("late"))
    flows.release("s0")
    await run
    with pytest.raises(ConcurrentUpdate):  # free now, but still stale
        await backend.take_lease(stale, backend.lease_for("late"))


async def test_a_hung_renewal_does_not_hold_up_the_end_of_the_run(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def hung(flow_id: str, lease: Lease) -> bool:
        await asyncio.Event().wait()  # a database that never answers
        return True

    monkeypatch.setattr(backend, "renew_lease", hung)
    engine = zag.Engine.from_factory(flows.linear_steps, args=(2,), backend=backend, lease=3)
    run = await held_at(engine, "s0")
    await asyncio.sleep(1.2)  # the first renewal (at 1 s) hangs; it may for a beat (1 s)
    flows.release("s0")
    async with asyncio.timeout(0.5):  # the run ends without waiting for it
        await run
    assert engine.state is F.SUCCESS


async def test_a_lease_that_lapses_between_the_take_and_its_check_is_taken() -> None:
    """A take's update saw the lease live, its check (a second statement, a later clock)
    found it lapsed: neither busy nor stale, so the take runs again and succeeds."""
    from zag_async.persistence.leases import Holder

    class Lapsing(zag.persistence.MemoryBackend):
        races = 1

        async def _take(
            self,
            uuid: str,
            owner: str,
            expected: int,
            seconds: float,
            *,
            claim: str | None,
            steal: bool | str,
        ) -> Holder | None:
            if self.races:
                self.races -= 1
                return self.refused_take(
                    uuid, expected, owner, steal, expected, "gone-owner", 99.0, 100.0
                )
            return await super()._take(
                uuid, owner, expected, seconds, claim=claim, steal=steal
            )

    async with Lapsing("memory://lapsing") as backend:
        first = zag.Engine(flows.linear_steps(1), backend=backend)
        await first.run()
        detail = await backend.load_flow(first.flow_id)
        lease = backend.lease_for()
        await backend.take_lease(detail, lease)
        assert backend.races == 0 and lease.held
        assert (await backend.load_flow(first.flow_id)).lease_owner == lease.owner
