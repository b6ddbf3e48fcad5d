"""The RabbitMQ names and queues engines and workers share, declared by both sides.

Both sides declare everything idempotently, so whichever starts first creates
it and neither depends on the other's start order:

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

Delayed retries use the tiers instead of timers: a request whose retry
controller asked for `delay` seconds goes to the smallest tier >= delay.
With the tiers below a delay is served within [delay, 1.5 x delay] (plus a
few ms), and never early; delays above the largest tier (1 hour) wait
one hour.
"""

from __future__ import annotations

from collections.abc import Iterable

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

from ..errors import ConfigurationError

__all__ = [
    "DEAD",
    "DELAY",
    "DELAY_TIERS_MS",
    "DISCOVERY",
    "WORK",
    "check_topic",
    "declare_topology",
    "delay_tier",
    "topic_queue",
]

WORK = "zag.work"
DELAY = "zag.delay"
DEAD = "zag.dead"
DISCOVERY = "zag.discovery"

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


def topic_queue(topic: str) -> str:
    """The name of the queue a topic's workers share."""
    return f"zag.q.{topic}"


def check_topic(topic: str) -> str:
    """`topic`, if it can name a queue and a routing key; else ConfigurationError."""
    if not isinstance(topic, str) or not topic or any(c in topic for c in " #*"):
        raise ConfigurationError(
            f"a topic is a non-empty word without spaces, '#' or '*': {topic!r}"
        )
    return topic


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
            topic_queue(topic),
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
