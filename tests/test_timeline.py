"""The timeline each atom keeps in `meta["timeline"]` when the flow has a backend:
one `[kind, start, end, outcome]` entry per execute or revert, kept across
retries and resumes, bounded, and never written without a backend."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from conftest import ALWAYS, Boom, Step
from support import eventually

import zag_async as zag
from zag_async.models import AtomDetail
from zag_async.scheduler import TIMELINE_KEY, TIMELINE_LIMIT, _begin, _end

S = zag.AtomState
F = zag.FlowState


def entries(detail: zag.FlowDetail, atom: str) -> list[list[Any]]:
    return list((detail.atoms[atom].meta or {}).get(TIMELINE_KEY, []))


def outcomes(detail: zag.FlowDetail, atom: str) -> list[tuple[str, str | None]]:
    return [(kind, outcome) for kind, _, _, outcome in entries(detail, atom)]


@pytest.fixture
async def backend() -> Any:
    async with zag.persistence.connect("memory://") as opened:
        yield opened


async def test_each_execute_is_recorded_with_its_start_and_end(
    backend: Any, calls: list[str]
) -> None:
    a, b = Step("a", calls), Step("b", calls)
    engine = zag.Engine(zag.linear("f", a, b), backend=backend)
    await engine.run()

    stored = await backend.load_flow(engine.flow_id)
    assert outcomes(stored, "a") == [("execute", "SUCCESS")]
    assert outcomes(stored, "b") == [("execute", "SUCCESS")]
    _, a_start, a_end, _ = entries(stored, "a")[0]
    _, b_start, b_end, _ = entries(stored, "b")[0]
    assert stored.created_at - 1 <= a_start <= a_end <= b_start <= b_end


async def test_a_retried_atom_keeps_every_attempt_and_revert(
    backend: Any, calls: list[str]
) -> None:
    flaky = Step("flaky", calls, fails=2)
    engine = zag.Engine(zag.linear("f", flaky, retry=zag.retry.Times(3)), backend=backend)
    await engine.run()

    stored = await backend.load_flow(engine.flow_id)
    assert outcomes(stored, "flaky") == [
        ("execute", "FAILURE"),
        ("revert", "REVERTED"),
        ("execute", "FAILURE"),
        ("revert", "REVERTED"),
        ("execute", "SUCCESS"),
    ]
    assert [kind for kind, _ in outcomes(stored, "f.retry")] == ["execute"] * 3
    starts = [start for _, start, _, _ in entries(stored, "flaky")]
    assert starts == sorted(starts)


async def test_a_failed_flow_records_its_reverts(backend: Any, calls: list[str]) -> None:
    engine = zag.Engine(
        zag.linear("f", Step("a", calls), Step("b", calls, fails=ALWAYS)), backend=backend
    )
    with pytest.raises(Boom):
        await engine.run()

    stored = await backend.load_flow(engine.flow_id)
    assert outcomes(stored, "a") == [("execute", "SUCCESS"), ("revert", "REVERTED")]
    assert outcomes(stored, "b") == [("execute", "FAILURE"), ("revert", "REVERTED")]
    assert entries(stored, "b")[1][1] <= entries(stored, "a")[1][1]  # b is undone first


async def test_nothing_is_recorded_without_a_backend(calls: list[str]) -> None:
    engine = zag.Engine(zag.linear("f", Step("a", calls)))
    await engine.run()
    assert engine.storage.get("a").meta is None


#: Opened by each test that holds an atom (made anew per test: an Event binds to its loop).
HELD: dict[str, asyncio.Event] = {}


@zag.task(provides="x")
async def held() -> int:
    await HELD["gate"].wait()
    return 1


@zag.task(provides="x", idempotent=False)
async def charge() -> int:
    await HELD["gate"].wait()
    return 1


async def stop_while_running(backend: Any, task: Any) -> str:
    """Run a one-atom flow until its atom is stored RUNNING, then cancel the run."""
    HELD["gate"] = asyncio.Event()
    engine = zag.Engine(zag.linear("f", task), backend=backend)
    running = asyncio.create_task(engine.run())

    async def stored_running() -> bool:
        try:
            detail = await backend.load_flow(engine.flow_id)
        except zag.errors.NotFound:
            return False
        return bool(detail.atoms[task.name].state is S.RUNNING)

    await eventually(stored_running, what="the atom stored RUNNING")
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    stored = await backend.load_flow(engine.flow_id)
    assert outcomes(stored, task.name) == [("execute", None)]  # still open
    return engine.flow_id


async def test_a_resumed_atom_closes_its_cut_off_entry_and_opens_a_new_one(backend: Any) -> None:
    flow_id = await stop_while_running(backend, held)
    HELD["gate"].set()
    resumed = await zag.Engine.load(flow_id, backend=backend, flow=zag.linear("f", held))
    await resumed.run()

    stored = await backend.load_flow(flow_id)
    assert outcomes(stored, "held") == [("execute", "INTERRUPTED"), ("execute", "SUCCESS")]
    assert entries(stored, "held")[0][2] is None  # when it stopped is not known


async def test_a_flow_left_running_by_a_crash_resumes_with_a_closed_entry(backend: Any) -> None:
    # What a crashed engine leaves: the flow RUNNING, its atom RUNNING with an open entry.
    started = time.time() - 5
    atom = AtomDetail("held", state=S.RUNNING, attempts=1, meta={TIMELINE_KEY: []})
    assert atom.meta is not None
    atom.meta[TIMELINE_KEY].append(["execute", started, None, None])
    crashed = zag.FlowDetail(name="f", state=F.RUNNING)
    await backend.save(crashed, [atom])
    HELD["gate"] = asyncio.Event()
    HELD["gate"].set()
    resumed = await zag.Engine.load(crashed.uuid, backend=backend, flow=zag.linear("f", held))
    await resumed.run()

    stored = await backend.load_flow(crashed.uuid)
    assert stored.state is F.SUCCESS and stored.atoms["held"].attempts == 2
    assert entries(stored, "held")[0] == ["execute", started, None, "INTERRUPTED"]
    assert outcomes(stored, "held")[1] == ("execute", "SUCCESS")
    assert entries(stored, "held")[1][1] >= started + 5


async def test_a_resumed_non_idempotent_atom_is_marked_interrupted(backend: Any) -> None:
    flow_id = await stop_while_running(backend, charge)
    HELD["gate"].set()
    resumed = await zag.Engine.load(flow_id, backend=backend, flow=zag.linear("f", charge))
    with pytest.raises(zag.errors.AtomInterrupted):
        await resumed.run()

    stored = await backend.load_flow(flow_id)
    assert outcomes(stored, "charge") == [("execute", "INTERRUPTED"), ("revert", "REVERTED")]


async def test_a_wait_keeps_one_entry_open_across_resumes(backend: Any) -> None:
    def flow() -> zag.Flow:
        return zag.linear("w", zag.wait_for("approve", event="go", provides="approval"))

    engine = zag.Engine(flow(), backend=backend)
    await engine.run()
    assert engine.state is F.WAITING
    await engine.run()  # no signal yet: still waiting
    stored = await backend.load_flow(engine.flow_id)
    assert outcomes(stored, "approve") == [("execute", None)]

    await zag.waiting.signal(engine.flow_id, "go", {"ok": True}, backend=backend)
    await engine.run()
    stored = await backend.load_flow(engine.flow_id)
    assert stored.state is F.SUCCESS
    assert outcomes(stored, "approve") == [("execute", "SUCCESS")]


def test_the_timeline_is_bounded_and_survives_garbage() -> None:
    d = AtomDetail("a", meta={TIMELINE_KEY: "not a list"})
    for _ in range(TIMELINE_LIMIT + 5):
        _begin(d, "execute")
        _end(d, "execute", "FAILURE", 0.0)
    assert d.meta is not None
    line = d.meta[TIMELINE_KEY]
    assert len(line) == TIMELINE_LIMIT
    assert all(outcome == "FAILURE" for _, _, _, outcome in line)

    d.meta[TIMELINE_KEY] = [None, "x", [1, 2]]  # hostile entries: left alone, appended to
    _end(d, "revert", "REVERTED", 0.5)
    kind, start, end, outcome = d.meta[TIMELINE_KEY][-1]
    assert (kind, outcome) == ("revert", "REVERTED") and end - start == pytest.approx(0.5)
