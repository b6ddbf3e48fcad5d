"""Suspending and cancelling stored flows on request (`zag.suspend_flow`, `zag.cancel_flow`).

A request is stored with the flow; the engine running it applies it (at once in
this process, at its next lease renewal elsewhere), and a flow that runs nowhere
applies it when it is resumed. A cancelled flow reverts everything that ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import eventually

import zag_async as zag
from zag_async import control
from zag_async.errors import ConfigurationError, ControlRefused, FlowCancelled
from zag_async.jobs import connect as connect_board
from zag_async.persistence.base import Backend
from zag_async.states import AtomState, FlowState

DONE: list[str] = []
GATE: dict[str, asyncio.Event] = {}


def gate(name: str) -> asyncio.Event:
    return GATE.setdefault(name, asyncio.Event())


@zag.task(provides="a")
async def step_a() -> str:
    DONE.append("a")
    return "a"


@step_a.revert
async def undo_a(**_: Any) -> None:
    DONE.append("undo a")


@zag.task(provides="b")
async def step_b(a: str, tag: str) -> str:
    DONE.append("b started")
    await gate(tag).wait()
    DONE.append("b")
    return a + "b"


@step_b.revert
async def undo_b(**_: Any) -> None:
    DONE.append("undo b")


@zag.task(provides="c")
async def step_c(b: str) -> str:
    DONE.append("c")
    return b + "c"


def three() -> zag.Flow:
    return zag.linear("three", step_a, step_b, step_c)


def waits() -> zag.Flow:
    return zag.linear("waits", step_a, zag.wait_for("approve", event="approval"), step_c_free)


@zag.task
async def step_c_free() -> None:
    DONE.append("c")


@zag.task(provides="p", irreversible=True)
async def point_of_no_return(a: str, tag: str) -> str:
    DONE.append("pivot")
    await gate(tag).wait()
    return "p"


def with_pivot() -> zag.Flow:
    return zag.linear("pivoted", step_a, point_of_no_return)


@pytest.fixture(autouse=True)
def _clean() -> None:
    DONE.clear()
    GATE.clear()


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[Backend]:
    async with zag.connect(f"sqlite+aiosqlite:///{tmp_path / 'flows.db'}") as opened:
        yield opened


async def started(engine: zag.Engine, tag: str) -> asyncio.Task[Any]:
    """Run the engine until step_b is running (held at its gate)."""
    running = asyncio.create_task(engine.run())
    await eventually(lambda: "b started" in DONE, what="step b running")
    return running


async def test_cancel_reverts_everything_that_ran(backend: Backend) -> None:
    engine = zag.Engine.from_factory(three, store={"tag": "t"}, backend=backend)
    running = await started(engine, "t")
    await zag.cancel_flow(engine.flow_id, backend=backend, by="ann", reason="customer left")
    gate("t").set()  # the running atom finishes; then it is reverted with the rest
    with pytest.raises(FlowCancelled, match="cancelled by ann: customer left"):
        await running
    detail = await backend.load_flow(engine.flow_id)
    assert detail.state is FlowState.REVERTED
    assert detail.meta["cancelled"]["by"] == "ann"
    assert DONE == ["a", "b started", "b", "undo b", "undo a"]
    assert detail.atoms["step_c"].state is AtomState.PENDING
    assert {detail.atoms[n].state for n in ("step_a", "step_b")} == {AtomState.REVERTED}


async def test_engine_cancel_in_process(backend: Backend) -> None:
    engine = zag.Engine.from_factory(three, store={"tag": "t"}, backend=backend)
    running = await started(engine, "t")
    engine.cancel(by="me")
    gate("t").set()
    with pytest.raises(FlowCancelled):
        await running
    assert engine.state is FlowState.REVERTED


async def test_suspend_on_request_then_resume(backend: Backend) -> None:
    engine = zag.Engine.from_factory(three, store={"tag": "t"}, backend=backend)
    running = await started(engine, "t")
    await zag.suspend_flow(engine.flow_id, backend=backend, by="ann")
    gate("t").set()
    await running
    detail = await backend.load_flow(engine.flow_id)
    assert detail.state is FlowState.SUSPENDED
    assert detail.meta["suspended_by"]["by"] == "ann"
    assert "c" not in DONE
    assert await zag.resume(engine.flow_id, backend=backend) == {
        "a": "a",
        "b": "ab",
        "c": "abc",
        "tag": "t",
    }
    detail = await backend.load_flow(engine.flow_id)
    assert detail.state is FlowState.SUCCESS and "suspended_by" not in detail.meta


async def test_a_request_from_another_process_is_seen_at_the_next_beat(
    backend: Backend,
) -> None:
    # Stored as another process stores it (no engine of its own to tell): the
    # engine finds it when it renews its lease (every 0.2 s with a 0.6 s lease).
    engine = zag.Engine.from_factory(three, store={"tag": "t"}, backend=backend, lease=0.6)
    running = await started(engine, "t")
    payload = {"action": "cancel", "by": "elsewhere", "reason": "", "at": 0.0}
    await backend.add_signal(engine.flow_id, control.CONTROL_EVENT, payload, "req-1")

    # The beat notices the request; the run takes it at its next step, here when
    # step b (run inline: the only call) ends. Give the beats (0.2 s apart) time.
    await asyncio.sleep(1.5)
    assert not any(s.taken_by for s in await backend.list_signals(engine.flow_id))
    gate("t").set()
    with pytest.raises(FlowCancelled, match="elsewhere"):
        async with asyncio.timeout(10):
            await running
    assert DONE[-2:] == ["undo b", "undo a"]


async def test_a_waiting_flow_is_cancelled_when_resumed(backend: Backend) -> None:
    engine = zag.Engine.from_factory(waits, backend=backend)
    await engine.run()
    assert engine.state is FlowState.WAITING
    await zag.cancel_flow(engine.flow_id, backend=backend, by="ann")
    with pytest.raises(FlowCancelled):
        await zag.resume(engine.flow_id, backend=backend)
    detail = await backend.load_flow(engine.flow_id)
    assert detail.state is FlowState.REVERTED
    assert detail.atoms["approve"].state is AtomState.REVERTED
    assert DONE == ["a", "undo a"]


async def test_cancelling_a_waiting_flow_wakes_its_job(backend: Backend, tmp_path: Path) -> None:
    async with connect_board("memory://", backend=backend) as board:
        job = await board.post("waits", waits)
        async with running_conductor(board, backend):
            await eventually(
                lambda: _state(backend, job.flow_id, FlowState.WAITING), what="waiting"
            )
            await zag.cancel_flow(job.flow_id, backend=backend, board=board, by="ann")
            outcome = await asyncio.wait_for(board.wait(job.uuid), 20)
    assert outcome.state == "REVERTED"
    assert DONE == ["a", "undo a"]


async def test_a_suspended_job_is_parked_until_resumed(backend: Backend) -> None:
    async with connect_board("memory://", backend=backend) as board:
        job = await board.post("three", three, store={"tag": "j"})
        async with running_conductor(board, backend):
            await eventually(lambda: "b started" in DONE, what="step b running")
            await zag.suspend_flow(job.flow_id, backend=backend, by="ann")
            gate("j").set()
            await eventually(
                lambda: _state(backend, job.flow_id, FlowState.SUSPENDED), what="suspended"
            )
            await asyncio.sleep(0.5)  # parked: no conductor picks it up again
            assert "c" not in DONE
            assert (await backend.load_flow(job.flow_id)).state is FlowState.SUSPENDED
            assert await board.wake(job.uuid)
            outcome = await asyncio.wait_for(board.wait(job.uuid), 20)
    assert outcome.state == "SUCCESS"
    assert DONE[-1] == "c"


@contextlib.asynccontextmanager
async def running_conductor(board: Any, backend: Backend) -> AsyncIterator[zag.Conductor]:
    async with zag.Conductor(board, backend=backend, name="c1") as conductor:
        task = asyncio.create_task(conductor.run())
        try:
            yield conductor
        finally:
            conductor.stop()
            await asyncio.wait_for(task, 20)


async def _state(backend: Backend, flow_id: str, state: FlowState) -> bool:
    return (await backend.load_flow(flow_id)).state is state


async def test_a_flow_past_its_pivot_is_not_cancelled(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    engine = zag.Engine(with_pivot(), store={"tag": "p"}, backend=backend)
    running = asyncio.create_task(engine.run())
    await eventually(lambda: "pivot" in DONE, what="pivot running")
    gate("p").set()
    await eventually(
        lambda: engine.storage.get("point_of_no_return").state is AtomState.SUCCESS,
        what="pivot done",
    )
    engine.cancel(by="late")
    with caplog.at_level(logging.WARNING, logger="zag_async"):
        await running
    assert engine.state is FlowState.SUCCESS


@pytest.mark.parametrize("action", ["suspend", "cancel"])
async def test_requests_that_cannot_apply_are_refused(backend: Backend, action: str) -> None:
    ask = zag.suspend_flow if action == "suspend" else zag.cancel_flow
    with pytest.raises(ControlRefused) as unknown:
        await ask("no-such-flow", backend=backend)
    assert unknown.value.kind == "unknown_flow"
    done = zag.Engine(three(), store={"tag": "x"}, backend=backend)
    gate("x").set()
    await done.run()
    with pytest.raises(ControlRefused, match="finished") as finished:
        await ask(done.flow_id, backend=backend)
    assert finished.value.kind == "finished"
    with pytest.raises(ConfigurationError, match="by"):
        await ask(done.flow_id, backend=backend, by=7)  # type: ignore[arg-type]


async def test_suspending_a_waiting_flow_is_refused(backend: Backend) -> None:
    engine = zag.Engine.from_factory(waits, backend=backend)
    await engine.run()
    with pytest.raises(ControlRefused, match="nothing runs") as refused:
        await zag.suspend_flow(engine.flow_id, backend=backend)
    assert refused.value.kind == "not_running"


async def test_a_malformed_request_is_ignored(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    engine = zag.Engine.from_factory(waits, backend=backend)
    await engine.run()
    await backend.add_signal(engine.flow_id, control.CONTROL_EVENT, {"action": "explode"}, "bad")
    await backend.add_signal(engine.flow_id, control.CONTROL_EVENT, ["garbage"], "worse")
    with caplog.at_level(logging.WARNING, logger="zag_async"):
        resumed = await zag.Engine.load(engine.flow_id, backend=backend)
        await resumed.run()
    assert resumed.state is FlowState.WAITING
    assert caplog.text.count("malformed control request") == 2


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.text(),
        lambda kids: st.lists(kids) | st.dictionaries(st.text(), kids),
    )
)
def test_any_stored_payload_reads_as_a_request_or_none(payload: Any) -> None:
    request = control.Request.read(payload)
    assert request is None or request["action"] in ("suspend", "cancel")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(flow_id=st.text(max_size=50), by=st.one_of(st.text(max_size=300), st.integers()))
async def test_hostile_requests_get_a_clear_error(backend: Backend, flow_id: str, by: Any) -> None:
    with pytest.raises((ControlRefused, ConfigurationError)):
        await zag.cancel_flow(flow_id, backend=backend, by=by)


async def test_a_cancel_after_a_suspend_still_reverts(backend: Backend) -> None:
    engine = zag.Engine.from_factory(three, store={"tag": "t"}, backend=backend)
    running = await started(engine, "t")
    await zag.suspend_flow(engine.flow_id, backend=backend, by="ann")
    await zag.cancel_flow(engine.flow_id, backend=backend, by="ann", reason="changed my mind")
    gate("t").set()
    with pytest.raises(FlowCancelled):
        await running
    detail = await backend.load_flow(engine.flow_id)
    assert detail.state is FlowState.REVERTED and "suspended_by" not in detail.meta
    assert DONE == ["a", "b started", "b", "undo b", "undo a"]


async def test_a_suspend_asked_for_a_run_that_stopped_is_dropped(backend: Backend) -> None:
    # Stored as from another process (no engine here to tell) while the flow runs;
    # the run stops before it looks (a conductor's shutdown, say): the next resume
    # is not suspended by it.
    engine = zag.Engine.from_factory(three, store={"tag": "t"}, backend=backend)
    running = await started(engine, "t")
    payload = {"action": "suspend", "by": "bob", "reason": "", "at": 0.0}
    await backend.add_signal(engine.flow_id, control.CONTROL_EVENT, payload, "late-suspend")
    engine.suspend()
    gate("t").set()
    await running
    assert engine.state is FlowState.SUSPENDED
    await zag.resume(engine.flow_id, backend=backend)
    assert (await backend.load_flow(engine.flow_id)).state is FlowState.SUCCESS


async def test_a_cancel_while_the_run_ends_is_kept_for_its_resume(backend: Backend) -> None:
    engine = zag.Engine.from_factory(waits, backend=backend)
    real_commit = engine.storage.commit
    asked: list[Any] = []

    async def commit() -> None:  # the cancel arrives while the WAITING end is written
        if engine.storage.flow.state is FlowState.WAITING and not asked:
            asked.append(await zag.cancel_flow(engine.flow_id, backend=backend, by="ann"))
        await real_commit()

    engine.storage.commit = commit  # type: ignore[method-assign]
    await engine.run()
    assert asked and engine.state is FlowState.WAITING
    with pytest.raises(FlowCancelled):
        await zag.resume(engine.flow_id, backend=backend)
    assert (await backend.load_flow(engine.flow_id)).state is FlowState.REVERTED


@pytest.mark.parametrize("action", ["cancel", "suspend"])
async def test_a_request_for_a_pending_stored_flow_applies_when_it_starts(
    backend: Backend, action: str
) -> None:
    engine = zag.Engine.from_factory(three, store={"tag": "t"}, backend=backend)
    await engine.storage.commit()  # stored PENDING, as a posted job's flow is
    ask = zag.cancel_flow if action == "cancel" else zag.suspend_flow
    await ask(engine.flow_id, backend=backend, by="ann")
    gate("t").set()
    if action == "cancel":
        with pytest.raises(FlowCancelled):
            await engine.run()
        assert engine.state is FlowState.REVERTED
    else:
        await engine.run()
        assert engine.state is FlowState.SUSPENDED
    assert DONE == []  # nothing ran
