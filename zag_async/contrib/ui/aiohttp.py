"""The operations UI as an aiohttp sub-application.

    from zag_async.contrib.ui.aiohttp import aiohttp_app

    app = web.Application()
    app.add_subapp("/zag", aiohttp_app("sqlite+aiosqlite:///app.db"))

It takes `asgi_app`'s arguments and serves that same app: each request is
handed to it as an ASGI call with the sub-app's prefix as `root_path`, so the
pages, actions and their checks are exactly the ASGI UI's. The sub-app's
cleanup closes what the UI opened (a backend given as a URL, resumes it
started). Needs `pip install 'zag-async[ui,aiohttp]'`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from starlette.applications import Starlette
from starlette.types import Message

from .app import asgi_app

__all__ = ["UI_KEY", "aiohttp_app"]

#: The ASGI UI app a sub-app serves (its `state.ui` holds the backend and tasks).
UI_KEY: web.AppKey[Starlette] = web.AppKey("zag_ui", Starlette)


def aiohttp_app(backend: Any, **options: Any) -> web.Application:
    """An aiohttp application serving `asgi_app(backend, **options)`: mount it with
    `app.add_subapp(prefix, ...)`."""
    ui = asgi_app(backend, **options)
    sub = web.Application()
    sub[UI_KEY] = ui

    async def handle(request: web.Request) -> web.StreamResponse:
        tail = "/" + request.match_info["tail"]
        raw = request.raw_path.split("?", 1)[0]
        path = request.path
        prefix = path[: len(path) - len(tail)] if path.endswith(tail) else ""
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": f"{request.version.major}.{request.version.minor}",
            "method": request.method,
            "scheme": request.scheme,
            "path": path,
            "raw_path": raw.encode("latin-1", "replace"),
            "query_string": request.query_string.encode("latin-1", "replace"),
            "root_path": prefix,
            "headers": [(name.lower(), value) for name, value in request.raw_headers],
            "client": _address(request.transport, "peername"),
            "server": _address(request.transport, "sockname"),
        }
        body = await request.read()  # bounded by the application's client_max_size
        sent = False
        response: web.StreamResponse | None = None

        async def receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # nothing more comes; the app is cancelled if it waits
            raise AssertionError("unreachable")

        async def send(message: Message) -> None:
            nonlocal response
            if message["type"] == "http.response.start":
                response = web.StreamResponse(status=message["status"])
                for name, value in message.get("headers", []):
                    response.headers.add(name.decode("latin-1"), value.decode("latin-1"))
            elif message["type"] == "http.response.body":
                assert response is not None, "the ASGI app sent a body before its start"
                if not response.prepared:
                    await response.prepare(request)
                chunk = message.get("body", b"")
                if chunk:
                    await response.write(chunk)
                if not message.get("more_body", False):
                    await response.write_eof()

        await ui(scope, receive, send)
        if response is None:
            raise web.HTTPInternalServerError(text="the UI sent no response")
        if not response.prepared:
            await response.prepare(request)
            await response.write_eof()
        return response

    async def closed(_: web.Application) -> None:
        await ui.state.ui.aclose()

    sub.router.add_route("*", "/{tail:.*}", handle)
    sub.on_cleanup.append(closed)
    return sub


def _address(transport: Any, which: str) -> tuple[str, int] | None:
    info = transport.get_extra_info(which) if transport is not None else None
    if isinstance(info, tuple) and len(info) >= 2:
        return str(info[0]), int(info[1])
    return None
