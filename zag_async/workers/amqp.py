"""Remote workers over RabbitMQ (aio-pika): `Worker` serves tasks, `RemoteExecutor` sends them.

Topology (all declared idempotently by both sides):

    zag.work        direct exchange; routing key = topic
    zag.q.<topic>   quorum queue per topic, shared by that topic's workers;
                    x-delivery-limit dead-letters a message that keeps
                    killing its workers to zag.dead
    zag.delay       headers exchange in front of the delay tiers
    zag.delay.<ms>  one queue per tier with x-message-ttl=<ms>; expired
                    messages dead-letter back to zag.work under their topic
    zag.dead        fanout exchange + queue: rejected and poison requests,
                    with the reason in the x-zag-reason header
    zag.discovery   fanout exchange: workers announce their topics and tasks
    zag.reply.<id>  one durable reply queue per RemoteExecutor (x-expires), so
                    outcomes sent while it reconnects wait for it

Delivery is at-least-once: a worker acks a request only after publishing its
outcome, so a worker killed mid-task has its request redelivered. While a
request runs the worker sends heartbeats; the engine fails a request whose
worker went silent for `stall_timeout` (WorkerLost) or that waits in its
queue with no live worker serving its task for `discovery_timeout`
(NoWorkers), and ignores a second outcome for a request it already finished.

Recovery after a broker restart. aio-pika restores channels, queues and
consumers by itself, but it re-sends `basic.consume` with no deadline while
holding the channel's lock, and RabbitMQ answers a consume on a quorum queue
only once the queue has a leader again. Every reply and heartbeat a worker
published on that channel waited behind it (the engine saw the step stay
RUNNING), and replacing the channel only queued one more consume. So a
worker takes requests on a channel of its own that aio-pika does not
restore: a `_QueueConsumer` checks every `CONSUMER_CHECK` s that its
consumer is there and starts it again when it is gone, one consume at a
time, each waiting at most `CONSUME_TIMEOUT` s (RabbitMQ itself gives up
after 30 s) and retried with pauses of at most `CONSUME_RETRY_CAP` s.
Outcomes go out on the other channel, each attempt bounded by what is left
of its retry window (`reply_timeout`, `publish_timeout`). Bound: a worker
consumes again within CONSUMER_CHECK + CONSUME_RETRY_CAP (2.5 s) of its queue
accepting consumers, and its outcomes never wait on a consume. A quorum
queue that never gets a leader back serves nobody (RabbitMQ 3.10 loses the
registration of a queue created seconds before a kill -9, and restarts it
without an election): the worker then logs a warning every CONSUME_TIMEOUT.

Delayed retries use the tiers instead of timers: a request whose retry
controller asked for `delay` seconds goes to the smallest tier >= delay.
With the tiers below a delay is served within [delay, 1.5 x delay] (plus a
few ms), and never early; delays above the largest tier (1 hour) wait
one hour.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
    AbstractRobustQueue,
)

from ..atom import Atom
from ..backoff import Backoff
from ..codec import Codec, JsonCodec
from ..errors import (
    AtomTimeout,
    ConfigurationError,
    ExecutionError,
    NoWorkers,
    RemoteFailure,
    WorkerLost,
)
from ..events import Event, _current
from ..failure import Failure
from .protocol import MessageError, Request, Response, task_key

__all__ = ["DELAY_TIERS_MS", "RemoteExecutor", "Worker"]

logger = logging.getLogger("zag_async.workers")

WORK = "zag.work"
DELAY = "zag.delay"
DEAD = "zag.dead"
DISCOVERY = "zag.discovery"


class _Tracing(Protocol):
    """Trace propagation hooks; `zag_async.telemetry.trace_workers()` installs them."""

    def inject(self, headers: dict[str, Any]) -> None: ...

    def remote_span(
        self, request: Request, headers: Mapping[str, Any], worker: str
    ) -> contextlib.AbstractContextManager[Callable[[Response], object]]: ...


#: None (the default) keeps tracing off at no cost, and opentelemetry unimported.
_tracing: _Tracing | None = None

#: Seconds between reconnect attempts after the broker went away (aio-pika's
#: default of 5 s would add up to 5 s to every outage).
RECONNECT_INTERVAL = 1.0
#: Seconds one attempt to start consuming a queue may take (see the module docstring).
CONSUME_TIMEOUT = 60.0
#: Longest pause between two attempts to start consuming.
CONSUME_RETRY_CAP = 2.0
#: Seconds between checks that a worker still consumes its queue.
CONSUMER_CHECK = 0.5
#: Seconds a publish attempt with no retry window (a heartbeat) may take.
PUBLISH_ATTEMPT_TIMEOUT = 5.0
#: Seconds that closing waits on the broker for clean-up (cancelling consumers,
#: deleting the reply queue) before leaving it undone.
CLEANUP_TIMEOUT = 2.0

#: Delay tiers in milliseconds, each at most 1.5x the previous: a delay is
#: served by the smallest tier that is not shorter than it.
DELAY_TIERS_MS = (
    50,
    75,
    100,
    150,
    200,
    300,
    450,
    600,
    900,
    1_000,
    1_500,
    2_000,
    3_000,
    4_500,
    6_000,
    9_000,
    12_000,
    18_000,
    27_000,
    40_000,
    60_000,
    90_000,
    135_000,
    200_000,
    300_000,
    450_000,
    600_000,
    900_000,
    1_350_000,
    2_000_000,
    3_000_000,
    3_600_000,
)


def delay_tier(seconds: float) -> int:
    """The tier (ms) that serves a delay: the smallest not shorter than it."""
    wanted = seconds * 1000.0
    for tier in DELAY_TIERS_MS:
        if tier >= wanted:
            return tier
    return DELAY_TIERS_MS[-1]


async def declare_topology(
    channel: AbstractChannel, topics: Iterable[str], delivery_limit: int
) -> tuple[AbstractExchange, dict[str, AbstractQueue]]:
    """Declare exchanges, the topics' queues, delay tiers and the dead-letter queue."""
    work = await channel.declare_exchange(WORK, aio_pika.ExchangeType.DIRECT, durable=True)
    dead = await channel.declare_exchange(DEAD, aio_pika.ExchangeType.FANOUT, durable=True)
    dead_queue = await channel.declare_queue(DEAD, durable=True)
    await dead_queue.bind(dead)
    delay = await channel.declare_exchange(DELAY, aio_pika.ExchangeType.HEADERS, durable=True)
    for tier in DELAY_TIERS_MS:
        queue = await channel.declare_queue(
            f"{DELAY}.{tier}",
            durable=True,
            arguments={"x-message-ttl": tier, "x-dead-letter-exchange": WORK},
        )
        await queue.bind(delay, arguments={"x-match": "all", "zag-delay": str(tier)})
    await channel.declare_exchange(DISCOVERY, aio_pika.ExchangeType.FANOUT, durable=False)
    queues: dict[str, AbstractQueue] = {}
    for topic in topics:
        queue = await channel.declare_queue(
            f"zag.q.{topic}",
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-delivery-limit": delivery_limit,
                "x-dead-letter-exchange": DEAD,
            },
        )
        await queue.bind(work, routing_key=topic)
        queues[topic] = queue
    return work, queues


class _Channel:
    """A channel on a robust connection, replaced when aio-pika cannot restore it.

    aio-pika restores channels, queues and consumers after a reconnect, but a
    restore that fails (after a broker kill -9 a quorum queue may not be ready,
    and the re-consume times out) leaves the channel closed for good, and with it
    every consumer. `current()` notices a closed channel on a live connection and
    opens a replacement, running `setup` on it; `keep()` checks every second.
    """

    def __init__(
        self,
        connection: AbstractRobustConnection,
        setup: Callable[[AbstractChannel], Awaitable[None]],
        owner: str,
    ) -> None:
        self.connection = connection
        self.setup = setup
        self.owner = owner
        self.channel: AbstractChannel | None = None
        self._lock = asyncio.Lock()
        self._suspect = False

    async def open(self) -> AbstractChannel:
        channel = await self.connection.channel()
        await self.setup(channel)
        self.channel = channel
        return channel

    def _dead(self) -> bool:
        return (
            self.channel is None
            or self.channel.is_closed
            and self.connection.connected.is_set()
            and not self.connection.is_closed
        )

    async def current(self, *, confirmed: bool = True) -> AbstractChannel:
        """The live channel; a replacement if ours died on a connected link.

        With confirmed=False (the periodic check) a dead channel is replaced only
        when it was already dead at the previous check, leaving aio-pika's own
        restore, which takes milliseconds, time to finish first.
        """
        if not self._dead():
            self._suspect = False
            assert self.channel is not None
            return self.channel
        if not confirmed and not self._suspect:
            self._suspect = True
            assert self.channel is not None
            return self.channel
        async with self._lock:
            if self._dead():
                logger.warning(
                    "%s: channel was not restored after a reconnect; opening a new one",
                    self.owner,
                )
                old = self.channel
                await self.open()
                self._suspect = False
                if old is not None:
                    with contextlib.suppress(Exception):
                        await old.close()  # and stop aio-pika from restoring it later
        assert self.channel is not None
        return self.channel

    async def keep(self, every: float = 1.0) -> None:
        """Check the channel every `every` seconds until cancelled."""
        while True:
            await asyncio.sleep(every)
            try:
                await self.current(confirmed=False)
            except Exception as exc:  # the broker may be away again: next round
                logger.debug("%s: channel check failed: %r", self.owner, exc)


class _QueueConsumer:
    """One consumer on a queue, on a channel of its own, kept alive by hand.

    aio-pika is not asked to restore it (`robust=False`): its restore has no
    deadline and holds the channel (see the module docstring). `keep()`
    checks every `CONSUMER_CHECK` s that the consumer is still there and,
    when it is not (a reconnect, a closed channel), starts it again on a
    fresh channel, one bounded attempt at a time, pausing between failed ones.
    """

    def __init__(
        self,
        connection: AbstractRobustConnection,
        queue: str,
        callback: Callable[[AbstractIncomingMessage], Awaitable[None]],
        *,
        prefetch: int,
        owner: str,
    ) -> None:
        self.connection = connection
        self.queue = queue
        self.callback = callback
        self.prefetch = prefetch
        self.owner = owner
        self.channel: AbstractChannel | None = None
        self.tag: str | None = None

    async def start(self) -> None:
        """Open a fresh channel and consume on it (one attempt, bounded)."""
        await self._drop()
        channel = self.connection.channel()
        try:
            async with asyncio.timeout(CONSUME_TIMEOUT):
                await channel.initialize()
                await channel.set_qos(prefetch_count=self.prefetch)
                queue = await channel.get_queue(self.queue, ensure=False)
                if isinstance(queue, AbstractRobustQueue):
                    self.tag = await queue.consume(self.callback, robust=False)
                else:
                    self.tag = await queue.consume(self.callback)
        except BaseException:
            await _close_quietly(channel)
            raise
        self.channel = channel

    async def alive(self) -> bool:
        """False when the consumer is gone on a connected link (True while disconnected)."""
        channel = self.channel
        if channel is None:
            return False
        if not self.connection.connected.is_set():
            return True  # nothing to do before the reconnect
        if channel.is_closed:
            return False
        try:
            async with asyncio.timeout(CLEANUP_TIMEOUT):
                underlay = await channel.get_underlay_channel()
        except Exception:
            return False
        return isinstance(underlay, aiormq.Channel) and self.tag in underlay.consumers

    async def keep(self) -> None:
        """Restart the consumer whenever it is gone, until cancelled."""
        while True:
            await asyncio.sleep(CONSUMER_CHECK)
            if await self.alive():
                continue
            backoff = Backoff(first=0.2, factor=2.0, cap=CONSUME_RETRY_CAP)
            async for _attempt in backoff.attempts():
                try:
                    await self.start()
                except Exception as exc:  # the queue may not take consumers yet
                    logger.warning(
                        "%s: consuming %s failed (%r); retrying", self.owner, self.queue, exc
                    )
                else:
                    logger.info("%s: consuming %s again", self.owner, self.queue)
                    break

    async def cancel(self) -> None:
        """Stop deliveries (bounded); the channel stays open for pending acks."""
        channel, tag = self.channel, self.tag
        if channel is None or tag is None or channel.is_closed:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLEANUP_TIMEOUT):
                queue = await channel.get_queue(self.queue, ensure=False)
                await queue.cancel(tag)

    async def close(self) -> None:
        """Close the channel (unacked deliveries go back to the queue)."""
        await self._drop()

    async def _drop(self) -> None:
        channel, self.channel, self.tag = self.channel, None, None
        if channel is not None:
            await _close_quietly(channel)


async def _close_quietly(channel: AbstractChannel) -> None:
    """Close a channel, bounded, ignoring errors (it may be dead or the broker away)."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLEANUP_TIMEOUT):
            await channel.close()


def _check_topic(topic: str) -> str:
    if not isinstance(topic, str) or not topic or any(c in topic for c in " #*"):
        raise ConfigurationError(
            f"a topic is a non-empty word without spaces, '#' or '*': {topic!r}"
        )
    return topic


# ---------------------------------------------------------------------------------------
# Worker
# ---------------------------------------------------------------------------------------


class Worker:
    """Serves tasks of one topic from RabbitMQ.

        async with zag.Worker("amqp://guest:guest@127.0.0.1/", topic="compute",
                              tasks=[resize, Encode()]) as worker:
            await worker.serve()          # until worker.stop()

    Args:
        url: the broker.
        topic: the queue this worker takes requests from.
        tasks: atoms (decorated functions or Task instances) it can run.
        concurrency: requests run at once (the channel's prefetch).
        heartbeat: seconds between "still running" messages for a request.
        delivery_limit: deliveries of one request before it counts as poison.
        announce_every: seconds between discovery announcements.
    """

    def __init__(
        self,
        url: str,
        *,
        topic: str,
        tasks: Iterable[Atom],
        concurrency: int = 8,
        heartbeat: float = 1.0,
        delivery_limit: int = 5,
        announce_every: float = 2.0,
        name: str | None = None,
        codec: Codec | None = None,
    ) -> None:
        self.url = url
        self.topic = _check_topic(topic)
        self.tasks: dict[str, Atom] = {}
        for atom in tasks:
            if not isinstance(atom, Atom):
                raise ConfigurationError(
                    f"worker tasks must be atoms (@zag.task or zag.Task), got {atom!r}"
                )
            self.tasks[task_key(atom)] = atom
        if not self.tasks:
            raise ConfigurationError("a worker needs at least one task")
        if concurrency < 1:
            raise ConfigurationError(f"concurrency must be >= 1, got {concurrency!r}")
        self.concurrency = concurrency
        self.heartbeat = heartbeat
        self.delivery_limit = delivery_limit
        self.announce_every = announce_every
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.codec = codec or JsonCodec()
        self._connection: AbstractRobustConnection | None = None
        self._channels: _Channel | None = None
        self._requests: _QueueConsumer | None = None  # while serving
        self._consumers: list[tuple[AbstractQueue, str]] = []  # on the current channel
        self._serving = False
        self._stop = asyncio.Event()
        self._running: dict[str, asyncio.Task[None]] = {}
        self.served = 0
        #: How long an outcome is retried while the broker is away (then the
        #: request is left unacked, so it is redelivered: at-least-once).
        self.reply_timeout = 60.0

    async def __aenter__(self) -> Self:
        self._connection = await aio_pika.connect_robust(
            self.url, reconnect_interval=RECONNECT_INTERVAL
        )
        self._channels = _Channel(self._connection, self._setup, f"worker {self.name}")
        await self._channels.open()
        return self

    async def _setup(self, channel: AbstractChannel) -> None:
        """Prepare a (new) channel: topology and, while serving, the ping consumer.

        Requests are consumed on a channel of their own (`_QueueConsumer`), so
        outcomes published here never wait behind a consume.
        """
        await declare_topology(channel, [self.topic], self.delivery_limit)
        self._consumers = []
        if self._serving:
            await self._consume(channel)

    async def _consume(self, channel: AbstractChannel) -> None:
        """Start the ping consumer on `channel` (set up by `_setup`)."""
        discovery = await channel.get_exchange(DISCOVERY, ensure=False)
        pings = await channel.declare_queue(exclusive=True, auto_delete=True)
        await pings.bind(discovery)
        self._consumers = [(pings, await pings.consume(self._on_ping, no_ack=True))]

    async def _discovery(self) -> AbstractExchange:
        assert self._channels is not None
        channel = await self._channels.current()
        return await channel.get_exchange(DISCOVERY, ensure=False)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    def stop(self) -> None:
        """Stop taking requests; `serve()` returns once running ones are answered."""
        self._stop.set()

    async def serve(self) -> None:
        """Take and run requests until `stop()` (graceful: in-flight requests finish)."""
        channels = self._channels
        if channels is None:
            raise ConfigurationError("use the worker as 'async with Worker(...) as worker:'")
        channel = await channels.current()  # its topology was declared when it opened
        self._serving = True  # from now on a replacement channel consumes too
        await self._consume(channel)
        requests = _QueueConsumer(
            channels.connection,
            f"zag.q.{self.topic}",
            self._on_request,
            prefetch=self.concurrency,
            owner=f"worker {self.name}",
        )
        self._requests = requests
        await requests.start()
        keeper = asyncio.create_task(channels.keep())
        consumer = asyncio.create_task(requests.keep())
        announcer = asyncio.create_task(self._announce_loop())
        try:
            await self._announce()
            await self._stop.wait()
        finally:
            self._serving = False
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
            await requests.cancel()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLEANUP_TIMEOUT):  # the broker may be away
                    for queue, tag in self._consumers:
                        await queue.cancel(tag)
            announcer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await announcer
            # Graceful: let in-flight requests finish and be acked.
            if self._running:
                await asyncio.gather(*self._running.values(), return_exceptions=True)
            await requests.close()
            self._requests = None
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLEANUP_TIMEOUT):
                    await self._announce(leaving=True)

    async def _announce_loop(self) -> None:
        while True:
            await asyncio.sleep(self.announce_every)
            with contextlib.suppress(Exception):
                await self._announce()

    async def _announce(self, leaving: bool = False) -> None:
        body = {
            "v": 1,
            "kind": "leaving" if leaving else "worker",
            "worker": self.name,
            "topic": self.topic,
            "tasks": sorted(self.tasks),
            "ttl": self.announce_every * 3,
        }
        discovery = await self._discovery()
        await discovery.publish(aio_pika.Message(json.dumps(body).encode()), routing_key="")

    async def _on_ping(self, message: AbstractIncomingMessage) -> None:
        with contextlib.suppress(ValueError):
            if json.loads(message.body).get("kind") == "ping":
                await self._announce()

    async def _on_request(self, message: AbstractIncomingMessage) -> None:
        if self._stop.is_set():
            await message.nack(requeue=True)  # hand it back: another worker takes it
            return
        key = message.correlation_id or uuid.uuid4().hex
        task = asyncio.create_task(self._handle(message))
        self._running[key] = task
        task.add_done_callback(lambda _t: self._running.pop(key, None))

    async def _reply(
        self, message: AbstractIncomingMessage, response: Response, *, retry: bool = False
    ) -> None:
        """Send news to the engine; outcomes are retried across a broker outage."""
        if not message.reply_to or self._channels is None:
            return
        reply = aio_pika.Message(
            response.dumps(self.codec),
            correlation_id=response.id,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        window = self.reply_timeout if retry else 0.0
        deadline = time.monotonic() + window
        async for attempt in Backoff(first=0.1, cap=2.0, within=window).attempts():
            try:
                bound = max(deadline - time.monotonic(), PUBLISH_ATTEMPT_TIMEOUT)
                async with asyncio.timeout(bound):
                    channel = await self._channels.current()
                    await channel.default_exchange.publish(reply, routing_key=message.reply_to)
                return
            except Exception as exc:
                if attempt.last:
                    raise
                logger.warning(
                    "worker %s: reply %s not sent (%r); retrying", self.name, response.id, exc
                )

    async def _dead_letter(self, message: AbstractIncomingMessage, reason: str) -> None:
        """Park a bad request in zag.dead with its reason, then drop it from the queue."""
        logger.error("worker %s: dead-lettering a request: %s", self.name, reason)
        if self._channels is not None:
            channel = await self._channels.current()
            dead = await channel.get_exchange(DEAD, ensure=False)
            headers = dict(message.headers or {})
            headers["x-zag-reason"] = reason[:1000]
            headers["x-zag-worker"] = self.name
            await dead.publish(
                aio_pika.Message(
                    message.body, headers=headers, correlation_id=message.correlation_id
                ),
                routing_key="",
            )
        await message.ack()

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        try:
            await self._handle_request(message)
        except (
            aiormq.exceptions.AMQPError,
            aiormq.exceptions.ChannelInvalidStateError,
            ConnectionError,
            TimeoutError,
        ) as exc:
            # The broker went away (its channel died under us, or it stayed away
            # longer than reply_timeout): the request is still unacked there and
            # is redelivered once it is back. Expected during outages: a warning.
            logger.warning(
                "worker %s: request %s left to the broker for redelivery (%r)",
                self.name,
                message.correlation_id,
                exc,
            )
        except Exception:
            logger.exception("worker %s: could not finish handling a request", self.name)

    async def _handle_request(self, message: AbstractIncomingMessage) -> None:
        try:
            request = Request.loads(message.body, self.codec)
        except MessageError as exc:
            rid = message.correlation_id or ""
            if rid:
                await self._reply(
                    message,
                    Response(rid, "rejected", self.name, reason=f"malformed request: {exc}"),
                )
            await self._dead_letter(message, f"malformed request: {exc}")
            return
        atom = self.tasks.get(request.task)
        if atom is None:
            reason = f"worker {self.name} on topic {self.topic!r} has no task {request.task!r}"
            await self._reply(message, Response(request.id, "rejected", self.name, reason=reason))
            await self._dead_letter(message, reason)
            return
        count = (message.headers or {}).get("x-delivery-count", 0)
        deliveries = int(count) if isinstance(count, (int, str)) else 0
        if deliveries >= self.delivery_limit - 1:
            reason = (
                f"request for {request.task!r} (atom {request.atom!r}) was delivered "
                f"{deliveries + 1} times: its workers keep dying on it (poison message)"
            )
            failure = Failure.from_exception(ExecutionError(reason))
            await self._reply(message, Response(request.id, "failure", self.name, failure=failure))
            await self._dead_letter(message, reason)
            return
        # No "started" message: a short task answers with its outcome alone (one
        # broker round trip less); a long one is announced by its heartbeats.
        beat = asyncio.create_task(self._heartbeats(message, request.id))
        try:
            if _tracing is None:
                response = await self._run(atom, request, message)
            else:  # run it in a span continuing the engine's trace
                with _tracing.remote_span(request, message.headers or {}, self.name) as record:
                    response = await self._run(atom, request, message)
                    record(response)
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
        await self._reply(message, response, retry=True)
        await message.ack()  # only now: a worker that dies before this gets redelivered
        self.served += 1

    async def _heartbeats(self, message: AbstractIncomingMessage, rid: str) -> None:
        # The first beat comes early (a task still running after 20 ms is worth
        # announcing, so the engine can tell if its worker dies); then steady.
        pause = min(self.heartbeat, 0.02)
        while True:
            await asyncio.sleep(pause)
            pause = self.heartbeat
            with contextlib.suppress(Exception):
                await self._reply(message, Response(rid, "heartbeat", self.name))

    async def _run(
        self, atom: Atom, request: Request, message: AbstractIncomingMessage
    ) -> Response:
        from ..execution import _in_thread

        def emit(event: Event) -> None:
            if event.kind == "progress" and event.progress is not None:
                response = Response(request.id, "progress", self.name, progress=event.progress)
                asyncio.ensure_future(self._reply(message, response))

        token = _current.set((emit, request.flow, request.atom))
        try:
            if request.action == "execute":
                fn = atom.execute_fn or atom.execute
                is_async = atom.execute_async
            else:
                fn_r = atom.revert_fn
                if fn_r is None:
                    return Response(request.id, "result", self.name, result=None)
                fn, is_async = fn_r, atom.revert_async
            call: Callable[[], Awaitable[Any]] = (
                (lambda: fn(**request.args)) if is_async else (lambda: _in_thread(fn, request.args))
            )
            if request.timeout:
                async with asyncio.timeout(request.timeout):
                    value = await call()
            else:
                value = await call()
            self.codec.dumps(value)  # fail here, as a task failure, if it cannot travel
            return Response(request.id, "result", self.name, result=value)
        except TimeoutError as exc:
            error = AtomTimeout(request.atom or request.task, request.timeout or 0.0)
            error.__cause__ = exc
            return Response(request.id, "failure", self.name, failure=Failure.from_exception(error))
        except Exception as exc:
            return Response(request.id, "failure", self.name, failure=Failure.from_exception(exc))
        finally:
            _current.reset(token)


# ---------------------------------------------------------------------------------------
# Engine side
# ---------------------------------------------------------------------------------------


@dataclass
class _Pending:
    future: asyncio.Future[Response]
    emit: Callable[[Event], None] | None
    flow: str
    atom: str
    topic: str = ""
    task: str = ""
    last_seen: float | None = None  #: monotonic time of the last word from a worker
    worker: str = ""


class RemoteExecutor:
    """Runs a flow's tasks on remote workers: `zag.Engine(flow, executor=RemoteExecutor(...))`.

        async with zag.RemoteExecutor("amqp://guest:guest@127.0.0.1/", topics=["compute"]) as ex:
            await zag.Engine(flow, executor=ex).run()

    Args:
        url: the broker.
        topics: topics whose workers may run this engine's tasks; each task
            goes to the first topic whose live workers advertise it.
        stall_timeout: fail a running request whose worker sent nothing for
            this long (WorkerLost).
        discovery_timeout: how long to wait for a worker that serves a task
            before failing with NoWorkers.
        publish_timeout: how long a publish may wait for the broker to come back.
    """

    async def before_retry(self, delay: float) -> float:
        """Wait for nothing here: the broker's delay queues hold the guarded requests."""
        return delay

    def __init__(
        self,
        url: str,
        *,
        topics: Iterable[str],
        stall_timeout: float = 10.0,
        discovery_timeout: float = 3.0,
        publish_timeout: float = 30.0,
        delivery_limit: int = 5,
        codec: Codec | None = None,
    ) -> None:
        self.url = url
        self.topics = [_check_topic(t) for t in topics]
        if not self.topics:
            raise ConfigurationError("RemoteExecutor needs at least one topic")
        self.stall_timeout = stall_timeout
        self.discovery_timeout = discovery_timeout
        self.publish_timeout = publish_timeout
        self.delivery_limit = delivery_limit
        self.codec = codec or JsonCodec()
        self._connection: AbstractRobustConnection | None = None
        self._channels: _Channel | None = None
        self._work: AbstractExchange | None = None
        self._delay: AbstractExchange | None = None
        self._reply_queue: AbstractQueue | None = None
        self._reply_tag: str | None = None
        #: Named and durable, so it outlives a broker restart (and the reconnect):
        #: outcomes sent meanwhile wait for us. It expires when unused.
        self._reply_name = f"zag.reply.{uuid.uuid4().hex}"
        self._keeper: asyncio.Task[None] | None = None
        self._pending: dict[str, _Pending] = {}
        self._workers: dict[
            str, tuple[str, frozenset[str], float]
        ] = {}  # name -> topic, tasks, expiry
        self._workers_changed = asyncio.Event()
        self._watchdog: asyncio.Task[None] | None = None
        self._closed = False

    async def __aenter__(self) -> Self:
        self._connection = await aio_pika.connect_robust(
            self.url, reconnect_interval=RECONNECT_INTERVAL
        )
        self._channels = _Channel(self._connection, self._setup, f"executor {self._reply_name}")
        await self._channels.open()
        self._keeper = asyncio.create_task(self._channels.keep())
        self._watchdog = asyncio.create_task(self._watch())
        return self

    async def _setup(self, channel: AbstractChannel) -> None:
        """Prepare a (new) channel: topology, reply and discovery consumers, a ping."""
        self._work, _ = await declare_topology(channel, self.topics, self.delivery_limit)
        self._delay = await channel.get_exchange(DELAY, ensure=False)
        self._reply_queue = await channel.declare_queue(
            self._reply_name, durable=True, arguments={"x-expires": 600_000}
        )
        self._reply_tag = await self._reply_queue.consume(self._on_response, no_ack=True)
        discovery = await channel.get_exchange(DISCOVERY, ensure=False)
        hello = await channel.declare_queue(exclusive=True, auto_delete=True)
        await hello.bind(discovery)
        await hello.consume(self._on_announcement, no_ack=True)
        await discovery.publish(aio_pika.Message(b'{"v": 1, "kind": "ping"}'), routing_key="")

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close; every request still outstanding resolves with a clear error."""
        if self._closed:
            return
        self._closed = True
        for rid, pending in list(self._pending.items()):
            if not pending.future.done():
                pending.future.set_exception(
                    ExecutionError(
                        f"atom {pending.atom!r}: the remote executor was closed while "
                        f"request {rid} was outstanding"
                    )
                )
        for task in (self._watchdog, self._keeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._reply_queue is not None:
            # Bounded: with the broker away these would wait for the reconnect (the
            # queue then expires by itself, x-expires).
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLEANUP_TIMEOUT):
                    # Cancel our consumer first: deleting a queue under a live consumer
                    # makes the broker cancel it, which aiormq logs as a warning.
                    if self._reply_tag is not None:
                        await self._reply_queue.cancel(self._reply_tag)
                    await self._reply_queue.delete(if_unused=False, if_empty=False)
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    # -- discovery -------------------------------------------------------------------

    async def _on_announcement(self, message: AbstractIncomingMessage) -> None:
        try:
            data = json.loads(message.body)
        except ValueError:
            return
        kind = data.get("kind")
        name = data.get("worker")
        if not isinstance(name, str):
            return
        if kind == "leaving":
            self._workers.pop(name, None)
        elif kind == "worker":
            ttl = float(data.get("ttl", 6.0))
            self._workers[name] = (
                str(data.get("topic")),
                frozenset(data.get("tasks", ())),
                time.monotonic() + ttl,
            )
            self._workers_changed.set()

    def workers(self) -> dict[str, tuple[str, frozenset[str]]]:
        """Live workers seen through discovery: name -> (topic, task keys)."""
        now = time.monotonic()
        return {
            n: (t, k) for n, (t, k, exp) in self._workers.items() if exp > now and t in self.topics
        }

    async def wait_for_workers(self, count: int = 1) -> None:
        """Wait until discovery has seen `count` live workers on our topics
        (bound it with `asyncio.timeout`)."""
        while len(self.workers()) < count:
            self._workers_changed.clear()
            await self._workers_changed.wait()

    async def _topic_for(self, key: str, atom: str) -> str:
        deadline = time.monotonic() + self.discovery_timeout
        while True:
            for topic in self.topics:
                if any(t == topic and key in tasks for t, tasks in self.workers().values()):
                    return topic
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NoWorkers(
                    f"atom {atom!r}: no live worker on topics {self.topics} serves task {key!r} "
                    f"(start one with: python -m zag_async worker --topic TOPIC module:tasks)"
                )
            self._workers_changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._workers_changed.wait()

    # -- requests --------------------------------------------------------------------

    async def execute(
        self,
        atom: Atom,
        name: str,
        flow: str,
        kwargs: dict[str, Any],
        *,
        time_limit: float | None,
        delay: float,
    ) -> Any:
        return await self._request(atom, name, flow, "execute", kwargs, time_limit, delay)

    async def revert(self, atom: Atom, name: str, flow: str, kwargs: dict[str, Any]) -> Any:
        return await self._request(atom, name, flow, "revert", kwargs, None, 0.0)

    async def _request(
        self,
        atom: Atom,
        name: str,
        flow: str,
        action: str,
        kwargs: dict[str, Any],
        time_limit: float | None,
        delay: float,
    ) -> Any:
        if self._closed or self._channels is None:
            raise ExecutionError(
                "the remote executor is not open; use 'async with RemoteExecutor(...)'"
            )
        key = task_key(atom)
        topic = await self._topic_for(key, name)
        rid = uuid.uuid4().hex
        request = Request(rid, key, action, dict(kwargs), atom=name, flow=flow, timeout=time_limit)
        body = request.dumps(self.codec)
        current = _current.get()
        loop = asyncio.get_running_loop()
        pending = _Pending(
            loop.create_future(), current[0] if current else None, flow, name, topic, key
        )
        self._pending[rid] = pending
        try:
            await self._publish(body, rid, topic, delay)
            wait = None if time_limit is None else time_limit + delay + self.stall_timeout
            try:
                async with asyncio.timeout(wait):
                    response = await pending.future
            except TimeoutError:
                raise AtomTimeout(name, time_limit or 0.0) from None
        finally:
            self._pending.pop(rid, None)
        if response.kind == "result":
            return response.result
        if response.kind == "rejected":
            raise ExecutionError(
                f"atom {name!r}: worker {response.worker} rejected the request: {response.reason}"
            )
        failure = response.failure
        assert failure is not None
        raise RemoteFailure(failure)

    async def _publish(self, body: bytes, rid: str, topic: str, delay: float) -> None:
        """Publish, retrying while the broker is away (never silently dropped)."""
        assert self._channels is not None
        headers: dict[str, Any] = {}
        if delay > 0:
            headers["zag-delay"] = str(delay_tier(delay))
        if _tracing is not None:
            _tracing.inject(headers)  # the atom span's trace context (W3C traceparent)
        message = aio_pika.Message(
            body,
            correlation_id=rid,
            reply_to=self._reply_name,
            headers=headers,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        deadline = time.monotonic() + self.publish_timeout
        backoff = Backoff(first=0.1, cap=2.0, within=self.publish_timeout)
        async for attempt in backoff.attempts():
            try:
                async with asyncio.timeout(max(deadline - time.monotonic(), 0.0)):
                    await self._channels.current()  # a replacement if ours was not restored
                    exchange = self._delay if delay > 0 else self._work
                    assert exchange is not None
                    await exchange.publish(message, routing_key=topic)
                return
            except Exception as exc:  # connection trouble: wait for the robust reconnect
                if attempt.last:
                    raise ExecutionError(
                        f"could not publish request {rid} to RabbitMQ: {exc!r}"
                    ) from exc
                logger.warning("publish of request %s failed (%r); retrying", rid, exc)

    async def _on_response(self, message: AbstractIncomingMessage) -> None:
        try:
            response = Response.loads(message.body, self.codec)
        except MessageError as exc:
            logger.error("ignoring a malformed response: %s", exc)
            return
        pending = self._pending.get(response.id)
        if pending is None or pending.future.done():
            return  # a duplicate, or the answer to a request we gave up on
        pending.last_seen = time.monotonic()
        pending.worker = response.worker or pending.worker
        if response.kind in ("result", "failure", "rejected"):
            pending.future.set_result(response)
        elif (
            response.kind == "progress"
            and pending.emit is not None
            and response.progress is not None
        ):
            pending.emit(
                Event("progress", pending.flow, "RUNNING", pending.atom, progress=response.progress)
            )

    async def _watch(self) -> None:
        """Fail requests nobody can answer any more.

        A request whose worker went silent for `stall_timeout` (it died and no
        other worker took the request over) fails with WorkerLost; one still
        waiting in its queue fails with NoWorkers once no live worker serves
        its task for `discovery_timeout`.
        """
        period = max(min(self.stall_timeout, self.discovery_timeout) / 4, 0.05)
        orphaned: dict[str, float] = {}
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            live = self.workers()
            for rid, pending in list(self._pending.items()):
                if pending.last_seen is None and not pending.future.done():
                    served = any(
                        t == pending.topic and pending.task in tasks for t, tasks in live.values()
                    )
                    if served:
                        orphaned.pop(rid, None)
                    elif now - orphaned.setdefault(rid, now) > self.discovery_timeout:
                        pending.future.set_exception(
                            NoWorkers(
                                f"atom {pending.atom!r}: its request {rid} is still queued and no "
                                f"live worker on topic {pending.topic!r} serves {pending.task!r}"
                            )
                        )
                    continue
                seen = pending.last_seen
                if (
                    seen is not None
                    and now - seen > self.stall_timeout
                    and not pending.future.done()
                ):
                    pending.future.set_exception(
                        WorkerLost(
                            f"atom {pending.atom!r}: worker {pending.worker or '?'} went silent "
                            f"for {now - seen:.1f}s while running request {rid}"
                        )
                    )

    # -- what the engine uses --------------------------------------------------------

    def __repr__(self) -> str:
        return f"<RemoteExecutor {self.topics} {len(self._pending)} pending>"
