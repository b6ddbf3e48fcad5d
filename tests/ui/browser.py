"""What the browser tests share: the UI served by uvicorn on a free loopback port,
headless Chromium (Debian's, /usr/bin/chromium) driven by Playwright, logging in,
and screenshots in tests/ui/artifacts/ (gitignored; CI keeps them).

Without the browser or Playwright the tests skip, unless CI is set: then they
fail, because CI must run them (scripts/services.sh installs Chromium).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
TOKEN = "browser-token"


def missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is an error, not a skip)")
    pytest.skip(f"{reason} (bash scripts/services.sh chromium; pip install playwright)")


@contextlib.asynccontextmanager
async def serve_ui(ui: Starlette) -> AsyncIterator[str]:
    """`ui` mounted at /zag in a host app, served on a free port; yields its base URL.
    Its resumes and listeners end with it (a mount's own lifespan is not run)."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    host = Starlette(routes=[Mount("/zag", ui)])
    server = uvicorn.Server(uvicorn.Config(host, port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn has no event for it)
        assert not task.done(), "the server stopped at start"
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/zag"
    finally:
        server.should_exit = True
        await task
        await ui.state.ui.aclose()


@contextlib.asynccontextmanager
async def open_page(chromium: Path, height: int = 800) -> AsyncIterator[Any]:
    """A page of a fresh headless Chromium (10 s default timeout)."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        missing("Playwright is not installed")
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(chromium), headless=True)
        try:
            context = await browser.new_context(viewport={"width": 1200, "height": height})
            opened = await context.new_page()
            opened.set_default_timeout(10_000)
            yield opened
        finally:
            await browser.close()


async def shot(page: Any, name: str) -> None:
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def log_in(page: Any, served: str) -> None:
    """Log in with TOKEN through the login form, from the keyboard."""
    await page.goto(f"{served}/login")
    await page.get_by_label("Token").fill(TOKEN)
    await page.keyboard.press("Enter")
    await page.wait_for_url(f"{served}/flows")
