"""Database outages mid-flow, against a private PostgreSQL the test stops and restarts.

The flow is six ~100 ms atoms; one (the fourth unless said otherwise) waits
at a gate while the test kills the server (`pg_ctl -m immediate stop`), so
the outage always starts while an atom runs and the next commit is the first
to fail.

- Long outage: the engine retries the commit per zag.WritePolicy, then run()
  raises StorageUnavailable within a bounded time and the flow is SUSPENDED in
  memory; nothing new was started. After a restart a fresh engine
  (Engine.load) finishes the flow; atoms recorded SUCCESS before the outage do
  not run again, the one whose result could not be written does (at-least-once).
- The same engine's run() again after the restart goes on from memory.
- An outage at the final commit: nothing claimed that was not written.
- Parallel atoms finishing while a commit retries: still a bounded failure.
- Short outage: the server is back within the retry window; run() completes
  without raising and no atom runs twice.
- A server still recovering is unavailable (retried), not broken.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from support import eventually

import zag_async as zag

from .conftest import PrivatePostgres

NAMES = [f"s{i}" for i in range(6)]
GIVE_UP_FAST = zag.WritePolicy(attempts=2, delay=0.05)


class Gate:
    """What the atoms share with the test: a call log, and a gate in atom `at`
    (where the server goes away)."""

    def __init__(self, at: str = "s3") -> None:
        self.at = at
        self.calls: list[str] = []
        self.reached = asyncio.Event()
        self.opened = asyncio.Event()


class Work(zag.Task):
    def __init__(self, name: str, gate: Gate) -> None:
        self.gate = gate
        super().__init__(name=name, provides=name)

    async def execute(self) -> str:
        self.gate.calls.append(self.name)
        if self.name == self.gate.at and not self.gate.opened.is_set():
            self.gate.reached.set()
            await self.gate.opened.wait()
        await asyncio.sleep(0.1)
        return self.name


def build(gate: Gate) -> zag.Flow:
    return zag.linear("outage", *(Work(n, gate) for n in NAMES))


class Saves:
    """Wraps backend.save() (one call per commit attempt) to record each outcome."""

    def __init__(self, backend: zag.persistence.Backend) -> None:
        self.outcomes: list[str] = []
        save: Callable[..., Awaitable[None]] = backend.save

        async def counted(*args: Any, **kwargs: Any) -> None:
            try:
                await save(*args, **kwargs)
            except Exception as exc:
                self.outcomes.append(type(exc).__name__)
                raise
            self.outcomes.append("ok")

        backend.save = counted  # type: ignore[method-assign]


async def stored_states(backend: zag.persistence.Backend, flow_id: str) -> dict[str, str]:
    detail = await backend.load_flow(flow_id)
    return {"flow": str(detail.state)} | {n: str(a.state) for n, a in detail.atoms.items()}


async def run_into_outage(
    engine: zag.Engine, gate: Gate, server: PrivatePostgres
) -> tuple[zag.errors.StorageUnavailable, float]:
    """Run until the gated atom, kill the server, let the run fail; (error, seconds to fail)."""
    runner = asyncio.ensure_future(engine.run())
    try:
        async with asyncio.timeout(30):
            await gate.reached.wait()
        await server.stop()
        stopped = time.monotonic()
        gate.opened.set()
        with pytest.raises(zag.errors.StorageUnavailable) as caught:
            async with asyncio.timeout(30):
                await runner
        return caught.value, time.monotonic() - stopped
    finally:
        runner.cancel()


@pytest.fixture
async def server(private_pg: PrivatePostgres) -> PrivatePostgres:
    """The private server, up (an earlier test may have left it stopped)."""
    if not private_pg.running():
        await private_pg.start()
    return private_pg


async def test_long_outage_suspends_then_a_fresh_engine_finishes(server: PrivatePostgres) -> None:
    gate = Gate()
    async with zag.connect(server.url) as backend:
        engine = zag.Engine(build(gate), backend=backend)
        policy = engine.storage.policy
        assert policy == zag.WritePolicy()  # the default: 5 attempts, ~2.4 s of backoff
        saves = Saves(backend)
        error, elapsed = await run_into_outage(engine, gate, server)
        assert elapsed < 15, f"StorageUnavailable took {elapsed:.1f} s"
        assert "outage" in str(error) and engine.flow_id in str(error)
        assert engine.state is zag.FlowState.SUSPENDED
        # Exactly the policy's attempts at the failing commit, then it gave up.
        assert saves.outcomes == ["ok"] * 4 + ["StorageUnavailable"] * policy.attempts
        # Nothing new started without being recorded first.
        assert gate.calls == NAMES[:4]

        await server.start()
        assert await stored_states(backend, engine.flow_id) == {
            "flow": "RUNNING",
            "s0": "SUCCESS",
            "s1": "SUCCESS",
            "s2": "SUCCESS",
            "s3": "RUNNING",  # its result never reached the database
            "s4": "PENDING",
            "s5": "PENDING",
        }
        gate.calls.clear()
        fresh = await zag.Engine.load(engine.flow_id, backend=backend, flow=build(gate))
        async with asyncio.timeout(30):
            results = await fresh.run()
        assert fresh.state is zag.FlowState.SUCCESS
        assert {n: results[n] for n in NAMES} == {n: n for n in NAMES}
        # s0-s2 were recorded SUCCESS before the outage: never run again; s3 is
        # at-least-once (it ran, but its result was never written).
        assert gate.calls == ["s3", "s4", "s5"]
        assert set((await stored_states(backend, engine.flow_id)).values()) == {"SUCCESS"}


async def test_same_engine_runs_on_after_an_outage(server: PrivatePostgres) -> None:
    gate = Gate()
    async with zag.connect(server.url) as backend:
        engine = zag.Engine(build(gate), backend=backend, write_policy=GIVE_UP_FAST)
        await run_into_outage(engine, gate, server)
        assert engine.state is zag.FlowState.SUSPENDED
        await server.start()
        gate.calls.clear()
        async with asyncio.timeout(30):
            await engine.run()
        assert engine.state is zag.FlowState.SUCCESS
        # s3's result, held in memory through the outage, is written now: not re-run.
        assert gate.calls == ["s4", "s5"]
        assert set((await stored_states(backend, engine.flow_id)).values()) == {"SUCCESS"}


async def test_outage_at_the_final_commit(server: PrivatePostgres) -> None:
    gate = Gate(at="s5")
    async with zag.connect(server.url) as backend:
        engine = zag.Engine(build(gate), backend=backend, write_policy=GIVE_UP_FAST)
        await run_into_outage(engine, gate, server)
        await server.start()
        stored = await stored_states(backend, engine.flow_id)
        assert stored["flow"] == "RUNNING" and stored["s5"] == "RUNNING"
        # Claim nothing that was not written ...
        assert engine.state is zag.FlowState.SUSPENDED
        # ... and a second run() writes the outcome it holds.
        async with asyncio.timeout(30):
            await engine.run()
        assert set((await stored_states(backend, engine.flow_id)).values()) == {"SUCCESS"}
        assert gate.calls == NAMES


async def test_short_outage_is_ridden_out(server: PrivatePostgres) -> None:
    gate = Gate()
    async with zag.connect(server.url) as backend:
        # A window of ~14 s, so that the restart below always lands inside it.
        policy = zag.WritePolicy(attempts=30, delay=0.1, backoff=2, max_delay=0.5)
        engine = zag.Engine(build(gate), backend=backend, write_policy=policy)
        saves = Saves(backend)
        runner = asyncio.ensure_future(engine.run())
        try:
            async with asyncio.timeout(30):
                await gate.reached.wait()
            await server.stop()
            gate.opened.set()
            await eventually(
                lambda: "StorageUnavailable" in saves.outcomes, within=20, what="a commit failing"
            )
            # Attempts go on while it starts and recovers (those count as unavailable too).
            await server.start()
            async with asyncio.timeout(30):
                results = await runner
        finally:
            runner.cancel()
        assert engine.state is zag.FlowState.SUCCESS
        assert {n: results[n] for n in NAMES} == {n: n for n in NAMES}
        assert gate.calls == NAMES  # every atom once: s3's result waited in memory
        assert saves.outcomes.count("ok") == len(NAMES) + 1  # N + 1 commits, linear flow
        assert set((await stored_states(backend, engine.flow_id)).values()) == {"SUCCESS"}


async def test_a_recovering_server_counts_as_unavailable(server: PrivatePostgres) -> None:
    """Regression: SQLSTATE 57P03 ("the database system is starting up") was StorageError."""
    seen: dict[str, str] = {}  # message -> error type
    window = ("starting up", "not yet accepting")
    async with zag.connect(server.url) as backend:
        for _ in range(5):  # the window is short; every try here hit it at the first restart
            await server.stop()
            await server.start(wait=False)
            while True:
                try:
                    await backend.list_flows()
                    break
                except zag.errors.StorageError as exc:
                    seen[str(exc)] = type(exc).__name__
                await asyncio.sleep(0.005)
            if any(w in message for message in seen for w in window):
                break
        else:
            pytest.skip("no connection attempt landed while the server was starting up")
    assert set(seen.values()) == {"StorageUnavailable"}, seen


class Held(zag.Task):
    """Runs until its `release` event is set."""

    def __init__(self, name: str, release: asyncio.Event, calls: list[str]) -> None:
        self.release, self.calls = release, calls
        super().__init__(name=name, provides=name)

    async def execute(self) -> str:
        self.calls.append(self.name)
        await self.release.wait()
        return self.name


async def test_outage_with_atoms_finishing_in_parallel(server: PrivatePostgres) -> None:
    """Atoms that finish while a failing commit is retried neither hang nor extend the run."""
    first, rest = asyncio.Event(), asyncio.Event()
    calls: list[str] = []

    def wide() -> zag.Flow:
        return zag.unordered(
            "wide", Held("w0", first, calls), Held("w1", rest, calls), Held("w2", rest, calls)
        )

    async with zag.connect(server.url) as backend:
        engine = zag.Engine(
            wide(), backend=backend, write_policy=zag.WritePolicy(attempts=3, delay=0.2)
        )
        saves = Saves(backend)
        runner = asyncio.ensure_future(engine.run())
        try:
            await eventually(lambda: saves.outcomes == ["ok"] and len(calls) == 3)
            await server.stop()
            stopped = time.monotonic()
            first.set()  # w0 ends: its commit starts failing
            await eventually(lambda: "StorageUnavailable" in saves.outcomes)
            rest.set()  # w1 and w2 end while that commit is being retried
            with pytest.raises(zag.errors.StorageUnavailable):
                async with asyncio.timeout(30):
                    await runner
            elapsed = time.monotonic() - stopped
        finally:
            runner.cancel()
        assert elapsed < 15, f"StorageUnavailable took {elapsed:.1f} s"
        assert engine.state is zag.FlowState.SUSPENDED
        assert saves.outcomes.count("StorageUnavailable") <= 2 * 3  # at most one retry per batch

        await server.start()
        stored = await stored_states(backend, engine.flow_id)
        assert stored == {"flow": "RUNNING", "w0": "RUNNING", "w1": "RUNNING", "w2": "RUNNING"}
        calls.clear()
        fresh = await zag.Engine.load(engine.flow_id, backend=backend, flow=wide())
        async with asyncio.timeout(30):
            await fresh.run()
        assert fresh.state is zag.FlowState.SUCCESS
        assert sorted(calls) == ["w0", "w1", "w2"]  # none was recorded: all run again
