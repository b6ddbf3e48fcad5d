"""Each action allowed and refused: read-only (403), no credentials (401), a
forged or missing CSRF token (403), a foreign Origin (403); and allowed with the
token (Bearer or login cookie) or the host's auth hook, recorded in the log."""

from __future__ import annotations

import asyncio
import logging
import re

import httpx
import pytest
from starlette.requests import Request
from support import eventually

from zag_async.errors import FlowCancelled
from zag_async.states import FlowState

from . import flows
from .conftest import Client, Stored, held_running, suspend_one

TOKEN = "s3cret-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


async def csrf_of(http: httpx.AsyncClient, flow_id: str, **headers: str) -> str:
    """Open the flow's page as a browser would; return the form's CSRF token."""
    page = await http.get(f"/zag/flows/{flow_id}", headers=headers)
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, "no action form on the page"
    assert http.cookies.get("zag_csrf") == found.group(1)
    return found.group(1)


async def flow_state(stored: Stored, flow_id: str) -> FlowState:
    return (await stored.backend.load_flow(flow_id)).state


ACTIONS = [
    ("signal", {"event": "approval", "payload": '{"by": "ann"}'}),
    ("resume", {}),
    ("suspend", {}),
    ("cancel", {"reason": "no longer wanted"}),
]


@pytest.mark.parametrize(("action", "fields"), ACTIONS)
async def test_read_only_refuses_every_action(
    client: Client, stored: Stored, action: str, fields: dict[str, str]
) -> None:
    async with client() as http:
        reply = await http.post(f"/zag/flows/{stored.waiting}/{action}", data=fields)
    assert reply.status_code == 403
    assert await flow_state(stored, stored.waiting) is FlowState.WAITING
    assert await stored.backend.list_signals(stored.waiting) == []


@pytest.mark.parametrize(("action", "fields"), ACTIONS)
async def test_actions_without_credentials_are_401(
    client: Client, stored: Stored, action: str, fields: dict[str, str]
) -> None:
    async with client(actions=True, token=TOKEN) as http:
        page = await http.get(f"/zag/flows/{stored.waiting}")
        assert "<form" not in page.text  # no forms for an anonymous caller
        wrong = {"Authorization": "Bearer nope"}
        for headers in ({}, wrong):
            reply = await http.post(
                f"/zag/flows/{stored.waiting}/{action}", data=fields, headers=headers
            )
            assert reply.status_code == 401
    assert await stored.backend.list_signals(stored.waiting) == []


@pytest.mark.parametrize(("action", "fields"), ACTIONS)
async def test_forged_requests_are_403(
    client: Client, stored: Stored, action: str, fields: dict[str, str]
) -> None:
    url = f"/zag/flows/{stored.waiting}/{action}"
    async with client(actions=True, token=TOKEN) as http:
        missing = await http.post(url, data=fields, headers=BEARER)  # no cookie, no field
        token = await csrf_of(http, stored.waiting, **BEARER)
        no_field = await http.post(url, data=fields, headers=BEARER)
        nonce = token.split(".")[0]
        forged = f"{nonce}.{'0' * 64}"
        http.cookies.set("zag_csrf", forged, domain="ui.test", path="/zag")
        bad_mac = await http.post(url, data={**fields, "csrf": forged}, headers=BEARER)
        http.cookies.set("zag_csrf", token, domain="ui.test", path="/zag")
        other = await csrf_of(http, stored.waiting, **BEARER)
        mismatch = await http.post(url, data={**fields, "csrf": other + "x"}, headers=BEARER)
        foreign = await http.post(
            url,
            data={**fields, "csrf": other},
            headers={**BEARER, "Origin": "https://evil.example"},
        )
    for reply in (missing, no_field, bad_mac, mismatch, foreign):
        assert reply.status_code == 403, reply.text
    assert await stored.backend.list_signals(stored.waiting) == []
    assert await flow_state(stored, stored.waiting) is FlowState.WAITING


async def test_a_signal_with_the_token_resumes_the_waiting_flow(
    client: Client, stored: Stored, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="zag_async.ui")
    async with client(actions=True, token=TOKEN) as http:
        token = await csrf_of(http, stored.waiting, **BEARER)
        reply = await http.post(
            f"/zag/flows/{stored.waiting}/signal",
            data={"event": "approval", "payload": '{"by": "<ann>"}', "csrf": token},
            headers={**BEARER, "Origin": "http://ui.test"},
        )
        assert reply.status_code == 303
        assert reply.headers["location"] == f"/zag/flows/{stored.waiting}?done=signal+sent"

        async def finished() -> bool:
            return await flow_state(stored, stored.waiting) is FlowState.SUCCESS

        await eventually(finished, what="the signalled flow finished")
        page = await http.get(f"/zag/flows/{stored.waiting}")
    assert "&lt;ann&gt;" in page.text and "<ann>" not in page.text
    assert [s.payload for s in await stored.backend.list_signals(stored.waiting)] == [
        {"by": "<ann>"}
    ]
    assert f"ui action: token signal {stored.waiting} approval" in caplog.text


async def test_bad_signals_are_refused_not_stored(client: Client, stored: Stored) -> None:
    async with client(actions=True, token=TOKEN) as http:
        token = await csrf_of(http, stored.waiting, **BEARER)
        url = f"/zag/flows/{stored.waiting}/signal"
        not_json = await http.post(
            url, data={"event": "approval", "payload": "{by", "csrf": token}, headers=BEARER
        )
        undeclared = await http.post(
            url, data={"event": "payment", "payload": "1", "csrf": token}, headers=BEARER
        )
        ended = await http.post(
            f"/zag/flows/{stored.done}/signal",
            data={"event": "approval", "csrf": token},
            headers=BEARER,
        )
        resume_done = await http.post(
            f"/zag/flows/{stored.done}/resume", data={"csrf": token}, headers=BEARER
        )
    assert (not_json.status_code, undeclared.status_code) == (400, 409)
    assert (ended.status_code, resume_done.status_code) == (409, 409)
    assert await stored.backend.list_signals(stored.waiting) == []


async def test_the_login_form_sets_a_token_cookie(client: Client, stored: Stored) -> None:
    async with client(actions=True, token=TOKEN) as http:
        assert "Log in" in (await http.get("/zag/login")).text
        wrong = await http.post("/zag/login", data={"token": "nope"})
        assert wrong.status_code == 401
        right = await http.post("/zag/login", data={"token": TOKEN})
        assert right.status_code == 303
        token = await csrf_of(http, stored.waiting)  # the cookie authenticates now
        reply = await http.post(f"/zag/flows/{stored.waiting}/resume", data={"csrf": token})
    assert reply.status_code == 303


async def test_the_host_apps_auth_hook_decides(client: Client, stored: Stored) -> None:
    async def staff_only(request: Request) -> bool:
        return request.headers.get("x-staff") == "yes"

    async with client(actions=True, auth=staff_only) as http:
        anonymous = await http.post(f"/zag/flows/{stored.waiting}/resume", data={})
        token = await csrf_of(http, stored.waiting, **{"x-staff": "yes"})
        staff = await http.post(
            f"/zag/flows/{stored.waiting}/resume", data={"csrf": token}, headers={"x-staff": "yes"}
        )
    assert (anonymous.status_code, staff.status_code) == (401, 303)


async def test_resume_runs_a_suspended_flow_to_the_end(
    client: Client, stored: Stored, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="zag_async.ui")
    flow_id = await suspend_one(stored.backend, "resume")
    async with client(actions=True, token=TOKEN) as http:
        token = await csrf_of(http, flow_id, **BEARER)
        reply = await http.post(
            f"/zag/flows/{flow_id}/resume", data={"csrf": token}, headers=BEARER
        )
        assert reply.status_code == 303

        async def finished() -> bool:
            return await flow_state(stored, flow_id) is FlowState.SUCCESS

        await eventually(finished, what="the resumed flow finished")
    assert f"ui action: token resume {flow_id}" in caplog.text


async def test_cancel_reverts_a_waiting_flow(
    client: Client, stored: Stored, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="zag_async.ui")
    async with client(actions=True, token=TOKEN) as http:
        token = await csrf_of(http, stored.waiting, **BEARER)
        assert (
            "Cancel flow" in (await http.get(f"/zag/flows/{stored.waiting}", headers=BEARER)).text
        )
        reply = await http.post(
            f"/zag/flows/{stored.waiting}/cancel",
            data={"csrf": token, "reason": "<no> longer wanted"},
            headers=BEARER,
        )
        assert reply.status_code == 303, reply.text

        async def reverted() -> bool:
            return await flow_state(stored, stored.waiting) is FlowState.REVERTED

        await eventually(reverted, what="the cancelled flow reverted")
        page = await http.get(f"/zag/flows/{stored.waiting}")
        again = await http.post(
            f"/zag/flows/{stored.waiting}/cancel", data={"csrf": token}, headers=BEARER
        )
    assert "cancelled by token: &lt;no&gt; longer wanted" in page.text
    assert again.status_code == 409  # it has finished
    assert f"ui action: token cancel {stored.waiting} <no> longer wanted" in caplog.text


@pytest.mark.parametrize("action", ["suspend", "cancel"])
async def test_suspend_or_cancel_a_running_flow(
    client: Client, stored: Stored, action: str
) -> None:
    tag = f"ui-{action}"
    async with (
        held_running(stored.backend, tag) as (engine, running),
        client(actions=True, token=TOKEN) as http,
    ):
        token = await csrf_of(http, engine.flow_id, **BEARER)
        url = f"/zag/flows/{engine.flow_id}/{action}"
        reply = await http.post(url, data={"csrf": token}, headers=BEARER)
        assert reply.status_code == 303, reply.text
        flows.gate_for(tag).set()  # the running step ends; then the request applies
        if action == "cancel":
            with pytest.raises(FlowCancelled):
                await asyncio.wait_for(running, 10)
        else:
            await asyncio.wait_for(running, 10)
        again = await http.post(url, data={"csrf": token}, headers=BEARER)
    assert engine.state is (FlowState.REVERTED if action == "cancel" else FlowState.SUSPENDED)
    assert again.status_code == 409  # finished, or suspended: nothing runs


async def test_the_login_cookie_is_not_the_token_and_wrong_tries_are_limited(
    client: Client, stored: Stored
) -> None:
    async with client(actions=True, token=TOKEN) as http:
        right = await http.post("/zag/login", data={"token": TOKEN})
        session = http.cookies.get("zag_token")
        assert right.status_code == 303 and session and TOKEN not in session
        http.cookies.clear()
        http.cookies.set("zag_token", "login-x.forged", domain="ui.test", path="/zag")
        forged = await http.post(f"/zag/flows/{stored.waiting}/resume", data={})
        tries = [
            (await http.post("/zag/login", data={"token": "nope"})).status_code for _ in range(11)
        ]
        blocked = await http.post("/zag/login", data={"token": TOKEN})
    assert forged.status_code == 401
    assert tries == [401] * 10 + [429]
    assert blocked.status_code == 429  # even the right token waits out the window
