"""Who may act through the operations UI, and proof that a form came from it.

Actions are off unless the app is built with `actions=True`, and then need an
authenticated caller: the host app's own check (`auth`, an async callable
taking the request) or, for standalone use, a shared `token` sent as
`Authorization: Bearer ...`, or typed into the login form, which sets a
cookie holding a signed random value (never the token itself); wrong logins
are limited per client address.

CSRF: each browser gets a random nonce signed with the app's secret (HMAC-
SHA256), set in a SameSite=Strict, HttpOnly cookie and put in a hidden field
of every form; a POST must carry both, equal and correctly signed, and an
`Origin` header, when present, must name the UI's own host.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from starlette.requests import Request

__all__ = ["CSRF_COOKIE", "TOKEN_COOKIE", "Auth", "Guard", "client_of"]

CSRF_COOKIE = "zag_csrf"
TOKEN_COOKIE = "zag_token"

#: Wrong login tries a client may make per window (then 429 until the window passes).
LOGIN_TRIES = 10
LOGIN_WINDOW = 60.0
#: How long a login lasts.
SESSION_SECONDS = 12 * 3600
_LOGIN = "login-"

#: The host app's check: True when the request's caller may act.
Auth = Callable[[Request], Awaitable[bool]]


class Guard:
    """Authentication and CSRF checks for one UI app (its secret lives here)."""

    def __init__(
        self,
        *,
        token: str | None,
        auth: Auth | None,
        secret: bytes | None = None,
        origins: tuple[str, ...] = (),
    ):
        self.token = token
        self.auth = auth
        self.origins = origins
        self.secret = secret if secret is not None else secrets.token_bytes(32)
        self._failed: dict[str, list[float]] = {}  # client -> times of wrong logins

    async def who(self, request: Request) -> str | None:
        """A name for the authenticated caller (for the action log), or None."""
        if self.auth is not None and await self.auth(request):
            user = request.scope.get("user")
            name = getattr(user, "display_name", None) or getattr(user, "username", None)
            return str(name) if name else "auth"
        if self.token is not None:
            header = request.headers.get("authorization", "")
            given = header[7:] if header.lower().startswith("bearer ") else None
            if given is not None:
                if hmac.compare_digest(given.encode(), self.token.encode()):
                    return "token"
                self.login_failed(client_of(request))  # a wrong guess counts as a login's
            session = request.cookies.get(TOKEN_COOKIE)
            if session is not None and self._live_session(session):
                return "token"
        return None

    def new_session(self) -> str:
        """What the login form's cookie holds: a signed random value and when it was
        issued (it lasts SESSION_SECONDS), never the token."""
        return self.sign(f"{_LOGIN}{int(time.time())}-{secrets.token_urlsafe(16)}")

    def _live_session(self, session: str) -> bool:
        if not session.startswith(_LOGIN) or not self.valid_csrf(session):
            return False
        issued = session[len(_LOGIN) :].split("-", 1)[0]
        return issued.isdigit() and 0 <= time.time() - int(issued) < SESSION_SECONDS

    def login_allowed(self, client: str) -> bool:
        """False once `client` has made LOGIN_TRIES wrong tries within LOGIN_WINDOW s."""
        now = time.monotonic()
        tries = [t for t in self._failed.get(client, ()) if now - t < LOGIN_WINDOW]
        if tries:
            self._failed[client] = tries
        else:
            self._failed.pop(client, None)
        return len(tries) < LOGIN_TRIES

    def login_failed(self, client: str) -> None:
        if len(self._failed) > 10_000:  # a flood of addresses: forget the oldest
            self._failed.pop(next(iter(self._failed)))
        self._failed.setdefault(client, []).append(time.monotonic())

    def sign(self, nonce: str) -> str:
        mac = hmac.new(self.secret, nonce.encode(), hashlib.sha256).hexdigest()
        return f"{nonce}.{mac}"

    def new_csrf(self) -> str:
        return self.sign("csrf-" + secrets.token_urlsafe(16))  # never a login session

    def valid_csrf(self, value: str | None) -> bool:
        if not value or value.count(".") != 1:
            return False
        nonce = value.split(".", 1)[0]
        return hmac.compare_digest(self.sign(nonce).encode(), value.encode())

    def csrf_ok(self, request: Request, field: str | None) -> bool:
        """True when the form's token equals the cookie's and is signed by this app."""
        cookie = request.cookies.get(CSRF_COOKIE)
        if not cookie or not field or not self.valid_csrf(cookie):
            return False
        return hmac.compare_digest(cookie.encode(), field.encode())

    def origin_ok(self, request: Request) -> bool:
        """False when an Origin (or, lacking it, Referer) header names a host other
        than the request's own and the `origins` this app was given."""
        origin = request.headers.get("origin") or request.headers.get("referer")
        if origin is None:
            return True
        if origin == "null":
            return False
        netloc = urlsplit(origin).netloc
        return netloc == request.headers.get("host", "") or netloc in self.origins


def client_of(request: Request) -> str:
    """The caller's address, what wrong tries are counted by."""
    return request.client.host if request.client else ""
