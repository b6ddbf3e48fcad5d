"""Flows on remote workers (in this process) over the real RabbitMQ.

The same flow must give the same results, the same revert order and the same
retries whether its atoms run locally or on workers; errors must be clear and
fast (no worker, a raising task, a timeout, a closed executor), never a hang.
"""

from __future__ import annotations

import asyncio
import io
import sys
import threading
import time
from typing import Any

import pytest
from support import eventually

import zag_async as zag
from zag_async.workers.amqp import delay_tier

from . import tasks
from .conftest import Remote, StartWorkers, failure_types

KABOOM = f"{tasks.__name__}.Kaboom"


def linear_flow() -> zag.Flow:
    return zag.linear("numbers", tasks.add, tasks.double, tasks.Describe())


async def test_remote_linear_flow_passes_data_like_local(
    start_workers: StartWorkers, remote: Remote
) -> None:
    local = await zag.run(linear_flow(), store={"x": 2, "y": 3})
    (worker,) = await start_workers()
    executor = await remote()
    engine = zag.Engine(linear_flow(), store={"x": 2, "y": 3}, executor=executor)
    results = await engine.run()
    assert dict(results) == dict(local)
    assert results["text"] == "total=10"
    assert results["length"] == len("total=10")
    assert engine.state is zag.FlowState.SUCCESS
    # `served` counts after the ack, which follows the result: it may lag a little.
    await eventually(lambda: worker.served == 3, what="3 requests served")


async def test_sync_def_task_runs_in_a_thread_on_the_worker(
    start_workers: StartWorkers, remote: Remote
) -> None:
    await start_workers()
    executor = await remote()
    results = await zag.Engine(
        zag.linear("sync", tasks.double), store={"sum": 21}, executor=executor
    ).run()
    assert results["doubled"] == 42
    assert len(tasks.THREADS) == 1
    assert tasks.THREADS[0] != threading.main_thread().name


def parallel_flow(n: int) -> zag.Flow:
    return zag.unordered(
        "fan",
        *(
            tasks.slow.bind(name=f"slow{i}", provides=f"out{i}", inject={"tag": f"s{i}"})
            for i in range(n)
        ),
    )


async def test_parallel_flow_runs_on_two_workers_at_once(
    start_workers: StartWorkers, remote: Remote
) -> None:
    workers = await start_workers(2, concurrency=1)
    executor = await remote()
    results = await zag.Engine(parallel_flow(6), store={"seconds": 0.2}, executor=executor).run()
    assert {results[f"out{i}"] for i in range(6)} == {f"s{i} done" for i in range(6)}
    # Each worker takes one request at a time, so two at once means both served.
    assert tasks.MAX_RUNNING == 2
    await eventually(lambda: sum(w.served for w in workers) == 6, what="6 requests served")
    assert all(w.served >= 1 for w in workers), [w.served for w in workers]


async def test_parallel_flow_uses_a_workers_concurrency(
    start_workers: StartWorkers, remote: Remote
) -> None:
    (worker,) = await start_workers(concurrency=4)
    executor = await remote()
    await zag.Engine(parallel_flow(8), store={"seconds": 0.2}, executor=executor).run()
    assert tasks.MAX_RUNNING == 4  # never more than the prefetch, and it is used
    await eventually(lambda: worker.served == 8, what="8 requests served")


def revert_flow() -> zag.Flow:
    return zag.linear(
        "undo",
        tasks.Tagged(name="a", provides="a_out", inject={"tag": "a"}),
        tasks.Tagged(name="b", provides="b_out", inject={"tag": "b"}),
        tasks.Tagged(name="c", provides="c_out", inject={"tag": "c", "fail": True}),
    )


async def test_remote_reverts_run_in_reverse_order_with_results_and_failures(
    start_workers: StartWorkers, remote: Remote
) -> None:
    local = zag.Engine(revert_flow())
    with pytest.raises(tasks.Kaboom):
        await local.run()
    local_log, local_reverts = list(tasks.LOG), list(tasks.REVERTS)
    tasks.reset()

    await start_workers()
    executor = await remote()
    engine = zag.Engine(revert_flow(), executor=executor)
    with pytest.raises(Exception) as caught:  # noqa: B017 - RemoteFailure or a rebuilt Kaboom
        await engine.run()
    assert engine.state is zag.FlowState.REVERTED
    assert failure_types(caught.value)[0] == KABOOM
    expected = ["execute a", "execute b", "execute c", "revert c", "revert b", "revert a"]
    assert local_log == expected
    assert expected == tasks.LOG

    by_tag = {tag: (result, failures) for tag, result, failures in tasks.REVERTS}
    # The failed atom's revert gets its Failure; the others their own results.
    c_result, c_failures = by_tag["c"]
    assert isinstance(c_result, zag.Failure)
    assert KABOOM in failure_types_of(c_result), c_result
    assert "c failed on purpose" in c_result.message
    assert by_tag["b"][0] == "b result"
    assert by_tag["a"][0] == "a result"
    for _, failures in by_tag.values():
        assert set(failures) == {"c"}
        assert KABOOM in failure_types_of(failures["c"])
    # Same as local, kind for kind.
    assert [t for t, _, _ in local_reverts] == [t for t, _, _ in tasks.REVERTS]


def failure_types_of(failure: zag.Failure) -> tuple[str, ...]:
    """Types of a failure and of its causes (a remote failure may be wrapped once)."""
    found: tuple[str, ...] = ()
    current: zag.Failure | None = failure
    while current is not None:
        found += current.exception_types
        current = current.cause
    return found


async def test_retry_times_3_retries_remote_atom(
    start_workers: StartWorkers, remote: Remote
) -> None:
    await start_workers()
    executor = await remote()
    flow = zag.linear("retrying", tasks.flaky, retry=zag.retry.Times(3))
    engine = zag.Engine(flow, store={"key": "r1", "fails": 2}, executor=executor)
    results = await engine.run()
    assert results["flaky_result"] == "r1 ok after 3"
    assert len(tasks.ATTEMPTS["r1"]) == 3


async def test_retry_times_3_exhausted_reverts(start_workers: StartWorkers, remote: Remote) -> None:
    await start_workers()
    executor = await remote()
    flow = zag.linear("retrying", tasks.flaky, retry=zag.retry.Times(3))
    engine = zag.Engine(flow, store={"key": "r2", "fails": 5}, executor=executor)
    with pytest.raises(Exception) as caught:  # noqa: B017 - RemoteFailure or a rebuilt Kaboom
        await engine.run()
    assert failure_types(caught.value)[0] == KABOOM
    assert engine.state is zag.FlowState.REVERTED
    assert len(tasks.ATTEMPTS["r2"]) == 3


class RetryOnKaboom(zag.retry.Retry):
    """Retries (up to 3 attempts) only when the failure is a Kaboom: decides on the type."""

    def on_failure(self, history: zag.retry.History) -> zag.retry.Decision:
        failure = history.failures["flaky"]
        if failure.check(tasks.Kaboom) and len(history) < 3:
            return zag.retry.Decision.RETRY
        return zag.retry.Decision.REVERT


async def test_retry_controller_sees_the_remote_failure_type_like_local(
    start_workers: StartWorkers, remote: Remote
) -> None:
    flow = zag.linear("typed", tasks.flaky, retry=RetryOnKaboom())
    local = await zag.run(flow, store={"key": "local", "fails": 1})
    assert local["flaky_result"] == "local ok after 2"
    await start_workers()
    executor = await remote()
    flow = zag.linear("typed", tasks.flaky, retry=RetryOnKaboom())
    engine = zag.Engine(flow, store={"key": "remote", "fails": 1}, executor=executor)
    results = await engine.run()
    assert results["flaky_result"] == "remote ok after 2"


class _SleepRecorder:
    """Wraps asyncio.sleep, noting sleeps of 0.1 s or more by the calling module."""

    def __init__(self) -> None:
        self.original = asyncio.sleep
        self.long: list[tuple[str, float]] = []

    def __call__(self, delay: float, result: Any = None) -> Any:
        if delay >= 0.1:
            caller = sys._getframe(1).f_globals.get("__name__", "?")
            self.long.append((caller, delay))
        return self.original(delay, result)

    def engine_sleeps(self) -> list[float]:
        engine_side = ("zag_async.engine", "zag_async.calls", "zag_async.execution")
        return [d for caller, d in self.long if caller.startswith(engine_side)]


class HeaderRecordingWorker(zag.Worker):
    """Notes the headers of every request it receives."""

    seen: list[dict[str, Any]] = []

    async def _on_request(self, message: Any) -> None:
        HeaderRecordingWorker.seen.append(dict(message.headers or {}))
        await super()._on_request(message)


async def test_delayed_retry_waits_in_the_broker_not_in_the_engine(
    start_workers: StartWorkers, remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = _SleepRecorder()
    monkeypatch.setattr(asyncio, "sleep", recorder)
    # Control: locally the engine itself sleeps the delay (so the recorder sees it).
    local = zag.linear("delayed", tasks.flaky, retry=zag.retry.Times(3, delay=0.2))
    await zag.run(local, store={"key": "local", "fails": 2})
    assert recorder.engine_sleeps() == [pytest.approx(0.2)] * 2
    recorder.long.clear()

    HeaderRecordingWorker.seen = []
    await start_workers(worker_class=HeaderRecordingWorker)
    executor = await remote()
    flow = zag.linear("delayed", tasks.flaky, retry=zag.retry.Times(3, delay=0.2))
    results = await zag.Engine(flow, store={"key": "d", "fails": 2}, executor=executor).run()
    assert results["flaky_result"] == "d ok after 3"
    starts = tasks.ATTEMPTS["d"]
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    print(f"delayed retry gaps (delay 0.2 s, tier {delay_tier(0.2)} ms): {gaps}")
    assert len(gaps) == 2
    for gap in gaps:
        assert 0.2 <= gap < 0.35, gaps
    assert recorder.engine_sleeps() == [], recorder.long
    # The retried requests came back through the 200 ms delay queue.
    deaths = [h.get("x-death") for h in HeaderRecordingWorker.seen]
    assert deaths[0] is None
    for death in deaths[1:]:
        assert death, HeaderRecordingWorker.seen
        assert death[0]["queue"] == "zag.delay.200"


async def test_progress_events_reach_engine_listeners(
    start_workers: StartWorkers, remote: Remote
) -> None:
    await start_workers()
    executor = await remote()
    events: list[zag.Event] = []
    engine = zag.Engine(
        zag.linear("progress", tasks.progressing), executor=executor, listeners=[events.append]
    )
    await engine.run()
    progress = [e for e in events if e.kind == "progress"]
    assert [e.progress for e in progress] == [0.25, 0.5, 0.75]
    assert {(e.flow, e.atom) for e in progress} == {("progress", "progressing")}
    done = next(
        i for i, e in enumerate(events) if e.kind == "atom" and e.state == zag.AtomState.SUCCESS
    )
    assert all(events.index(e) < done for e in progress)


async def test_no_workers_fails_fast(remote: Remote) -> None:
    executor = await remote(discovery_timeout=0.5)
    engine = zag.Engine(zag.linear("lonely", tasks.add), store={"x": 1, "y": 2}, executor=executor)
    started = time.monotonic()
    with pytest.raises(zag.errors.NoWorkers) as caught:
        await engine.run()
    elapsed = time.monotonic() - started
    assert elapsed < 0.5 + 1.0, elapsed
    assert "'add'" in str(caught.value)
    assert f"{tasks.__name__}:add" in str(caught.value)
    assert engine.state is zag.FlowState.REVERTED


async def test_no_worker_serving_this_task_fails_fast(
    start_workers: StartWorkers, remote: Remote
) -> None:
    await start_workers(tasks=[tasks.add])  # a live worker, but not for `double`
    executor = await remote(discovery_timeout=0.5)
    engine = zag.Engine(linear_flow(), store={"x": 1, "y": 2}, executor=executor)
    started = time.monotonic()
    with pytest.raises(zag.errors.NoWorkers) as caught:
        await engine.run()
    assert time.monotonic() - started < 0.5 + 1.0 + 1.0  # add ran first
    assert f"{tasks.__name__}:double" in str(caught.value)


async def test_raising_task_keeps_the_original_type(
    start_workers: StartWorkers, remote: Remote
) -> None:
    """The caller gets RemoteFailure (or an exception rebuilt as the original type); either
    way the type name, message and remote traceback survive, and `check()` works."""
    await start_workers()
    executor = await remote()
    engine = zag.Engine(
        zag.linear("raising", tasks.explode), store={"message": "it blew"}, executor=executor
    )
    with pytest.raises(Exception) as caught:  # noqa: B017 - see the docstring
        await engine.run()
    assert failure_types(caught.value)[0] == KABOOM
    assert "it blew" in str(caught.value)
    assert engine.state is zag.FlowState.REVERTED
    failure = engine.storage.get("explode").failure
    assert failure is not None
    assert failure.exception_types[0] == KABOOM
    assert "ValueError" in failure.exception_types
    assert failure.check(KABOOM) and failure.check(ValueError)
    assert failure.message == "it blew"
    assert "raise Kaboom(message)" in failure.traceback


async def test_unsendable_result_fails_the_atom(
    start_workers: StartWorkers, remote: Remote
) -> None:
    await start_workers()
    executor = await remote()
    engine = zag.Engine(zag.linear("unsendable", tasks.unsendable), executor=executor)
    with pytest.raises(zag.errors.ZagError) as caught:
        await engine.run()
    assert "SerializationError" in " ".join(failure_types(caught.value)), caught.value
    assert engine.state is zag.FlowState.REVERTED


async def test_unsendable_argument_names_the_atom(
    start_workers: StartWorkers, remote: Remote
) -> None:
    await start_workers()
    executor = await remote()
    engine = zag.Engine(
        zag.linear("bad-args", tasks.sleepy), store={"seconds": object()}, executor=executor
    )
    with pytest.raises(zag.errors.SerializationError, match="'sleepy'"):
        await engine.run()


async def test_atom_timeout_is_honoured(start_workers: StartWorkers, remote: Remote) -> None:
    await start_workers()
    executor = await remote()
    flow = zag.linear("slowpoke", tasks.sleepy.bind(timeout=0.3))
    engine = zag.Engine(flow, store={"seconds": 5.0}, executor=executor)
    started = time.monotonic()
    with pytest.raises(zag.errors.AtomTimeout):
        await engine.run()
    assert time.monotonic() - started < 3.0
    assert engine.state is zag.FlowState.REVERTED


async def test_atom_timeout_failure_carries_the_timeout_type(
    start_workers: StartWorkers, remote: Remote
) -> None:
    """Whatever is raised, the stored failure says AtomTimeout (retry controllers check it)."""
    await start_workers()
    executor = await remote()
    flow = zag.linear("slowpoke", tasks.sleepy.bind(timeout=0.3))
    engine = zag.Engine(flow, store={"seconds": 5.0}, executor=executor)
    with pytest.raises(zag.errors.ZagError):
        await engine.run()
    stored = engine.storage.get("sleepy").failure
    assert stored is not None
    assert "zag_async.errors.AtomTimeout" in failure_types_of(stored)


async def test_closing_the_executor_ends_an_outstanding_request(
    start_workers: StartWorkers, remote: Remote
) -> None:
    tasks.HOLDING = asyncio.Event()
    await start_workers()
    executor = await remote()
    engine = zag.Engine(zag.linear("held", tasks.hold), store={"seconds": 1.0}, executor=executor)
    run = asyncio.create_task(engine.run())
    async with asyncio.timeout(10):
        await tasks.HOLDING.wait()
    started = time.monotonic()
    await executor.aclose()
    with pytest.raises(zag.errors.ExecutionError, match="closed"):
        async with asyncio.timeout(5):
            await run
    assert time.monotonic() - started < 2.0
    assert engine.state in (zag.FlowState.REVERTED, zag.FlowState.FAILURE)


def example_flow() -> zag.Flow:
    """A small flow of every shape: linear, unordered and graph, tuple unpacking."""
    return zag.linear(
        "example",
        tasks.add,
        zag.unordered("both", tasks.double, tasks.squares),
        zag.graph("summary", tasks.report, tasks.Describe()),
    )


def print_results(results: Any, file: io.StringIO) -> None:
    for name in sorted(results):
        print(f"{name} = {results[name]!r}", file=file)


async def test_example_flow_prints_the_same_locally_and_remotely(
    start_workers: StartWorkers, remote: Remote
) -> None:
    store = {"x": 4, "y": 5, "numbers": [1, 2, 3], "label": "sum"}
    local_out, remote_out = io.StringIO(), io.StringIO()
    print_results(await zag.run(example_flow(), store=store), local_out)
    workers = await start_workers(2)
    executor = await remote()
    engine = zag.Engine(example_flow(), store=store, executor=executor)
    print_results(await engine.run(), remote_out)
    assert remote_out.getvalue() == local_out.getvalue()
    assert "report = \"sum=18; squares [('1', 1), ('2', 4), ('3', 9)]\"" in local_out.getvalue()
    await eventually(lambda: sum(w.served for w in workers) == 5, what="5 requests served")


async def test_wait_for_workers(start_workers: StartWorkers, remote: Remote) -> None:
    executor = await remote()
    await start_workers(2)
    async with asyncio.timeout(10):
        await executor.wait_for_workers(2)
    assert len(executor.workers()) == 2
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await executor.wait_for_workers(3)
