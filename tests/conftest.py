"""Fixtures for every test: the real services (checked once per session), and for
the engine tests a task that records its calls.

Helpers that are not fixtures (polling, skipping, service probes) are in support.py.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlsplit

import pytest
from support import AMQP_URL, ZK_SERVER, amqp_answers, unavailable, zk_ruok

import zag_async as zag


class Boom(Exception):
    """The error the recording steps raise, so tests can tell it from real bugs."""


class Step(zag.Task):
    """A task that appends its name to `calls` on execute and "revert <name>" on revert.

    It requires the names in `requires`, returns `value` (or its name), and fails
    with `Boom` on its first `fails` calls (`math.inf` for always).
    """

    def __init__(
        self,
        name: str,
        calls: list[str],
        *,
        requires: tuple[str, ...] = (),
        value: Any = None,
        fails: float = 0,
        **kwargs: Any,
    ) -> None:
        self.calls = calls
        self.value = name if value is None else value
        self.fails = fails
        self.seen: list[dict[str, Any]] = []
        self.reverted_with: list[dict[str, Any]] = []
        super().__init__(name=name, rebind={r: r for r in requires} or None, **kwargs)

    @property
    def count(self) -> int:
        return len(self.seen)

    async def execute(self, **kwargs: Any) -> Any:
        self.calls.append(self.name)
        self.seen.append(kwargs)
        if self.count <= self.fails:
            raise Boom(f"{self.name} failed (call {self.count})")
        return self.value

    async def revert(self, **kwargs: Any) -> None:
        self.calls.append(f"revert {self.name}")
        self.reverted_with.append(kwargs)


ALWAYS = math.inf


@pytest.fixture
def calls() -> list[str]:
    """The shared call log the steps of one test write to."""
    return []


# -- services -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def zk_server() -> str:
    """host:port of a ZooKeeper that answers (skip, or fail under CI, otherwise)."""
    why = zk_ruok(ZK_SERVER)
    if why is not None:
        unavailable(f"ZooKeeper at {ZK_SERVER} is not usable: {why}", "zookeeper")
    return ZK_SERVER


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """The URL of a RabbitMQ that answers (skip, or fail under CI, otherwise)."""
    parts = urlsplit(AMQP_URL)
    why = amqp_answers(parts.hostname or "127.0.0.1", parts.port or 5672)
    if why is not None:
        unavailable(f"RabbitMQ at {AMQP_URL} is not usable: {why}", "rabbitmq")
    return AMQP_URL
