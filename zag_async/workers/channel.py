"""Channels that outlive broker outages, for the worker and the engine side alike.

aio-pika reconnects a robust connection and restores its channels, queues and
consumers, but two of its habits stalled flows after a broker restart:

- A restore that fails leaves the channel closed for good, and with it every
  consumer on it. `ChannelKeeper` notices a closed channel on a live
  connection and opens a replacement, running the owner's `setup` on it.
- It re-sends `basic.consume` with no deadline while holding the channel's
  lock, and RabbitMQ answers a consume on a quorum queue only once the queue
  has a leader again. Everything published on that channel (a worker's
  outcomes and heartbeats) waited behind it. So a worker takes requests,
  and an executor its replies, through a `QueueConsumer`: a channel of its
  own that aio-pika does not restore, checked every `CONSUMER_CHECK` s and
  consumed again when its consumer is gone, one attempt at a time with
  pauses of at most `CONSUME_RETRY_CAP` s. Each attempt is cut at
  `CONSUME_TIMEOUT` s: a consume sent while a quorum queue had no leader
  waits for one ("forwarded once leader is known") and may stay unanswered
  after the election, while a queue with a leader answers in milliseconds.

Bound: a worker (or executor) consumes again within CONSUME_TIMEOUT +
CONSUME_RETRY_CAP + CONSUMER_CHECK (7.5 s) of its queue accepting
consumers, and outcomes never wait on a consume. A quorum queue that never
gets a leader back serves nobody (RabbitMQ 3.10 can lose the registration of
a queue created seconds before a kill -9 and restart it without an
election); the worker then warns every few seconds.

The first connection is not robust-retried: a URL that is not `amqp://` or
`amqps://` with a host fails at once (`check_url`, ConfigurationError), and a
refused connection or login raises BrokerUnavailable naming the URL (password
hidden) as soon as the broker answers, at most `CONNECT_TIMEOUT` s for a host
that never does. Only an established connection reconnects by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import aio_pika
import aiormq
import yarl
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractRobustConnection,
    AbstractRobustQueue,
)

from ..backoff import Backoff
from ..errors import BrokerUnavailable, ConfigurationError

__all__ = [
    "CLEANUP_TIMEOUT",
    "CONNECT_TIMEOUT",
    "CONSUMER_CHECK",
    "CONSUME_RETRY_CAP",
    "CONSUME_TIMEOUT",
    "PUBLISH_ATTEMPT_TIMEOUT",
    "RECONNECT_INTERVAL",
    "ChannelKeeper",
    "QueueConsumer",
    "check_url",
    "close_quietly",
    "connect",
    "redact",
]

logger = logging.getLogger("zag_async.workers")

#: Seconds between reconnect attempts after the broker went away (aio-pika's
#: default of 5 s would add up to 5 s to every outage).
RECONNECT_INTERVAL = 1.0
#: Seconds the first connection may take before BrokerUnavailable (a host that
#: refuses, or a broker that refuses the login, answers much sooner).
CONNECT_TIMEOUT = 10.0
#: Seconds that closing waits on the broker for clean-up (cancelling consumers,
#: deleting the reply queue) before leaving it undone.
CLEANUP_TIMEOUT = 2.0
#: Seconds one attempt to start consuming a queue may take (see the module docstring).
CONSUME_TIMEOUT = 5.0
#: Longest pause between two attempts to start consuming.
CONSUME_RETRY_CAP = 2.0
#: Seconds between checks that a consumer is still there.
CONSUMER_CHECK = 0.5
#: Seconds a publish attempt with no retry window (a heartbeat) may take.
PUBLISH_ATTEMPT_TIMEOUT = 5.0


def redact(url: str) -> str:
    """`url` with its password hidden, for messages and logs."""
    try:
        parsed = yarl.URL(url)
    except (TypeError, ValueError):
        return "<unparsable URL>"
    return str(parsed.with_password("***")) if parsed.password else url


def check_url(url: str) -> str:
    """`url` if it can name a RabbitMQ broker (`amqp://` or `amqps://` with a host),
    else ConfigurationError at once (aio-pika would retry it for ever)."""
    try:
        parsed = yarl.URL(url) if isinstance(url, str) else None
    except (TypeError, ValueError):
        parsed = None
    if parsed is None or parsed.scheme not in ("amqp", "amqps") or not parsed.host:
        raise ConfigurationError(
            f"not a RabbitMQ URL: {redact(url) if isinstance(url, str) else url!r} "
            "(expected amqp://user:password@host[:port]/[vhost], or amqps://)"
        )
    return url


async def connect(url: str) -> AbstractRobustConnection:
    """A robust connection that retries every RECONNECT_INTERVAL while the broker is away.

    The first connection must succeed: BrokerUnavailable (naming the URL, password
    hidden) when it is refused, the login is, or the broker does not answer
    within CONNECT_TIMEOUT.
    """
    check_url(url)
    connection = aio_pika.RobustConnection(
        aio_pika.connection.make_url(url), reconnect_interval=RECONNECT_INTERVAL
    )
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            await connection.connect()
    except BaseException as exc:
        with contextlib.suppress(Exception):  # stop its reconnect attempts
            async with asyncio.timeout(CLEANUP_TIMEOUT):
                await connection.close()
        if not isinstance(exc, Exception):
            raise
        raise BrokerUnavailable(_why(url, exc)) from exc
    return connection


def _why(url: str, exc: Exception) -> str:
    where = f"RabbitMQ at {redact(url)}"
    if isinstance(exc, aiormq.exceptions.ProbableAuthenticationError):
        return f"{where} refused the login: check the user name and password in the URL"
    if isinstance(exc, aiormq.exceptions.ConnectionNotAllowed):
        return f"{where} refused access to the virtual host: {exc}"
    if isinstance(exc, TimeoutError):
        return f"{where} did not answer within {CONNECT_TIMEOUT:g} s"
    if isinstance(exc, ConnectionRefusedError) or "111" in str(exc) or "refused" in str(exc):
        return f"{where} refused the connection: is the broker running on that host and port?"
    return f"{where} cannot be reached: {exc!r}"


async def close_quietly(channel: AbstractChannel) -> None:
    """Close a channel, bounded, ignoring errors (it may be dead or the broker away)."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLEANUP_TIMEOUT):
            await channel.close()


async def close_connection(connection: AbstractRobustConnection) -> None:
    """Close a connection, bounded: with the broker away or a channel stuck in its
    restore, an unbounded close can hold a shutdown for minutes."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2 * CLEANUP_TIMEOUT):
            await connection.close()


class ChannelKeeper:
    """A channel on a robust connection, replaced when aio-pika cannot restore it.

    `current()` notices a closed channel on a live connection and opens a
    replacement, running `setup` on it; `keep()` checks every second.
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
        """Open a channel and run `setup` on it; it becomes the current one."""
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


class QueueConsumer:
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
        no_ack: bool = False,
    ) -> None:
        self.connection = connection
        self.queue = queue
        self.callback = callback
        self.prefetch = prefetch
        self.no_ack = no_ack
        self.owner = owner
        self.channel: AbstractChannel | None = None
        self.tag: str | None = None

    async def start(self) -> None:
        """Open a fresh channel and consume on it (one attempt, bounded)."""
        await self.close()
        channel = self.connection.channel()
        try:
            async with asyncio.timeout(CONSUME_TIMEOUT):
                await channel.initialize()
                await channel.set_qos(prefetch_count=self.prefetch)
                queue = await channel.get_queue(self.queue, ensure=False)
                if isinstance(queue, AbstractRobustQueue):
                    self.tag = await queue.consume(self.callback, no_ack=self.no_ack, robust=False)
                else:
                    self.tag = await queue.consume(self.callback, no_ack=self.no_ack)
        except BaseException:
            await close_quietly(channel)
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
            async for _ in Backoff(first=0.2, factor=2.0, cap=CONSUME_RETRY_CAP).attempts():
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
        channel, self.channel, self.tag = self.channel, None, None
        if channel is not None:
            await close_quietly(channel)
