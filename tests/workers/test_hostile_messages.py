"""Hostile messages through the real broker: no worker and no executor ever wedges.

Whatever a request, a reply or a discovery message holds, a worker serving one
request at a time (concurrency=1: one held delivery would stop it) ends every
request acked with an outcome or dead-lettered with its reason, and then
serves a good request; an executor's reply consumer ends a request whose reply
is malformed, and keeps answering the others.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import eventually

import zag_async as zag
from zag_async.workers import PROTOCOL_VERSION, Request, Response
from zag_async.workers.protocol import MAX_DEPTH, Announcement

from . import tasks
from .conftest import Remote, StartWorkers, channel, take_dead, wait_for_workers

ADD = f"{tasks.__name__}:add"

#: Hypothesis draws in a thread while the event loop (this test's broker clients,
#: their backoff jitter) uses `random` meanwhile, which it takes for a strategy's.
pytestmark = pytest.mark.filterwarnings("ignore:Do not use the `random` module")


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def with_args(values: str, failures: Any = None) -> bytes:
    """A request for tasks.add whose encoded arguments are `values` and `failures`."""
    args: dict[str, Any] = {"values": values}
    if failures is not None:
        args["failures"] = failures
    body = json.loads(Request("r", ADD, "revert", {}).dumps())
    body["args"] = json.dumps(args)
    return json.dumps(body).encode()


def request_field(**fields: Any) -> bytes:
    body = json.loads(Request("r", ADD, "execute", {"x": 1, "y": 2}).dumps())
    body.update(fields)
    return json.dumps(body).encode()


#: Bodies that once left a worker holding the delivery for ever (issue 14).
WEDGING = {
    "deep-json": b'{"v": 1, "kind": "request", "id": "r", "x": ' + nested(100_000).encode() + b"}",
    "deep-args": with_args(nested(50_000)),
    "cause-not-an-object": with_args(
        "{}", {"result": {"exception_types": ["E"], "message": "m", "cause": "oops"}}
    ),
    "flow-failures-a-list": with_args("{}", {"flow_failures": ["E"]}),
    "failure-fields-wrong-types": with_args(
        "{}", {"result": {"exception_types": "E", "message": 3, "args": 7, "traceback": []}}
    ),
    "values-not-an-object": with_args("[1, 2]"),
    "timeout-nan": request_field(timeout=float("nan")),
    "timeout-negative": request_field(timeout=-1),
}


class Harness:
    """Publishes raw request bodies on a topic and reads what came back."""

    def __init__(self, url: str, topic: str, ch: Any, replies: Any) -> None:
        self.url = url
        self.topic = topic
        self.channel = ch
        self.replies = replies

    async def publish(self, body: bytes, rid: str) -> None:
        work = await self.channel.get_exchange("zag.work", ensure=False)
        await work.publish(
            aio_pika.Message(body, correlation_id=rid, reply_to=self.replies.name),
            routing_key=self.topic,
        )

    async def final_reply(self, rid: str, within: float = 15.0) -> Response:
        """The final response to `rid` (heartbeats skipped)."""

        async def final() -> Response | None:
            message = await self.replies.get(no_ack=True, fail=False)
            if message is None:
                return None
            response = Response.loads(message.body)  # one request at a time: ours
            return response if response.final else None

        return await eventually(final, within=within, what=f"the outcome of {rid}")


@pytest.fixture
async def harness(amqp_url: str, topic: str) -> AsyncIterator[Harness]:
    async with channel(amqp_url) as ch:
        replies = await ch.declare_queue(exclusive=True, auto_delete=True)
        yield Harness(amqp_url, topic, ch, replies)


async def assert_serves(remote: Remote) -> None:
    """A good request still gets through (a wedged slot would stop it: concurrency=1)."""
    executor = await remote()
    async with asyncio.timeout(15):
        results = await zag.Engine(
            zag.linear("after", tasks.add), store={"x": 1, "y": 1}, executor=executor
        ).run()
    assert results["sum"] == 2


@pytest.mark.parametrize("name", list(WEDGING))
async def test_a_request_that_once_wedged_workers_is_answered_and_dead_lettered(
    name: str, start_workers: StartWorkers, remote: Remote, harness: Harness, amqp_url: str
) -> None:
    (worker,) = await start_workers(concurrency=1)
    rid = uuid.uuid4().hex
    await harness.publish(WEDGING[name], rid)
    response = await harness.final_reply(rid)
    assert response.kind == "rejected", response
    assert "malformed request" in str(response.reason), response.reason
    dead = await take_dead(amqp_url, lambda m: m.correlation_id == rid, what="the request")
    assert "malformed request" in str(dead.headers["x-zag-reason"])
    await assert_serves(remote)
    await eventually(lambda: worker.served == 1, what="the good request to be acked")


async def test_a_deep_request_is_refused_with_the_bound_as_reason(
    start_workers: StartWorkers, harness: Harness, amqp_url: str
) -> None:
    await start_workers(concurrency=1)
    rid = uuid.uuid4().hex
    await harness.publish(WEDGING["deep-json"], rid)
    response = await harness.final_reply(rid)
    assert f"nested deeper than {MAX_DEPTH}" in str(response.reason), response.reason
    await take_dead(amqp_url, lambda m: m.correlation_id == rid, what="the request")


# -- any shape, through the broker ------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)
failure_records = st.fixed_dictionaries(
    {},
    optional={
        "exception_types": json_values,
        "message": json_values,
        "args": json_values,
        "traceback": json_values,
        "cause": json_values,
    },
)


@st.composite
def request_bodies(draw: st.DrawFn) -> bytes:
    """Requests of any shape: valid ones, near misses field by field, and garbage."""
    kind = draw(st.sampled_from(["near", "args", "json", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    body: dict[str, Any] = {
        "v": PROTOCOL_VERSION,
        "kind": "request",
        "id": "r",
        "task": ADD,
        "action": draw(st.sampled_from(["execute", "revert"])),
        "args": json.dumps({"values": json.dumps({"x": 1, "y": 2})}),
        "timeout": None,
    }
    if kind == "args":
        values = draw(json_values.map(json.dumps) | st.text(max_size=8))
        failures = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "result": failure_records | json_values,
                    "flow_failures": st.dictionaries(st.text(max_size=4), failure_records)
                    | json_values,
                },
            )
        )
        body["args"] = json.dumps({"values": values, "failures": failures})
    else:
        for key in draw(st.sets(st.sampled_from([*body, "atom", "flow"]), max_size=3)):
            body[key] = draw(json_values)
    return json.dumps(body).encode()


async def test_requests_of_any_shape_end_answered_or_dead_lettered(
    start_workers: StartWorkers, remote: Remote, harness: Harness, amqp_url: str
) -> None:
    (worker,) = await start_workers(concurrency=1)
    seen: dict[str, int] = {}

    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(body=request_bodies())
    def one(body: bytes) -> None:
        asyncio.run_coroutine_threadsafe(check(body), loop).result(timeout=30)

    async def check(body: bytes) -> None:
        rid = uuid.uuid4().hex
        await harness.publish(body, rid)
        response = await harness.final_reply(rid)
        seen[response.kind] = seen.get(response.kind, 0) + 1
        if response.kind == "rejected":
            dead = await take_dead(amqp_url, lambda m: m.correlation_id == rid, what=rid)
            assert dead.headers["x-zag-reason"] == response.reason

    loop = asyncio.get_running_loop()
    await asyncio.to_thread(one)
    print(f"outcomes: {seen}")
    assert set(seen) <= {"result", "failure", "rejected"}
    await assert_serves(remote)


# -- replies and discovery ---------------------------------------------------------------------


async def test_malformed_replies_end_their_request_and_spare_the_others(
    remote: Remote, amqp_url: str, topic: str
) -> None:
    """The test plays the worker: it announces tasks.add, takes each request from the
    topic's queue and answers with a reply of any shape. A malformed one ends its
    request with the reason; the reply consumer keeps going."""
    executor = await remote()
    loop = asyncio.get_running_loop()
    worker = "fake-" + uuid.uuid4().hex[:6]
    async with channel(amqp_url) as ch:
        discovery = await ch.get_exchange("zag.discovery", ensure=False)
        word = Announcement(worker, topic, frozenset({ADD}), 600.0)
        await discovery.publish(aio_pika.Message(word.dumps()), routing_key="")
        await wait_for_workers(executor, worker)
        queue = await ch.declare_queue(f"zag.q.{topic}", passive=True)

        async def answer(body: bytes | None) -> Any:
            call = asyncio.create_task(
                executor.execute(tasks.add, "add", "f", {"x": 1, "y": 2}, time_limit=None, delay=0)
            )
            request = await eventually(lambda: queue.get(no_ack=True, fail=False), what="request")
            rid = request.correlation_id
            reply = Response(rid, "result", worker, result=3).dumps() if body is None else body
            await ch.default_exchange.publish(
                aio_pika.Message(reply, correlation_id=rid), routing_key=request.reply_to
            )
            async with asyncio.timeout(10):
                return await call

        async def check(body: bytes) -> None:
            try:
                await answer(body)
            except zag.errors.ExecutionError as exc:
                if "malformed response" not in str(exc):  # a well-formed failure or rejection
                    assert Response.loads(body).kind in ("failure", "rejected"), exc
            except TimeoutError:  # a well-formed reply that is not final: fine, not ours
                assert Response.loads(body).final is False
            # else: it happened to be a well-formed final reply

        @settings(max_examples=40, deadline=None)
        @given(body=st.binary(max_size=64) | json_values.map(lambda v: json.dumps(v).encode()))
        def one(body: bytes) -> None:
            asyncio.run_coroutine_threadsafe(check(body), loop).result(timeout=30)

        await asyncio.to_thread(one)
        assert await answer(None) == 3  # and a good reply still gets through


async def test_discovery_messages_of_any_shape_leave_both_ends_working(
    start_workers: StartWorkers, remote: Remote, amqp_url: str
) -> None:
    (worker,) = await start_workers(concurrency=1)
    executor = await remote()
    await wait_for_workers(executor, worker.name)
    loop = asyncio.get_running_loop()
    shapes = (
        st.binary(max_size=64)
        | json_values.map(lambda v: json.dumps(v).encode())
        | st.fixed_dictionaries(
            {
                "v": st.just(PROTOCOL_VERSION),
                "kind": st.sampled_from(["worker", "leaving", "ping"]),
            },
            optional={
                "worker": json_values,
                "topic": json_values,
                "tasks": json_values,
                "ttl": json_values,
            },
        ).map(lambda d: json.dumps(d).encode())
        | st.just(b'{"v": 1, "kind": "worker", "x": ' + nested(100_000).encode() + b"}")
    )

    @settings(max_examples=60, deadline=None)
    @given(body=shapes)
    def one(body: bytes) -> None:
        asyncio.run_coroutine_threadsafe(send(body), loop).result(timeout=30)

    async def send(body: bytes) -> None:
        async with channel(amqp_url) as ch:
            discovery = await ch.get_exchange("zag.discovery", ensure=False)
            await discovery.publish(aio_pika.Message(body), routing_key="")

    await asyncio.to_thread(one)
    # Both ends still read discovery: a ping is answered, an announcement is seen.
    word = Announcement("probe-" + uuid.uuid4().hex[:6], worker.topic, frozenset({ADD}), 30.0)
    await send(word.dumps())
    await wait_for_workers(executor, worker.name, word.worker)
    await assert_serves(remote)
