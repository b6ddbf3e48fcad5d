"""ZkSession's server search: a server that accepts a connection but never answers
must not hold the search (aiozk's handshake reads without a deadline)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator

import aiozk
import pytest

from zag_async.jobs import zksession


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A TCP server on loopback that accepts and never says a word."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in held:
            writer.close()
        await server.wait_closed()


async def test_a_silent_server_does_not_hold_the_search(
    zk_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(random, "sample", lambda hosts, _n: list(hosts))  # silent one first
    async with silent_server() as port:
        session = aiozk.session.Session(
            f"127.0.0.1:{port},{zk_server}",
            timeout=1.0,
            retry_policy=aiozk.RetryPolicy.forever(),
            allow_read_only=False,
            read_timeout=None,
        )
        async with asyncio.timeout(10):  # before the fix: forever
            await zksession.find_server(session, allow_read_only=False)
        assert session.conn is not None
        assert f"{session.conn.host}:{session.conn.port}" == zk_server
        await session.conn.close(1.0)
