"""`RemoteExecutor`: the engine's side of remote workers, sending tasks over RabbitMQ.

Each call becomes a `Request` on its task's topic, answered on this
executor's durable reply queue (`zag.reply.<id>`, so outcomes sent while it
reconnects wait for it). Discovery tells which live workers serve which
tasks. A request whose worker went silent for `stall_timeout` fails with
WorkerLost; one still queued with no live worker serving its task for
`discovery_timeout` fails with NoWorkers; a second outcome for a finished
request (at-least-once delivery) is ignored. Retry delays wait in the
broker's delay queues (`topology.py`), not in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aio_pika
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
from ..errors import AtomTimeout, ConfigurationError, ExecutionError, NoWorkers, WorkerLost
from ..events import Event, current_atom
from . import topology
from .channel import (
    CLEANUP_TIMEOUT,
    ChannelKeeper,
    QueueConsumer,
    check_url,
    close_connection,
    connect,
)
from .protocol import (
    Announcement,
    Ping,
    Request,
    Response,
    load_discovery,
    task_key,
)
from .tracing import TracingHooks

__all__ = ["RemoteExecutor"]

logger = logging.getLogger("zag_async.workers")


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
        delivery_limit: deliveries of one request before it counts as poison
            (declared on the topics' queues).
        codec: how arguments and results travel (default: JSON).
        tracing: trace hooks (`zag_async.telemetry.trace_workers()`), or None.
    """

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
        tracing: TracingHooks | None = None,
    ) -> None:
        self.url = check_url(url)
        self.topics = [topology.check_topic(t) for t in topics]
        if not self.topics:
            raise ConfigurationError("RemoteExecutor needs at least one topic")
        self.stall_timeout = stall_timeout
        self.discovery_timeout = discovery_timeout
        self.publish_timeout = publish_timeout
        self.delivery_limit = delivery_limit
        self.codec = codec or JsonCodec()
        self.tracing = tracing
        self._connection: AbstractRobustConnection | None = None
        self._channels: ChannelKeeper | None = None
        self._work: AbstractExchange | None = None
        self._delay: AbstractExchange | None = None
        self._reply_queue: AbstractQueue | None = None
        self._replies: QueueConsumer | None = None
        #: Named and durable, so it outlives a broker restart (and the reconnect):
        #: outcomes sent meanwhile wait for us. It expires when unused.
        self._reply_name = f"zag.reply.{uuid.uuid4().hex}"
        self._background = Background(f"executor {self._reply_name}")
        self._pending: dict[str, _Pending] = {}
        self._workers: dict[
            str, tuple[str, frozenset[str], float]
        ] = {}  # name -> topic, tasks, expiry
        self._workers_changed = asyncio.Event()
        self._closed = False

    async def __aenter__(self) -> Self:
        self._connection = await connect(self.url)
        self._channels = ChannelKeeper(
            self._connection, self._setup, f"executor {self._reply_name}"
        )
        # Replies arrive on a channel of their own, kept by hand (see channel.py):
        # aio-pika's restore of the main channel can wait on a quorum queue.
        self._replies = QueueConsumer(
            self._connection,
            self._reply_name,
            self._on_response,
            prefetch=0,
            owner=f"executor {self._reply_name}",
            no_ack=True,
        )
        try:
            await self._channels.open()
            await self._replies.start()
        except BaseException:
            await self.aclose()
            raise
        await self._background.start()
        self._background.spawn(self._channels.keep(), name=f"{self._reply_name} channel")
        self._background.spawn(self._replies.keep(), name=f"{self._reply_name} replies")
        self._background.spawn(self._watch(), name=f"{self._reply_name} watchdog")
        return self

    async def _setup(self, channel: AbstractChannel) -> None:
        """Prepare a (new) channel: topology, the reply queue, discovery, a ping."""
        self._work, _ = await topology.declare_topology(channel, self.topics, self.delivery_limit)
        self._delay = await channel.get_exchange(topology.DELAY, ensure=False)
        self._reply_queue = await channel.declare_queue(
            self._reply_name, durable=True, arguments={"x-expires": 600_000}
        )
        discovery = await channel.get_exchange(topology.DISCOVERY, ensure=False)
        hello = await channel.declare_queue(exclusive=True, auto_delete=True)
        await hello.bind(discovery)
        await hello.consume(self._on_announcement, no_ack=True)
        await discovery.publish(aio_pika.Message(Ping().dumps()), routing_key="")

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
        await self._background.aclose()
        if self._replies is not None:
            # Cancel our consumer first: deleting a queue under a live consumer
            # makes the broker cancel it, which aiormq logs as a warning.
            await self._replies.cancel()
        if self._reply_queue is not None:
            # Bounded: with the broker away this would wait for the reconnect (the
            # queue then expires by itself, x-expires).
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLEANUP_TIMEOUT):
                    await self._reply_queue.delete(if_unused=False, if_empty=False)
        if self._replies is not None:
            await self._replies.close()
        if self._connection is not None:
            await close_connection(self._connection)
            self._connection = None

    # -- discovery -------------------------------------------------------------------

    async def _on_announcement(self, message: AbstractIncomingMessage) -> None:
        try:
            word = load_discovery(message.body)
        except Exception as exc:  # MessageError; anything else must not stop discovery either
            logger.warning("executor: ignoring a discovery message: %s", exc)
            return
        if not isinstance(word, Announcement):
            return  # a ping: for workers
        if word.leaving:
            self._workers.pop(word.worker, None)
        else:
            self._workers[word.worker] = (word.topic, word.tasks, time.monotonic() + word.ttl)
            self._workers_changed.set()

    @property
    def channel(self) -> AbstractChannel | None:
        """The channel requests go out on now (None before `async with`)."""
        return None if self._channels is None else self._channels.channel

    @property
    def reply_queue(self) -> str:
        """The queue this executor's outcomes arrive on (`zag.reply.<id>`)."""
        return self._reply_name

    def in_flight(self) -> dict[str, str]:
        """Outstanding requests: id -> the worker last heard from on it ('' if none yet)."""
        return {rid: p.worker for rid, p in self._pending.items() if not p.future.done()}

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

    def _serving_topic(self, key: str) -> str | None:
        """The first of our topics with a live worker that serves `key`, if any."""
        now = time.monotonic()
        for topic in self.topics:
            for t, tasks, expiry in self._workers.values():
                if t == topic and expiry > now and key in tasks:
                    return topic
        return None

    async def _topic_for(self, key: str, atom: str) -> str:
        deadline = time.monotonic() + self.discovery_timeout
        while True:
            if (topic := self._serving_topic(key)) is not None:
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

    async def before_retry(self, delay: float) -> float:
        """Wait for nothing here: the broker's delay queues hold the guarded requests."""
        return delay

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
        current = current_atom.get()
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
        return response.outcome(name)

    async def _publish(self, body: bytes, rid: str, topic: str, delay: float) -> None:
        """Publish, retrying while the broker is away (never silently dropped)."""
        assert self._channels is not None
        headers: dict[str, Any] = {}
        if delay > 0:
            headers["zag-delay"] = str(topology.delay_tier(delay))
        if self.tracing is not None:
            self.tracing.inject(headers)  # the atom span's trace context (W3C traceparent)
        message = aio_pika.Message(
            body,
            correlation_id=rid,
            message_id=rid,  # else aiormq draws a random one for each publish
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
        except Exception as exc:  # MessageError, or a bug: never let it stop the consumer
            self._malformed(message.correlation_id or "", exc)
            return
        pending = self._pending.get(response.id)
        if pending is None or pending.future.done():
            return  # a duplicate, or the answer to a request we gave up on
        pending.last_seen = time.monotonic()
        pending.worker = response.worker or pending.worker
        if response.final:
            pending.future.set_result(response)
        elif (
            response.kind == "progress"
            and pending.emit is not None
            and response.progress is not None
        ):
            pending.emit(
                Event("progress", pending.flow, "RUNNING", pending.atom, progress=response.progress)
            )

    def _malformed(self, rid: str, exc: Exception) -> None:
        """A reply we cannot read ends the request it names (if outstanding): waiting
        for a better one would wait until the stall timeout, or for ever."""
        pending = self._pending.get(rid)
        logger.error("executor: malformed response to request %r: %s", rid, exc)
        if pending is not None and not pending.future.done():
            pending.future.set_exception(
                ExecutionError(
                    f"atom {pending.atom!r}: malformed response to request {rid} "
                    f"from worker {pending.worker or '?'}: {exc}"
                )
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

    def __repr__(self) -> str:
        return f"<RemoteExecutor {self.topics} {len(self._pending)} pending>"
