"""Flows that wait (`zag.wait_for`, `zag.sleep`, `zag.signal`) on every backend.

Each test runs on memory://, SQLite and PostgreSQL (the `backend` fixture). A
resume is always a new `Engine.load`, as after a process restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

import pytest

import zag_async as zag
from zag_async.errors import ConfigurationError, SignalRefused, WaitRejected, WaitTimeout
from zag_async.persistence.base import Backend

LOG: list[str] = []


@pytest.fixture(autouse=True)
def _clear_log() -> None:
    LOG.clear()


def expense(timeout: float | None = 60.0, **wait: Any) -> zag.Flow:
    """submit -> wait for approval -> pay; submit is compensated on a revert."""

    @zag.task(provides="order")
    async def submit() -> str:
        LOG.append("submit")
        return "o1"

    @submit.revert
    async def cancel(*, result: str) -> None:
        LOG.append(f"cancel {result}")

    @zag.task(provides="paid")
    async def pay(order: str, decision: Any) -> str:
        LOG.append(f"pay {order} {decision}")
        return f"paid {order}"

    approve = zag.wait_for(
        "approve", event="approval", timeout=timeout, provides="decision", **wait
    )
    return zag.linear("expense", submit, approve, pay)


async def resume(backend: Backend, flow_id: str, flow: zag.Flow) -> zag.Engine:
    engine = await zag.Engine.load(flow_id, backend=backend, flow=flow)
    await engine.run()
    return engine


async def start(backend: Backend, flow: zag.Flow) -> zag.Engine:
    engine = zag.Engine(flow, backend=backend)
    results = await engine.run()
    assert engine.state is zag.FlowState.WAITING
    assert "decision" not in results
    return engine


async def test_a_wait_leaves_the_flow_waiting_and_holds_nothing(backend: Backend) -> None:
    engine = await start(backend, expense())
    assert LOG == ["submit"]
    (waiting,) = engine.waiting_for
    assert (waiting.atom, waiting.event) == ("approve", "approval")
    assert waiting.deadline is not None
    stored = await backend.load_flow(engine.flow_id)
    assert stored.state is zag.FlowState.WAITING
    assert stored.lease_owner is None  # no lease held while waiting
    assert stored.atoms["approve"].state is zag.AtomState.RUNNING
    assert stored.meta["events"] == ["approval"]


async def test_a_signal_completes_the_wait_on_resume(backend: Backend) -> None:
    flow = expense()
    engine = await start(backend, flow)
    await zag.signal(engine.flow_id, "approval", {"by": "ann"}, backend=backend)
    again = await resume(backend, engine.flow_id, expense())
    assert again.state is zag.FlowState.SUCCESS
    assert LOG == ["submit", "pay o1 {'by': 'ann'}"]
    assert (await again.run())["decision"] == {"by": "ann"}
    (signal,) = await backend.list_signals(engine.flow_id)
    assert signal.taken_by is not None
    waited = (await backend.load_flow(engine.flow_id)).atoms["approve"].meta
    assert waited is not None
    assert waited["waited"]["ended_by"] == "signal"
    assert waited["waited"]["signal"] == signal.id


async def test_resuming_without_a_signal_keeps_waiting(backend: Backend) -> None:
    engine = await start(backend, expense())
    deadline = engine.waiting_for[0].deadline
    again = await resume(backend, engine.flow_id, expense())
    assert again.state is zag.FlowState.WAITING
    assert again.waiting_for[0].deadline == deadline  # not restarted by the resume
    assert LOG == ["submit"]


async def test_a_signal_sent_before_the_wait_is_kept(backend: Backend) -> None:
    @zag.task(provides="x")
    async def first() -> int:
        return 1

    def flow() -> zag.Flow:
        return zag.linear(
            "two-waits",
            first,
            zag.wait_for("a", event="a", provides="got_a"),
            zag.wait_for("b", event="b", provides="got_b"),
        )

    engine = zag.Engine(flow(), backend=backend)
    await engine.run()
    assert [w.atom for w in engine.waiting_for] == ["a"]
    await zag.signal(engine.flow_id, "b", "early", backend=backend)  # before b is reached
    await zag.signal(engine.flow_id, "a", "on time", backend=backend)
    again = await zag.Engine.load(engine.flow_id, backend=backend, flow=flow())
    results = await again.run()
    assert again.state is zag.FlowState.SUCCESS
    assert (results["got_a"], results["got_b"]) == ("on time", "early")


async def test_bad_signals_are_refused_before_anything_is_stored(backend: Backend) -> None:
    engine = await start(backend, expense())
    with pytest.raises(ConfigurationError, match="signal_id"):
        await zag.signal(engine.flow_id, "approval", 1, backend=backend, signal_id="x" * 201)
    with pytest.raises(ConfigurationError, match="event"):
        await zag.signal(engine.flow_id, "", 1, backend=backend)
    assert await backend.list_signals(engine.flow_id) == []


async def test_signal_ids_make_signals_idempotent(backend: Backend) -> None:
    engine = await start(backend, expense())
    first = await zag.signal(engine.flow_id, "approval", 1, backend=backend, signal_id="k")
    second = await zag.signal(engine.flow_id, "approval", 2, backend=backend, signal_id="k")
    assert second == first
    assert second.payload == 1
    assert len(await backend.list_signals(engine.flow_id)) == 1


async def test_signals_are_taken_once_each_in_arrival_order(backend: Backend) -> None:
    def flow() -> zag.Flow:
        return zag.linear(
            "twice",
            zag.wait_for("w1", event="go", provides="one"),
            zag.wait_for("w2", event="go", provides="two"),
        )

    engine = zag.Engine(flow(), backend=backend)
    await engine.run()
    for payload in ("p1", "p2", "p3"):
        await zag.signal(engine.flow_id, "go", payload, backend=backend)
    again = await zag.Engine.load(engine.flow_id, backend=backend, flow=flow())
    results = await again.run()
    assert (results["one"], results["two"]) == ("p1", "p2")
    signals = await backend.list_signals(engine.flow_id)
    assert [s.payload for s in signals if s.taken_by is None] == ["p3"]
    assert len({s.taken_by for s in signals if s.taken_by is not None}) == 2


async def test_a_timeout_fails_the_wait_and_the_flow_compensates(backend: Backend) -> None:
    engine = await start(backend, expense(timeout=0.2))
    await asyncio.sleep(0.3)
    again = await zag.Engine.load(engine.flow_id, backend=backend, flow=expense(timeout=0.2))
    with pytest.raises(WaitTimeout, match="approve"):
        await again.run()
    assert again.state is zag.FlowState.REVERTED
    assert LOG == ["submit", "cancel o1"]


async def test_a_timeout_with_a_default_ends_the_wait_with_it(backend: Backend) -> None:
    engine = await start(backend, expense(timeout=0.2, default="auto"))
    await asyncio.sleep(0.3)
    again = await resume(backend, engine.flow_id, expense(timeout=0.2, default="auto"))
    assert again.state is zag.FlowState.SUCCESS
    assert LOG == ["submit", "pay o1 auto"]


async def test_a_short_timeout_ends_within_the_run(backend: Backend) -> None:
    """A deadline that passes while other branches still run ends the wait in that run."""

    @zag.task
    async def slow() -> None:
        await asyncio.sleep(0.3)

    flow = zag.unordered("mix", zag.wait_for("w", event="e", timeout=0.05, default="d"), slow)
    engine = zag.Engine(flow, backend=backend)
    await engine.run()
    assert engine.state is zag.FlowState.SUCCESS


async def test_a_signal_racing_the_timeout_has_one_recorded_winner(backend: Backend) -> None:
    # On time: the signal arrived before the deadline, the resume came after it.
    engine = await start(backend, expense(timeout=1.0))
    await zag.signal(engine.flow_id, "approval", "yes", backend=backend)
    await asyncio.sleep(1.1)
    again = await resume(backend, engine.flow_id, expense(timeout=1.0))
    assert again.state is zag.FlowState.SUCCESS
    meta = (await backend.load_flow(engine.flow_id)).atoms["approve"].meta
    assert meta is not None
    assert meta["waited"]["ended_by"] == "signal"

    # Late: the signal arrived after the deadline; the timeout wins, the signal stays.
    LOG.clear()
    late = await start(backend, expense(timeout=0.2))
    await asyncio.sleep(0.3)
    await zag.signal(late.flow_id, "approval", "too late", backend=backend)
    with pytest.raises(WaitTimeout):
        await resume(backend, late.flow_id, expense(timeout=0.2))
    meta = (await backend.load_flow(late.flow_id)).atoms["approve"].meta
    assert meta is not None
    assert meta["waited"]["ended_by"] == "timeout"
    (signal,) = await backend.list_signals(late.flow_id)
    assert signal.taken_by is None


async def test_a_rejection_fails_the_wait_and_the_flow_compensates(backend: Backend) -> None:
    engine = await start(backend, expense())
    await zag.signal(engine.flow_id, "approval", zag.reject("over budget"), backend=backend)
    with pytest.raises(WaitRejected, match="over budget"):
        await resume(backend, engine.flow_id, expense())
    assert LOG == ["submit", "cancel o1"]


async def test_a_parallel_branch_keeps_running_while_another_waits(backend: Backend) -> None:
    @zag.task(provides="report")
    async def report() -> str:
        await asyncio.sleep(0.05)
        LOG.append("report")
        return "done"

    def flow() -> zag.Flow:
        return zag.unordered("both", zag.wait_for("w", event="go", provides="go"), report)

    engine = zag.Engine(flow(), backend=backend)
    results = await engine.run()
    assert engine.state is zag.FlowState.WAITING
    assert results["report"] == "done"
    await zag.signal(engine.flow_id, "go", 7, backend=backend)
    again = await zag.Engine.load(engine.flow_id, backend=backend, flow=flow())
    assert (await again.run())["go"] == 7
    assert LOG == ["report"]  # not run again


async def test_a_failure_elsewhere_abandons_the_wait_and_reverts(backend: Backend) -> None:
    class Boom(Exception):
        pass

    @zag.task
    async def fails() -> None:
        await asyncio.sleep(0.05)
        raise Boom("no")

    @zag.task
    async def first() -> None:
        LOG.append("first")

    @first.revert
    async def undo_first() -> None:
        LOG.append("undo first")

    engine = zag.Engine(
        zag.linear("outer", first, zag.unordered("par", zag.wait_for("w", event="go"), fails)),
        backend=backend,
    )
    with pytest.raises(Boom):
        await engine.run()
    assert engine.state is zag.FlowState.REVERTED
    assert LOG == ["first", "undo first"]


async def test_sleep_is_a_durable_timer(backend: Backend) -> None:
    def flow() -> zag.Flow:
        return zag.linear("nap", zag.sleep("nap", delay=1.0))

    engine = zag.Engine(flow(), backend=backend)
    await engine.run()
    assert engine.state is zag.FlowState.WAITING
    assert engine.waiting_for[0].event is None
    again = await zag.Engine.load(engine.flow_id, backend=backend, flow=flow())
    await again.run()
    assert again.state is zag.FlowState.WAITING
    await asyncio.sleep(1.05)
    last = await zag.Engine.load(engine.flow_id, backend=backend, flow=flow())
    await last.run()
    assert last.state is zag.FlowState.SUCCESS


async def test_signals_no_wait_can_take_are_refused(backend: Backend) -> None:
    with pytest.raises(SignalRefused, match="no such flow"):
        await zag.signal("no-such-flow", "approval", None, backend=backend)
    engine = await start(backend, expense())
    with pytest.raises(SignalRefused, match="no wait of the flow declares it"):
        await zag.signal(engine.flow_id, "typo", None, backend=backend)
    await zag.signal(engine.flow_id, "approval", "ok", backend=backend)
    await resume(backend, engine.flow_id, expense())
    with pytest.raises(SignalRefused, match="finished") as finished:
        await zag.signal(engine.flow_id, "approval", "again", backend=backend)
    assert finished.value.kind == "finished"


async def test_signal_ids_are_idempotent_even_after_the_flow_ends(backend: Backend) -> None:
    engine = await start(backend, expense())
    first = await zag.signal(engine.flow_id, "approval", "ok", backend=backend, signal_id="w-1")
    await resume(backend, engine.flow_id, expense())
    # the provider retries its webhook after the flow finished: the same signal, no error
    again = await zag.signal(engine.flow_id, "approval", "ok", backend=backend, signal_id="w-1")
    assert (again.id, again.seq, again.taken_by) == (first.id, first.seq, again.taken_by)
    assert again.taken_by is not None
    other = await start(backend, expense())
    with pytest.raises(SignalRefused, match="already used by signal 'approval'") as taken:
        await zag.signal(other.flow_id, "approval", "x", backend=backend, signal_id="w-1")
    assert taken.value.kind == "id_taken"
    assert await backend.list_signals(other.flow_id) == []


@pytest.mark.parametrize("bad", ["a\x00b", "\ud800", "", "x" * 201])
async def test_unstorable_signal_ids_and_events_are_refused_clearly(
    backend: Backend, bad: str
) -> None:
    engine = await start(backend, expense())
    with pytest.raises(ConfigurationError, match="signal_id must be a string"):
        await zag.signal(engine.flow_id, "approval", None, backend=backend, signal_id=bad)
    if len(bad) < 200:
        with pytest.raises(ConfigurationError, match="event must be a string"):
            await zag.signal(engine.flow_id, bad, None, backend=backend)
    with pytest.raises(SignalRefused, match="no such flow") as unknown:
        await zag.signal(bad or "?" * 37, "approval", None, backend=backend)
    assert unknown.value.kind == "unknown_flow"


async def test_take_signal_is_once_per_signal_and_repeatable_per_taker(backend: Backend) -> None:
    engine = await start(backend, expense())
    await zag.signal(engine.flow_id, "approval", "only", backend=backend)
    got = await backend.take_signal(engine.flow_id, "approval", "t1")
    assert got is not None
    assert got.payload == "only"
    assert await backend.take_signal(engine.flow_id, "approval", "t2") is None
    again = await backend.take_signal(engine.flow_id, "approval", "t1")
    assert again is not None
    assert again.id == got.id


async def test_deleting_a_flow_deletes_its_signals(backend: Backend) -> None:
    engine = await start(backend, expense())
    await zag.signal(engine.flow_id, "approval", "x", backend=backend)
    await backend.delete_flow(engine.flow_id)
    assert await backend.list_signals(engine.flow_id) == []


async def test_a_flow_with_waits_needs_a_backend() -> None:
    engine = zag.Engine(expense())  # building one is fine (reading a stored flow's results)
    with pytest.raises(ConfigurationError, match="needs a backend"):
        await engine.run()
    assert engine.state is zag.FlowState.REVERTED
    assert LOG == ["submit", "cancel o1"]


async def test_a_signal_taken_before_a_crash_is_the_one_the_wait_gets(backend: Backend) -> None:
    """The engine took a signal, then died before recording the wait's result:
    the resumed wait finds the signal it had taken, and the next stays pending."""
    engine = await start(backend, expense())
    await zag.signal(engine.flow_id, "approval", "first", backend=backend)
    await zag.signal(engine.flow_id, "approval", "second", backend=backend)
    meta = (await backend.load_flow(engine.flow_id)).atoms["approve"].meta
    assert meta is not None
    token = meta["wait"]["token"]
    taken = await backend.take_signal(engine.flow_id, "approval", token)  # ... then a crash
    assert taken is not None
    again = await resume(backend, engine.flow_id, expense())
    assert (await again.run())["decision"] == "first"
    pending = [s.payload for s in await backend.list_signals(engine.flow_id) if not s.taken_by]
    assert pending == ["second"]


async def test_the_deadline_counts_from_reaching_the_wait(backend: Backend) -> None:
    @zag.task
    async def slow() -> None:
        await asyncio.sleep(0.2)

    def flow() -> zag.Flow:
        return zag.linear("late-wait", slow, zag.wait_for("w", event="e", timeout=60))

    before = await backend.clock()
    engine = zag.Engine(flow(), backend=backend)
    await engine.run()
    (waiting,) = engine.waiting_for
    assert waiting.deadline is not None
    assert waiting.deadline - before >= 60.15


async def test_a_signal_sent_as_the_deadline_passes_has_exactly_one_winner(
    backend: Backend,
) -> None:
    """Signal and resume race the deadline; whichever wins, both records agree."""
    outcomes = set()
    for _ in range(4):
        LOG.clear()
        engine = zag.Engine(expense(timeout=0.3), backend=backend)
        with contextlib.suppress(WaitTimeout):
            await engine.run()
        if engine.state is not zag.FlowState.WAITING:
            continue  # a loaded machine took the whole 0.3 s to get there: no race to test
        (waiting,) = engine.waiting_for
        assert waiting.deadline is not None
        await asyncio.sleep(max(0.0, waiting.deadline - await backend.clock() - 0.01))
        sent = asyncio.ensure_future(
            zag.signal(engine.flow_id, "approval", "close call", backend=backend)
        )
        for _ in range(20):
            again = await zag.Engine.load(
                engine.flow_id, backend=backend, flow=expense(timeout=0.3)
            )
            with contextlib.suppress(WaitTimeout):
                await again.run()
            if again.state is not zag.FlowState.WAITING:
                break
            # Resumed before both the signal and the deadline: still waiting, rightly;
            # the next resume comes after the deadline.
            await asyncio.sleep(0.05)
        refused = False
        try:
            await sent
        except SignalRefused:  # the timeout won and the flow had finished reverting
            refused = True
        meta = (await backend.load_flow(engine.flow_id)).atoms["approve"].meta
        assert meta is not None
        ended_by = meta["waited"]["ended_by"]
        signals = await backend.list_signals(engine.flow_id)
        if ended_by == "signal":
            assert again.state is zag.FlowState.SUCCESS
            (signal,) = signals
            assert signal.taken_by is not None
            assert meta["waited"]["signal"] == signal.id
        else:
            assert ended_by == "timeout"
            assert again.state is zag.FlowState.REVERTED
            assert LOG == ["submit", "cancel o1"]
            assert refused or [s.taken_by for s in signals] == [None]
        outcomes.add(ended_by)
    assert outcomes <= {"signal", "timeout"}


TESTS = Path(__file__).resolve().parents[1]
_PROCESS = """
import asyncio, sys
import zag_async as zag

async def main(url, flow_id):
    async with zag.connect(url) as db:
        if flow_id == "-":
            engine = zag.Engine.from_factory("persistence.flows:approval", backend=db)
        else:
            engine = await zag.Engine.load(flow_id, backend=db)
        results = await engine.run()
        print(engine.flow_id, engine.state, results.get("done"))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_another_process_completes_the_wait(tmp_path: Any) -> None:
    """A process leaves the flow WAITING and exits; a signal is sent; another finishes it."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'waits.db'}"
    tests = TESTS
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tests), os.environ.get("PYTHONPATH", "")]),
    }

    async def process(flow_id: str) -> list[str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _PROCESS,
            url,
            flow_id,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        return out.decode().split()

    flow_id, state, done = await process("-")
    assert (state, done) == ("WAITING", "None")
    async with zag.connect(url) as db:
        await zag.signal(flow_id, "reply", "yes", backend=db)
    assert await process(flow_id) == [flow_id, "SUCCESS", "asked:", "yes"]
