"""The summary page: flows counted by state (linked to the filtered listing),
failures per hour over the last day, and the actions taken through the UI, all
escaped; each chart has a table of the same figures."""

from __future__ import annotations

import re

from .conftest import Client, Stored
from .test_actions import BEARER, TOKEN, csrf_of


async def test_the_summary_counts_flows_and_failures(client: Client, stored: Stored) -> None:
    async with client() as http:
        page = await http.get("/zag/summary")
    assert page.status_code == 200
    text = page.text
    assert "<caption>Flows by state (3 in all)</caption>" in text
    for state in ("WAITING", "SUCCESS", "REVERTED"):
        assert f'href="/zag/flows?state={state}"' in text
    assert re.search(r"<td>1</td>", text)  # one flow ended badly, this hour
    assert 'aria-label="Flows that ended badly per hour over the last day: 1"' in text
    assert text.count('class="bar bar-failure"') == 24  # one rect per hour
    assert "No actions have been taken through the UI." in text


async def test_actions_are_recorded_and_shown_escaped(client: Client, stored: Stored) -> None:
    async with client(actions=True, token=TOKEN) as http:
        token = await csrf_of(http, stored.waiting, **BEARER)
        await http.post(
            f"/zag/flows/{stored.waiting}/cancel",
            data={"csrf": token, "reason": "<b>gone</b>"},
            headers=BEARER,
        )
        page = await http.get("/zag/summary")
        flow_page = await http.get(f"/zag/flows/{stored.waiting}")
    recorded = await stored.backend.list_actions(target=stored.waiting)
    assert [(a.who, a.action, a.detail) for a in recorded] == [("token", "cancel", "<b>gone</b>")]
    assert "&lt;b&gt;gone&lt;/b&gt;" in page.text and "<b>gone" not in page.text
    assert f'href="/zag/flows/{stored.waiting}"' in page.text
    assert "Actions taken on this flow" in flow_page.text
    assert "&lt;b&gt;gone&lt;/b&gt;" in flow_page.text


async def test_an_empty_database_says_so(client: Client, stored: Stored) -> None:
    for flow_id in (stored.waiting, stored.done, stored.failed):
        await stored.backend.delete_flow(flow_id)
    async with client() as http:
        page = await http.get("/zag/summary")
    assert "No flows are stored yet." in page.text
