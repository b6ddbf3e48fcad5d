"""The one-flow page in a real browser (headless Chromium through Playwright, the
launch and artifacts of test_browser.py): while a flow runs, the timeline gains
bars and the states change without a reload; each atom's story opens from the
keyboard. Screenshots land in tests/ui/artifacts/.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from . import flows
from .browser import shot
from .conftest import Stored, held_running

pytestmark = pytest.mark.services  # a browser, a server: not the fast suite


async def test_the_timeline_gains_bars_while_the_flow_runs(
    page: Any,
    served: str,
    stored: Stored,
) -> None:
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    async with held_running(stored.backend, "timeline") as (engine, running):
        await page.goto(f"{served}/flows/{engine.flow_id}")
        chart = page.locator("svg#timeline")
        assert await chart.get_attribute("role") == "img"
        assert "2 calls to 2 atoms" in (await chart.get_attribute("aria-label") or "")
        assert await page.locator("svg#timeline rect.tl-success").count() == 1  # one
        assert await page.locator("svg#timeline rect.tl-running").count() == 1  # gate
        await page.evaluate("window.zagMarker = 1")  # gone if the page reloads
        await asyncio.sleep(1.5)  # the running bar is redrawn as it grows
        await shot(page, "flow-timeline-running")

        flows.gate_for("timeline").set()
        await page.locator("#flow-state", has_text="SUCCESS").wait_for()
        await page.locator("svg#timeline rect.tl-success:nth-of-type(3)").wait_for()
        assert await page.locator("svg#timeline rect.tl-success").count() == 3
        assert await page.locator("svg#timeline rect.tl-running").count() == 0
        label = await chart.get_attribute("aria-label") or ""
        assert "3 calls to 3 atoms" in label
        assert await page.locator("#timeline-label").inner_text() == label
        two = page.locator('tr[data-atom="two"] .atom-state')
        await two.filter(has_text="SUCCESS").wait_for()
        assert await page.evaluate("window.zagMarker") == 1  # no reload
        told = page.locator('details[data-story="two"] summary .state')
        assert await told.inner_text() == "SUCCESS"  # the stories' badges follow too
        title = await page.locator("svg#timeline rect.tl-success title").last.text_content()
        assert title is not None and title.startswith("two: execute from")

        table = page.locator("#timeline-rows tr")
        assert await table.count() == 3  # the table was redrawn too
        await page.get_by_text("The timeline as a table").click()
        assert await table.nth(2).locator("td").nth(0).inner_text() == "two"
        await shot(page, "flow-timeline-finished")
        assert not [p for p in problems if "Content Security Policy" in p], problems
        await running


async def test_an_atoms_story_opens_from_the_keyboard(
    page: Any,
    served: str,
    stored: Stored,
) -> None:
    await page.goto(f"{served}/flows/{stored.failed}")
    summary = page.locator('details[data-story="<b>boom</b>"] > summary')
    story = page.locator('details[data-story="<b>boom</b>"] dl.story')
    assert not await story.is_visible()
    await summary.focus()
    await page.keyboard.press("Enter")
    await story.wait_for(state="visible")
    assert "ValueError: bad <script>alert(1)</script>" in await story.inner_text()
    assert await page.locator("svg#timeline rect.tl-revert").count() == 2
    await shot(page, "flow-story-open")
