"""The signal route of both web helpers (`signal_router`, `signal_routes`) over real
HTTP, and a waiting flow's status (`FlowStatus.waiting_for`).

Hostile requests (any flow id, event, body and signal id) are answered 4xx or
202, never 500, and never hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import eventually

from zag_async.service import ZagService
from zag_async.status import FlowStatus

from . import flows
from .conftest import Urls

APPROVAL = f"{flows.__name__}:approval"
#: What a hostile request may get: ours, or the framework's own (a redirect for a
#: trailing slash, 404/405 for a path that is not the route, 413 for a huge body).
ANSWERS = {202, 307, 404, 405, 409, 413, 422}

#: (path, body, headers, query) -> (status, decoded JSON body or text)
Send = Callable[[str, bytes, dict[str, str], dict[str, str]], Awaitable[tuple[int, Any]]]


@contextlib.asynccontextmanager
async def serve(framework: str, **options: Any) -> AsyncIterator[tuple[Send, ZagService]]:
    """An app of `framework` with the signal route under /api; yields how to POST to it
    and its running service."""
    if framework == "fastapi":
        import httpx
        from asgi_lifespan import LifespanManager
        from fastapi import FastAPI

        from zag_async.contrib.fastapi import signal_router, zag_lifespan

        app = FastAPI(lifespan=zag_lifespan(**options))
        app.include_router(signal_router("/api"))
        async with (
            LifespanManager(app) as manager,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=manager.app), base_url="http://t"
            ) as http,
        ):

            async def send(
                path: str, body: bytes, headers: dict[str, str], query: dict[str, str]
            ) -> tuple[int, Any]:
                r = await http.post(path, content=body, headers=headers, params=query)
                is_json = r.headers.get("content-type", "").startswith("application/json")
                return r.status_code, r.json() if is_json else r.text

            yield send, app.state.zag
        return

    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from zag_async.contrib.aiohttp import get_zag, signal_routes, zag_context

    aio = web.Application()
    aio.cleanup_ctx.append(zag_context(**options))
    aio.add_routes(signal_routes("/api"))
    async with TestClient(TestServer(aio)) as client:

        async def send_aio(
            path: str, body: bytes, headers: dict[str, str], query: dict[str, str]
        ) -> tuple[int, Any]:
            r = await client.post(path, data=body, headers=headers, params=query)
            if r.content_type == "application/json":
                return r.status, await r.json()
            return r.status, await r.text()

        yield send_aio, get_zag(aio)


def signal_path(flow_id: str, event: str) -> str:
    return f"/api/flows/{quote(flow_id, safe='')}/signals/{quote(event, safe='')}"


async def ended(service: ZagService, flow_id: str) -> FlowStatus | None:
    status = await service.flow_status(flow_id)
    return status if status.done else None


@pytest.mark.parametrize("framework", ["fastapi", "aiohttp"])
async def test_a_signal_through_the_route_resumes_the_flow(framework: str, urls: Urls) -> None:
    async with serve(framework, **urls.options()) as (send, service):
        waiting = await service.run(APPROVAL)
        assert waiting.state == "WAITING"
        flow_id = waiting.flow_id
        status = await service.flow_status(flow_id)
        [wait] = status.waiting_for
        assert (wait.atom, wait.event) == ("approve", "approval")
        assert wait.deadline is not None
        [shown] = status.to_dict()["waiting_for"]
        assert shown["atom"] == "approve" and shown["event"] == "approval"
        deadline = datetime.fromisoformat(shown["deadline"])
        assert deadline.utcoffset() is not None and deadline.utcoffset().total_seconds() == 0
        assert abs(deadline.timestamp() - wait.deadline) < 1e-3

        path = signal_path(flow_id, "approval")
        # refused before anything is stored: an undeclared event, a bad body, a bad id
        code, body = await send(signal_path(flow_id, "payment"), b"{}", {}, {})
        assert code == 409 and "no wait of the flow declares it" in body["detail"]
        code, body = await send(path, b"{not json", {}, {})
        assert code == 422 and "must be JSON" in body["detail"]
        code, body = await send(path, b"{}", {"Idempotency-Key": "x" * 201}, {})
        assert code == 422 and "signal_id" in body["detail"]
        code, body = await send(path, b"{}", {"Idempotency-Key": "a"}, {"signal_id": "b"})
        assert code == 422
        code, body = await send(signal_path("no-such-flow", "approval"), b"{}", {}, {})
        assert code == 404

        payload = json.dumps({"by": "ann", "ok": True}).encode()
        click = f"click-{flow_id}"
        code, first = await send(path, payload, {"Idempotency-Key": click}, {})
        assert code == 202, first
        assert first["id"] == click and first["flow_id"] == flow_id
        assert first["event"] == "approval"
        assert datetime.fromisoformat(first["arrived_at"]).utcoffset() is not None
        # the same click again: the first signal, nothing new stored
        code, again = await send(path, b'{"by": "bob"}', {}, {"signal_id": click})
        assert (code, again) == (202, first)
        # signal ids are unique across flows: another flow's id is refused, not shown
        other = (await service.run(APPROVAL)).flow_id
        code, body = await send(signal_path(other, "approval"), b"{}", {}, {"signal_id": click})
        assert (
            code == 409 and f"already used by signal 'approval' of flow {flow_id}" in body["detail"]
        )

        done = await eventually(lambda: ended(service, flow_id), what="the flow to end")
        assert done.state == "SUCCESS" and done.waiting_for == ()
        assert done.to_dict()["waiting_for"] == []
        assert flows.APPROVED == [{"by": "ann", "ok": True}]
        code, body = await send(path, b"{}", {}, {})
        assert code == 409 and "finished" in body["detail"]
        # a retry of the click after the flow took it and finished: still its signal
        code, again = await send(path, b'{"by": "bob"}', {"Idempotency-Key": click}, {})
        assert (code, again) == (202, first)
        assert flows.APPROVED == [{"by": "ann", "ok": True}]


@pytest.mark.parametrize("framework", ["fastapi", "aiohttp"])
async def test_an_empty_body_is_a_null_payload(framework: str, tmp_path: Path) -> None:
    async with serve(framework, backend=f"sqlite+aiosqlite:///{tmp_path}/f.db") as (send, svc):
        waiting = await svc.run(APPROVAL)
        code, body = await send(signal_path(waiting.flow_id, "approval"), b"", {}, {})
        assert code == 202, body
        done = await eventually(lambda: ended(svc, waiting.flow_id), what="the flow to end")
        assert done.results is not None and done.results["approval"] is None


async def test_a_waiting_flows_status_lists_its_waits() -> None:
    """Each reached wait, in the order recorded: a sleep has no event, a wait without
    a timeout no deadline; none once the flow is no longer WAITING."""
    import zag_async as zag

    flow = zag.unordered(
        "waits",
        zag.wait_for("approve", event="approval"),
        zag.sleep("nap", delay=3600),
    )
    async with zag.connect("memory://status-waits") as db:
        engine = zag.Engine(flow, backend=db)
        await engine.run()
        status = FlowStatus.of(await db.load_flow(engine.flow_id))
    assert status.state == "WAITING"
    by_atom = {w.atom: w for w in status.waiting_for}
    assert set(by_atom) == {"approve", "nap"}
    assert by_atom["approve"].event == "approval" and by_atom["approve"].deadline is None
    assert by_atom["nap"].event is None and by_atom["nap"].deadline is not None
    shown = {w["atom"]: w for w in status.to_dict()["waiting_for"]}
    assert shown["approve"] == {"atom": "approve", "event": "approval", "deadline": None}
    nap = datetime.fromisoformat(shown["nap"]["deadline"])
    assert nap.timestamp() == pytest.approx(by_atom["nap"].deadline, abs=1e-3)
    assert FlowStatus.of(engine.storage.flow).waiting_for == status.waiting_for
    ended = engine.storage.flow
    ended.state = zag.FlowState.SUSPENDED
    assert FlowStatus.of(ended).waiting_for == ()


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


#: Bodies worth trying besides random bytes: JSON of every shape, deep nesting,
#: numbers JSON parsers choke on, text in odd encodings.
BODIES = st.one_of(
    st.binary(max_size=200),
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
        max_leaves=20,
    ).map(lambda v: json.dumps(v).encode()),
    st.sampled_from(
        [
            nested(99),
            nested(101),
            nested(100_000),
            b"1" * 5000,
            b'"\\ud800"',
            b'{"a": "\\u0000"}',
            "\u00e9".encode("utf-16"),
            b"\xff\xfe\x00",
            b"NaN",
        ]
    ),
)


#: Idempotency-Key values: anything a header can carry.
KEYS = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=250)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize("framework", ["fastapi", "aiohttp"])
def test_hostile_requests_are_never_a_server_error(
    framework: str, backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Any flow id, event, body and signal id: a 2xx or 4xx answer, within 5 s."""
    if backend == "postgres":
        url = str(request.getfixturevalue("pg_url"))
    else:
        url = f"sqlite+aiosqlite:///{tmp_path}/f.db"
    with asyncio.Runner() as runner:
        app = serve(framework, backend=url, board=None)
        send, service = runner.run(app.__aenter__())
        try:
            flow_id = runner.run(service.run(APPROVAL)).flow_id

            @settings(
                max_examples=150,
                deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture],
            )
            @given(
                flow=st.one_of(st.just(flow_id), st.text(min_size=1)),
                event=st.one_of(st.sampled_from(["approval", "payment"]), st.text(min_size=1)),
                body=BODIES,
                signal_id=st.one_of(st.none(), st.text(max_size=300)),
                key=st.one_of(st.none(), KEYS),
            )
            def attempt(
                flow: str, event: str, body: bytes, signal_id: str | None, key: str | None
            ) -> None:
                query = {} if signal_id is None else {"signal_id": signal_id}
                headers = {} if key is None else {"Idempotency-Key": key}

                async def post() -> tuple[int, Any]:
                    async with asyncio.timeout(5):
                        return await send(signal_path(flow, event), body, headers, query)

                code, answer = runner.run(post())
                assert code in ANSWERS, (code, answer)
                if code in (202, 404, 409, 422) and isinstance(answer, dict):
                    assert code == 202 or "detail" in answer

            attempt()
        finally:
            runner.run(app.__aexit__(None, None, None))
