"""The UI's defences beyond the per-action checks of test_actions.py: wrong Bearer
guesses are limited like wrong logins, logins expire, an oversized login form is
refused unread, `?done=` shows only the UI's own words, a slow request answers 503,
a shared secret lets replicas accept each other's forms, `origins=` admits a
proxy's host, and the UI's own resumes end quietly whatever the flow raises."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

import zag_async as zag
from zag_async.contrib.ui import app as ui_app
from zag_async.contrib.ui import asgi_app, security
from zag_async.errors import ConfigurationError

from .conftest import Client, Stored
from .test_actions import BEARER, TOKEN, csrf_of


async def test_wrong_bearer_guesses_are_limited(client: Client, stored: Stored) -> None:
    async with client(actions=True, token=TOKEN) as http:
        url = f"/zag/flows/{stored.waiting}/resume"
        codes = [
            (await http.post(url, headers={"Authorization": f"Bearer guess-{n}"})).status_code
            for n in range(12)
        ]
        right = await http.post(url, headers=BEARER)
    assert codes[:10] == [401] * 10 and set(codes[10:]) == {429}
    assert right.status_code == 429  # the right one too, until the window passes


async def test_a_login_expires(
    client: Client, stored: Stored, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with client(actions=True, token=TOKEN) as http:
        await http.post("/zag/login", data={"token": TOKEN})
        fresh = await http.get(f"/zag/flows/{stored.waiting}")
        monkeypatch.setattr(security, "SESSION_SECONDS", 0)
        stale = await http.get(f"/zag/flows/{stored.waiting}")
    assert 'name="csrf"' in fresh.text and 'name="csrf"' not in stale.text


async def test_an_oversized_login_form_is_refused_unread(client: Client) -> None:
    async with client(actions=True, token=TOKEN) as http:
        reply = await http.post(
            "/zag/login",
            content=b"token=x&pad=" + b"a" * 300_000,
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
    assert reply.status_code == 413


async def test_done_shows_only_the_uis_own_words(client: Client, stored: Stored) -> None:
    async with client() as http:
        ours = await http.get(f"/zag/flows/{stored.waiting}", params={"done": "signal sent"})
        theirs = await http.get(
            f"/zag/flows/{stored.waiting}", params={"done": "Call +1 555 0100 to verify"}
        )
        jobs = await http.get("/zag/jobs", params={"done": "your account is locked"})
    assert '<p class="notice" role="status">signal sent</p>' in ours.text
    assert "555 0100" not in theirs.text and "locked" not in jobs.text


async def test_a_request_that_takes_too_long_answers_503(
    client: Client, stored: Stored, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ui_app, "REQUEST_TIMEOUT", 0.2)
    slow_load = stored.backend.load_flow

    async def crawl(flow_id: str) -> Any:
        await asyncio.sleep(5)
        return await slow_load(flow_id)

    monkeypatch.setattr(stored.backend, "load_flow", crawl)
    async with client() as http:
        reply = await http.get(f"/zag/flows/{stored.waiting}")
    assert reply.status_code == 503 and "no answer within" in reply.text


@pytest.fixture
async def two_replicas(stored: Stored) -> AsyncIterator[tuple[httpx.AsyncClient, ...]]:
    """Two UI apps over one database with one secret, and a third with its own."""
    apps = [
        asgi_app(stored.backend, actions=True, token=TOKEN, secret="one shared secret"),
        asgi_app(stored.backend, actions=True, token=TOKEN, secret="one shared secret"),
        asgi_app(stored.backend, actions=True, token=TOKEN),
    ]
    clients = []
    for ui in apps:
        transport = httpx.ASGITransport(app=Starlette(routes=[Mount("/zag", ui)]))
        clients.append(httpx.AsyncClient(transport=transport, base_url="http://ui.test"))
    try:
        yield tuple(clients)
    finally:
        for http in clients:
            await http.aclose()
        for ui in apps:
            await ui.state.ui.aclose()


async def test_replicas_with_one_secret_accept_each_others_forms(
    two_replicas: tuple[httpx.AsyncClient, ...], stored: Stored
) -> None:
    first, second, other = two_replicas
    token = await csrf_of(first, stored.waiting, **BEARER)
    for http in (second, other):
        http.cookies.set("zag_csrf", token, domain="ui.test", path="/zag")
    fields = {"csrf": token, "event": "approval", "payload": "1"}
    url = f"/zag/flows/{stored.waiting}/signal"
    elsewhere = await other.post(url, data=fields, headers=BEARER)
    accepted = await second.post(url, data=fields, headers=BEARER)
    assert elsewhere.status_code == 403  # another secret: a forged token to it
    assert accepted.status_code == 303


async def test_origins_admit_a_proxys_host(client: Client, stored: Stored) -> None:
    async with client(actions=True, token=TOKEN, origins=["ops.example.com"]) as http:
        token = await csrf_of(http, stored.waiting, **BEARER)
        url = f"/zag/flows/{stored.waiting}/resume"
        proxied = await http.post(
            url, data={"csrf": token}, headers={**BEARER, "Origin": "https://ops.example.com"}
        )
        foreign = await http.post(
            url, data={"csrf": token}, headers={**BEARER, "Origin": "https://evil.example"}
        )
    assert (proxied.status_code, foreign.status_code) == (303, 403)


def test_weak_or_misplaced_options_are_refused(stored: Stored) -> None:
    with pytest.raises(ConfigurationError, match="8"):
        asgi_app(stored.backend, actions=True, token="short")
    with pytest.raises(ConfigurationError, match="list"):
        asgi_app(stored.backend, factories="myapp.flows")


@zag.task
async def explode(approval: object) -> None:
    raise ValueError("the flow's own error")


def fails_after_the_wait() -> zag.Flow:
    wait = zag.wait_for("approve", event="approval", provides="approval")
    return zag.linear("fails-later", wait, explode)


async def test_the_uis_resume_ends_quietly_whatever_the_flow_raises(
    stored: Stored, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="zag_async.ui")
    engine = zag.Engine.from_factory(fails_after_the_wait, backend=stored.backend)
    await engine.run()
    app = asgi_app(stored.backend, actions=True, token=TOKEN)
    transport = httpx.ASGITransport(app=Starlette(routes=[Mount("/zag", app)]))
    async with httpx.AsyncClient(transport=transport, base_url="http://ui.test") as http:
        token = await csrf_of(http, engine.flow_id, **BEARER)
        reply = await http.post(
            f"/zag/flows/{engine.flow_id}/signal",
            data={"event": "approval", "payload": "1", "csrf": token},
            headers=BEARER,
        )
        assert reply.status_code == 303
        tasks = list(app.state.ui.tasks)
        await asyncio.wait(tasks)
    await app.state.ui.aclose()
    assert all(t.exception() is None for t in tasks)
    assert re.search(r"ui resume of flow \S+ ended: ValueError: the flow's own error", caplog.text)


async def test_a_long_display_name_can_still_cancel(stored: Stored) -> None:
    async def staff(request: Any) -> bool:
        request.scope["user"] = type("User", (), {"display_name": "x" * 500})()
        return True

    ui = asgi_app(stored.backend, actions=True, auth=staff)
    transport = httpx.ASGITransport(app=Starlette(routes=[Mount("/zag", ui)]))
    async with httpx.AsyncClient(transport=transport, base_url="http://ui.test") as http:
        token = await csrf_of(http, stored.waiting)
        reply = await http.post(f"/zag/flows/{stored.waiting}/cancel", data={"csrf": token})
    await ui.state.ui.aclose()
    assert reply.status_code == 303


async def test_log_out_ends_the_browsers_login(client: Client, stored: Stored) -> None:
    async with client(actions=True, token=TOKEN) as http:
        await http.post("/zag/login", data={"token": TOKEN})
        shown = await http.get("/zag/login")
        foreign = await http.post("/zag/logout", headers={"Origin": "https://evil.example"})
        still = await http.get(f"/zag/flows/{stored.waiting}")
        out = await http.post("/zag/logout")
        after = await http.get(f"/zag/flows/{stored.waiting}")
    assert "Log out" in shown.text and foreign.status_code == 403
    assert 'name="csrf"' in still.text  # a forged logout changed nothing
    assert out.status_code == 303 and 'name="csrf"' not in after.text
