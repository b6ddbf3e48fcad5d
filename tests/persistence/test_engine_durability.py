"""The engine on a durable backend: what is written, how many commits it takes,
and how a fresh engine resumes a flow that was interrupted in this process.

An interruption here is the run task being cancelled while an atom (or a
revert) is stopped mid-call by the switches in flows.py; the stored state is
then what a crash at that instant would leave (tests/crash/ does real kills).
Every test runs on memory://, SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import collections
import datetime

import pytest
from support import eventually

import zag_async as zag
from zag_async.errors import (
    AtomInterrupted,
    ConcurrentUpdate,
    ConfigurationError,
    FlowChanged,
    NotFound,
    SerializationError,
)

from . import flows

S = zag.AtomState
F = zag.FlowState
Backend = zag.persistence.Backend


async def interrupt(engine: zag.Engine, key: str) -> None:
    """Run `engine` until the held call `key` starts, then cancel the run."""
    task = asyncio.ensure_future(engine.run())
    waiter = asyncio.ensure_future(flows.started(key).wait())
    await asyncio.wait({task, waiter}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if not waiter.done():
        waiter.cancel()
        if task.done():
            task.result()  # raise whatever ended the run early
        raise AssertionError(f"{key!r} never started")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def states(detail: zag.FlowDetail) -> dict[str, zag.AtomState]:
    return {name: atom.state for name, atom in detail.atoms.items()}


def outcomes(detail: zag.FlowDetail, atom: str) -> list[tuple[str, str | None]]:
    """The atom's recorded timeline as (kind, outcome) pairs, oldest first."""
    meta = detail.atoms[atom].meta or {}
    return [(kind, outcome) for kind, _, _, outcome in meta.get("timeline", [])]


# -- what is written --------------------------------------------------------------------


async def test_linear_flow_is_persisted_end_to_end(backend: Backend) -> None:
    engine = zag.Engine.from_factory(flows.linear_steps, args=(3,), backend=backend)

    results = await engine.run()

    assert results == {"s0": "s0-out", "s1": "s1-out", "s2": "s2-out"}
    stored = await backend.load_flow(engine.flow_id)
    assert stored.state is F.SUCCESS
    assert stored.name == "steps"
    assert sorted(stored.atoms) == ["s0", "s1", "s2"]
    for name, atom in stored.atoms.items():
        assert atom.state is S.SUCCESS, name
        assert atom.intention is zag.Intention.EXECUTE
        assert atom.result == f"{name}-out"
        assert atom.failure is None
        assert atom.attempts == 1
        assert atom.duration is not None
        assert atom.duration >= 0
    assert stored.meta["factory"] == {
        "path": f"{flows.__name__}:linear_steps",
        "args": [3],
        "kwargs": {},
    }
    assert stored.version == engine.storage.flow.version
    [summary] = await backend.list_flows()
    assert (summary.uuid, summary.state) == (engine.flow_id, F.SUCCESS)


async def test_linear_flow_uses_one_commit_per_atom_plus_one(backend: Backend) -> None:
    engine = zag.Engine(flows.linear_steps(20), backend=backend)

    await engine.run()

    # Every commit bumps the version by one, so the version counts commits:
    #   1   flow RUNNING + all 20 atom rows + s0 RUNNING,
    #   19  "s(i) SUCCESS + s(i+1) RUNNING" (the next mark rides with the result),
    #   1   s19 SUCCESS + flow SUCCESS (the final flow state shares the last commit).
    stored = await backend.load_flow(engine.flow_id)
    assert stored.version == 21


async def test_wide_flow_group_commits(backend: Backend) -> None:
    engine = zag.Engine(flows.wide(200), backend=backend)

    await engine.run()

    stored = await backend.load_flow(engine.flow_id)
    assert set(states(stored).values()) == {S.SUCCESS}
    assert len(stored.atoms) == 200
    # Observed: 2 (everything RUNNING in one commit; every result and SUCCESS in another).
    assert stored.version <= 20


async def run_within(engine: zag.Engine, seconds: float = 3) -> None:
    """Run, failing (instead of hanging until the per-test timeout) if the engine stalls."""
    try:
        async with asyncio.timeout(seconds):
            await engine.run()
    except TimeoutError:
        counts = collections.Counter(str(d.state) for d in engine.storage.flow.atoms.values())
        pytest.fail(f"run stalled after {seconds}s with atoms {dict(counts)}")


async def test_wide_flow_of_thread_tasks_group_commits(backend: Backend) -> None:
    engine = zag.Engine(flows.wide_sync(200), backend=backend)

    await run_within(engine)

    stored = await backend.load_flow(engine.flow_id)
    assert stored.state is F.SUCCESS
    assert set(states(stored).values()) == {S.SUCCESS}
    assert stored.version <= 20


async def test_wide_flow_with_staggered_completions_finishes(backend: Backend) -> None:
    # Completions keep arriving while a commit is in flight; none may be lost.
    engine = zag.Engine(flows.wide_staggered(200), backend=backend)

    await run_within(engine)

    stored = await backend.load_flow(engine.flow_id)
    assert stored.state is F.SUCCESS
    assert {name: atom.result for name, atom in stored.atoms.items()} == {
        f"w{i}": i for i in range(200)
    }


async def test_a_completion_during_a_commit_is_not_lost(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a finishes at once; b finishes exactly while the commit of a's result is in
    # flight (the wrapped save lets b go and waits until it has returned).
    go, b_returned = asyncio.Event(), asyncio.Event()

    @zag.task(name="a")
    async def fast() -> str:
        return "a"

    @zag.task(name="b")
    async def slow() -> str:
        await go.wait()
        b_returned.set()
        return "b"

    save = backend.save

    async def save_while_b_finishes(flow: zag.FlowDetail, atoms: list[zag.AtomDetail]) -> None:
        await save(flow, atoms)
        if not go.is_set() and any(d.name == "a" and d.state is S.SUCCESS for d in atoms):
            go.set()
            await b_returned.wait()

    monkeypatch.setattr(backend, "save", save_while_b_finishes)
    engine = zag.Engine(zag.unordered("pair", fast, slow), backend=backend)

    await run_within(engine)

    stored = await backend.load_flow(engine.flow_id)
    assert stored.state is F.SUCCESS
    assert states(stored) == {"a": S.SUCCESS, "b": S.SUCCESS}


async def test_store_is_persisted_and_restored(backend: Backend) -> None:
    when = datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.UTC)
    store = {"items": (1, 2, 3), "when": when}
    engine = zag.Engine.from_factory(flows.store_user, backend=backend, store=store)
    flows.HOLD_EXEC.add("last")
    await interrupt(engine, "last")
    flows.HOLD_EXEC.clear()

    stored = await backend.load_flow(engine.flow_id)
    assert stored.store == store
    assert type(stored.store["items"]) is tuple
    resumed = await zag.Engine.load(engine.flow_id, backend=backend)
    results = await resumed.run()

    assert results["summary"] == {"items": (1, 2, 3), "when": when}
    assert type(results["summary"]["items"]) is tuple
    assert results["items"] == (1, 2, 3)
    assert resumed.storage.fetch("when") == when
    assert flows.count("summarise") == 1


async def test_unstorable_result_fails_the_atom_and_reverts(backend: Backend) -> None:
    flows.UNSTORABLE.add("s1")
    engine = zag.Engine(flows.linear_steps(3), backend=backend)

    with pytest.raises(SerializationError, match="s1"):
        await engine.run()

    assert engine.state is F.REVERTED
    stored = await backend.load_flow(engine.flow_id)
    assert stored.state is F.REVERTED
    assert states(stored) == {"s0": S.REVERTED, "s1": S.REVERTED, "s2": S.PENDING}
    failure = stored.atoms["s1"].failure
    assert failure is not None
    assert failure.check(SerializationError)
    assert "s1" in failure.message
    assert stored.atoms["s1"].result is None
    assert flows.LOG == ["s0", "done s0", "s1", "done s1", "revert s1", "reverted s1",
                         "revert s0", "reverted s0"]  # fmt: skip


# -- resuming -----------------------------------------------------------------------------


async def test_resume_does_not_rerun_completed_atoms(backend: Backend) -> None:
    engine = zag.Engine.from_factory(flows.linear_steps, args=(5,), backend=backend)
    flows.HOLD_EXEC.add("s2")
    await interrupt(engine, "s2")
    flows.HOLD_EXEC.clear()

    stored = await backend.load_flow(engine.flow_id)
    assert stored.state is F.SUSPENDED
    assert states(stored) == {
        "s0": S.SUCCESS,
        "s1": S.SUCCESS,
        "s2": S.RUNNING,
        "s3": S.PENDING,
        "s4": S.PENDING,
    }

    resumed = await zag.Engine.load(engine.flow_id, backend=backend)
    assert resumed.flow_id == engine.flow_id
    results = await resumed.run()

    assert results == {f"s{i}": f"s{i}-out" for i in range(5)}
    assert resumed.state is F.SUCCESS
    # s2 was running when the run stopped: run again (at-least-once); the rest once.
    assert [flows.count(f"s{i}") for i in range(5)] == [1, 1, 2, 1, 1]
    stored = await backend.load_flow(engine.flow_id)
    assert stored.state is F.SUCCESS
    assert set(states(stored).values()) == {S.SUCCESS}
    assert stored.atoms["s2"].attempts == 2
    assert stored.atoms["s3"].attempts == 1


async def test_zag_resume_finishes_a_suspended_flow(backend: Backend) -> None:
    engine = zag.Engine.from_factory(flows.linear_steps, args=(3,), backend=backend)
    flows.HOLD_EXEC.add("s1")
    await interrupt(engine, "s1")
    flows.HOLD_EXEC.clear()

    results = await zag.resume(engine.flow_id, backend=backend)

    assert results == {"s0": "s0-out", "s1": "s1-out", "s2": "s2-out"}
    assert flows.count("s0") == 1
    assert (await backend.load_flow(engine.flow_id)).state is F.SUCCESS


async def test_resuming_a_finished_flow_runs_nothing(backend: Backend) -> None:
    engine = zag.Engine.from_factory(flows.linear_steps, args=(2,), backend=backend)
    await engine.run()
    log = list(flows.LOG)

    results = await zag.resume(engine.flow_id, backend=backend)

    assert results == {"s0": "s0-out", "s1": "s1-out"}
    assert log == flows.LOG


async def test_half_finished_revert_resumes_where_it_stopped(backend: Backend) -> None:
    flows.FAILS["s3"] = 1
    flows.HOLD_REVERT.add("s1")
    engine = zag.Engine.from_factory(flows.linear_steps, args=(4,), backend=backend)
    await interrupt(engine, "revert s1")
    flows.HOLD_REVERT.clear()

    stored = await backend.load_flow(engine.flow_id)
    assert stored.state is F.SUSPENDED
    assert states(stored) == {
        "s0": S.SUCCESS,
        "s1": S.REVERTING,
        "s2": S.REVERTED,
        "s3": S.REVERTED,
    }

    resumed = await zag.Engine.load(engine.flow_id, backend=backend)
    with pytest.raises(flows.Boom) as raised:
        await resumed.run()

    # The stored failure is re-raised as its own type; the live exception stayed with the
    # first engine, so the stored Failure rides along as a RemoteFailure cause.
    assert isinstance(raised.value.__cause__, zag.errors.RemoteFailure)
    assert raised.value.__cause__.failure.check(flows.Boom)
    assert resumed.state is F.REVERTED
    stored = await backend.load_flow(engine.flow_id)
    assert stored.state is F.REVERTED
    assert set(states(stored).values()) == {S.REVERTED}
    # Committed reverts are not repeated; the one cut off (s1) is run again; none is lost.
    assert [flows.count(f"reverted s{i}") for i in range(4)] == [1, 1, 1, 1]
    assert flows.count("revert s1") == 2
    assert [flows.count(f"s{i}") for i in range(4)] == [1, 1, 1, 1]


async def test_concurrent_reverts_resume_where_they_stopped(backend: Backend) -> None:
    flows.FAILS["boom"] = 1
    flows.HOLD_REVERT.add("p1")
    engine = zag.Engine.from_factory(flows.parallel_then_fail, backend=backend)
    run = asyncio.ensure_future(engine.run())
    await asyncio.wait_for(flows.started("revert p1").wait(), 20)

    async def siblings_reverted() -> bool:
        stored = await backend.load_flow(engine.flow_id)
        return stored.atoms["p0"].state is stored.atoms["p2"].state is S.REVERTED

    # Committed while p1's revert is still going (polled: the state lands in the database).
    await eventually(siblings_reverted, within=5, interval=0.01, what="p0 and p2 reverted")
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    flows.HOLD_REVERT.clear()
    assert states(await backend.load_flow(engine.flow_id))["p1"] is S.REVERTING

    resumed = await zag.Engine.load(engine.flow_id, backend=backend)
    with pytest.raises(flows.Boom):
        await resumed.run()

    stored = await backend.load_flow(engine.flow_id)
    assert stored.state is F.REVERTED
    assert set(states(stored).values()) == {S.REVERTED}
    assert [flows.count(f"reverted {n}") for n in ("p0", "p1", "p2", "boom")] == [1, 1, 1, 1]


async def test_suspend_is_persisted_and_a_fresh_engine_finishes(backend: Backend) -> None:
    engine = zag.Engine.from_factory(flows.linear_steps, args=(3,), backend=backend)
    flows.HOLD_EXEC.add("s1")
    run = asyncio.ensure_future(engine.run())
    await asyncio.wait_for(flows.started("s1").wait(), 20)

    engine.suspend()
    flows.release("s1")  # the running atom finishes; nothing new starts
    await run

    stored = await backend.load_flow(engine.flow_id)
    assert stored.state is F.SUSPENDED
    assert states(stored) == {"s0": S.SUCCESS, "s1": S.SUCCESS, "s2": S.PENDING}
    flows.HOLD_EXEC.clear()
    await (await zag.Engine.load(engine.flow_id, backend=backend)).run()
    assert [flows.count(f"s{i}") for i in range(3)] == [1, 1, 1]
    assert (await backend.load_flow(engine.flow_id)).state is F.SUCCESS


async def test_flows_are_filed_under_their_logbook(backend: Backend) -> None:
    book = zag.LogBook("orders")
    await backend.save_logbook(book)
    filed = zag.Engine(flows.linear_steps(1), backend=backend, logbook=book.uuid)
    loose = zag.Engine(flows.linear_steps(1), backend=backend)
    await filed.run()
    await loose.run()

    assert [s.uuid for s in await backend.list_flows(logbook=book.uuid)] == [filed.flow_id]
    assert (await backend.load_flow(filed.flow_id)).logbook == book.uuid
    assert {s.uuid for s in await backend.list_flows(states=[F.SUCCESS])} == {
        filed.flow_id,
        loose.flow_id,
    }


async def test_zag_run_with_a_backend_persists(backend: Backend) -> None:
    results = await zag.run(flows.linear_steps(2), backend=backend)

    assert results == {"s0": "s0-out", "s1": "s1-out"}
    [summary] = await backend.list_flows()
    assert summary.state is F.SUCCESS
    stored = await backend.load_flow(summary.uuid)
    assert {n: a.result for n, a in stored.atoms.items()} == {"s0": "s0-out", "s1": "s1-out"}


async def test_retry_history_survives_a_resume(backend: Backend) -> None:
    flows.FAILS["r1"] = 1
    flows.HOLD_EXEC.add("after")
    engine = zag.Engine.from_factory(flows.with_retry, args=(3,), backend=backend)
    await interrupt(engine, "after")
    flows.HOLD_EXEC.clear()

    resumed = await zag.Engine.load(engine.flow_id, backend=backend)
    await resumed.run()

    stored = await backend.load_flow(engine.flow_id)
    assert stored.state is F.SUCCESS
    retry = stored.atoms["guarded.retry"]
    assert retry.kind == "retry"
    assert retry.history is not None
    assert retry.history.values == [1, 2]
    assert list(retry.history[0].failures) == ["r1"]
    assert retry.history[0].failures["r1"].check(flows.Boom)
    assert retry.history[1].failures == {}
    assert [flows.count(n) for n in ("before", "r0", "r1", "after")] == [1, 2, 2, 2]


async def test_retry_budget_spent_before_a_resume_stays_spent(backend: Backend) -> None:
    # Times(2): attempt 1 fails in r1, attempt 2 is interrupted in r0; after the
    # resume r1 fails again, and with the history restored that is the last attempt.
    flows.FAILS["r1"] = 2
    flows.HOLD_EXEC.add("r0#2")
    engine = zag.Engine.from_factory(flows.with_retry, args=(2,), backend=backend)
    await interrupt(engine, "r0")
    flows.HOLD_EXEC.clear()

    resumed = await zag.Engine.load(engine.flow_id, backend=backend)
    with pytest.raises(flows.Boom):
        await resumed.run()

    assert flows.count("r1") == 2  # a third attempt would mean the history was lost
    stored = await backend.load_flow(engine.flow_id)
    assert stored.state is F.REVERTED
    history = stored.atoms["guarded.retry"].history
    assert history is not None
    assert history.values == [1, 2]
    assert [list(a.failures) for a in history] == [["r1"], ["r1"]]
    # REVERT with no enclosing controller: the whole flow (issue 13).
    assert states(stored) == {
        "before": S.REVERTED,
        "guarded.retry": S.REVERTED,
        "r0": S.REVERTED,
        "r1": S.REVERTED,
        "after": S.PENDING,
    }


async def test_non_idempotent_atom_left_running_is_reverted(backend: Backend) -> None:
    engine = zag.Engine.from_factory(flows.non_idempotent, backend=backend)
    flows.HOLD_EXEC.add("charge")
    await interrupt(engine, "charge")
    flows.HOLD_EXEC.clear()
    assert states(await backend.load_flow(engine.flow_id))["charge"] is S.RUNNING

    resumed = await zag.Engine.load(engine.flow_id, backend=backend)
    with pytest.raises(AtomInterrupted, match="charge"):
        await resumed.run()

    assert flows.count("charge") == 1  # not run again
    assert flows.count("c") == 0
    assert flows.count("reverted charge") == 1
    assert flows.count("reverted a") == 1
    stored = await backend.load_flow(engine.flow_id)
    assert stored.state is F.REVERTED
    assert states(stored) == {"a": S.REVERTED, "charge": S.REVERTED, "c": S.PENDING}
    failure = stored.atoms["charge"].failure
    assert failure is not None
    assert failure.check(AtomInterrupted)


async def test_changed_flow_is_refused_unless_allowed(backend: Backend) -> None:
    engine = zag.Engine.from_factory(flows.linear_steps, args=(3,), backend=backend)
    flows.HOLD_EXEC.add("s1")
    await interrupt(engine, "s1")
    flows.HOLD_EXEC.clear()

    flows.EXTRA.append("x")  # the factory's flow gained an atom
    with pytest.raises(FlowChanged) as raised:
        await zag.Engine.load(engine.flow_id, backend=backend)
    assert raised.value.added == ["x"]
    assert raised.value.removed == []
    assert "'x'" in str(raised.value)

    flows.EXTRA.clear()
    with pytest.raises(FlowChanged) as raised:  # and one that lost an atom
        await zag.Engine.load(engine.flow_id, backend=backend, flow=flows.linear_steps(2))
    assert raised.value.removed == ["s2"]
    assert raised.value.added == []

    assert (await backend.load_flow(engine.flow_id)).state is F.SUSPENDED  # untouched
    flows.EXTRA.append("x")
    resumed = await zag.Engine.load(engine.flow_id, backend=backend, allow_changes=True)
    results = await resumed.run()

    assert results["x"] == "x-out"
    assert [flows.count(n) for n in ("s0", "s1", "s2", "x")] == [1, 2, 1, 1]
    stored = await backend.load_flow(engine.flow_id)
    assert stored.state is F.SUCCESS
    assert states(stored)["x"] is S.SUCCESS


async def test_a_claim_fences_off_the_older_engine(backend: Backend) -> None:
    older = zag.Engine.from_factory(flows.linear_steps, args=(3,), backend=backend)
    flows.HOLD_EXEC.add("s1")
    run = asyncio.ensure_future(older.run())
    await asyncio.wait_for(flows.started("s1").wait(), 20)

    # A claim by another authority (a job board's) takes the live lease over.
    newer = await zag.Engine.load(older.flow_id, backend=backend, owner="newer", takeover=True)
    flows.HOLD_EXEC.clear()
    flows.release("s1")  # the older engine's next write is s1's result
    with pytest.raises(ConcurrentUpdate):
        await run

    stored = await backend.load_flow(older.flow_id)
    assert stored.owner == "newer"
    assert states(stored) == {"s0": S.SUCCESS, "s1": S.RUNNING, "s2": S.PENDING}
    assert flows.count("s2") == 0  # nothing unrecorded was started

    await newer.run()

    assert [flows.count(f"s{i}") for i in range(3)] == [1, 2, 1]
    stored = await backend.load_flow(older.flow_id)
    assert stored.state is F.SUCCESS
    assert stored.owner == "newer"


async def test_load_needs_a_factory_or_a_flow(backend: Backend) -> None:
    engine = zag.Engine(flows.linear_steps(2), backend=backend)
    await engine.run()

    with pytest.raises(ConfigurationError, match="factory"):
        await zag.Engine.load(engine.flow_id, backend=backend)
    resumed = await zag.Engine.load(engine.flow_id, backend=backend, flow=flows.linear_steps(2))
    assert resumed.state is F.SUCCESS


async def test_load_of_unknown_flow_is_not_found(backend: Backend) -> None:
    with pytest.raises(NotFound):
        await zag.Engine.load("no-such-flow", backend=backend, owner="me")


# -- compensation (issue 13): revert retries and pivots are durable ------------------------


async def test_revert_retries_are_counted_across_a_resume(backend: Backend) -> None:
    # charge's refund fails, is held (and cut off) on its second try; after the resume
    # the third and last try fails too: 3 tries in all, not 2 + 3.
    flows.FAILS["ship"] = 1
    flows.REVERT_FAILS["charge"] = 10
    flows.HOLD_REVERT.add("charge#2")
    engine = zag.Engine.from_factory(flows.shaky_refund, args=(3,), backend=backend)
    await interrupt(engine, "revert charge")
    flows.HOLD_REVERT.clear()
    stored = await backend.load_flow(engine.flow_id)
    assert stored.atoms["charge"].state is S.REVERTING
    assert stored.atoms["charge"].meta is not None
    assert stored.atoms["charge"].meta["revert_tries"] == 2
    assert outcomes(stored, "charge") == [
        ("execute", "SUCCESS"),
        ("revert", "REVERT_FAILURE"),
        ("revert", None),  # cut off while it ran
    ]

    resumed = await zag.Engine.load(engine.flow_id, backend=backend)
    with pytest.raises(flows.Boom, match="revert of charge failed"):
        await resumed.run()

    assert flows.count("revert charge") == 3
    stored = await backend.load_flow(engine.flow_id)
    assert outcomes(stored, "charge")[2:] == [
        ("revert", "INTERRUPTED"),
        ("revert", "REVERT_FAILURE"),
    ]
    assert stored.state is F.UNCOMPENSATED
    assert stored.meta["unreverted"] == ["reserve", "charge"]
    assert states(stored) == {"reserve": S.SUCCESS, "charge": S.REVERT_FAILURE, "ship": S.REVERTED}
    assert (await zag.status.read_flow_status(backend, engine.flow_id)).unreverted == (
        "reserve",
        "charge",
    )


async def test_a_revert_that_succeeds_on_a_later_try_ends_reverted(backend: Backend) -> None:
    flows.FAILS["ship"] = 1
    flows.REVERT_FAILS["charge"] = 2
    engine = zag.Engine.from_factory(flows.shaky_refund, args=(3,), backend=backend)
    with pytest.raises(flows.Boom, match="ship failed"):
        await engine.run()
    stored = await backend.load_flow(engine.flow_id)
    assert stored.state is F.REVERTED
    assert "unreverted" not in stored.meta
    assert set(states(stored).values()) == {S.REVERTED}
    assert stored.atoms["charge"].meta is not None
    assert stored.atoms["charge"].meta["revert_tries"] == 3
    assert outcomes(stored, "charge") == [
        ("execute", "SUCCESS"),
        ("revert", "REVERT_FAILURE"),
        ("revert", "REVERT_FAILURE"),
        ("revert", "REVERTED"),
    ]


async def test_forward_retries_past_a_pivot_are_counted_across_a_resume(
    backend: Backend,
) -> None:
    # notify fails on attempt 1 and is cut off in attempt 2; the resume runs attempt
    # 2 again (at least once, as for any interrupted atom), then attempt 3, the last
    # under Times(3): the flow stops past the pivot, and nothing is reverted.
    flows.FAILS["notify"] = 10
    flows.HOLD_EXEC.add("notify#2")
    engine = zag.Engine.from_factory(flows.order_with_pivot, args=(3,), backend=backend)
    await interrupt(engine, "notify")
    flows.HOLD_EXEC.clear()
    stored = await backend.load_flow(engine.flow_id)
    history = stored.atoms["notify.retry"].history
    assert history is not None and len(history) == 2

    resumed = await zag.Engine.load(engine.flow_id, backend=backend)
    with pytest.raises(flows.Boom, match="notify failed"):
        await resumed.run()

    assert flows.count("notify") == 4  # attempts 1, 2 (cut off), 2 again, 3
    assert not [entry for entry in flows.LOG if entry.startswith("revert")]
    stored = await backend.load_flow(engine.flow_id)
    assert stored.state is F.STUCK_PAST_PIVOT
    history = stored.atoms["notify.retry"].history
    assert history is not None and len(history) == 3
    assert stored.meta["unreverted"] == ["reserve", "charge", "ship", "notify"]
    assert states(stored)["ship"] is S.SUCCESS
    again = await zag.Engine.load(engine.flow_id, backend=backend)
    with pytest.raises(flows.Boom):
        await again.run()  # ended: nothing runs
    assert flows.count("notify") == 4


async def test_a_forward_retry_that_succeeds_ends_the_flow_successfully(
    backend: Backend,
) -> None:
    flows.FAILS["notify"] = 1
    engine = zag.Engine.from_factory(flows.order_with_pivot, args=(2,), backend=backend)
    results = await engine.run()
    assert results["notify"] == "notify-out"
    stored = await backend.load_flow(engine.flow_id)
    assert stored.state is F.SUCCESS
    assert flows.count("notify") == 2 and flows.count("ship") == 1
