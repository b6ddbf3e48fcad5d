"""`Worker`: serves one topic's requests from RabbitMQ, in its own process.

Delivery is at-least-once: a worker acks a request only after publishing its
outcome, so a worker killed mid-task has its request redelivered. While a
request runs the worker sends heartbeats, so the engine can tell a dead
worker from a slow task. Requests arrive on a channel of their own (see
`channel.py` for why and for the recovery bound); outcomes, heartbeats and
announcements go out on the worker's other channel. What is done with one
request is `serving.RequestHandler`'s job, shared with the loopback executor.

Workers on one topic may serve different tasks. Each listens to the others'
announcements; a request for a task it lacks is handed back (republished on
the topic, then acked) while a live worker on the topic announces that task,
and dead-lettered only when none does. The first hand-back is immediate,
later ones of the same request wait in the delay tiers (50 ms doubling to
`HAND_BACK_DELAY_CAP`), so a request whose only capable worker is busy
waits for it instead of bouncing in a tight loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Iterable
from types import TracebackType
from typing import Self

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from ..atom import Atom
from ..background import Background
from ..backoff import Backoff
from ..codec import Codec, JsonCodec
from ..errors import ConfigurationError
from . import topology
from .channel import (
    CLEANUP_TIMEOUT,
    PUBLISH_ATTEMPT_TIMEOUT,
    ChannelKeeper,
    QueueConsumer,
    check_url,
    close_connection,
    connect,
)
from .protocol import Announcement, Ping, Response, load_discovery
from .serving import RequestHandler, by_task_key, delivery_count
from .tracing import TracingHooks

__all__ = ["HAND_BACK_DELAY_CAP", "Worker"]

logger = logging.getLogger("zag_async.workers")

#: Longest wait (s) before a request handed back again reaches the topic queue.
HAND_BACK_DELAY_CAP = 1.0
#: Header counting how often workers lacking its task handed a request back.
HOPS = "x-zag-hops"


class Worker:
    """Serves tasks of one topic from RabbitMQ.

        async with zag.Worker("amqp://guest:guest@127.0.0.1/", topic="compute",
                              tasks=[resize, Encode()]) as worker:
            await worker.serve()          # until worker.stop()

    Args:
        url: the broker.
        topic: the queue this worker takes requests from.
        tasks: atoms (decorated functions or Task instances) it can run.
        concurrency: requests run at once (the request channel's prefetch).
        heartbeat: seconds between "still running" messages for a request.
        delivery_limit: deliveries of one request before it counts as poison.
        announce_every: seconds between discovery announcements.
        name: how engines and logs name this worker (default: host:pid:random).
        codec: how arguments and results travel (default: JSON).
        tracing: trace hooks (`zag_async.telemetry.trace_workers()`), or None.
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
        tracing: TracingHooks | None = None,
    ) -> None:
        self.url = check_url(url)
        self.topic = topology.check_topic(topic)
        self.tasks: dict[str, Atom] = by_task_key(tasks, "worker")
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
        self.handler = RequestHandler(
            self.tasks,
            worker=self.name,
            topic=self.topic,
            codec=self.codec,
            heartbeat=heartbeat,
            delivery_limit=delivery_limit,
            tracing=tracing,
            served_elsewhere=self._served_elsewhere,
        )
        #: Other live workers on our topic: name -> (tasks, monotonic expiry).
        self._peers: dict[str, tuple[frozenset[str], float]] = {}
        self._connection: AbstractRobustConnection | None = None
        self._channels: ChannelKeeper | None = None
        self._pings: list[tuple[AbstractQueue, str]] = []  # on the current channel
        self._serving = False
        self._stop = asyncio.Event()
        self._handlers: asyncio.TaskGroup | None = None  # while taking requests
        self.served = 0
        #: How long an outcome is retried while the broker is away (then the
        #: request is left unacked, so it is redelivered: at-least-once).
        self.reply_timeout = 60.0

    async def __aenter__(self) -> Self:
        self._connection = await connect(self.url)
        self._channels = ChannelKeeper(self._connection, self._setup, f"worker {self.name}")
        try:
            await self._channels.open()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def _setup(self, channel: AbstractChannel) -> None:
        """Prepare a (new) channel: topology and, while serving, the ping consumer."""
        await topology.declare_topology(channel, [self.topic], self.delivery_limit)
        self._pings = []
        if self._serving:
            await self._consume_pings(channel)

    async def _consume_pings(self, channel: AbstractChannel) -> None:
        """Start the ping consumer on `channel` (set up by `_setup`)."""
        discovery = await channel.get_exchange(topology.DISCOVERY, ensure=False)
        pings = await channel.declare_queue(exclusive=True, auto_delete=True)
        await pings.bind(discovery)
        self._pings = [(pings, await pings.consume(self._on_discovery, no_ack=True))]

    async def _discovery(self) -> AbstractExchange:
        assert self._channels is not None
        channel = await self._channels.current()
        return await channel.get_exchange(topology.DISCOVERY, ensure=False)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self._connection is not None:
            await close_connection(self._connection)
            self._connection = None

    @property
    def channel(self) -> AbstractChannel | None:
        """The channel outcomes and announcements go out on now (None before `async with`)."""
        return None if self._channels is None else self._channels.channel

    def stop(self) -> None:
        """Stop taking requests; `serve()` returns once running ones are answered."""
        self._stop.set()

    async def serve(self) -> None:
        """Take and run requests until `stop()` (graceful: in-flight requests finish)."""
        channels = self._channels
        if channels is None:
            raise ConfigurationError("use the worker as 'async with Worker(...) as worker:'")
        channel = await channels.current()  # its topology was declared when it opened
        self._serving = True  # from now on a replacement channel consumes pings too
        await self._consume_pings(channel)
        requests = QueueConsumer(
            channels.connection,
            topology.topic_queue(self.topic),
            self._on_request,
            prefetch=self.concurrency,
            owner=f"worker {self.name}",
        )
        background = Background(f"worker {self.name}")
        await background.start()
        try:
            # Graceful: leaving this group waits for the requests in hand. It opens
            # before the consumer starts: a queued request arrives at once.
            async with asyncio.TaskGroup() as handlers:
                self._handlers = handlers
                try:
                    await requests.start()
                    background.spawn(channels.keep(), name=f"{self.name} channel")
                    background.spawn(requests.keep(), name=f"{self.name} consumer")
                    background.spawn(self._announce_loop(), name=f"{self.name} announcer")
                    await self._announce()
                    with contextlib.suppress(Exception):  # peers announce themselves now
                        discovery = await self._discovery()
                        await discovery.publish(aio_pika.Message(Ping().dumps()), routing_key="")
                    await self._stop.wait()
                finally:
                    self._handlers = None
                    self._serving = False
                    await requests.cancel()
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(CLEANUP_TIMEOUT):  # the broker may be away
                            for queue, tag in self._pings:
                                await queue.cancel(tag)
        finally:
            self._serving = False
            await background.aclose()
            await requests.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLEANUP_TIMEOUT):
                    await self._announce(leaving=True)

    async def _announce_loop(self) -> None:
        while True:
            await asyncio.sleep(self.announce_every)
            with contextlib.suppress(Exception):
                await self._announce()

    async def _announce(self, leaving: bool = False) -> None:
        word = Announcement(
            self.name, self.topic, frozenset(self.tasks), self.announce_every * 3, leaving
        )
        discovery = await self._discovery()
        await discovery.publish(aio_pika.Message(word.dumps()), routing_key="")

    async def _on_discovery(self, message: AbstractIncomingMessage) -> None:
        """Answer pings; note which tasks the other live workers on our topic have."""
        try:
            word = load_discovery(message.body)
        except Exception as exc:  # MessageError; anything else must not stop discovery either
            logger.warning("worker %s: ignoring a discovery message: %s", self.name, exc)
            return
        if isinstance(word, Ping):
            with contextlib.suppress(Exception):  # the next announcement comes anyway
                await self._announce()
        elif word.worker == self.name or word.topic != self.topic:
            return
        elif word.leaving:
            self._peers.pop(word.worker, None)
        else:
            self._peers[word.worker] = (word.tasks, time.monotonic() + word.ttl)

    def _served_elsewhere(self, task: str) -> bool:
        """True while another live worker on our topic announces `task`."""
        now = time.monotonic()
        return any(task in tasks and until > now for tasks, until in self._peers.values())

    async def _on_request(self, message: AbstractIncomingMessage) -> None:
        handlers = self._handlers
        if handlers is None or self._stop.is_set():
            await message.nack(requeue=True)  # hand it back: another worker takes it
            return
        handlers.create_task(self._handle(message), name=f"request {message.correlation_id}")

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
            dead = await channel.get_exchange(topology.DEAD, ensure=False)
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

    async def _hand_back(self, message: AbstractIncomingMessage) -> None:
        """Republish a request for a task we lack on our topic, then ack it (at least once)."""
        assert self._channels is not None
        headers = {
            k: v
            for k, v in (message.headers or {}).items()
            if not k.startswith("x-") or k.startswith("x-zag-")  # not the broker's counters
        }
        hops = delivery_count({"x-delivery-count": headers.get(HOPS, 0)})
        headers[HOPS] = hops + 1
        exchange_name = topology.WORK
        if hops:
            wait = min(0.05 * 2 ** (hops - 1), HAND_BACK_DELAY_CAP)
            headers["zag-delay"] = str(topology.delay_tier(wait))
            exchange_name = topology.DELAY
        copy = aio_pika.Message(
            message.body,
            headers=headers,
            correlation_id=message.correlation_id,
            reply_to=message.reply_to,
            content_type=message.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        async with asyncio.timeout(PUBLISH_ATTEMPT_TIMEOUT):
            channel = await self._channels.current()
            exchange = await channel.get_exchange(exchange_name, ensure=False)
            await exchange.publish(copy, routing_key=self.topic)
        await message.ack()
        logger.debug("worker %s: handed request %s back", self.name, message.correlation_id)

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        """Handle one delivery and settle it whatever happens (a held delivery wedges a slot)."""
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
            await _settle(message.nack(requeue=True))  # frees the slot if the channel lives
        except Exception as exc:
            reason = f"worker {self.name} could not finish handling it: {exc!r}"
            logger.exception("worker %s: could not finish handling a request", self.name)
            try:
                async with asyncio.timeout(PUBLISH_ATTEMPT_TIMEOUT):
                    await self._dead_letter(message, reason)
            except Exception:  # then the queue's own dead-lettering (no reason header)
                await _settle(message.nack(requeue=False))

    async def _handle_request(self, message: AbstractIncomingMessage) -> None:
        async def send(response: Response) -> None:
            await self._reply(message, response)

        headers = message.headers or {}
        outcome = await self.handler.handle(
            message.body,
            correlation_id=message.correlation_id or "",
            headers=headers,
            deliveries=delivery_count(headers),
            send=send,
        )
        if outcome.hand_back:
            await self._hand_back(message)
            return
        if outcome.dead_letter is not None:
            if outcome.response is not None:
                await self._reply(message, outcome.response)
            await self._dead_letter(message, outcome.dead_letter)
            return
        assert outcome.response is not None
        await self._reply(message, outcome.response, retry=True)
        await message.ack()  # only now: a worker that dies before this gets redelivered
        self.served += 1


async def _settle(settling: Awaitable[None]) -> None:
    """Ack or nack, bounded; a dead channel (the broker redelivers) or a delivery
    already settled is no error here."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLEANUP_TIMEOUT):
            await settling
