"""The UI's pages against a real SQLite backend: listing, filters, paging, one
flow, the polled JSON, escaping of stored markup, and fuzzed query strings."""

from __future__ import annotations

import html
import re
import shutil
import time
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import unavailable

import zag_async as zag
from zag_async.contrib.ui import asgi_app
from zag_async.errors import ConfigurationError
from zag_async.models import FlowDetail
from zag_async.states import FlowState

from . import flows
from .conftest import Client, Stored


async def test_the_listing_shows_every_flow_newest_first(client: Client, stored: Stored) -> None:
    async with client() as http:
        home = await http.get("/zag/")
        assert home.status_code == 303 and home.headers["location"] == "/zag/flows"
        page = await http.get("/zag/flows")
    assert page.status_code == 200
    ids = re.findall(r'href="/zag/flows/([0-9a-f-]{36})"', page.text)
    assert ids == [stored.failed, stored.done, stored.waiting]
    assert 'href="/zag/static/ui.css"' in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"


async def test_the_listing_filters_by_state_and_name(client: Client, stored: Stored) -> None:
    async with client() as http:
        waiting = await http.get("/zag/flows", params={"state": "WAITING"})
        named = await http.get("/zag/flows", params={"name": "hel"})
        none = await http.get("/zag/flows", params={"state": "SUCCESS", "name": "approval"})
    assert re.findall(r"/zag/flows/([0-9a-f-]{36})", waiting.text) == [stored.waiting]
    assert re.findall(r"/zag/flows/([0-9a-f-]{36})", named.text) == [stored.done]
    assert "No flows match." in none.text


async def test_the_listing_filters_by_creation_time(client: Client, stored: Stored) -> None:
    old = FlowDetail(name="old", state=FlowState.SUCCESS, created_at=time.time() - 7200)
    await stored.backend.save(old, [])
    async with client() as http:
        everything = await http.get("/zag/flows")
        recent = await http.get("/zag/flows", params={"since": "1h"})
        day = await http.get("/zag/flows", params={"since": "24h", "state": "SUCCESS"})
    assert re.findall(r"/zag/flows/([0-9a-f-]{36})", everything.text)[-1] == old.uuid
    assert re.findall(r"/zag/flows/([0-9a-f-]{36})", recent.text) == [
        stored.failed,
        stored.done,
        stored.waiting,
    ]
    assert re.findall(r"/zag/flows/([0-9a-f-]{36})", day.text) == [stored.done, old.uuid]
    assert '<option value="1h" selected>' in recent.text


async def test_the_listing_is_paged(client: Client, stored: Stored) -> None:
    from zag_async.contrib.ui import views

    for n in range(views.PAGE_SIZE):
        flows.gate_for(f"p{n}").set()
        await zag.Engine.from_factory(
            flows.held, store={"tag": f"p{n}"}, backend=stored.backend
        ).run()
    async with client() as http:
        first = await http.get("/zag/flows")
        assert 'rel="first"' not in first.text
        after = re.search(r'rel="next" href="([^"]+)"', first.text)
        assert after, "no link to the next page"
        second = await http.get(html.unescape(after.group(1)))
        garbage = await http.get("/zag/flows", params={"before": "x_<y>"})
    firsts = re.findall(r"/zag/flows/([0-9a-f-]{36})", first.text)
    ids = re.findall(r"/zag/flows/([0-9a-f-]{36})", second.text)
    assert len(firsts) == views.PAGE_SIZE and not set(firsts) & set(ids)
    assert ids == [stored.failed, stored.done, stored.waiting]
    assert 'rel="next"' not in second.text and 'rel="first"' in second.text
    assert garbage.status_code == 200  # a bad cursor is dropped: the first page


async def test_a_waiting_flow_shows_what_it_waits_for(client: Client, stored: Stored) -> None:
    async with client() as http:
        page = await http.get(f"/zag/flows/{stored.waiting}")
        polled = await http.get(f"/zag/flows/{stored.waiting}/atoms.json")
    assert page.status_code == 200
    assert "approve waits for signal <code>approval</code> until " in page.text
    assert 'src="/zag/static/ui.js"' in page.text
    assert "<form" not in page.text  # read-only: no action forms
    assert polled.json() == {
        "flow_id": stored.waiting,
        "state": "WAITING",
        "version": polled.json()["version"],
        "atoms": {
            "approve": {
                "state": "RUNNING",
                "attempts": 1,
                "took": "",
                "outcome": "null",
                "failed": False,
            },
            "record": {
                "state": "PENDING",
                "attempts": 0,
                "took": "",
                "outcome": "null",
                "failed": False,
            },
        },
    }


async def test_a_finished_flow_shows_its_atoms_and_results(client: Client, stored: Stored) -> None:
    async with client() as http:
        page = await http.get(f"/zag/flows/{stored.done}")
    assert page.status_code == 200
    for atom in ("one", "gate", "two"):
        assert f'<tr data-atom="{atom}">' in page.text
    assert "&quot;two-done&quot;" in page.text
    assert 'class="state state-success">SUCCESS<' in page.text


async def test_stored_markup_is_escaped_everywhere(client: Client, stored: Stored) -> None:
    async with client() as http:
        listing = await http.get("/zag/flows")
        page = await http.get(f"/zag/flows/{stored.failed}")
    for text in (listing.text, page.text):
        assert "<script>alert" not in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<b>boom</b>" not in page.text
    assert "ValueError: bad &lt;script&gt;" in page.text  # the failure line and the atom's


async def test_unknown_flows_are_404(client: Client) -> None:
    async with client() as http:
        page = await http.get("/zag/flows/nope")
        polled = await http.get("/zag/flows/nope/atoms.json")
    assert (page.status_code, polled.status_code) == (404, 404)


async def test_static_assets_ship_in_the_package(client: Client) -> None:
    async with client() as http:
        css = await http.get("/zag/static/ui.css")
        js = await http.get("/zag/static/ui.js")
    assert css.status_code == js.status_code == 200
    assert "atoms.json" not in css.text and "fetch(" in js.text


def test_actions_need_a_way_to_authenticate(stored: Stored) -> None:
    try:
        asgi_app(stored.backend, actions=True)
    except ConfigurationError as exc:
        assert "token= or auth=" in str(exc)
    else:
        raise AssertionError("actions without authentication were allowed")


query_values = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    params=st.dictionaries(
        st.sampled_from(["state", "name", "page", "since", "x"]), query_values, max_size=5
    ),
    path=st.sampled_from(
        [
            "/zag/flows",
            "/zag/flows/{}",
            "/zag/flows/{}/atoms.json",
            "/zag/flows/{}/picture.svg",
            "/zag/flows/{}/timeline.svg",
            "/zag/flows/{}/timeline.json",
            "/zag/summary",
            "/zag/jobs",
            "/zag/workers",
        ]
    ),
    flow=query_values,
)
async def test_no_query_string_makes_a_server_error(
    client: Client, params: dict[str, str], path: str, flow: str
) -> None:
    async with client() as http:
        reply = await http.get(path.format(quote(flow, safe="") or "x"), params=params)
    # 307: "/" as an id makes a path with "//", which the router redirects; never a 5xx
    assert reply.status_code in (200, 307, 404), (path, flow, params, reply.status_code)


@pytest.mark.services  # runs Graphviz's dot
async def test_the_picture_is_coloured_by_state_and_safe(client: Client, stored: Stored) -> None:
    if shutil.which("dot") is None:
        unavailable("Graphviz's dot is not installed", "graphviz")
    async with client() as http:
        page = await http.get(f"/zag/flows/{stored.done}")
        assert f'src="/zag/flows/{stored.done}/picture.svg?v=' in page.text
        done = await http.get(f"/zag/flows/{stored.done}/picture.svg")
        nasty = await http.get(f"/zag/flows/{stored.failed}/picture.svg")
        missing = await http.get("/zag/flows/nope/picture.svg")
    assert done.status_code == 200 and done.headers["content-type"] == "image/svg+xml"
    assert "default-src 'none'" in done.headers["content-security-policy"]
    assert done.text.count('fill="#c8e6c9"') == 3  # one, gate and two: SUCCESS
    assert nasty.status_code == 200 and "<script>" not in nasty.text
    assert "&lt;script&gt;" in nasty.text
    assert missing.status_code == 404


async def test_the_name_filter_is_done_by_the_database(client: Client, stored: Stored) -> None:
    async with client() as http:
        page = await http.get("/zag/flows", params={"name": "HEL"})
        literal = await http.get("/zag/flows", params={"name": "h%d"})
    assert re.findall(r"/zag/flows/([0-9a-f-]{36})", page.text) == [stored.done]
    assert re.findall(r"/zag/flows/([0-9a-f-]{36})", literal.text) == []


async def test_requests_not_taken_yet_are_shown(client: Client, stored: Stored) -> None:
    from zag_async.control import CONTROL_EVENT

    asked = {"action": "cancel", "by": "<ann>", "reason": "", "at": 0.0}
    await stored.backend.add_signal(stored.waiting, CONTROL_EVENT, asked, "asked-1")
    await stored.backend.add_signal(stored.done, CONTROL_EVENT, asked, "asked-2")
    async with client() as http:
        waiting = await http.get(f"/zag/flows/{stored.waiting}")
        done = await http.get(f"/zag/flows/{stored.done}")
        quiet = await http.get(f"/zag/flows/{stored.failed}")
    assert "Cancel asked by &lt;ann&gt; at " in waiting.text
    assert "waits for the engine running the flow" in waiting.text
    assert "was not applied: the flow ended first" in done.text
    assert "asked by" not in quiet.text
