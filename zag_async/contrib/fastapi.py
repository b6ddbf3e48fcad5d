"""FastAPI: a `ZagService` that lives as long as the application.

    from zag_async.contrib.fastapi import ZagDep, zag_lifespan

    app = FastAPI(lifespan=zag_lifespan(backend="sqlite+aiosqlite:///app.db", conductor=True))

    @app.post("/orders")
    async def order(item: str, service: ZagDep, response: Response) -> dict[str, Any]:
        status = await service.run("myapp.flows:order", store={"item": item})
        response.status_code = http_status(status)  # from zag_async.contrib.http
        return status.to_dict()

`zag_lifespan(...)` takes `ZagService`'s arguments. The service is opened at
startup, stored as `app.state.zag`, and closed at shutdown (its flows are
suspended, never lost). Inside a lifespan of your own, enter it yourself:

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with zag_lifespan(backend=...)(app):
            yield

`signal_router(prefix)` is a ready route that sends signals to waiting flows
(`POST {prefix}/flows/{flow_id}/signals/{event}`, see `zag_async.contrib.signals`):

    app.include_router(signal_router("/api"))

Needs `pip install 'zag-async[fastapi]'`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse

from ..errors import ConfigurationError
from ..service import ZagService
from .signals import PATH, deliver

__all__ = ["ZagDep", "get_zag", "signal_router", "zag_lifespan"]


def zag_lifespan(**options: Any) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """A FastAPI lifespan that runs a `ZagService(**options)` with the application.

    The options are checked now, so a mistake fails at import, not at startup.
    Each startup opens a fresh service (a service opens only once).
    """
    ZagService(**options)  # validate eagerly; opening does the I/O

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with ZagService(**options) as service:
            app.state.zag = service
            try:
                yield
            finally:
                del app.state.zag

    return lifespan


def get_zag(request: Request) -> ZagService:
    """The application's `ZagService` (a FastAPI dependency; see `ZagDep`)."""
    service = getattr(request.app.state, "zag", None)
    if not isinstance(service, ZagService):
        raise ConfigurationError(
            "this FastAPI app has no zag service: create it with "
            "FastAPI(lifespan=zag_lifespan(...)) or enter zag_lifespan(...)(app) in your lifespan"
        )
    return service


#: Annotate a handler parameter with this to receive the running `ZagService`.
ZagDep = Annotated[ZagService, Depends(get_zag)]


def signal_router(prefix: str = "") -> APIRouter:
    """A router with `POST {prefix}/flows/{flow_id}/signals/{event}`: the JSON body is
    the signal's payload, `Idempotency-Key` (or `?signal_id=`) its id.

    Answers 202 with the stored signal, 404 for an unknown flow, 409 when the flow
    has finished or no wait of it declares the event, 422 for a body that is not
    JSON or a bad id (see `zag_async.contrib.signals`).
    """
    router = APIRouter(prefix=prefix)

    @router.post(PATH, status_code=202, name="zag_signal")
    async def send_signal(
        flow_id: str,
        event: str,
        request: Request,
        zag: ZagDep,
        signal_id: str | None = None,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        reply = await deliver(
            zag,
            flow_id,
            event,
            await request.body(),
            signal_id=signal_id,
            idempotency_key=idempotency_key,
        )
        return JSONResponse(reply.body, status_code=reply.status)

    return router
