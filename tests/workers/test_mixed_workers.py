"""Workers with different task lists on one topic: a request reaches one that has its task.

Two worker processes share a topic, one serving `add`, the other `double`. A
request delivered to the wrong one is handed back for the other; it is
dead-lettered only when no live worker on the topic has its task.
"""

from __future__ import annotations

import asyncio
import uuid

import aio_pika

import zag_async as zag
from zag_async.workers import Request, Response

from . import tasks
from .conftest import Remote, SpawnWorker, channel, take_dead, wait_for_workers


async def test_requests_reach_the_worker_that_has_their_task(
    spawn_worker: SpawnWorker, remote: Remote
) -> None:
    adder = await spawn_worker(serves=("add",), concurrency=1)
    doubler = await spawn_worker(serves=("double",), concurrency=1)
    executor = await remote()
    await wait_for_workers(executor, adder.name, doubler.name)
    flow = zag.linear("mixed", tasks.add, tasks.double)
    # Both workers consume the topic's queue, so about half the requests first reach
    # the worker without their task: every flow succeeding means none was refused.
    async with asyncio.timeout(30):
        for i in range(12):
            results = await zag.Engine(flow, store={"x": i, "y": 1}, executor=executor).run()
            assert results["doubled"] == 2 * (i + 1)
    assert adder.alive() and doubler.alive()


async def test_a_task_no_live_worker_has_is_dead_lettered_with_the_reason(
    spawn_worker: SpawnWorker, remote: Remote, amqp_url: str, topic: str
) -> None:
    adder = await spawn_worker(serves=("add",), concurrency=1)
    doubler = await spawn_worker(serves=("double",), concurrency=1)
    executor = await remote()
    await wait_for_workers(executor, adder.name, doubler.name)
    doubler.terminate()  # it says it is leaving: the adder forgets it at once
    assert await doubler.wait_exit() == 0

    rid = uuid.uuid4().hex
    body = Request(rid, f"{tasks.__name__}:double", "execute", {"sum": 1}, atom="double").dumps()
    async with channel(amqp_url) as ch:
        replies = await ch.declare_queue(exclusive=True, auto_delete=True)
        work = await ch.get_exchange("zag.work", ensure=False)
        await work.publish(
            aio_pika.Message(body, correlation_id=rid, reply_to=replies.name), routing_key=topic
        )
        dead = await take_dead(amqp_url, lambda m: m.correlation_id == rid, what="the request")
        reply = await replies.get(no_ack=True, fail=False)
    reason = str(dead.headers["x-zag-reason"])
    assert "nor has any other live worker" in reason, reason
    assert adder.name in reason
    assert reply is not None and Response.loads(reply.body).kind == "rejected"
    assert adder.alive()
