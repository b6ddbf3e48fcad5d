"""The operations UI as a Starlette app: mount it in any ASGI app.

    app.mount("/zag", asgi_app("sqlite+aiosqlite:///flows.db"))

Read-only unless built with `actions=True` (which needs `token=` or `auth=`).
Links use the ASGI `root_path`, so any mount prefix works. A backend given as
a URL is opened on the first request and closed by the app's lifespan (a
mounted sub-app's lifespan may not run: pass an open `Backend` to share the
host's).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import shutil
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ...atom import Atom
from ...control import CONTROL_EVENT, cancel_flow, suspend_flow
from ...errors import (
    ConfigurationError,
    ControlRefused,
    NotFound,
    SerializationError,
    SignalRefused,
)
from ...flow import Flow
from ...inspection import Inputs, atom_inputs
from ...jobs.base import JobBoard
from ...models import FlowDetail
from ...persistence.base import Backend
from ...pictures import DOT_TIMEOUT, to_dot
from ...states import FlowState
from ...waiting import job_of
from ...waiting import signal as send_signal
from . import jobs, summary, timeline, views, workers
from .common import FORM_LIMIT, Ui, bounded_text, form, read_form, root
from .security import TOKEN_COOKIE, Auth, Guard, client_of

__all__ = ["MIN_TOKEN", "asgi_app"]

#: The shortest token `asgi_app` takes (wrong guesses are also limited per client).
MIN_TOKEN = 8

logger = logging.getLogger("zag_async.ui")

STATIC = Path(__file__).resolve().parent / "static"


#: The longest a request may take before its answer starts (a slow database or board).
REQUEST_TIMEOUT = 15.0

#: Every page: only the UI's own script, stylesheet and pictures; no framing.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

#: Served pictures may carry no script, whatever the atom names hold.
SVG_POLICY = "default-src 'none'; style-src 'unsafe-inline'"


async def draw(detail: FlowDetail, flow: Flow | Atom | None) -> bytes | None:
    """`flow`'s picture as SVG, atoms coloured by `detail`'s stored states, or None.

    Drawn by Graphviz's `dot`, run as a subprocess of the event loop; None
    without a flow (see `Ui.rebuild`), or when `dot` is missing or fails.
    """
    dot = shutil.which("dot")
    if flow is None or dot is None:
        return None
    try:
        text = to_dot(flow, {name: str(a.state) for name, a in detail.atoms.items()})
    except Exception as exc:  # a user's flow: anything may go wrong drawing it
        logger.debug("no picture of flow %s: %s", detail.uuid, exc)
        return None
    proc = await asyncio.create_subprocess_exec(
        dot,
        "-Tsvg",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(DOT_TIMEOUT):
            out, _ = await proc.communicate(text.encode())
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return None
    return out if proc.returncode == 0 else None


class _Secure:
    """Adds a content security policy (unless the response set one), nosniff and a
    same-origin referrer policy to every response, and bounds every request: one
    that has not started its answer in REQUEST_TIMEOUT seconds gets a 503."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_secured(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                headers.setdefault("Content-Security-Policy", PAGE_POLICY)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "same-origin")
            await send(message)

        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                await self.app(scope, receive, send_secured)
        except TimeoutError:
            if started:
                raise
            logger.warning(
                "ui: %s %s took over %s s", scope["method"], scope["path"], REQUEST_TIMEOUT
            )
            late = PlainTextResponse(f"no answer within {REQUEST_TIMEOUT:g} s: try again", 503)
            await late(scope, receive, send_secured)


def asgi_app(
    backend: Backend | str,
    *,
    board: JobBoard | None = None,
    actions: bool = False,
    token: str | None = None,
    auth: Auth | None = None,
    broker: str | None = None,
    factories: Iterable[str] = (),
    secret: str | bytes | None = None,
    origins: Iterable[str] = (),
) -> Starlette:
    """The operations UI for the flows stored in `backend` (an open Backend or a URL).

    Every page is readable by whoever reaches the mount (inputs, results and
    tracebacks included): protect the mount as you protect the rest of your app.

    Args:
        board: the job board flows' jobs are on: the jobs page, and a signal or
            a cancel wakes the flow's job so a conductor resumes it (without one,
            the UI resumes the flow itself).
        actions: allow the actions (signal, resume, suspend, cancel; trash and
            retry a job); off, the UI is read-only and every POST is 403.
        token: a shared secret for standalone use (Bearer header or login form),
            at least 8 characters.
        auth: the host app's check, `async (request) -> bool`.
        broker: the workers' RabbitMQ (`amqp://...`), for the workers page.
        factories: modules whose flow factories the UI may call to draw a flow
            and resolve its atoms' inputs, beyond those this process uses itself
            (a page never runs a factory only the database names).
        secret: what signs the CSRF tokens and login sessions; give the same one
            to every worker process or replica serving the UI (default: random,
            for this process only).
        origins: more hosts (`host:port`) a form may be posted from, for a proxy
            that rewrites the Host header.

    Raises:
        ConfigurationError: actions were asked for with no way to authenticate,
            or the token is too short to guess slowly.
    """
    if actions and token is None and auth is None:
        raise ConfigurationError("the UI's actions need token= or auth= (an authenticated caller)")
    if token is not None and (not isinstance(token, str) or len(token) < MIN_TOKEN):
        raise ConfigurationError(f"the UI's token must be a string of {MIN_TOKEN}+ characters")
    if not isinstance(backend, (Backend, str)):
        raise ConfigurationError(f"backend must be a Backend or a URL, got {backend!r}")
    if isinstance(factories, str) or isinstance(origins, str):
        raise ConfigurationError("factories= and origins= take a list of names, not one string")
    key = secret.encode() if isinstance(secret, str) else secret
    guard = Guard(token=token, auth=auth, secret=key, origins=tuple(origins))
    ui = Ui(backend, board, actions, guard, broker=broker, factories=factories)

    def _inputs(detail: FlowDetail) -> Inputs:
        flow, why = ui.rebuild(detail)
        return atom_inputs(detail, flow=flow) if flow is not None else Inputs(unknown=why)

    async def home(request: Request) -> Response:
        return RedirectResponse(f"{root(request)}/flows", status_code=303)

    async def flows(request: Request) -> Response:
        started = time.perf_counter()
        query = views.FlowQuery.parse(request.query_params, (s.value for s in FlowState))
        database = await ui.backend()
        size = views.PAGE_SIZE
        seconds = query.seconds
        found = await database.list_flows(
            states=list(query.states) or None,
            newest_first=True,
            limit=size + 1,
            name_contains=query.name or None,
            created_after=None if seconds is None else time.time() - seconds,
            before=query.before,
        )
        body = views.flows_page(root(request), query, found[:size], len(found) > size)
        took = (time.perf_counter() - started) * 1000
        return HTMLResponse(body, headers={"Server-Timing": f"app;dur={took:.1f}"})

    async def load(request: Request) -> Any:
        flow_id = request.path_params["flow_id"]
        database = await ui.backend()
        try:
            return await database.load_flow(flow_id)
        except NotFound:
            return None

    async def flow(request: Request) -> Response:
        detail = await load(request)
        if detail is None:
            return HTMLResponse(
                views.page(root(request), "Not found", "<h1>No such flow</h1>"), 404
            )
        csrf = await ui.csrf_for(request)
        notice = views.notice_of(request.query_params.get("done", ""))
        database = await ui.backend()
        done = await database.list_actions(target=detail.uuid, limit=20)
        asked = [
            s
            for s in await database.list_signals(detail.uuid)
            if s.event == CONTROL_EVENT and s.taken_by is None
        ]
        body = views.flow_page(
            root(request),
            detail,
            csrf=csrf,
            notice=notice,
            inputs=_inputs(detail),
            done=done,
            asked=asked[:10],
        )
        response = HTMLResponse(body)
        return ui.with_csrf(request, response, csrf)

    async def atoms(request: Request) -> Response:
        detail = await load(request)
        if detail is None:
            return JSONResponse({"error": "no such flow"}, 404)
        return JSONResponse(views.atom_states(detail), headers={"Cache-Control": "no-store"})

    async def picture(request: Request) -> Response:
        detail = await load(request)
        if detail is None:
            return PlainTextResponse("no such flow", 404)
        svg = await draw(detail, ui.rebuild(detail)[0])
        if svg is None:
            return PlainTextResponse("no picture (no factory, or no Graphviz)", 404)
        return Response(
            svg,
            media_type="image/svg+xml",
            headers={"Cache-Control": "no-store", "Content-Security-Policy": SVG_POLICY},
        )

    async def timeline_svg(request: Request) -> Response:
        detail = await load(request)
        if detail is None:
            return PlainTextResponse("no such flow", 404)
        return Response(
            timeline.svg(timeline.layout(detail), standalone=True),
            media_type="image/svg+xml",
            headers={"Cache-Control": "no-store", "Content-Security-Policy": SVG_POLICY},
        )

    async def timeline_json(request: Request) -> Response:
        detail = await load(request)
        if detail is None:
            return JSONResponse({"error": "no such flow"}, 404)
        chart = timeline.as_json(timeline.layout(detail))
        chart["version"] = detail.version
        return JSONResponse(chart, headers={"Cache-Control": "no-store"})

    async def act_signal(request: Request, who: str) -> Response:
        flow_id = request.path_params["flow_id"]
        fields = await form(request)
        event = fields.get("event", "")
        try:
            payload = json.loads(fields.get("payload", "null") or "null")
        except (ValueError, RecursionError) as exc:
            return PlainTextResponse(f"the payload must be JSON: {exc}", 400)
        database = await ui.backend()
        try:
            stored = await send_signal(flow_id, event, payload, backend=database, board=ui.board)
        except SignalRefused as exc:
            return PlainTextResponse(str(exc), 409)
        except (ConfigurationError, SerializationError) as exc:  # SerializationError: too deep
            return PlainTextResponse(str(exc), 400)
        await ui.record(who, "signal", flow_id, f"{event} ({stored.id})")
        if ui.board is None:
            ui.start_resume(database, flow_id)
        return RedirectResponse(
            f"{root(request)}/flows/{flow_id}?done=signal+sent", status_code=303
        )

    async def act_resume(request: Request, who: str) -> Response:
        detail = await load(request)
        if detail is None:
            return PlainTextResponse("no such flow", 404)
        if detail.state not in (FlowState.SUSPENDED, FlowState.WAITING):
            return PlainTextResponse(f"the flow is {detail.state}, not suspended or waiting", 409)
        await ui.record(who, "resume", detail.uuid)
        # A flow with a parked job is resumed by a conductor; any other by this app.
        if ui.board is None or not await ui.board.wake(job_of(detail)):
            ui.start_resume(await ui.backend(), detail.uuid)
        return RedirectResponse(
            f"{root(request)}/flows/{detail.uuid}?done=resume+started", status_code=303
        )

    async def act_control(request: Request, who: str) -> Response:
        """Suspend or cancel the flow (path .../suspend or .../cancel)."""
        flow_id = request.path_params["flow_id"]
        action = request.url.path.rsplit("/", 1)[-1]
        reason = (await form(request)).get("reason", "")[:2000]
        by = bounded_text(who, 200)  # a host's display name may be anything
        database = await ui.backend()
        try:
            if action == "suspend":
                await suspend_flow(flow_id, backend=database, by=by, reason=reason)
            else:
                await cancel_flow(flow_id, backend=database, board=ui.board, by=by, reason=reason)
        except ControlRefused as exc:
            return PlainTextResponse(str(exc), 404 if exc.kind == "unknown_flow" else 409)
        except ConfigurationError as exc:  # a reason the database cannot store (a NUL)
            return PlainTextResponse(str(exc), 400)
        await ui.record(who, action, flow_id, reason)
        if action == "cancel" and ui.board is None:
            detail = await database.load_flow(flow_id)
            if detail.state in (FlowState.SUSPENDED, FlowState.WAITING):
                ui.start_resume(database, flow_id)  # nothing else would run its reverts
        return RedirectResponse(
            f"{root(request)}/flows/{flow_id}?done={action}+requested", status_code=303
        )

    async def login(request: Request) -> Response:
        prefix = root(request)
        if request.method == "POST":
            if ui.guard.token is None or not ui.guard.origin_ok(request):
                return PlainTextResponse("no token login here", 403)
            client = client_of(request)
            if not ui.guard.login_allowed(client):
                return PlainTextResponse("too many wrong tries; wait a minute", 429)
            fields = await read_form(request)
            if fields is None:
                return PlainTextResponse(f"the form is larger than {FORM_LIMIT} bytes", 413)
            given = fields.get("token", "")
            if not hmac.compare_digest(given.encode(), ui.guard.token.encode()):
                ui.guard.login_failed(client)
                return PlainTextResponse("wrong token", 401)
            response = RedirectResponse(f"{prefix}/flows", status_code=303)
            response.set_cookie(
                TOKEN_COOKIE,
                ui.guard.new_session(),
                httponly=True,
                samesite="strict",
                path=prefix or "/",
                secure=request.url.scheme == "https",
            )
            return response
        body = (
            f'<h1>Log in</h1><form method="post" action="{views.e(prefix)}/login">'
            '<label for="token">Token</label><input id="token" name="token" type="password">'
            '<button type="submit">Log in</button></form>'
        )
        if request.cookies.get(TOKEN_COOKIE) and await ui.guard.who(request) is not None:
            body = (
                "<h1>Logged in</h1><p>This browser may act through the UI.</p>"
                f'<form method="post" action="{views.e(prefix)}/logout">'
                '<button type="submit">Log out</button></form>'
            )
        return HTMLResponse(views.page(prefix, "Log in", body))

    async def logout(request: Request) -> Response:
        """End this browser's login (its cookie goes; a Bearer caller has none)."""
        if not ui.guard.origin_ok(request):
            return PlainTextResponse("forged request", 403)
        prefix = root(request)
        response = RedirectResponse(f"{prefix}/flows", status_code=303)
        response.delete_cookie(TOKEN_COOKIE, path=prefix or "/")
        return response

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await ui.aclose()

    routes = [
        Route("/", home),
        Route("/flows", flows),
        Route("/flows/{flow_id}", flow),
        Route("/flows/{flow_id}/atoms.json", atoms),
        Route("/flows/{flow_id}/picture.svg", picture),
        Route("/flows/{flow_id}/timeline.svg", timeline_svg),
        Route("/flows/{flow_id}/timeline.json", timeline_json),
        Route("/flows/{flow_id}/signal", ui.action(act_signal), methods=["POST"]),
        Route("/flows/{flow_id}/resume", ui.action(act_resume), methods=["POST"]),
        Route("/flows/{flow_id}/suspend", ui.action(act_control), methods=["POST"]),
        Route("/flows/{flow_id}/cancel", ui.action(act_control), methods=["POST"]),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        *summary.routes(ui),
        *jobs.routes(ui),
        *workers.routes(ui),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(_Secure)
    app.state.ui = ui
    return app
