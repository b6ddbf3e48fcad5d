"""Fixtures for every test: the real services (checked once per session), and for
the engine tests a task that records its calls; and the `services` marker, put on
every test that needs a server or runs a subprocess-heavy suite, so that
`pytest -m "not services"` runs the fast core suite alone.

Helpers that are not fixtures (polling, skipping, service probes) are in support.py.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from support import (
    AMQP_URL,
    ZK_SERVER,
    amqp_answers,
    reset_shared_pg_if_newer,
    unavailable,
    zk_ruok,
)

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


# -- the services marker --------------------------------------------------------------------

TESTS = Path(__file__).resolve().parent

#: Fixtures that reach a real server, or start one of their own (those they
#: depend on count too: pytest lists a test's whole fixture closure).
SERVER_FIXTURES = frozenset(
    {"zk_server", "amqp_url", "pg_url", "pg_bindir", "private_pg", "shared_zk", "private_zk"}
)

#: Parameter values that put a test on a real server (`backend[postgres]`,
#: `urls[postgres+zookeeper]`, `board_kind[zookeeper]`); such fixtures ask for
#: the server fixture only for that value, through request.getfixturevalue.
SERVER_PARAMS = frozenset({"postgres", "zookeeper", "rabbitmq"})

#: Where every test needs servers or starts processes by the dozen (paths below tests/):
#: kill -9 and outage suites, private servers and processes, one CLI process a call.
HEAVY_PATHS = ("crash/", "jobs_fault/", "cli/")


def needs_services(item: pytest.Item) -> bool:
    """True when `item` needs a server or belongs to a subprocess-heavy suite."""
    if item.get_closest_marker("services") is not None:
        return True
    if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
        return True
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        for value in callspec.params.values():
            if isinstance(value, str) and SERVER_PARAMS.intersection(value.split("+")):
                return True
    path = item.path.resolve()
    if not path.is_relative_to(TESTS):
        return False
    where = path.relative_to(TESTS).as_posix()
    return any(where.startswith(prefix) for prefix in HEAVY_PATHS)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """The shared `test` database is scratch space: a newer schema left there by
    another checkout (a branch with more migrations) would fail every test using it."""
    from zag_async.persistence.schema import SCHEMA_VERSION

    found = reset_shared_pg_if_newer(SCHEMA_VERSION)
    if found is not None:
        print(f"reset the shared test database (schema {found} > {SCHEMA_VERSION})")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark what needs services before `-m` selects (hence tryfirst)."""
    for item in items:
        if needs_services(item):
            item.add_marker(pytest.mark.services)


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
