"""What every page module of the UI shares: the app's state (`Ui`), its
backend and board, the action gate (`Ui.checked`) and the action record.

Page modules (flows, jobs, workers, summary) each expose `routes(ui)`;
`app.asgi_app` puts them together.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from ...atom import Atom
from ...engine import resume as resume_flow
from ...errors import ZagError
from ...factory import FactoryRef, used_here
from ...failure import error_text
from ...flow import Flow
from ...jobs.base import JobBoard
from ...models import FlowDetail
from ...persistence.base import ACTION_LIMITS, Backend
from .security import CSRF_COOKIE, Guard, client_of

__all__ = ["FORM_LIMIT", "ActionHandler", "Ui", "bounded_text", "form", "read_form", "root"]

logger = logging.getLogger("zag_async.ui")

#: The largest form body read, in bytes: a larger one is refused whole, never cut.
FORM_LIMIT = 100_000

#: An action's handler: the request and who (the authenticated caller) asks.
ActionHandler = Callable[[Request, str], Awaitable[Response]]


class Ui:
    """The state one UI app holds: its backend, board, broker URL, guard and tasks."""

    def __init__(
        self,
        backend: Backend | str,
        board: JobBoard | None,
        actions: bool,
        guard: Guard,
        broker: str | None = None,
        factories: Iterable[str] = (),
    ) -> None:
        self._given = backend
        self._backend: Backend | None = backend if isinstance(backend, Backend) else None
        self._lock = asyncio.Lock()
        self.board = board
        self.broker = broker
        self.factories = tuple(factories)
        self.actions = actions
        self.guard = guard
        self.tasks: set[asyncio.Task[Any]] = set()

    @property
    def opened(self) -> Backend | None:
        """The backend in use now (None while a URL's is not opened yet, or once closed)."""
        return self._backend

    def rebuild(self, detail: FlowDetail) -> tuple[Flow | Atom | None, str]:
        """The flow rebuilt from its stored factory (for its picture and its atoms'
        inputs), or None and why not.

        A GET must not run code that only the database names, so only factories
        this process has used itself (posted, started, resumed) or that `factories`
        allows (module names: "myapp.flows" allows "myapp.flows:order" and
        "myapp.flows.billing:invoice") are called.
        """
        saved = detail.meta.get("factory")
        if not isinstance(saved, dict) or not isinstance(saved.get("path"), str):
            return None, "the flow was not started from a factory"
        path = saved["path"]
        module = path.partition(":")[0]
        allowed = used_here(path) or any(
            module == name or module.startswith(name + ".") for name in self.factories
        )
        if not allowed:
            return None, (
                f"its factory {path} is not one this UI may run (it is not used by this "
                "process; allow its module with factories=)"
            )
        try:
            return FactoryRef.from_dict(saved).build(), ""
        except Exception as exc:  # a user's factory: anything may go wrong rebuilding it
            logger.debug("flow %s cannot be rebuilt: %s", detail.uuid, exc)
            return None, "the flow's factory cannot be loaded here"

    async def backend(self) -> Backend:
        if self._backend is None:
            async with self._lock:
                if self._backend is None:
                    from ...persistence import connect

                    assert isinstance(self._given, str)
                    opened = connect(self._given)
                    await opened.open()
                    self._backend = opened
        return self._backend

    async def aclose(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        if isinstance(self._given, str) and self._backend is not None:
            await self._backend.aclose()
            self._backend = None

    def start_resume(self, backend: Backend, flow_id: str) -> None:
        """Resume the flow in a task this app owns (cancelled when it shuts down)."""

        async def go() -> None:
            try:
                await resume_flow(flow_id, backend=backend)
            except Exception as exc:  # the flow's own failure (re-raised after reverting) too
                logger.warning("ui resume of flow %s ended: %s", flow_id, error_text(exc))

        task = asyncio.get_running_loop().create_task(go(), name=f"zag-ui-resume-{flow_id}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def csrf_for(self, request: Request) -> str | None:
        """The CSRF token for a page's action forms: None (no forms) unless actions
        are on and the caller may act; the browser's own token when it is valid."""
        if not self.actions or await self.guard.who(request) is None:
            return None
        current = request.cookies.get(CSRF_COOKIE)
        return current if self.guard.valid_csrf(current) else self.guard.new_csrf()

    @staticmethod
    def with_csrf(request: Request, response: Response, token: str | None) -> Response:
        """`response` setting the CSRF cookie to `token` when the browser lacks it."""
        if token is not None and request.cookies.get(CSRF_COOKIE) != token:
            response.set_cookie(
                CSRF_COOKIE,
                token,
                httponly=True,
                samesite="strict",
                path=root(request) or "/",
                secure=request.url.scheme == "https",
            )
        return response

    def action(self, handler: ActionHandler) -> Callable[[Request], Awaitable[Response]]:
        """A POST route for `handler(request, who)`, run only once `checked` lets it."""

        async def route(request: Request) -> Response:
            who, refused = await self.checked(request)
            if refused is not None:
                return refused
            assert who is not None
            return await handler(request, who)

        return route

    async def checked(self, request: Request) -> tuple[str | None, Response | None]:
        """(who, None) when the POST may go on, else (None, the refusal):
        403 read-only, 401 no authenticated caller, 413 a form larger than FORM_LIMIT,
        403 forged (CSRF or Origin)."""
        if not self.actions:
            return None, PlainTextResponse("the UI is read-only", 403)
        if not self.guard.login_allowed(client_of(request)):
            return None, PlainTextResponse("too many wrong tries; wait a minute", 429)
        who = await self.guard.who(request)
        if who is None:
            return None, PlainTextResponse("authentication required", 401)
        fields = await read_form(request)
        if fields is None:
            return None, PlainTextResponse(f"the form is larger than {FORM_LIMIT} bytes", 413)
        if not self.guard.origin_ok(request) or not self.guard.csrf_ok(request, fields.get("csrf")):
            return None, PlainTextResponse("forged or missing CSRF token", 403)
        return who, None

    async def record(self, who: str, action: str, target: str, detail: str = "") -> None:
        """Record an action taken through the UI (who, what, on which flow or job):
        in the database's action log (`Backend.record_action`, shown on the summary
        page) and on the `zag_async.ui` logger. A record that cannot be written is
        logged as such: the action itself has been taken."""
        logger.info("ui action: %s %s %s %s", who, action, target, detail)
        try:
            database = await self.backend()
            await database.record_action(
                bounded_text(who, ACTION_LIMITS["who"]),
                bounded_text(action, ACTION_LIMITS["action"]),
                bounded_text(target, ACTION_LIMITS["target"]),
                bounded_text(detail, ACTION_LIMITS["detail"], empty=True),
            )
        except ZagError as exc:
            logger.warning("ui action not recorded in the database: %s", exc)


def bounded_text(text: str, most: int, *, empty: bool = False) -> str:
    """`text` fit for the action log: no NUL, at most `most` characters, not empty."""
    text = text.replace("\x00", "")[:most]
    return text if text or empty else "?"


async def form(request: Request) -> dict[str, str]:
    """An url-encoded form's fields (first value each; {} for any other body, or one
    larger than FORM_LIMIT, which `Ui.checked` refuses before an action sees it)."""
    return await read_form(request) or {}


async def read_form(request: Request) -> dict[str, str] | None:
    """An url-encoded form's fields, read without python-multipart; {} for another
    content type; None for a body larger than FORM_LIMIT (refused whole: cutting it
    could change what a field says). Read once per request, then kept on it."""
    if hasattr(request.state, "zag_form"):
        return request.state.zag_form  # type: ignore[no-any-return]
    fields: dict[str, str] | None = {}
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        body = await _bounded_body(request)
        if body is None:
            fields = None
        else:
            parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
            fields = {k: v[0] for k, v in parsed.items()}
    request.state.zag_form = fields
    return fields


async def _bounded_body(request: Request) -> bytes | None:
    """The request's body, or None once it is past FORM_LIMIT (without holding more)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > FORM_LIMIT:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > FORM_LIMIT:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def root(request: Request) -> str:
    """The mount prefix (ASGI root_path) links start with."""
    return str(request.scope.get("root_path", "")).rstrip("/")
