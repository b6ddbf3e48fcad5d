"""The UI in a real browser: headless Chromium (Debian's, /usr/bin/chromium) driven
by Playwright against the app served by uvicorn, over a real SQLite backend with
real flows (see browser.py for the machinery; screenshots in tests/ui/artifacts/).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from zag_async.states import FlowState

from . import flows
from .browser import TOKEN, log_in, shot
from .conftest import Stored, held_running, suspend_one

pytestmark = pytest.mark.services  # a browser, a server: not the fast suite


async def test_list_then_open_a_flow_by_keyboard(page: Any, served: str, stored: Stored) -> None:
    await page.goto(f"{served}/flows")
    rows = page.locator("table.flows tbody tr")
    assert await rows.count() == 3
    assert await page.get_by_label("State").count() == 1  # labelled filters
    assert await page.get_by_label("Name").count() == 1
    await shot(page, "flows")
    link = page.locator(f'a[href="/zag/flows/{stored.waiting}"]')
    await link.focus()
    await page.keyboard.press("Enter")
    await page.wait_for_url(f"{served}/flows/{stored.waiting}")
    assert "waits for signal approval" in await page.locator("ul.waits").inner_text()
    await shot(page, "flow-waiting")


async def test_a_running_flow_changes_state_live(page: Any, served: str, stored: Stored) -> None:
    async with held_running(stored.backend, "live") as (engine, running):
        await page.goto(f"{served}/flows/{engine.flow_id}")
        assert await page.locator("#flow-state").inner_text() == "RUNNING"
        await page.evaluate("window.zagMarker = 1")  # gone if the page reloads
        drawn = await page.locator("#picture").get_attribute("src")
        await shot(page, "flow-running")
        flows.gate_for("live").set()
        await page.locator("#flow-state", has_text="SUCCESS").wait_for()
        two = page.locator('tr[data-atom="two"] .atom-state')
        await two.filter(has_text="SUCCESS").wait_for()
        assert await page.evaluate("window.zagMarker") == 1
        outcome = page.locator('tr[data-atom="two"] .outcome pre')
        assert await outcome.inner_text() == '"two-live"'  # results filled in too
        assert await page.locator("#picture").get_attribute("src") != drawn  # redrawn
        assert await page.locator("#picture").evaluate("img => img.naturalWidth") > 0
        await shot(page, "flow-finished-live")
        await running


async def test_log_in_and_send_a_signal_that_resumes_the_flow(
    page: Any, served: str, stored: Stored
) -> None:
    await page.goto(f"{served}/flows/{stored.waiting}")
    assert await page.locator("form").count() == 0  # not logged in: no actions shown
    await page.goto(f"{served}/login")
    await page.get_by_label("Token").fill(TOKEN)
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_url(f"{served}/flows")
    await page.goto(f"{served}/flows/{stored.waiting}")
    await page.get_by_label("Payload (JSON)").fill('{"by": "ann"}')
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.get_by_role("button", name="Send signal").click()
    await page.wait_for_url(f"{served}/flows/{stored.waiting}?done=signal+sent")
    await page.locator("#flow-state", has_text="SUCCESS").wait_for()
    await shot(page, "flow-signalled")
    assert (await stored.backend.load_flow(stored.waiting)).state is FlowState.SUCCESS


async def test_resume_a_suspended_flow(page: Any, served: str, stored: Stored) -> None:
    flow_id = await suspend_one(stored.backend, "browser")
    await page.goto(f"{served}/login")
    await page.get_by_label("Token").fill(TOKEN)
    await page.keyboard.press("Enter")  # the form submits from the keyboard
    await page.wait_for_url(f"{served}/flows")
    await page.goto(f"{served}/flows/{flow_id}")
    assert await page.locator("#flow-state").inner_text() == "SUSPENDED"
    await shot(page, "flow-suspended")
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.get_by_role("button", name="Resume").click()
    await page.wait_for_url(f"{served}/flows/{flow_id}?done=resume+started")
    await page.locator("#flow-state", has_text="SUCCESS").wait_for()
    await shot(page, "flow-resumed")


async def test_suspend_then_cancel_a_running_flow(page: Any, served: str, stored: Stored) -> None:
    async with held_running(stored.backend, "ops") as (engine, running):
        await log_in(page, served)
        await page.goto(f"{served}/flows/{engine.flow_id}")
        page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await page.get_by_role("button", name="Suspend").click()
        await page.wait_for_url(f"{served}/flows/{engine.flow_id}?done=suspend+requested")
        flows.gate_for("ops").set()  # the running step finishes; nothing new starts
        await page.locator("#flow-state", has_text="SUSPENDED").wait_for()
        await page.get_by_role("button", name="Resume").wait_for()  # the forms followed
        await asyncio.wait_for(running, 10)
        await shot(page, "flow-suspended-by-ui")
        await page.get_by_label("Reason").fill("ordered by mistake")
        page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await page.get_by_role("button", name="Cancel flow").click()
        await page.wait_for_url(f"{served}/flows/{engine.flow_id}?done=cancel+requested")
        await page.locator("#flow-state", has_text="REVERTED").wait_for()
        await page.locator("section.actions").wait_for(state="hidden")  # nothing left to do
        await page.reload()
        assert "cancelled by token: ordered by mistake" in await page.content()
        await shot(page, "flow-cancelled-by-ui")
    detail = await stored.backend.load_flow(engine.flow_id)
    assert detail.state is FlowState.REVERTED
    assert [a.action for a in await stored.backend.list_actions(target=engine.flow_id)] == [
        "cancel",
        "suspend",
    ]
