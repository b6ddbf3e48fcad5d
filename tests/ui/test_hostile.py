"""Hostile input for the operations UI and the control API.

With a valid login and CSRF token (so the input reaches each handler), every
action gets arbitrary forms, ids, content types and bodies, and every page
arbitrary query strings. The UI must answer below 500 within 5 s, and store
nothing (no signal, no action-log row, no job change) for what it refuses.
`zag.cancel_flow`, `zag.suspend_flow` and `Engine.cancel` get arbitrary
arguments on memory:// and SQLite and must refuse them with a `ZagError`
(never another exception) or apply them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from support import eventually

import zag_async as zag
from zag_async.codec import storable_text
from zag_async.contrib.ui import asgi_app
from zag_async.contrib.ui.common import FORM_LIMIT
from zag_async.errors import ConfigurationError, ControlRefused, FlowCancelled
from zag_async.jobs import JobBoard
from zag_async.persistence.base import Backend
from zag_async.states import FlowState

from . import flows
from .conftest import Client, Stored

TOKEN = "hostile-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
#: The longest any reply may take.
REPLY_WITHIN = 5.0

FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

#: Any text, NUL and lone surrogates included.
any_text = st.text(max_size=60)
#: Text the way a hostile form sends it: short, huge (100 KB), NUL-laden or lone surrogates.
hostile_text = st.one_of(
    any_text,
    st.sampled_from(["", "\x00", "a\x00b", "\ud800", "x" * 100_000, "é" * 3000, "<b>&</b>"]),
)


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


#: JSON built to hurt: huge, deep, NaN, infinities, lone surrogates, NUL, huge numbers.
HOSTILE_JSON = [
    "NaN",
    "[NaN, Infinity, -Infinity]",
    '"\\ud800"',
    '{"\\u0000": "\\u0000"}',
    "1e999999",
    "-" + "9" * 5000,
    json.dumps({"k": "v" * 1_000_000}),
    json.dumps(list(range(100_000))),
    _nested(100),
    _nested(500),
    _nested(900),
    _nested(5000),
    '{"a":' * 800 + "1" + "}" * 800,
]

json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | any_text,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(any_text, kids, max_size=4),
    max_leaves=20,
)

#: Payloads: any text, any JSON, and JSON built to hurt (huge, deep, NaN, surrogates, NUL).
payloads = st.one_of(
    hostile_text,
    json_values.map(json.dumps),
    st.sampled_from(HOSTILE_JSON),
)


def flow_ids(stored: Stored) -> st.SearchStrategy[str]:
    """A stored flow's id, or anything at all (quoted into the path)."""
    return st.one_of(
        st.sampled_from([stored.waiting, stored.done, stored.failed]),
        any_text.filter(lambda s: s not in ("", ".", "..")),
        st.sampled_from(["%00", "a" * 37, "a" * 5000, "' OR 1=1 --", "\x00", "\ud800"]),
    )


def path_of(value: str) -> str:
    """`value` fit for a path segment (a lone surrogate is sent as its UTF-8 escape)."""
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


async def armed(http: httpx.AsyncClient, stored: Stored) -> str:
    """Open a flow's page with the token, as a browser would: its CSRF token."""
    page = await http.get(f"/zag/flows/{stored.waiting}", headers=BEARER)
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, "no action form on the page"
    return found.group(1)


async def post(http: httpx.AsyncClient, url: str, **options: Any) -> httpx.Response:
    """POST with the token, failing the test if no reply comes within REPLY_WITHIN."""
    async with asyncio.timeout(REPLY_WITHIN):
        return await http.post(url, headers={**BEARER, **options.pop("headers", {})}, **options)


async def footprint(backend: Backend, flow_ids: list[str]) -> tuple[int, int]:
    """(action-log rows, signals of `flow_ids`): what an accepted action adds to."""
    actions = len(await backend.list_actions(limit=1000))
    signals = 0
    for flow_id in flow_ids:
        signals += len(await backend.list_signals(flow_id))
    return actions, signals


def assert_served(reply: httpx.Response, what: object) -> None:
    """Below 500 (the status is a Hypothesis event: --hypothesis-show-statistics shows
    which answers the fuzzing reached)."""
    event(f"HTTP {reply.status_code}")
    assert reply.status_code < 500, (what, reply.status_code, reply.text[:300])


# -- flow actions -----------------------------------------------------------------------


async def fresh_waiting(backend: Backend) -> str:
    """A new flow waiting for an "approval" signal."""
    engine = zag.Engine.from_factory(flows.approval, backend=backend)
    await engine.run()
    return engine.flow_id


@FUZZ
@given(data=st.data(), aimed=st.booleans(), on_board=st.booleans(), payload=payloads)
async def test_hostile_signals_are_answered_and_refusals_store_nothing(
    client: Client,
    stored: Stored,
    board: JobBoard,
    data: st.DataObject,
    aimed: bool,
    on_board: bool,
    payload: str,
) -> None:
    """Aimed: a waiting flow and its declared event, so the payload reaches storage;
    else any flow id and event. The UI has a job board (SQL on SQLite) or none."""
    if aimed:
        flow_id, event = await fresh_waiting(stored.backend), "approval"
    else:
        flow_id = data.draw(flow_ids(stored), label="flow_id")
        event = data.draw(st.one_of(st.just("approval"), hostile_text), label="event")
    known = [stored.waiting, stored.done, stored.failed]
    if flow_id not in known and storable_text(flow_id):  # SQLite cannot be asked for "\ud800"
        known.append(flow_id)
    async with client(actions=True, token=TOKEN, board=board if on_board else None) as http:
        token = await armed(http, stored)
        before = await footprint(stored.backend, known)
        fields = {"csrf": token, "event": event, "payload": payload}
        reply = await post(
            http,
            f"/zag/flows/{path_of(flow_id)}/signal",
            content=urlencode(fields, encoding="utf-8", errors="surrogatepass"),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        after = await footprint(stored.backend, known)
    assert_served(reply, (flow_id[:80], event[:80], payload[:80]))
    if reply.status_code == 303:
        assert after == (before[0] + 1, before[1] + 1)
    else:
        assert after == before, (reply.status_code, reply.text[:200])


@pytest.mark.parametrize("payload", HOSTILE_JSON, ids=lambda p: f"{p[:16]}..{len(p)}")
async def test_each_hostile_json_payload_is_stored_or_refused(
    client: Client, stored: Stored, payload: str
) -> None:
    """Each payload of HOSTILE_JSON sent to a waiting flow's declared event: stored
    as it parses (303), or refused (400; 413 past FORM_LIMIT) with nothing stored."""
    flow_id = await fresh_waiting(stored.backend)
    async with client(actions=True, token=TOKEN) as http:
        fields = {"csrf": await armed(http, stored), "event": "approval", "payload": payload}
        reply = await post(
            http,
            f"/zag/flows/{flow_id}/signal",
            content=urlencode(fields),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    signals = await stored.backend.list_signals(flow_id)
    assert reply.status_code in (303, 400, 413), (reply.status_code, reply.text[:200])
    assert (reply.status_code == 413) is (len(urlencode(fields)) > FORM_LIMIT)
    if reply.status_code != 303:
        assert signals == [] and await stored.backend.list_actions(target=flow_id) == []
    else:
        assert len(signals) == 1
        assert json.dumps(signals[0].payload) == json.dumps(json.loads(payload))


@asynccontextmanager
async def running_held(backend: Backend) -> AsyncIterator[tuple[str, asyncio.Task[Any]]]:
    """A `held` flow running in this process, held at its gate until the block ends."""
    tag = f"hostile-{uuid.uuid4().hex}"
    engine = zag.Engine.from_factory(flows.held, store={"tag": tag}, backend=backend)
    running = asyncio.create_task(engine.run())
    try:
        await eventually(
            lambda: engine.storage.get("gate").state == "RUNNING", what="the gate running"
        )
        yield engine.flow_id, running
    finally:
        flows.gate_for(tag).set()
        with contextlib.suppress(FlowCancelled):
            await asyncio.wait_for(running, REPLY_WITHIN)
        flows.GATE.pop(tag, None)


@FUZZ
@given(
    data=st.data(),
    aim=st.sampled_from(["anywhere", "waiting", "running"]),
    action=st.sampled_from(["resume", "suspend", "cancel"]),
    reason=hostile_text,
    extra=st.dictionaries(any_text, any_text, max_size=3),
    on_board=st.booleans(),
)
async def test_hostile_control_forms_are_answered_and_refusals_store_nothing(
    client: Client,
    stored: Stored,
    board: JobBoard,
    on_board: bool,
    data: st.DataObject,
    aim: str,
    action: str,
    reason: str,
    extra: dict[str, str],
) -> None:
    """Aimed at a fresh waiting flow, one running here, or any flow id at all."""
    async with contextlib.AsyncExitStack() as stack:
        if aim == "running":
            flow_id, _ = await stack.enter_async_context(running_held(stored.backend))
        elif aim == "waiting":
            flow_id = await fresh_waiting(stored.backend)
        else:
            flow_id = data.draw(flow_ids(stored), label="flow_id")
        known = [stored.waiting, stored.done, stored.failed]
        if flow_id not in known and storable_text(flow_id):
            known.append(flow_id)
        ui = client(actions=True, token=TOKEN, board=board if on_board else None)
        http = await stack.enter_async_context(ui)
        # The token first: the UI reads the first 100 KB of a form.
        fields = {"csrf": await armed(http, stored), **extra, "reason": reason}
        before = await footprint(stored.backend, known)
        reply = await post(
            http,
            f"/zag/flows/{path_of(flow_id)}/{action}",
            content=urlencode(fields, encoding="utf-8", errors="surrogatepass"),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        after = await footprint(stored.backend, known)
    assert_served(reply, (aim, action, flow_id[:80], reason[:80]))
    if reply.status_code != 303:
        assert after == before, (reply.status_code, reply.text[:200])
    else:
        assert after[0] == before[0] + 1  # one action recorded


@pytest.mark.parametrize("action", ["suspend", "cancel"])
async def test_a_reason_the_database_cannot_store_is_400(
    client: Client, stored: Stored, action: str
) -> None:
    """A NUL in the reason was a 500 (control's ConfigurationError went unanswered)."""
    async with client(actions=True, token=TOKEN) as http:
        fields = {"csrf": await armed(http, stored), "reason": "before\x00after"}
        reply = await post(
            http,
            f"/zag/flows/{stored.waiting}/{action}",
            content=urlencode(fields),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert reply.status_code == 400, reply.text
    assert "no NUL" in reply.text
    assert await stored.backend.list_signals(stored.waiting) == []
    assert await stored.backend.list_actions() == []


async def test_a_form_too_large_is_refused_not_cut(client: Client, stored: Stored) -> None:
    """A form past FORM_LIMIT was cut silently: this payload, 1e5 written long, was
    read as 1.0 and stored. It is refused whole now (413), nothing stored."""
    flow_id = await fresh_waiting(stored.backend)
    async with client(actions=True, token=TOKEN) as http:
        fields = {"csrf": await armed(http, stored), "event": "approval"}
        fields["payload"] = "1." + "0" * FORM_LIMIT + "e5"
        reply = await post(
            http,
            f"/zag/flows/{flow_id}/signal",
            content=urlencode(fields),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert reply.status_code == 413, reply.text[:200]
    assert await stored.backend.list_signals(flow_id) == []
    assert await stored.backend.list_actions() == []


async def test_a_streamed_form_past_the_limit_is_refused(client: Client, stored: Stored) -> None:
    """A body sent in chunks with no Content-Length (2 MB) is refused once it passes
    FORM_LIMIT (413), nothing stored."""

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(32):
            yield b"x" * 65_536

    async with client(actions=True, token=TOKEN) as http:
        await armed(http, stored)
        reply = await post(
            http,
            f"/zag/flows/{stored.waiting}/signal",
            content=chunks(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert reply.status_code == 413, reply.text[:200]
    assert await stored.backend.list_signals(stored.waiting) == []


CONTENT_TYPES = [
    "",
    "application/json",
    "multipart/form-data; boundary=xyz",
    "multipart/form-data",
    "application/x-www-form-urlencoded; charset=latin-1",
    "APPLICATION/X-WWW-FORM-URLENCODED",
    "application/octet-stream",
    "text/plain; charset=\x7f",
    "image/svg+xml",
]

bodies = st.one_of(
    st.binary(max_size=300),
    st.sampled_from(
        [
            b"",
            b"\xff\xfe\x00" * 1000,
            b"csrf=%ff%fe&event=%00&payload=%ED%A0%80",
            b'--xyz\r\nContent-Disposition: form-data; name="csrf"\r\n\r\nx\r\n--xyz--\r\n',
            b'{"event": "approval", "payload": {"a": 1}}',
            b"&" * 200_000,
            b"a=" + b"x" * 2_000_000,
        ]
    ),
)

ACTION_PATHS = [
    "/zag/flows/{}/signal",
    "/zag/flows/{}/resume",
    "/zag/login",
    "/zag/flows/{}/suspend",
    "/zag/flows/{}/cancel",
    "/zag/jobs/{}/trash",
    "/zag/jobs/{}/retry",
]


@FUZZ
@given(
    data=st.data(),
    path=st.sampled_from(ACTION_PATHS),
    kind=st.one_of(st.sampled_from(CONTENT_TYPES), st.text(max_size=40)),
    body=bodies,
)
async def test_any_body_of_any_type_is_refused_and_stores_nothing(
    client: Client, stored: Stored, data: st.DataObject, path: str, kind: str, body: bytes
) -> None:
    flow_id = data.draw(flow_ids(stored), label="flow_id")
    known = [stored.waiting, stored.done, stored.failed]
    # The body never carries this client's CSRF token (nor the login's token): each
    # must be refused.
    async with client(actions=True, token=TOKEN) as http:
        await armed(http, stored)  # the CSRF cookie is set; the body lacks its field
        before = await footprint(stored.backend, known)
        headers = {"Content-Type": kind.encode("utf-8", "surrogatepass")}
        try:
            reply = await post(http, path.format(path_of(flow_id)), content=body, headers=headers)
        except httpx.LocalProtocolError:
            return  # a header httpx itself will not send (a newline in it)
        after = await footprint(stored.backend, known)
    assert_served(reply, (path, kind, body[:80]))
    refusals = (401, 413, 429) if path == "/zag/login" else (403, 404, 405, 413)  # no right token
    assert reply.status_code in refusals, (reply.status_code, reply.text[:200])
    assert after == before


# -- job actions on a SQL board ---------------------------------------------------------


@pytest.fixture
async def board(stored: Stored, tmp_path: Path) -> AsyncIterator[JobBoard]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'board.db'}"
    async with zag.jobs.connect(url, backend=stored.backend) as opened:
        job = await opened.post("ended", flows.approval)
        await opened.trash(await opened.claim(job, "conductor-1"), "flow ended FAILURE")
        yield opened


async def board_state(board: JobBoard) -> tuple[list[str], list[str]]:
    jobs = sorted(j.uuid for j in await board.jobs())
    ended = sorted(f.job.uuid for f in await board.finished(limit=1000))
    return jobs, ended


@FUZZ
@given(
    data=st.data(),
    action=st.sampled_from(["trash", "retry"]),
    extra=st.dictionaries(any_text, hostile_text, max_size=3),
)
async def test_hostile_job_actions_are_answered_and_refusals_change_nothing(
    client: Client,
    stored: Stored,
    board: JobBoard,
    data: st.DataObject,
    action: str,
    extra: dict[str, str],
) -> None:
    pending = await board.jobs(limit=1)
    real = {
        "<pending>": pending[0].uuid if pending else (await board.post("p", flows.approval)).uuid,
        "<ended>": (await board.finished(limit=1))[0].job.uuid,
    }
    drawn = data.draw(st.one_of(st.sampled_from(sorted(real)), flow_ids(stored)), label="job")
    job_id = real.get(drawn, drawn)
    async with client(actions=True, token=TOKEN, board=board) as http:
        fields = {"csrf": await armed(http, stored), **extra}
        before = (await footprint(stored.backend, []), await board_state(board))
        reply = await post(
            http,
            f"/zag/jobs/{path_of(job_id)}/{action}",
            content=urlencode(fields, encoding="utf-8", errors="surrogatepass"),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        after = (await footprint(stored.backend, []), await board_state(board))
    assert_served(reply, (action, job_id[:80]))
    if reply.status_code != 303:
        assert after == before, (reply.status_code, reply.text[:200])
    else:
        assert after[0][0] == before[0][0] + 1  # one action recorded


# -- pages --------------------------------------------------------------------------------

PAGES = [
    "/zag/",
    "/zag/flows",
    "/zag/flows/{}",
    "/zag/flows/{}/atoms.json",
    "/zag/flows/{}/picture.svg",
    "/zag/flows/{}/timeline.svg",
    "/zag/flows/{}/timeline.json",
    "/zag/summary",
    "/zag/jobs",
    "/zag/workers",
    "/zag/login",
]

query_keys = st.one_of(
    st.sampled_from(["state", "name", "since", "before", "done", "page", "limit"]), any_text
)
#: Query values (at most 8 KB: httpx, like servers, refuses a URL longer than 64 KB).
query_values = st.one_of(
    any_text,
    st.sampled_from(["", "\x00", "a\x00b", "\ud800", "x" * 8000, "é" * 1000, "<b>&</b>"]),
    st.sampled_from(
        [
            "nan_x",
            "inf_abc",
            "1e308_" + "a" * 200,
            "-1_-",
            "0_" + "f" * 36,
            "1700000000.5_../../etc",
            "_",
            "1_\x00",
            "SUCCESS,FAILURE,,nope",
            "1h",
            "9" * 400 + "_x",
        ]
    ),
)


@FUZZ
@given(
    data=st.data(),
    path=st.sampled_from(PAGES),
    params=st.lists(st.tuples(query_keys, query_values), max_size=6),
)
async def test_no_query_string_breaks_a_page(
    client: Client,
    stored: Stored,
    board: JobBoard,
    data: st.DataObject,
    path: str,
    params: list[tuple[str, str]],
) -> None:
    flow_id = data.draw(flow_ids(stored), label="flow_id")
    query = urlencode(params, encoding="utf-8", errors="surrogatepass")
    async with client(actions=True, token=TOKEN, board=board) as http:
        async with asyncio.timeout(REPLY_WITHIN):
            reply = await http.get(f"{path.format(path_of(flow_id))}?{query}", headers=BEARER)
    assert_served(reply, (path, flow_id[:80], params))


@zag.task(provides="odd")
async def odd_result() -> str:
    return "half a pair: \ud800"


@zag.task
async def odd_error(odd: str) -> None:
    raise ValueError(f"no good: {odd}")


def odd_flow() -> zag.Flow:
    """Stores a lone surrogate (valid in a str, not in UTF-8) as a result and an error."""
    return zag.linear("odd", odd_result, odd_error)


async def test_stored_lone_surrogates_do_not_break_a_page(client: Client, stored: Stored) -> None:
    """A step's result or error holding a lone surrogate made the flow page and
    atoms.json a 500 (the text could not be encoded); they show U+FFFD instead."""
    engine = zag.Engine.from_factory(odd_flow, backend=stored.backend)
    with pytest.raises(ValueError):
        await engine.run()
    async with client() as http:
        for path in ("", "/atoms.json", "/timeline.json", "/timeline.svg"):
            reply = await http.get(f"/zag/flows/{engine.flow_id}{path}")
            assert reply.status_code == 200, (path, reply.text[:300])
        page = await http.get(f"/zag/flows/{engine.flow_id}")
        polled = (await http.get(f"/zag/flows/{engine.flow_id}/atoms.json")).json()
        for path in ("/zag/flows", "/zag/summary"):
            assert (await http.get(path)).status_code == 200, path
    assert "half a pair: \ufffd" in page.text and "no good: half a pair: \ufffd" in page.text
    assert polled["atoms"]["odd_error"]["outcome"].endswith("no good: half a pair: \ufffd")


# -- the control API --------------------------------------------------------------------

anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    hostile_text,
    st.lists(st.integers(), max_size=3),
    st.dictionaries(any_text, any_text, max_size=2),
)


@pytest.fixture(params=["memory", "sqlite"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    url = "memory://" if request.param == "memory" else f"sqlite+aiosqlite:///{tmp_path / 'c.db'}"
    async with zag.connect(url) as opened:
        yield opened


@pytest.fixture
async def waiting(backend: Backend) -> str:
    engine = zag.Engine.from_factory(flows.approval, backend=backend)
    await engine.run()
    assert engine.state is FlowState.WAITING
    return engine.flow_id


def half(fair: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`fair` or `other`, each half the time (one_of would weigh other's branches)."""
    return st.booleans().flatmap(lambda pick: fair if pick else other)


#: Text `by` and `reason` accept: no NUL, no lone surrogate.
fair_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)


@settings(FUZZ, max_examples=150)  # about a millisecond each
@given(
    data=st.data(),
    cancel=st.booleans(),
    by=half(fair_text, anything),
    reason=half(fair_text, anything),
)
async def test_the_control_api_refuses_or_stores_a_readable_request(
    backend: Backend, waiting: str, data: st.DataObject, cancel: bool, by: Any, reason: Any
) -> None:
    flow_id = data.draw(half(st.just(waiting), anything), label="flow_id")
    before = len(await backend.list_signals(waiting))
    try:
        if cancel:
            stored = await zag.cancel_flow(flow_id, backend=backend, by=by, reason=reason)
        else:
            stored = await zag.suspend_flow(flow_id, backend=backend, by=by, reason=reason)
    except (ControlRefused, ConfigurationError) as exc:
        event(type(exc).__name__)
        assert len(await backend.list_signals(waiting)) == before
        return
    event("stored")
    assert cancel and flow_id == waiting  # a waiting flow can be cancelled, not suspended
    assert stored.payload["by"] == by and stored.payload["reason"] == reason


def _short_text(value: Any, most: int) -> bool:
    """What `Engine.cancel` accepts: storable text of at most `most` characters."""
    return storable_text(value) and len(value) <= most


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(by=anything, reason=anything)
async def test_engine_cancel_with_any_arguments_reverts_the_run(
    backend: Backend, by: Any, reason: Any
) -> None:
    """`Engine.cancel` refuses what no database stores (ConfigurationError, the run goes
    on) and otherwise reverts the run; the UI shows the flow whatever its request holds."""
    tag = f"hostile-{uuid.uuid4().hex}"
    engine = zag.Engine.from_factory(flows.held, store={"tag": tag}, backend=backend)
    running = asyncio.create_task(engine.run())
    try:
        await eventually(
            lambda: engine.storage.get("gate").state == "RUNNING", what="the gate running"
        )
        try:
            engine.cancel(by=by, reason=reason)
        except ConfigurationError:
            refused = True
            engine.cancel(by="fallback", reason="")  # the run still has to end
        else:
            refused = False
        assert refused == (not (_short_text(by, 200) and _short_text(reason, 2000)))
        flows.gate_for(tag).set()
        with pytest.raises(FlowCancelled):
            await asyncio.wait_for(running, REPLY_WITHIN)
    finally:
        flows.gate_for(tag).set()
        running.cancel()
        flows.GATE.pop(tag, None)
    assert engine.state is FlowState.REVERTED
    ui = asgi_app(backend)
    transport = httpx.ASGITransport(app=ui)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://ui.test") as http:
            for path in ("", "/timeline.json", "/atoms.json"):
                async with asyncio.timeout(REPLY_WITHIN):
                    reply = await http.get(f"/flows/{engine.flow_id}{path}")
                assert reply.status_code == 200, (path, reply.text[:300])
            listing = await http.get("/flows", params={"state": "REVERTED"})
            assert listing.status_code == 200 and engine.flow_id in listing.text
    finally:
        await ui.state.ui.aclose()
