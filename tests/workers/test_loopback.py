"""LoopbackExecutor: remote semantics (wire protocol, codec, worker handling) without a broker."""

from __future__ import annotations

import asyncio
import time

import pytest

import zag_async as zag
from zag_async.workers import LoopbackExecutor, Request, Response, task_key
from zag_async.workers.serving import FIRST_BEAT

from . import tasks
from .conftest import failure_types

KABOOM = f"{tasks.__name__}.Kaboom"


def loopback(**kwargs: object) -> LoopbackExecutor:
    return LoopbackExecutor(tasks=tasks.ALL, **kwargs)  # type: ignore[arg-type]


async def test_a_flow_runs_through_the_protocol() -> None:
    executor = loopback()
    flow = zag.linear("data", tasks.add, tasks.double, tasks.Describe())
    results = await zag.Engine(flow, store={"x": 1, "y": 2}, executor=executor).run()
    assert (results["sum"], results["doubled"], results["text"]) == (3, 6, "total=6")
    assert results["length"] == len("total=6")  # the tuple travelled as JSON and was unpacked
    assert executor.seen["result"] == 3
    assert tasks.THREADS, "the plain def task ran in a worker thread"


async def test_failure_reverts_in_reverse_order_with_results_and_failures() -> None:
    flow = zag.linear(
        "revert",
        tasks.Tagged(name="a", provides="a_out", inject={"tag": "a"}),
        tasks.Tagged(name="b", provides="b_out", inject={"tag": "b", "fail": True}),
    )
    engine = zag.Engine(flow, executor=loopback())
    with pytest.raises(Exception) as caught:  # noqa: B017 - RemoteFailure or a rebuilt Kaboom
        await engine.run()
    assert failure_types(caught.value)[0] == KABOOM
    assert engine.state is zag.FlowState.REVERTED
    assert tasks.LOG == ["execute a", "execute b", "revert b", "revert a"]
    by_tag = {tag: (result, failures) for tag, result, failures in tasks.REVERTS}
    assert isinstance(by_tag["b"][0], zag.Failure)  # a Failure that went through the wire
    assert by_tag["a"][0] == "a result"
    assert set(by_tag["a"][1]) == {"b"}


async def test_a_time_limit_ends_the_call_as_on_a_worker() -> None:
    flow = zag.linear("slowpoke", tasks.sleepy.bind(timeout=0.2))
    engine = zag.Engine(flow, store={"seconds": 5.0}, executor=loopback())
    started = time.monotonic()
    with pytest.raises(zag.errors.ZagError):
        await engine.run()
    assert time.monotonic() - started < 2.0
    stored = engine.storage.get("sleepy").failure
    assert stored is not None and "zag_async.errors.AtomTimeout" in stored.exception_types


async def test_progress_arrives_as_events_before_the_outcome() -> None:
    events: list[zag.Event] = []
    executor = loopback()
    engine = zag.Engine(
        zag.linear("progress", tasks.progressing), executor=executor, listeners=[events.append]
    )
    await engine.run()
    progress = [e for e in events if e.kind == "progress"]
    assert [e.progress for e in progress] == [0.25, 0.5, 0.75]
    assert {(e.flow, e.atom) for e in progress} == {("progress", "progressing")}
    assert executor.seen["progress"] == 3


@zag.task(provides="reported")
def report_from_a_thread() -> str:
    """A plain def task: its progress is sent from a worker thread."""
    zag.progress(0.5)
    return "reported"


async def test_progress_from_a_plain_function_in_its_thread() -> None:
    events: list[zag.Event] = []
    executor = LoopbackExecutor(tasks=[report_from_a_thread])
    await zag.Engine(
        zag.linear("threaded", report_from_a_thread), executor=executor, listeners=[events.append]
    ).run()
    assert [e.progress for e in events if e.kind == "progress"] == [0.5]


async def test_a_result_that_cannot_be_encoded_fails_the_atom() -> None:
    engine = zag.Engine(zag.linear("unsendable", tasks.unsendable), executor=loopback())
    with pytest.raises(Exception) as caught:  # noqa: B017 - RemoteFailure
        await engine.run()
    assert "SerializationError" in " ".join(failure_types(caught.value)), caught.value
    assert engine.state is zag.FlowState.REVERTED


async def test_an_argument_that_cannot_be_encoded_names_the_atom() -> None:
    engine = zag.Engine(
        zag.linear("bad-args", tasks.sleepy), store={"seconds": object()}, executor=loopback()
    )
    with pytest.raises(zag.errors.SerializationError, match="'sleepy'"):
        await engine.run()


async def test_a_task_it_does_not_serve_is_rejected() -> None:
    executor = LoopbackExecutor(tasks=[tasks.add])
    engine = zag.Engine(
        zag.linear("unknown", tasks.explode), store={"message": "x"}, executor=executor
    )
    with pytest.raises(zag.errors.ExecutionError, match="rejected the request"):
        await engine.run()
    assert executor.seen == {"rejected": 1}


async def test_retry_delays_are_carried_by_the_requests() -> None:
    executor = loopback()
    flow = zag.linear("retrying", tasks.flaky, retry=zag.retry.Times(3, delay=0.05))
    engine = zag.Engine(flow, store={"key": "lb", "fails": 2}, executor=executor)
    assert (await engine.run())["flaky_result"] == "lb ok after 3"
    starts = tasks.ATTEMPTS["lb"]
    assert all(b - a >= 0.05 for a, b in zip(starts, starts[1:], strict=False))
    assert await executor.before_retry(0.3) == 0.3  # nothing waited here


def test_only_atoms_are_served() -> None:
    with pytest.raises(zag.errors.ConfigurationError, match="must be atoms"):
        LoopbackExecutor(tasks=[print])  # type: ignore[list-item]


async def _beats(seconds: float, heartbeat: float) -> tuple[list[float], int]:
    """Serve one request to `tasks.slow` for `seconds`: the beats' times after the
    start, and how many beats were sent in all once the request is long over."""
    handler = loopback(heartbeat=heartbeat).handler
    rid = "r-beats"
    body = Request(
        rid, task_key(tasks.slow), "execute", {"seconds": seconds, "tag": "b"}, atom="s"
    ).dumps()
    started = time.monotonic()
    beats: list[float] = []

    async def send(response: Response) -> None:
        assert response.kind == "heartbeat" and response.id == rid
        beats.append(time.monotonic() - started)

    outcome = await handler.handle(body, correlation_id=rid, headers={}, deliveries=0, send=send)
    assert outcome.response is not None and outcome.response.kind == "result"
    during = list(beats)
    await asyncio.sleep(3 * heartbeat)  # nothing beats for a request that is done
    return during, len(beats)


async def test_a_short_request_sends_no_heartbeat() -> None:
    """A request done before FIRST_BEAT costs no heartbeat (and no task for one)."""
    during, total = await _beats(0.0, heartbeat=0.05)
    assert during == [] and total == 0


async def test_a_long_request_beats_early_then_steadily_and_stops_with_it() -> None:
    during, total = await _beats(0.35, heartbeat=0.1)
    assert during[0] >= FIRST_BEAT - 0.005  # not before the first beat is due...
    assert during[0] < 0.1  # ...and well before the steady period would have brought it
    assert 3 <= len(during) <= 5  # 0.02, 0.12, 0.22, 0.32 s (timer slack allowed)
    assert total == len(during)
