"""An operations UI for stored flows that ships in the wheel and mounts in your app.

    from zag_async.contrib.ui import asgi_app
    app.mount("/zag", asgi_app("sqlite+aiosqlite:///flows.db"))

In aiohttp: `app.add_subapp("/zag", zag_async.contrib.ui.aiohttp.aiohttp_app(...))`.
Needs the `ui` extra (Starlette): `pip install 'zag-async[ui]'`. Pages: the
flows (filtered by state and name, newest first, paged) and one flow (its
atoms, updated live by a small script, what it waits for, its failures).
With `actions=True` and `token=` or `auth=`: send a signal, resume, suspend
or cancel a flow.
"""

from __future__ import annotations

from .app import asgi_app

__all__ = ["asgi_app"]
