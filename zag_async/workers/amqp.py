"""Remote workers over RabbitMQ (aio-pika): the names this module always offered.

The code lives in modules by role: `topology` (names, delay tiers,
declaration), `channel` (channels and consumers that outlive outages),
`worker` (`Worker`), `executor` (`RemoteExecutor`); `serving` runs one
request for any transport. Importing this module needs the amqp extra.
"""

from __future__ import annotations

from .executor import RemoteExecutor
from .topology import (
    DEAD,
    DELAY,
    DELAY_TIERS_MS,
    DISCOVERY,
    WORK,
    declare_topology,
    delay_tier,
)
from .worker import Worker

__all__ = [
    "DEAD",
    "DELAY",
    "DELAY_TIERS_MS",
    "DISCOVERY",
    "WORK",
    "RemoteExecutor",
    "Worker",
    "declare_topology",
    "delay_tier",
]
