"""aiohttp: a `ZagService` that lives as long as the application, through `cleanup_ctx`.

    from zag_async.contrib.aiohttp import get_zag, zag_context

    app = web.Application()
    app.cleanup_ctx.append(zag_context(backend="sqlite+aiosqlite:///app.db", conductor=True))

    async def order(request: web.Request) -> web.Response:
        status = await get_zag(request).run("myapp.flows:order", store={"item": "book"})
        return web.json_response(status.to_dict(), status=http_status(status))

`zag_context(...)` takes `ZagService`'s arguments. The service is opened at
startup, stored under `ZAG_KEY`, and closed at cleanup, after aiohttp has let
running requests finish (its flows are suspended, never lost).

`signal_routes(prefix)` is a ready route that sends signals to waiting flows
(`POST {prefix}/flows/{flow_id}/signals/{event}`, see `zag_async.contrib.signals`):

    app.add_routes(signal_routes("/api"))

Needs `pip install 'zag-async[aiohttp]'`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from ..errors import ConfigurationError
from ..service import ZagService
from .signals import PATH, deliver

__all__ = ["ZAG_KEY", "get_zag", "signal_handler", "signal_routes", "zag_context"]

#: Where the running service is kept on the application.
ZAG_KEY: web.AppKey[ZagService] = web.AppKey("zag", ZagService)


def zag_context(**options: Any) -> Callable[[web.Application], AsyncIterator[None]]:
    """A `cleanup_ctx` entry that runs a `ZagService(**options)` with the application.

    The options are checked now, so a mistake fails at import, not at startup.
    Each startup opens a fresh service (a service opens only once).
    """
    ZagService(**options)  # validate eagerly; opening does the I/O

    async def context(app: web.Application) -> AsyncIterator[None]:
        async with ZagService(**options) as service:
            app[ZAG_KEY] = service
            yield

    return context


def get_zag(source: web.Application | web.Request) -> ZagService:
    """The running `ZagService` of an application (or of a request's application)."""
    app = source.app if isinstance(source, web.Request) else source
    service = app.get(ZAG_KEY)
    if service is None:
        raise ConfigurationError(
            "this aiohttp app has no zag service: add app.cleanup_ctx.append(zag_context(...))"
        )
    return service


async def signal_handler(request: web.Request) -> web.Response:
    """Send the signal a request carries: the flow id and event come from the route's
    `{flow_id}` and `{event}`, the payload is the JSON body, the id the
    `Idempotency-Key` header (or `?signal_id=`). See `zag_async.contrib.signals`."""
    reply = await deliver(
        get_zag(request),
        request.match_info["flow_id"],
        request.match_info["event"],
        await request.read(),
        signal_id=request.query.get("signal_id"),
        idempotency_key=request.headers.get("Idempotency-Key"),
    )
    return web.json_response(reply.body, status=reply.status)


def signal_routes(prefix: str = "") -> list[web.RouteDef]:
    """`POST {prefix}/flows/{flow_id}/signals/{event}` (`signal_handler`), for
    `app.add_routes(...)`; answers 202, 404, 409 or 422 as `signal_router` does."""
    return [web.post(prefix + PATH, signal_handler)]
