"""The conductor, in process, on memory:// and on a real ZooKeeper.

Each test runs conductors against its own board (the `board` fixture) and a
memory:// backend for flow state (PostgreSQL where a test says so); the flows
come from tests/jobs/flows.py and log what they do there.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from support import eventually

import zag_async as zag
from zag_async.jobs import JobBoard, JobState

from . import flows
from .conftest import BoardOpener, wait_outcome

EVERY_SECOND = "* * * * * *"


class Recorder:
    """Collects a conductor's events; optionally reacts to them."""

    def __init__(self, react: Callable[[zag.ConductorEvent], None] | None = None) -> None:
        self.events: list[zag.ConductorEvent] = []
        self.react = react

    def __call__(self, event: zag.ConductorEvent) -> None:
        self.events.append(event)
        if self.react is not None:
            self.react(event)

    def kinds(self, job: zag.jobs.Job | None = None) -> list[str]:
        return [e.kind for e in self.events if job is None or e.job.uuid == job.uuid]

    def of(self, kind: str) -> list[zag.ConductorEvent]:
        return [e for e in self.events if e.kind == kind]


@contextlib.asynccontextmanager
async def running(
    board: JobBoard,
    backend: zag.persistence.Backend,
    *,
    recorder: Recorder | None = None,
    **options: Any,
) -> AsyncIterator[zag.Conductor]:
    """A conductor running in the background; stopped (and awaited) on exit."""
    options.setdefault("name", "c1")
    conductor = zag.Conductor(board, backend=backend, listeners=[recorder or Recorder()], **options)
    task = asyncio.create_task(conductor.run(), name=f"conductor-{options['name']}")
    try:
        yield conductor
    finally:
        conductor.stop()
        async with asyncio.timeout(15):
            await task


def stop_on(conductor: zag.Conductor, kind: str) -> Callable[[zag.ConductorEvent], None]:
    """A reaction that stops `conductor` at its first event of `kind`."""

    def react(event: zag.ConductorEvent) -> None:
        if event.kind == kind:
            conductor.stop()

    return react


async def board_now_of(local: float, board: JobBoard) -> float:
    """A local time.time() value translated to the board's clock."""
    return local + (await board.now() - time.time())


# -- running jobs --------------------------------------------------------------------


async def test_runs_posted_jobs_and_consumes_them(
    board: JobBoard, backend: zag.persistence.Backend
) -> None:
    early = await board.post("add", flows.adder, "early", store={"x": 1, "y": 2})
    recorder = Recorder()
    async with running(board, backend, recorder=recorder, name="worker-1"):
        outcome = await wait_outcome(early)
        # A job posted while the conductor waits is picked up too (pushed, no polling).
        late = await board.post("add", flows.adder, "late", store={"x": 20, "y": 22})
        late_outcome = await wait_outcome(late)

    assert outcome.state == "SUCCESS"
    assert outcome.results == {"x": 1, "y": 2, "s0": "early:s0-out", "total": 3}
    assert (outcome.job_id, outcome.flow_id) == (early.uuid, early.flow_id)
    assert late_outcome.results is not None and late_outcome.results["total"] == 42
    assert await board.jobs() == []
    assert (await backend.load_flow(early.flow_id)).state is zag.FlowState.SUCCESS

    assert recorder.kinds(early) == ["claimed", "started", "consumed"]
    assert recorder.kinds(late) == ["claimed", "started", "consumed"]
    claimed = recorder.of("claimed")[0]
    assert claimed.conductor == "worker-1"
    assert isinstance(claimed.extra["token"], int)
    consumed = recorder.of("consumed")[0]
    assert consumed.outcome == outcome


async def test_claims_in_priority_order_with_one_slot(
    board: JobBoard, backend: zag.persistence.Backend
) -> None:
    posted = [
        await board.post("low", flows.steps, "low", 1, priority=0),
        await board.post("high", flows.steps, "high", 1, priority=5),
        await board.post("mid", flows.steps, "mid", 1, priority=1),
        await board.post("high2", flows.steps, "high2", 1, priority=5),
        await board.post("low2", flows.steps, "low2", 1, priority=0),
    ]
    recorder = Recorder()
    async with running(board, backend, recorder=recorder, max_jobs=1):
        for job in posted:
            assert (await wait_outcome(job)).ok
    order = [entry.split(":")[0] for entry in flows.LOG if not entry.startswith("done")]
    assert order == ["high", "high2", "mid", "low", "low2"]
    assert [e.job.name for e in recorder.of("claimed")] == order


async def test_max_jobs_bounds_concurrency(
    board: JobBoard, backend: zag.persistence.Backend
) -> None:
    jobs = [await board.post("busy", flows.busy, f"b{i}", 0.15) for i in range(6)]
    async with running(board, backend, max_jobs=2) as conductor:
        assert conductor.max_jobs == 2
        for job in jobs:
            assert (await wait_outcome(job)).ok
    assert flows.peak() == 2  # reached the bound, never more


async def test_reverted_flow_is_consumed_as_reverted(
    board: JobBoard, backend: zag.persistence.Backend
) -> None:
    job = await board.post("rev", flows.reverting, "r")
    recorder = Recorder()
    async with running(board, backend, recorder=recorder):
        outcome = await wait_outcome(job)
    assert outcome.state == "REVERTED"
    assert outcome.error is not None and "Boom" in outcome.error
    assert "revert r:s0" in flows.LOG
    assert recorder.kinds(job) == ["claimed", "started", "consumed"]
    assert (await backend.load_flow(job.flow_id)).state is zag.FlowState.REVERTED
    assert await board.jobs() == []


async def test_failed_flow_is_trashed(board: JobBoard, backend: zag.persistence.Backend) -> None:
    job = await board.post("bad", flows.bad_revert, "f")
    recorder = Recorder()
    async with running(board, backend, recorder=recorder):
        outcome = await wait_outcome(job)
    assert outcome.state == "TRASHED"
    assert outcome.error is not None and "UNCOMPENSATED" in outcome.error
    assert recorder.kinds(job) == ["claimed", "started", "trashed"]
    assert (await backend.load_flow(job.flow_id)).state is zag.FlowState.UNCOMPENSATED
    assert await board.jobs() == []


# -- jobs whose flow cannot be built -------------------------------------------------


async def test_unbuildable_job_trashed_after_build_attempts_across_conductors(
    board: JobBoard, backend: zag.persistence.Backend
) -> None:
    job = await board.post("ghost", "zag_test_no_such_module:make", "g")
    counts = []
    for i in range(2):
        # Each conductor tries once, gives the job back and is told to stop.
        recorder = Recorder()
        conductor = zag.Conductor(
            board, backend=backend, name=f"c{i}", build_attempts=3, listeners=[recorder]
        )
        recorder.react = stop_on(conductor, "abandoned")
        async with asyncio.timeout(10):
            await conductor.run()
        assert recorder.kinds(job) == ["claimed", "abandoned"]
        assert "could not be built" in (recorder.of("abandoned")[0].detail or "")
        stored = await board.get(job.uuid)
        assert stored.state is JobState.UNCLAIMED
        counts.append(stored.build_failures)  # visible to everyone between attempts
    assert counts == [1, 2]

    recorder = Recorder()
    async with running(board, backend, recorder=recorder, name="c2", build_attempts=3):
        outcome = await wait_outcome(job)
    assert outcome.state == "TRASHED"
    assert outcome.error is not None
    assert "3" in outcome.error and "zag_test_no_such_module" in outcome.error
    assert recorder.kinds(job) == ["claimed", "trashed"]
    assert await board.jobs() == []


async def test_one_conductor_retries_a_build_then_trashes(
    board: JobBoard, backend: zag.persistence.Backend
) -> None:
    job = await board.post("not-a-flow", flows.not_a_flow, "n")
    recorder = Recorder()
    async with running(board, backend, recorder=recorder, build_attempts=2):
        outcome = await wait_outcome(job)
    assert outcome.state == "TRASHED"
    assert recorder.kinds(job) == ["claimed", "abandoned", "claimed", "trashed"]
    assert flows.LOG == []


async def test_a_job_whose_flow_record_is_gone_ends_in_the_trash(
    board: JobBoard, backend: zag.persistence.Backend
) -> None:
    """Not claimed and given back forever (a busy loop): counted as a build failure."""
    job = await board.post("gone", flows.steps, "g", 1)
    await backend.delete_flow(job.flow_id)
    recorder = Recorder()
    async with running(board, backend, recorder=recorder, build_attempts=2):
        outcome = await wait_outcome(job)
    assert outcome.state == "TRASHED"
    assert outcome.error is not None and "no flow" in outcome.error
    assert recorder.kinds(job) == ["claimed", "abandoned", "claimed", "trashed"]


# -- stopping and resuming -----------------------------------------------------------


@pytest.mark.parametrize("persistence", ["memory", "postgres"])
async def test_stop_abandons_running_job_and_another_conductor_resumes_it(
    board: JobBoard, backend: zag.persistence.Backend, open_board: BoardOpener
) -> None:
    flows.HOLD.add("h:s1")
    job = await board.post("held", flows.steps, "h", 3)
    first = Recorder()
    conductor = zag.Conductor(board, backend=backend, name="first", listeners=[first])
    task = asyncio.create_task(conductor.run())
    async with asyncio.timeout(10):
        await flows.started("h:s1").wait()
    conductor.stop()  # s1 is running: it finishes, nothing new starts
    flows.release("h:s1")
    async with asyncio.timeout(10):
        await task
    assert first.kinds(job) == ["claimed", "started", "abandoned"]
    assert flows.LOG == ["h:s0", "done h:s0", "h:s1", "done h:s1"]
    stored = await board.get(job.uuid)
    assert stored.state is JobState.UNCLAIMED
    assert await board.find_owner(job) is None
    assert (await backend.load_flow(job.flow_id)).state is zag.FlowState.SUSPENDED

    # Another conductor (on ZooKeeper: another session) finishes it from durable state.
    second = Recorder()
    other_board = await open_board()
    async with running(other_board, backend, recorder=second, name="second"):
        outcome = await wait_outcome(job)
    assert outcome.state == "SUCCESS"
    assert outcome.results is not None and outcome.results["s2"] == "h:s2-out"
    assert second.kinds(job) == ["claimed", "started", "consumed"]
    assert [flows.count(f"h:s{i}") for i in range(3)] == [1, 1, 1]  # nothing re-run


async def test_two_conductors_run_each_job_once(
    board: JobBoard, backend: zag.persistence.Backend, open_board: BoardOpener
) -> None:
    jobs = [await board.post("j", flows.steps, f"t{i}", 1) for i in range(12)]
    other_board = await open_board()
    one, two = Recorder(), Recorder()
    async with (
        running(board, backend, recorder=one, name="one", max_jobs=2),
        running(other_board, backend, recorder=two, name="two", max_jobs=2),
    ):
        for job in jobs:
            assert (await wait_outcome(job)).ok
    assert sorted(flows.LOG) == sorted(
        [f"t{i}:s0" for i in range(12)] + [f"done t{i}:s0" for i in range(12)]
    )
    consumed = [e.job.uuid for e in one.of("consumed") + two.of("consumed")]
    assert sorted(consumed) == sorted(j.uuid for j in jobs)


# -- listeners -----------------------------------------------------------------------


async def test_engine_listeners_factory_gives_each_job_its_own_listeners(
    board: JobBoard, backend: zag.persistence.Backend
) -> None:
    per_job: dict[str, list[zag.Event]] = {}
    asked: list[str] = []

    def factory(job: zag.jobs.Job) -> list[Callable[[zag.Event], None]]:
        asked.append(job.uuid)
        return [per_job.setdefault(job.uuid, []).append]

    a = await board.post("a", flows.steps, "a", 2)
    b = await board.post("b", flows.steps, "b", 1)
    async with running(board, backend, engine_listeners=factory, max_jobs=2):
        await wait_outcome(a)
        await wait_outcome(b)
    assert sorted(asked) == sorted([a.uuid, b.uuid])
    for job, flow_name, atoms in ((a, "steps-a", {"s0", "s1"}), (b, "steps-b", {"s0"})):
        events = per_job[job.uuid]
        assert {e.flow for e in events} == {flow_name}
        done = {e.atom for e in events if e.kind == "atom" and e.state == "SUCCESS"}
        assert done == atoms
        assert [e.state for e in events if e.kind == "flow"][-1] == "SUCCESS"


# -- time ----------------------------------------------------------------------------


async def test_delayed_job_runs_after_its_delay_not_before(
    board: JobBoard, backend: zag.persistence.Backend
) -> None:
    recorder = Recorder()
    async with running(board, backend, recorder=recorder):
        job = await board.post("later", flows.echo, "d", store={"payload": 1}, delay=0.8)
        outcome = await wait_outcome(job)
    assert outcome.ok
    [(entry, started_local)] = flows.STARTS
    assert entry == "d:look"
    started = await board_now_of(started_local, board)
    # Not before its due time on the board's clock (ms resolution, clock read error)...
    assert started >= job.due_at - 0.02, (started, job.due_at)
    # ...and soon after it, woken by the due time rather than by luck (generous bound).
    assert started <= job.due_at + 5
    assert job.due_at == pytest.approx(job.posted_at + 0.8)
    assert recorder.kinds(job) == ["claimed", "started", "consumed"]


async def test_scheduled_job_runs_again_with_its_original_store(
    board: JobBoard, backend: zag.persistence.Backend
) -> None:
    store = {"payload": {"name": "report", "recipients": ["a@example.org"]}}
    first = await board.post_scheduled(EVERY_SECOND, "tick", flows.echo, "tick", store=store)
    recorder = Recorder()
    async with running(board, backend, recorder=recorder):
        await eventually(lambda: len(flows.SEEN) >= 2, within=10, what="two scheduled runs")
    runs = [e for e in recorder.of("consumed") if e.job.schedule == "tick"]
    assert len(runs) >= 2
    assert runs[0].job.uuid == first.uuid
    assert runs[1].job.due_at > runs[0].job.due_at
    assert runs[0].job.flow_id != runs[1].job.flow_id
    assert [payload for _tag, payload in flows.SEEN[:2]] == [store["payload"]] * 2
    for event in runs[:2]:
        assert event.outcome is not None and event.outcome.results is not None
        assert event.outcome.results["echo"] == store["payload"]
    # Each run started at or after its own fire time, on the board's clock.
    for (_entry, started_local), event in zip(flows.STARTS, runs, strict=False):
        assert await board_now_of(started_local, board) >= event.job.due_at - 0.02
    # The schedule goes on: exactly one next run is pending.
    pending = [j for j in await board.jobs() if j.schedule == "tick"]
    assert len(pending) == 1
