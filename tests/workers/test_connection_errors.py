"""What a new user sees for a wrong broker URL: an error that says what is wrong, at once.

URLs that cannot name a RabbitMQ broker fail when the Worker or RemoteExecutor
is made; a refused connection or login fails on entering, within 2 s, with
BrokerUnavailable naming the URL without its password.
"""

from __future__ import annotations

import socket
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

import zag_async as zag

from . import tasks


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def makers(url: str) -> list[Any]:
    return [
        lambda: zag.RemoteExecutor(url, topics=["t"]),
        lambda: zag.Worker(url, topic="t", tasks=[tasks.add]),
    ]


@pytest.mark.parametrize(
    "url",
    [
        "foo://guest:guest@127.0.0.1/",
        "http://127.0.0.1:5672/",
        "127.0.0.1",
        "localhost:5672",
        "amqp:///",
        "",
    ],
)
@pytest.mark.parametrize("side", [0, 1], ids=["executor", "worker"])
def test_a_url_that_names_no_broker_fails_at_once(url: str, side: int) -> None:
    with pytest.raises(zag.errors.ConfigurationError, match="not a RabbitMQ URL"):
        makers(url)[side]()


def test_the_password_of_a_bad_url_is_hidden() -> None:
    with pytest.raises(zag.errors.ConfigurationError) as caught:
        zag.RemoteExecutor("http://guest:s3cret@127.0.0.1/", topics=["t"])
    assert "s3cret" not in str(caught.value)


def with_password(url: str, password: str, port: int | None = None) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username or 'guest'}:{password}@{parts.hostname}:{port or parts.port or 5672}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.mark.parametrize("side", [0, 1], ids=["executor", "worker"])
@pytest.mark.parametrize("fault", ["password", "refused"])
async def test_a_refused_connection_or_login_says_so_within_2_s(
    amqp_url: str, side: int, fault: str
) -> None:
    if fault == "password":
        url = with_password(amqp_url, "not-the-password")
        expected = "refused the login"
    else:
        url = with_password(amqp_url, "hidden-password", port=free_port())
        expected = "refused the connection"
    started = time.monotonic()
    with pytest.raises(zag.errors.BrokerUnavailable) as caught:
        async with makers(url)[side]():
            pass
    assert time.monotonic() - started < 2.0
    message = str(caught.value)
    assert expected in message, message
    assert urlsplit(url).hostname in message and "***" in message, message
    assert "not-the-password" not in message and "hidden-password" not in message
    assert isinstance(caught.value, ConnectionError)
