"""Workers that die, stall, repeat themselves or get garbage: never a hang, never a loss.

Most tests run workers as subprocesses (worker_main.py or the CLI) so they can
be killed for real; tasks signal "I am running" by writing a file named after
their worker's pid into the test's signal directory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from support import eventually

import zag_async as zag
from zag_async.workers import Request, Response

from . import tasks
from .conftest import (
    Remote,
    SpawnWorker,
    StartWorkers,
    WorkerProcess,
    channel,
    take_dead,
    wait_for_workers,
)


def marks(signal_dir: Path) -> list[int]:
    """Pids that started mark_and_sleep, in the order they did."""
    files = sorted(signal_dir.glob("[0-9]*"), key=lambda p: p.stat().st_mtime_ns)
    return [int(p.read_text()) for p in files]


def mark_flow(name: str = "victim") -> zag.Flow:
    return zag.linear(name, tasks.mark_and_sleep)


async def test_kill_9_mid_task_redelivers_to_the_other_worker(
    spawn_worker: SpawnWorker, remote: Remote, tmp_path: Path
) -> None:
    first, second = await spawn_worker(), await spawn_worker()
    by_pid = {first.pid: first, second.pid: second}
    executor = await remote(stall_timeout=5.0)
    await wait_for_workers(executor, first.name, second.name)
    store = {"signal_dir": str(tmp_path), "seconds": 0.5}
    engine = zag.Engine(mark_flow(), store=store, executor=executor)
    run = asyncio.create_task(engine.run())
    try:
        (victim_pid,) = await eventually(lambda: marks(tmp_path), what="the task to start")
        by_pid[victim_pid].kill()
        killed = time.monotonic()
        await eventually(lambda: len(marks(tmp_path)) == 2, what="the request to be redelivered")
        latency = time.monotonic() - killed
        print(f"redelivery after kill -9: {latency * 1000:.0f} ms")
        async with asyncio.timeout(15):
            results = await run
    finally:
        run.cancel()
    survivor = second if victim_pid == first.pid else first
    assert marks(tmp_path) == [victim_pid, survivor.pid]  # at least once: it ran twice
    assert results["marked"] == survivor.pid
    assert engine.state is zag.FlowState.SUCCESS
    assert latency < 3.0, latency


async def test_kill_9_with_no_other_worker_fails_with_worker_lost(
    spawn_worker: SpawnWorker, remote: Remote, tmp_path: Path
) -> None:
    worker = await spawn_worker(heartbeat=0.2)
    executor = await remote(stall_timeout=1.0)
    await wait_for_workers(executor, worker.name)
    store = {"signal_dir": str(tmp_path), "seconds": 5.0}
    engine = zag.Engine(mark_flow(), store=store, executor=executor)
    run = asyncio.create_task(engine.run())
    await eventually(lambda: marks(tmp_path), what="the task to start")
    # Workers send no "started" message (a quick task answers with its outcome
    # alone); kill it once its first heartbeat has reached the engine.
    await eventually(
        lambda: any(executor.in_flight().values()),
        what="the worker's first heartbeat",
    )
    worker.kill()
    killed = time.monotonic()
    with pytest.raises(zag.errors.WorkerLost) as caught:
        async with asyncio.timeout(15):
            await run
    elapsed = time.monotonic() - killed
    print(f"WorkerLost {elapsed:.2f} s after kill -9 (stall_timeout 1.0 s)")
    assert 0.8 <= elapsed < 4.0, elapsed
    assert "mark_and_sleep" in str(caught.value)
    assert worker.name in str(caught.value)
    assert engine.state is zag.FlowState.REVERTED


class DoubleReplyWorker(zag.Worker):
    """Sends every result twice, the second time with a different value."""

    async def _reply(self, message: Any, response: Response, **kwargs: Any) -> None:
        await super()._reply(message, response, **kwargs)
        if response.kind == "result":
            await super()._reply(message, replace(response, result="duplicate"), **kwargs)


async def test_duplicate_result_is_ignored(start_workers: StartWorkers, remote: Remote) -> None:
    await start_workers(worker_class=DoubleReplyWorker)
    executor = await remote()
    flow = zag.linear("dup", tasks.add, tasks.double, tasks.Describe())
    results = await zag.Engine(flow, store={"x": 1, "y": 2}, executor=executor).run()
    assert results["sum"] == 3
    assert results["doubled"] == 6
    assert results["text"] == "total=6"


class DiesBeforeAckWorker(zag.Worker):
    """The first time any such worker publishes a result, it drops the channel its
    request came on before acking: the broker hands the request to another worker,
    which runs it again and publishes a second result for the same request id."""

    died = False

    async def _reply(self, message: Any, response: Response, **kwargs: Any) -> None:
        await super()._reply(message, response, **kwargs)
        if response.kind == "result" and not DiesBeforeAckWorker.died:
            DiesBeforeAckWorker.died = True
            await message.channel.close()  # the request's channel: requeued by the broker


async def test_result_of_a_redelivered_request_is_ignored(
    start_workers: StartWorkers, remote: Remote
) -> None:
    DiesBeforeAckWorker.died = False
    await start_workers(2, worker_class=DiesBeforeAckWorker)
    executor = await remote()
    flow = zag.linear(
        "redelivered",
        tasks.Tagged(name="a", provides="a_out", inject={"tag": "a"}),
        tasks.slow.bind(name="b", provides="b_out", inject={"tag": "b"}),
    )
    engine = zag.Engine(flow, store={"seconds": 0.3}, executor=executor)
    results = await engine.run()
    assert DiesBeforeAckWorker.died
    await eventually(lambda: tasks.LOG == ["execute a", "execute a"], what="a to run again")
    assert results["a_out"] == "a result"
    assert results["b_out"] == "b done"
    assert engine.state is zag.FlowState.SUCCESS
    assert engine.storage.get("a").state == zag.AtomState.SUCCESS


async def test_a_worker_whose_channel_died_opens_a_new_one(
    start_workers: StartWorkers, remote: Remote
) -> None:
    """aio-pika may fail to restore a channel after a reconnect (its consumers gone for
    good); the worker notices the dead channel on a live connection and opens another."""
    (worker,) = await start_workers()
    executor = await remote()
    flow = zag.linear("again", tasks.slow.bind(name="x", inject={"tag": "x"}))
    await zag.Engine(flow, store={"seconds": 0.0}, executor=executor).run()
    dead = worker.channel
    assert dead is not None
    await dead.close()  # as aio-pika leaves a channel whose restore failed
    await eventually(lambda: worker.channel is not dead, what="a new channel")
    served = worker.served
    async with asyncio.timeout(10):
        await zag.Engine(flow, store={"seconds": 0.0}, executor=executor).run()
    await eventually(lambda: worker.served == served + 1, what="the request served")


class ChannelKeepingWorker(zag.Worker):
    """Notes the channel its last request came on."""

    async def _on_request(self, message: Any) -> None:
        self.request_channel = message.channel
        await super()._on_request(message)


async def test_a_worker_whose_request_channel_died_consumes_again(
    start_workers: StartWorkers, remote: Remote
) -> None:
    """Requests come on a channel of their own, which aio-pika does not restore: the
    worker notices its consumer gone and starts it again on a fresh channel."""
    (worker,) = await start_workers(worker_class=ChannelKeepingWorker)
    assert isinstance(worker, ChannelKeepingWorker)
    executor = await remote()
    flow = zag.linear("again", tasks.slow.bind(name="x", inject={"tag": "x"}))
    await zag.Engine(flow, store={"seconds": 0.0}, executor=executor).run()
    await worker.request_channel.close()
    served = worker.served
    async with asyncio.timeout(10):
        await zag.Engine(flow, store={"seconds": 0.0}, executor=executor).run()
    await eventually(lambda: worker.served == served + 1, what="the request served")


async def test_an_executor_whose_channel_died_opens_a_new_one(
    start_workers: StartWorkers, remote: Remote
) -> None:
    """The same on the engine's side: its reply consumer comes back with the channel."""
    await start_workers()
    executor = await remote()
    flow = zag.linear("again", tasks.slow.bind(name="x", provides="x_out", inject={"tag": "x"}))
    dead = executor.channel
    assert dead is not None
    await dead.close()
    async with asyncio.timeout(10):
        results = await zag.Engine(flow, store={"seconds": 0.0}, executor=executor).run()
    assert results["x_out"] == "x done"
    assert executor.channel is not dead


async def test_poison_request_goes_to_dead_letters_after_delivery_limit(
    spawn_worker: SpawnWorker, remote: Remote, amqp_url: str, topic: str, tmp_path: Path
) -> None:
    limit = 3
    executor = await remote(stall_timeout=15.0, delivery_limit=limit)
    workers: list[WorkerProcess] = [await spawn_worker(delivery_limit=limit)]
    flow_name = f"poison-{topic}"
    engine = zag.Engine(
        zag.linear(flow_name, tasks.crash_worker),
        store={"signal_dir": str(tmp_path)},
        executor=executor,
    )
    run = asyncio.create_task(engine.run())
    try:
        async with asyncio.timeout(45):
            while not run.done():
                current = workers[-1]
                await eventually(lambda w=current: run.done() or not w.alive(), within=30)
                if not run.done():
                    assert len(workers) <= limit, "more deaths than the delivery limit allows"
                    workers.append(await spawn_worker(delivery_limit=limit))
            with pytest.raises(zag.errors.ExecutionError) as caught:
                await run
    finally:
        run.cancel()
    crashes = await asyncio.to_thread(lambda: list(tmp_path.glob("crash-*")))
    assert len(crashes) == limit - 1  # the last delivery is refused, not run
    assert len(workers) == limit
    message = str(caught.value)
    assert "poison" in message and "crash_worker" in message, message
    assert engine.state is zag.FlowState.REVERTED

    def ours(msg: Any) -> bool:
        try:  # other tests park hostile bodies there too
            with_body = json.loads(msg.body)
        except (ValueError, RecursionError):
            return False
        return isinstance(with_body, dict) and with_body.get("flow") == flow_name

    dead = await take_dead(amqp_url, ours, what="the poison request")
    reason = str(dead.headers.get("x-zag-reason", ""))
    assert "poison" in reason, dead.headers
    assert f"delivered {limit} times" in reason


async def _publish_raw(
    url: str, topic: str, body: bytes, correlation_id: str, reply_to: str
) -> None:
    async with channel(url) as ch:
        work = await ch.get_exchange("zag.work", ensure=False)
        await work.publish(
            aio_pika.Message(body, correlation_id=correlation_id, reply_to=reply_to),
            routing_key=topic,
        )


@pytest.mark.parametrize("bad", ["malformed", "unknown-task"])
async def test_bad_request_is_dead_lettered_and_worker_keeps_serving(
    bad: str, spawn_worker: SpawnWorker, remote: Remote, amqp_url: str, topic: str
) -> None:
    worker = await spawn_worker(cli=True)
    rid = uuid.uuid4().hex
    if bad == "malformed":
        body = b'{"v": 1, "kind": "request", "id": "' + rid.encode() + b'", not json'
    else:
        body = Request(rid, "no.such.module:task", "execute", {}, atom="ghost").dumps()
    async with channel(amqp_url) as ch:
        replies = await ch.declare_queue(exclusive=True, auto_delete=True)
        await _publish_raw(amqp_url, topic, body, rid, replies.name)
        reply = await eventually(lambda: replies.get(no_ack=True, fail=False), what="the rejection")
    response = Response.loads(reply.body)
    assert (response.id, response.kind) == (rid, "rejected")
    assert response.worker == worker.name

    dead = await take_dead(amqp_url, lambda m: m.correlation_id == rid, what="the bad request")
    reason = str(dead.headers["x-zag-reason"])
    expected = "malformed request" if bad == "malformed" else "no task 'no.such.module:task'"
    assert expected in reason, reason
    assert expected in str(response.reason)
    assert dead.body == body  # parked as it came

    # The worker still serves.
    executor = await remote()
    results = await zag.Engine(
        zag.linear("after", tasks.add), store={"x": 1, "y": 1}, executor=executor
    ).run()
    assert results["sum"] == 2
    assert worker.alive()
    assert "dead-lettering" in worker.output()  # and it said why, in its log


async def test_sigterm_finishes_the_in_flight_request(
    spawn_worker: SpawnWorker, remote: Remote, tmp_path: Path
) -> None:
    worker = await spawn_worker(cli=True)
    executor = await remote(stall_timeout=5.0)
    await wait_for_workers(executor, worker.name)
    store = {"signal_dir": str(tmp_path), "seconds": 1.0}
    engine = zag.Engine(mark_flow(), store=store, executor=executor)
    run = asyncio.create_task(engine.run())
    try:
        await eventually(lambda: marks(tmp_path), what="the task to start")
        worker.terminate()
        async with asyncio.timeout(10):
            results = await run
    finally:
        run.cancel()
    assert results["marked"] == worker.pid
    assert marks(tmp_path) == [worker.pid]  # finished there, not handed over and rerun
    assert await worker.wait_exit() == 0, worker.output()
    assert engine.state is zag.FlowState.SUCCESS
    # It said goodbye on the way out, so discovery forgets it at once.
    assert worker.name not in executor.workers()


async def test_malformed_discovery_message_is_refused_with_its_reason(
    start_workers: StartWorkers,
    remote: Remote,
    amqp_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Both ends read discovery through the protocol module: a message missing a field is
    logged with what is wrong, and changes nothing."""
    (worker,) = await start_workers()
    executor = await remote()
    await wait_for_workers(executor, worker.name)
    caplog.set_level(logging.WARNING, logger="zag_async.workers")
    bad = json.dumps({"v": 1, "kind": "worker", "worker": "intruder", "tasks": [], "ttl": 5})
    async with channel(amqp_url) as ch:
        discovery = await ch.get_exchange("zag.discovery", ensure=False)
        await discovery.publish(aio_pika.Message(bad.encode()), routing_key="")
    await eventually(
        lambda: sum("field 'topic' missing" in r.getMessage() for r in caplog.records) >= 2,
        what="worker and executor to refuse the announcement",
    )
    assert "intruder" not in executor.workers()
