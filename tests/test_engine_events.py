"""Events: listeners, run_iter, progress, and the shipped listeners."""

from __future__ import annotations

import io
from typing import Any

import pytest
from conftest import ALWAYS, Boom, Step

import zag_async as zag


def summary(events: list[zag.Event]) -> list[tuple[str, str | None, str]]:
    """(kind, atom, state) of each event: enough to check the order."""
    return [(e.kind, e.atom, str(e.state)) for e in events]


SUCCESS_EVENTS = [
    ("flow", None, "RUNNING"),
    ("atom", "a", "RUNNING"),
    ("atom", "a", "SUCCESS"),
    ("atom", "b", "RUNNING"),
    ("atom", "b", "SUCCESS"),
    ("flow", None, "SUCCESS"),
]

FAILURE_EVENTS = [
    ("flow", None, "RUNNING"),
    ("atom", "a", "RUNNING"),
    ("atom", "a", "SUCCESS"),
    ("atom", "b", "RUNNING"),
    ("atom", "b", "FAILURE"),
    ("atom", "b", "REVERTING"),
    ("atom", "b", "REVERTED"),
    ("atom", "a", "REVERTING"),
    ("atom", "a", "REVERTED"),
    ("flow", None, "REVERTED"),
]


async def test_sync_listener_gets_flow_and_atom_events_in_order(calls: list[str]) -> None:
    events: list[zag.Event] = []
    flow = zag.linear("f", Step("a", calls, value=1), Step("b", calls, value=2))

    await zag.run(flow, listeners=[events.append])

    assert summary(events) == SUCCESS_EVENTS
    assert all(e.flow == "f" for e in events)
    assert [e.result for e in events if e.state == "SUCCESS" and e.kind == "atom"] == [1, 2]


async def test_sync_listener_sees_failures_and_reverts(calls: list[str]) -> None:
    events: list[zag.Event] = []
    flow = zag.linear("f", Step("a", calls), Step("b", calls, fails=ALWAYS))

    with pytest.raises(Boom):
        await zag.run(flow, listeners=[events.append])

    assert summary(events) == FAILURE_EVENTS
    failed = next(e for e in events if e.state == "FAILURE")
    assert failed.failure is not None
    assert failed.failure.check(Boom)
    assert failed.failure.message == "b failed (call 1)"


async def test_async_listener_gets_the_same_events(calls: list[str]) -> None:
    events: list[zag.Event] = []

    async def listen(event: zag.Event) -> None:
        events.append(event)

    flow = zag.linear("f", Step("a", calls, value=1), Step("b", calls, value=2))
    await zag.run(flow, listeners=[listen])

    assert summary(events) == SUCCESS_EVENTS


async def test_async_listener_sees_failures_and_reverts(calls: list[str]) -> None:
    events: list[zag.Event] = []

    async def listen(event: zag.Event) -> None:
        events.append(event)

    flow = zag.linear("f", Step("a", calls), Step("b", calls, fails=ALWAYS))
    with pytest.raises(Boom):
        await zag.run(flow, listeners=[listen])

    assert summary(events) == FAILURE_EVENTS


async def test_engine_add_listener_returns_a_detach_function(calls: list[str]) -> None:
    events: list[zag.Event] = []
    engine = zag.Engine(zag.linear("f", Step("a", calls)))
    detach = engine.add_listener(events.append)
    detach()

    await engine.run()

    assert events == []


async def test_a_broken_listener_does_not_break_the_flow(calls: list[str]) -> None:
    def broken(event: zag.Event) -> None:
        raise RuntimeError("listener bug")

    # The engine logs the listener's error; the flow itself must still succeed.
    results = await zag.run(zag.linear("f", Step("a", calls, provides="a")), listeners=[broken])

    assert results == {"a": "a"}


async def test_run_iter_yields_events_as_they_happen(calls: list[str]) -> None:
    engine = zag.Engine(zag.linear("f", Step("a", calls, value=1), Step("b", calls, value=2)))

    events = [event async for event in engine.run_iter()]

    assert summary(events) == SUCCESS_EVENTS
    assert engine.state is zag.FlowState.SUCCESS


async def test_run_iter_reraises_the_flow_error_after_the_events(calls: list[str]) -> None:
    engine = zag.Engine(zag.linear("f", Step("a", calls), Step("b", calls, fails=ALWAYS)))
    events: list[zag.Event] = []

    with pytest.raises(Boom, match="b failed"):
        async for event in engine.run_iter():
            events.append(event)

    assert summary(events) == FAILURE_EVENTS
    assert engine.state is zag.FlowState.REVERTED


async def test_progress_from_async_and_sync_tasks() -> None:
    @zag.task
    async def download() -> None:
        zag.progress(0.5)
        zag.progress(1.0, note="done")

    @zag.task
    def crunch() -> None:
        zag.progress(0.25)

    events: list[zag.Event] = []
    await zag.run(zag.linear("f", download, crunch), listeners=[events.append])

    progress = [(e.atom, e.progress) for e in events if e.kind == "progress"]
    assert progress == [("download", 0.5), ("download", 1.0), ("crunch", 0.25)]
    done = next(e for e in events if e.kind == "progress" and e.progress == 1.0)
    assert done.details == {"note": "done"}
    # Each progress event falls between its atom's RUNNING and SUCCESS.
    order = [(e.atom, e.kind if e.kind == "progress" else str(e.state)) for e in events if e.atom]
    assert order == [
        ("download", "RUNNING"),
        ("download", "progress"),
        ("download", "progress"),
        ("download", "SUCCESS"),
        ("crunch", "RUNNING"),
        ("crunch", "progress"),
        ("crunch", "SUCCESS"),
    ]


def test_progress_outside_a_task_is_an_error() -> None:
    with pytest.raises(zag.errors.ExecutionError, match="inside a running task"):
        zag.progress(0.5)


async def test_printing_listener_writes_one_line_per_event(calls: list[str]) -> None:
    out = io.StringIO()
    flow = zag.linear("order", Step("charge", calls, value=9.5), Step("ship", calls, fails=ALWAYS))

    with pytest.raises(Boom):
        await zag.run(flow, listeners=[zag.PrintingListener(file=out)])

    lines = out.getvalue().splitlines()
    assert lines[:3] == ["flow 'order': RUNNING", "  charge: RUNNING", "  charge: SUCCESS -> 9.5"]
    assert lines[3] == "  ship: RUNNING"
    assert lines[4].startswith("  ship: FAILURE (")
    assert "Boom" in lines[4]
    assert lines[4].endswith(": ship failed (call 1))")
    assert lines[-1] == "flow 'order': REVERTED"
    assert "  charge: REVERTED" in lines


async def test_printing_listener_shows_progress_when_asked() -> None:
    @zag.task
    async def work() -> None:
        zag.progress(0.5)

    quiet, chatty = io.StringIO(), io.StringIO()
    await zag.run(zag.linear("f", work), listeners=[zag.PrintingListener(file=quiet)])
    await zag.run(
        zag.linear("f", work), listeners=[zag.PrintingListener(file=chatty, progress=True)]
    )

    assert "50%" not in quiet.getvalue()
    assert "  work: 50%" in chatty.getvalue().splitlines()


async def test_timing_listener_records_durations(calls: list[str]) -> None:
    import asyncio

    @zag.task
    async def slow() -> None:
        await asyncio.sleep(0.02)

    @slow.revert
    async def undo(**kwargs: Any) -> None:
        await asyncio.sleep(0.02)

    timing = zag.TimingListener()
    flow = zag.linear("f", slow, Step("boom", calls, fails=ALWAYS))
    with pytest.raises(Boom):
        await zag.run(flow, listeners=[timing])

    assert set(timing.durations) == {"slow", "boom"}
    assert timing.durations["slow"] >= 0.015
    assert timing.durations["boom"] >= 0
    assert timing.revert_durations["slow"] >= 0.015


async def test_logging_listener_logs_events(
    calls: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    logger = logging.getLogger("test.zag.events")
    with caplog.at_level(logging.INFO, logger="test.zag.events"):
        await zag.run(zag.linear("f", Step("a", calls)), listeners=[zag.LoggingListener(logger)])

    messages = [r.getMessage() for r in caplog.records if r.name == "test.zag.events"]
    assert messages == [
        "flow f -> RUNNING",
        "f.a -> RUNNING",
        "f.a -> SUCCESS",
        "flow f -> SUCCESS",
    ]


async def test_nothing_is_printed_by_default(
    calls: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    await zag.run(zag.linear("ok", Step("a", calls)))
    with pytest.raises(Boom):
        await zag.run(zag.linear("bad", Step("b", calls, fails=ALWAYS)))

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ""
