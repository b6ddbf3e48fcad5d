"""The one-flow page in depth: the timeline of calls (inline SVG, served SVG, JSON,
table) and each atom's story (inputs, result, failure with traceback, retries,
reverts, calls), against real flows on a SQLite backend, stored markup escaped,
and a timeline drawn from hostile stored data without failing."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zag_async as zag
from zag_async.contrib.ui import timeline, views
from zag_async.contrib.ui.app import SVG_POLICY
from zag_async.inspection import atom_inputs
from zag_async.models import AtomDetail, FlowDetail
from zag_async.states import AtomState, FlowState

from . import flows
from .conftest import Client, Stored


def story(page: str, atom: str) -> str:
    """The <details> of one atom's story (atom given escaped)."""
    found = re.search(
        rf'<details class="story" data-story="{re.escape(atom)}">.*?</dl></details>', page, re.S
    )
    assert found, f"no story for {atom}"
    return found.group(0)


async def test_the_timeline_draws_each_call_of_a_failed_flow(
    client: Client, stored: Stored
) -> None:
    async with client() as http:
        page = await http.get(f"/zag/flows/{stored.failed}")
    text = page.text
    svg = text[text.index('<svg xmlns="http://www.w3.org/2000/svg" id="timeline"') :]
    svg = svg[: svg.index("</svg>")]
    assert 'role="img"' in svg and 'aria-label="Timeline of 4 calls to 2 atoms over' in svg
    assert svg.count('class="tl-bar tl-execute tl-success"') == 1  # the markup atom
    assert svg.count('class="tl-bar tl-execute tl-failure"') == 1  # boom
    assert svg.count('class="tl-bar tl-revert tl-reverted"') == 2
    assert re.search(r'<text class="tl-axis"[^>]*>0\.0+ s</text>', svg)  # axis in seconds
    assert "<title>&lt;b&gt;boom&lt;/b&gt;: execute from" in svg  # hover text per bar
    table = text[text.index('<tbody id="timeline-rows">') :]
    assert table.count("<tr>", 0, table.index("</tbody>")) == 4
    assert "<td>&lt;b&gt;boom&lt;/b&gt;</td><td>execute</td>" in table
    assert "The timeline as a table" in text


async def test_the_timeline_is_served_as_svg_and_json(client: Client, stored: Stored) -> None:
    async with client() as http:
        picture = await http.get(f"/zag/flows/{stored.failed}/timeline.svg")
        data = await http.get(f"/zag/flows/{stored.failed}/timeline.json")
        missing = await http.get("/zag/flows/nope/timeline.svg")
        missing_json = await http.get("/zag/flows/nope/timeline.json")
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/svg+xml"
    assert picture.headers["content-security-policy"] == SVG_POLICY
    assert picture.text.startswith("<?xml") and "<script" not in picture.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in picture.text
    chart = data.json()
    assert chart["version"] == (await stored.backend.load_flow(stored.failed)).version
    assert [row[1] for row in chart["rows"]] == ["execute", "revert", "execute", "revert"]
    assert chart["rows"][0][0] == flows.MARKUP  # JSON carries text: ui.js sets it as text
    assert {item[0] for item in chart["items"]} == {"line", "text", "rect"}
    assert chart["running"] is False
    assert (missing.status_code, missing_json.status_code) == (404, 404)


async def test_each_atom_shows_the_inputs_it_was_called_with(
    client: Client, stored: Stored
) -> None:
    async with client() as http:
        page = await http.get(f"/zag/flows/{stored.done}")
    two = story(page.text, "two")
    assert "<tr><td><code>tag</code></td><td><pre>&quot;done&quot;</pre>" in two
    assert "<tr><td><code>y</code></td><td><pre>&quot;gate-done&quot;</pre>" in two
    assert '<pre class="result">&quot;two-done&quot;</pre>' in two
    assert "<li>execute at 0." in two and ": SUCCESS</li>" in two


async def test_inputs_of_a_reverted_provider_are_the_ones_used(stored: Stored) -> None:
    detail = await stored.backend.load_flow(stored.failed)
    inputs = atom_inputs(detail)
    assert inputs.unknown is None
    assert inputs.values["<b>boom</b>"] == {"m": flows.MARKUP}  # markup was reverted since


async def test_inputs_are_unknown_when_the_flow_cannot_be_rebuilt(
    client: Client, stored: Stored
) -> None:
    gone = await stored.backend.load_flow(stored.done)
    gone.meta["factory"] = {"path": "no_such_module_here:factory", "args": [], "kwargs": {}}
    gone.uuid, gone.version = "a-gone-factory", 0
    await stored.backend.save(gone, list(gone.atoms.values()))
    plain = zag.Engine(zag.linear("plain", flows.one), store={"tag": "t"}, backend=stored.backend)
    await plain.run()
    async with client(factories=["no_such_module_here"]) as http:
        lost = await http.get("/zag/flows/a-gone-factory")
        never = await http.get(f"/zag/flows/{plain.flow_id}")
    async with client() as http:
        unknown = await http.get("/zag/flows/a-gone-factory")
    assert "inputs unknown: the flow&#x27;s factory cannot be loaded here" in lost.text
    assert "inputs unknown: the flow was not started from a factory" in never.text
    assert "no_such_module_here:factory is not one this UI may run" in unknown.text
    assert lost.status_code == never.status_code == unknown.status_code == 200


async def test_a_page_never_runs_a_factory_only_the_database_names(
    client: Client, stored: Stored, tmp_path: Path
) -> None:
    planted = await stored.backend.load_flow(stored.done)
    target = tmp_path / "pwned"
    planted.meta["factory"] = {"path": "os:mkdir", "args": [str(target)], "kwargs": {}}
    planted.uuid, planted.version = "a-planted-factory", 0
    await stored.backend.save(planted, list(planted.atoms.values()))
    async with client() as http:
        page = await http.get("/zag/flows/a-planted-factory")
        picture = await http.get("/zag/flows/a-planted-factory/picture.svg")
    assert page.status_code == 200 and picture.status_code == 404
    assert "os:mkdir is not one this UI may run" in page.text
    assert not target.exists()


async def test_failures_show_their_traceback_and_reverts_show(
    client: Client, stored: Stored
) -> None:
    async with client() as http:
        page = await http.get(f"/zag/flows/{stored.failed}")
    boom = story(page.text, "&lt;b&gt;boom&lt;/b&gt;")
    assert (
        '<pre class="failure">ValueError: bad &lt;script&gt;alert(1)&lt;/script&gt;</pre>' in boom
    )
    assert "<details><summary>Traceback</summary><pre>Traceback (most recent call last):" in boom
    assert "raise ValueError(f&quot;bad {MARKUP}&quot;)" in boom
    assert "<dt>Revert</dt>" in boom and "<dt>Intention</dt><dd>REVERT</dd>" in boom
    markup = story(page.text, "&lt;script&gt;alert(1)&lt;/script&gt;")
    assert "<li>revert at " in markup and ": REVERTED</li>" in markup
    assert "<script>alert" not in page.text and "<b>boom</b>" not in page.text


FLAKY: dict[str, int] = {}


@zag.task(provides="out")
async def flaky(attempt: int) -> str:
    FLAKY["calls"] = FLAKY.get("calls", 0) + 1
    if FLAKY["calls"] < 3:
        raise RuntimeError(f"<i>try {FLAKY['calls']}</i>")
    return "made it"


async def test_a_retry_controller_shows_each_attempt_and_its_failures(
    client: Client, stored: Stored
) -> None:
    FLAKY.clear()
    flow = zag.linear("retried", flaky, retry=zag.retry.Times(3, provides="attempt"))
    engine = zag.Engine(flow, backend=stored.backend)
    await engine.run()
    async with client() as http:
        page = await http.get(f"/zag/flows/{engine.flow_id}")
    controller = story(page.text, "retried.retry")
    assert controller.count("<li>Attempt ") == 3
    assert "<li>Attempt 1: <pre>1</pre><ul><li><code>flaky</code> failed:" in controller
    assert "RuntimeError: &lt;i&gt;try 1&lt;/i&gt;" in controller
    assert "RuntimeError: &lt;i&gt;try 2&lt;/i&gt;" in controller
    atom = story(page.text, "flaky")
    assert "<dt>Attempts</dt><dd>3</dd>" in atom
    assert atom.count(": FAILURE</li>") == 2 and atom.count(": REVERTED</li>") == 2
    assert "inputs unknown: the flow was not started from a factory" in atom


# -- hostile stored data -------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=20,
)
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(min_value=1.7e9, max_value=1.8e9),
    st.none(),
)
entries = st.lists(
    st.one_of(
        json_values,
        st.tuples(
            st.sampled_from(["execute", "revert", "<script>x</script>", ""]) | json_values,
            numbers,
            numbers,
            st.sampled_from(list(timeline.PALETTE)) | json_values,
        ).map(list),
    ),
    max_size=25,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(entries | json_values, min_size=1, max_size=4),
    state=st.sampled_from(list(FlowState)),
)
def test_the_timeline_never_fails_on_stored_garbage(lines: list[Any], state: FlowState) -> None:
    detail = FlowDetail(name="<script>f</script>", state=state)
    for n, line in enumerate(lines):
        name = f"<script>a{n}</script>"
        meta = {"timeline": line, "revert_tries": line, "waited": line}
        detail.atoms[name] = AtomDetail(name, state=AtomState.REVERTED, meta=meta, position=n)
    chart = timeline.layout(detail)
    drawn = timeline.svg(chart) + timeline.table(chart)
    assert "<script" not in drawn
    for _, attrs, _, _ in chart.items:
        for key in ("x", "width"):
            if key in attrs:
                assert math.isfinite(float(attrs[key])) and float(attrs[key]) >= 0
    timeline.as_json(chart)
    page = views.flow_page("/zag", detail)
    assert "<script>f" not in page and "<script>a" not in page


async def test_a_waiting_flow_draws_its_wait_as_still_running(
    client: Client, stored: Stored
) -> None:
    async with client() as http:
        page = await http.get(f"/zag/flows/{stored.waiting}")
        data = (await http.get(f"/zag/flows/{stored.waiting}/timeline.json")).json()
    assert 'class="tl-bar tl-execute tl-running"' in page.text
    assert "<title>approve: execute from 0.0000 s, running (" in page.text
    assert data["running"] is True  # ui.js keeps redrawing it as it grows
    assert data["rows"] == [["approve", "execute", "0.0000", "", "", "running"]]
    assert "waits for signal <code>approval</code>" in page.text  # what and until when: kept
