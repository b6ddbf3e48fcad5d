"""The UI as an aiohttp sub-app, served by a real aiohttp server on loopback: pages,
static files and an action with its CSRF and login checks, and cleanup."""

from __future__ import annotations

import re

from aiohttp import ClientSession, CookieJar, web
from aiohttp.test_utils import TestServer

from zag_async.contrib.ui.aiohttp import UI_KEY, aiohttp_app
from zag_async.states import FlowState

from .conftest import Stored

TOKEN = "aio-token"


async def test_the_ui_mounts_as_an_aiohttp_sub_app(stored: Stored) -> None:
    async def home(_: web.Request) -> web.Response:
        return web.Response(text="host")

    host = web.Application()
    host.router.add_get("/", home)
    host.add_subapp("/zag", aiohttp_app(stored.backend, actions=True, token=TOKEN))
    async with TestServer(host, host="127.0.0.1") as server:
        base = f"http://127.0.0.1:{server.port}"
        async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as http:  # an IP host
            async with http.get(f"{base}/zag/flows") as reply:
                listing = await reply.text()
                assert reply.status == 200
                assert reply.headers["Content-Security-Policy"].startswith("default-src 'none'")
            async with http.get(f"{base}/zag/static/ui.css") as reply:
                assert reply.status == 200 and "zag-async" in await reply.text()
            async with http.get(f"{base}/") as reply:
                assert await reply.text() == "host"
            async with http.post(f"{base}/zag/flows/{stored.waiting}/resume") as reply:
                assert reply.status == 401
            async with http.post(f"{base}/zag/login", data={"token": TOKEN}) as reply:
                assert reply.status == 200  # followed the redirect to the listing
            async with http.get(f"{base}/zag/flows/{stored.waiting}") as reply:
                page = await reply.text()
            csrf = re.search(r'name="csrf" value="([^"]+)"', page)
            assert csrf, "no action form for a logged-in caller"
            async with http.post(
                f"{base}/zag/flows/{stored.waiting}/signal",
                data={"event": "approval", "payload": '{"ok": true}', "csrf": csrf.group(1)},
                allow_redirects=False,
            ) as reply:
                assert reply.status == 303
                assert reply.headers["Location"] == f"/zag/flows/{stored.waiting}?done=signal+sent"
    assert f'href="/zag/flows/{stored.done}"' in listing
    assert [s.payload for s in await stored.backend.list_signals(stored.waiting)] == [{"ok": True}]


async def test_cleanup_closes_a_backend_the_ui_opened(stored: Stored) -> None:
    url = str(getattr(stored.backend, "url", ""))
    host = web.Application()
    sub = aiohttp_app(url)
    host.add_subapp("/ops", sub)
    async with TestServer(host, host="127.0.0.1") as server:
        url = f"http://127.0.0.1:{server.port}/ops/flows?state=WAITING"
        async with ClientSession() as http, http.get(url) as reply:
            text = await reply.text()
        assert sub[UI_KEY].state.ui.opened is not None
    assert stored.waiting in text and stored.done not in text
    assert FlowState.WAITING in text
    assert sub[UI_KEY].state.ui.opened is None  # the cleanup closed what it opened
