"""Take the README's screenshot of the operations UI (docs/images/ui-flow.png).

Runs a few real flows into a scratch SQLite file (an order that succeeds, one
whose charge is retried and then reverted, one waiting for an approval), serves
the UI with uvicorn on a loopback port and photographs the pages in headless
Chromium (Debian's /usr/bin/chromium, through Playwright):

    python docs/screenshots.py
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import tempfile
from pathlib import Path

import uvicorn
from playwright.async_api import async_playwright

import zag_async as zag
from zag_async.contrib.ui import asgi_app

HERE = Path(__file__).resolve().parent
IMAGES = HERE / "images"

TRIES: dict[str, int] = {}


@zag.task(provides="reservation")
async def reserve(item: str) -> str:
    await asyncio.sleep(0.05)
    return f"R-{item}"


@reserve.revert
async def release(*, result: str) -> None:
    await asyncio.sleep(0.02)


@zag.task(provides="payment", retry=zag.retry.Times(3))
async def charge(reservation: str, card: str) -> str:
    TRIES[card] = TRIES.get(card, 0) + 1
    await asyncio.sleep(0.08)
    if card == "0000":
        raise RuntimeError(f"card {card} declined for {reservation}")
    return f"P-{reservation}"


@charge.revert
async def refund(*, result: str) -> None:
    await asyncio.sleep(0.03)


@zag.task(provides="parcel")
async def ship(payment: str, reservation: str) -> str:
    await asyncio.sleep(0.1)
    return f"TRK-{payment}"


def order() -> zag.Flow:
    return zag.linear("order", reserve, charge, ship)


def approval() -> zag.Flow:
    wait = zag.wait_for("approve", event="approval", timeout=2 * 86400, provides="approval")
    return zag.linear("refund-request", reserve, wait)


async def main() -> None:
    IMAGES.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'shop.db'}"
        async with zag.connect(url) as backend:
            ok = zag.Engine(order(), store={"item": "lamp", "card": "visa"}, backend=backend)
            await ok.run()
            bad = zag.Engine(order(), store={"item": "desk", "card": "0000"}, backend=backend)
            with contextlib.suppress(Exception):
                await bad.run()
            waiting = zag.Engine(approval(), store={"item": "chair"}, backend=backend)
            await waiting.run()
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            sock.close()
            app = asgi_app(backend, actions=True, token="demo-token")
            config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
            server = uvicorn.Server(config)
            task = asyncio.create_task(server.serve())
            while not server.started:  # noqa: ASYNC110 (uvicorn has no event for it)
                await asyncio.sleep(0.02)
            base = f"http://127.0.0.1:{port}"
            try:
                async with async_playwright() as p:
                    browser = await p.chromium.launch(
                        executable_path="/usr/bin/chromium", headless=True
                    )
                    page = await browser.new_page(viewport={"width": 1200, "height": 900})
                    await page.goto(f"{base}/flows/{bad.flow_id}")
                    await page.wait_for_timeout(500)
                    await page.screenshot(path=str(IMAGES / "ui-flow.png"), full_page=False)
                    await browser.close()
            finally:
                server.should_exit = True
                await task
    print(f"wrote {IMAGES / 'ui-flow.png'}", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
