"""The jobs page in a real browser (headless Chromium by Playwright, as in
test_browser.py): log in, trash a pending job through the confirm dialog (a
dismissed dialog trashes nothing), retry a trashed one. Screenshots land in
tests/ui/artifacts/."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import zag_async as zag
from zag_async.contrib.ui import asgi_app
from zag_async.jobs import JobBoard

from . import flows
from .browser import TOKEN, log_in, open_page, serve_ui, shot
from .conftest import Stored

pytestmark = pytest.mark.services  # a browser, a server: not the fast suite


@pytest.fixture
async def board(stored: Stored, tmp_path: Path) -> AsyncIterator[JobBoard]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'board.db'}"
    async with zag.jobs.connect(url, backend=stored.backend) as opened:
        yield opened


@pytest.fixture
async def served(stored: Stored, board: JobBoard, amqp_url: str) -> AsyncIterator[str]:
    """The UI (actions on, with a token, the board and the broker) at /zag on a free port."""
    ui = asgi_app(stored.backend, board=board, actions=True, token=TOKEN, broker=amqp_url)
    async with serve_ui(ui) as url:
        yield url


@pytest.fixture
async def page(chromium: Path, served: str) -> AsyncIterator[Any]:
    async with open_page(chromium, height=900) as opened:
        yield opened


async def test_trash_a_pending_job_then_retry_it(page: Any, served: str, board: JobBoard) -> None:
    doomed = await board.post("doomed", flows.approval, store={"who": "ann"})
    await page.goto(f"{served}/jobs")
    assert await page.locator("form").count() == 0  # not logged in: no actions shown
    await log_in(page, served)
    await page.goto(f"{served}/jobs")
    await shot(page, "jobs-pending")
    trash = page.get_by_role("button", name=f"Trash job doomed {doomed.uuid}")
    asked: list[str] = []

    def dismiss(dialog: Any) -> None:
        asked.append(dialog.message)
        asyncio.ensure_future(dialog.dismiss())

    page.once("dialog", dismiss)
    await trash.click()  # returns once the dialog is answered
    await page.evaluate("1")  # a round trip after the submit handler: it was prevented
    assert asked == ["Trash job doomed?"]
    assert page.url == f"{served}/jobs"
    assert await board.outcome(doomed.uuid) is None
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await trash.click()
    await page.wait_for_url(f"{served}/jobs?done=job+trashed")
    outcome = await board.outcome(doomed.uuid)
    assert outcome is not None and outcome.error == "trashed through the UI by token"
    failures = page.locator("table.jobs", has=page.locator("caption", has_text="Trash and"))
    assert "trashed through the UI by token" in await failures.inner_text()
    await shot(page, "jobs-trashed")
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.get_by_role("button", name=f"Retry job doomed {doomed.uuid}").click()
    await page.wait_for_url(f"{served}/flows/**")
    again = await board.find_key(f"retry-of:{doomed.uuid}")
    assert again is not None and again.name == "doomed"
    assert page.url.startswith(f"{served}/flows/{again.flow_id}?done=retried")
    await shot(page, "jobs-retried-flow")
    await page.goto(f"{served}/jobs")
    pending = page.locator("table.jobs", has=page.locator("caption", has_text="Pending"))
    assert again.uuid in await pending.inner_text()
    await shot(page, "jobs-after-retry")


async def test_the_workers_page_shows_a_live_worker(page: Any, served: str, amqp_url: str) -> None:
    import aio_pika

    topic = f"ui-{uuid.uuid4().hex[:8]}"
    try:
        async with zag.Worker(
            amqp_url, topic=topic, tasks=[flows.one], announce_every=0.5, name=f"browser-{topic}"
        ) as worker:
            serving = asyncio.create_task(worker.serve())
            try:
                await page.goto(f"{served}/workers")
                live = page.locator("table.workers", has=page.locator("caption"))
                assert f"browser-{topic}" in await live.inner_text()
                queues = await page.locator("table.queues").inner_text()
                assert f"zag.q.{topic}" in queues and "zag.dead" in queues
                await shot(page, "workers")
            finally:
                worker.stop()
                async with asyncio.timeout(10):
                    await serving
    finally:
        connection = await aio_pika.connect(amqp_url, timeout=10)
        try:
            await (await connection.channel()).queue_delete(f"zag.q.{topic}")
        finally:
            await connection.close()
