"""The jobs page on real boards (memory:// and a SQL board on SQLite), and its
actions: trash a pending job, retry a failed one; each allowed with the token
and refused read-only (403), without credentials (401) and forged (403)."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from support import delete_zk_path

import zag_async as zag
from zag_async.jobs import JobBoard, JobOutcome

from . import flows
from .conftest import Client, Stored

TOKEN = "jobs-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
#: Midnight on January 1st: a schedule whose run is never due in a test.
YEARLY = "0 0 1 1 *"


@pytest.fixture(params=["memory", "sqlite", "zookeeper"])
async def board(
    request: pytest.FixtureRequest, stored: Stored, tmp_path: Path
) -> AsyncIterator[JobBoard]:
    """A real board, its flow records in the UI's backend (ZooKeeper: a fresh path,
    deleted afterwards)."""
    if request.param == "zookeeper":
        server = request.getfixturevalue("zk_server")
        path = f"/zag-test/ui-{uuid.uuid4().hex}"
        try:
            async with zag.jobs.connect(
                f"zookeeper://{server}{path}", backend=stored.backend
            ) as zk:
                yield zk
        finally:
            await delete_zk_path(server, path)
        return
    url = (
        f"memory://ui-{tmp_path.name}"
        if request.param == "memory"
        else f"sqlite+aiosqlite:///{tmp_path / 'board.db'}"
    )
    async with zag.jobs.connect(url, backend=stored.backend) as opened:
        yield opened


async def csrf_of(http: httpx.AsyncClient, **headers: str) -> str:
    """Open the jobs page as a browser would: the CSRF token its forms carry (set as
    the cookie too, also when the page has no form to show)."""
    page = await http.get("/zag/jobs", headers=headers)
    cookie = http.cookies.get("zag_csrf")
    assert cookie, "no CSRF cookie from the jobs page"
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is None or found.group(1) == cookie
    return cookie


async def trashed(board: JobBoard, name: str = "approve") -> zag.jobs.Job:
    """A job that ended in the trash, as a conductor trashes a failed flow's job."""
    job = await board.post(name, flows.approval, store={"who": "ann"}, priority=3)
    claim = await board.claim(job, "conductor-1")
    await board.trash(claim, "flow ended FAILURE: <b>boom</b>")
    return job


async def test_without_a_board_the_page_says_so(client: Client) -> None:
    async with client() as http:
        reply = await http.get("/zag/jobs")
    assert reply.status_code == 200
    assert "No job board is configured" in reply.text


async def test_every_section_shows_its_jobs(client: Client, board: JobBoard) -> None:
    pending = await board.post("<i>pending</i>", flows.approval, priority=2)
    delayed = await board.post("delayed", flows.approval, delay=3600)
    parked = await board.post("parked", flows.approval)
    await board.park(await board.claim(parked, "conductor-1"), delay=None)
    held = await board.post("held", flows.approval)
    await board.claim(held, "conductor-<2>")
    await board.post_scheduled(YEARLY, "nightly", flows.approval)
    failed = await trashed(board)
    async with client(board=board) as http:
        reply = await http.get("/zag/jobs")
    assert reply.status_code == 200
    text = reply.text
    assert "&lt;i&gt;pending&lt;/i&gt;" in text and "<i>pending" not in text
    for job in (pending, delayed, parked, held, failed):
        assert f'href="/zag/flows/{job.flow_id}"' in text, job.name
    sections = re.split(r"<h2>", text)
    titled = {part.split("</h2>")[0]: part for part in sections[1:]}
    assert pending.uuid in titled["Pending (due now)"]
    assert delayed.uuid in titled["Delayed"] and "in 60 min" in titled["Delayed"]
    assert parked.uuid in titled["Parked (waiting for a signal)"]
    claimed = titled["Claimed"]
    assert held.uuid in claimed and "conductor-&lt;2&gt;" in claimed
    if board.releases_owners:
        assert "lease ends in" in claimed
    elif board.url.startswith("zookeeper"):
        assert "ZooKeeper session 0x" in claimed
    else:
        assert "held by session" in claimed
    nightly = titled["Schedules"]
    assert "nightly" in nightly and YEARLY in nightly
    assert re.search(r"<td>\d{4}-01-01 00:00:00Z</td>", nightly)  # its run's due time
    trash = titled["Trash and failures"]
    assert failed.uuid in trash and "&lt;b&gt;boom&lt;/b&gt;" in trash
    assert "<form" not in text  # read-only: no action forms
    assert '<th scope="col">' in text and "<caption>Claimed</caption>" in text


@pytest.mark.parametrize("action", ["trash", "retry"])
async def test_read_only_refuses_both_actions(client: Client, board: JobBoard, action: str) -> None:
    job = await board.post("x", flows.approval) if action == "trash" else await trashed(board)
    async with client(board=board) as http:
        reply = await http.post(f"/zag/jobs/{job.uuid}/{action}", data={}, headers=BEARER)
    assert reply.status_code == 403
    assert len(await board.jobs()) == (1 if action == "trash" else 0)


@pytest.mark.parametrize("action", ["trash", "retry"])
async def test_actions_without_credentials_are_401(
    client: Client, board: JobBoard, action: str
) -> None:
    job = await board.post("x", flows.approval) if action == "trash" else await trashed(board)
    async with client(board=board, actions=True, token=TOKEN) as http:
        page = await http.get("/zag/jobs")
        assert "<form" not in page.text  # no forms for an anonymous caller
        for headers in ({}, {"Authorization": "Bearer nope"}):
            reply = await http.post(f"/zag/jobs/{job.uuid}/{action}", data={}, headers=headers)
            assert reply.status_code == 401
    assert len(await board.jobs()) == (1 if action == "trash" else 0)


@pytest.mark.parametrize("action", ["trash", "retry"])
async def test_forged_actions_are_403(client: Client, board: JobBoard, action: str) -> None:
    job = await board.post("x", flows.approval) if action == "trash" else await trashed(board)
    url = f"/zag/jobs/{job.uuid}/{action}"
    async with client(board=board, actions=True, token=TOKEN) as http:
        missing = await http.post(url, data={}, headers=BEARER)
        token = await csrf_of(http, **BEARER)
        no_field = await http.post(url, data={}, headers=BEARER)
        forged = f"{token.split('.')[0]}.{'0' * 64}"
        http.cookies.set("zag_csrf", forged, domain="ui.test", path="/zag")
        bad_mac = await http.post(url, data={"csrf": forged}, headers=BEARER)
        http.cookies.set("zag_csrf", token, domain="ui.test", path="/zag")
        foreign = await http.post(
            url, data={"csrf": token}, headers={**BEARER, "Origin": "https://evil.example"}
        )
    for reply in (missing, no_field, bad_mac, foreign):
        assert reply.status_code == 403, reply.text
    assert len(await board.jobs()) == (1 if action == "trash" else 0)


async def test_trash_a_pending_job(
    client: Client, board: JobBoard, stored: Stored, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="zag_async.ui")
    job = await board.post("doomed", flows.approval)
    async with client(board=board, actions=True, token=TOKEN) as http:
        token = await csrf_of(http, **BEARER)
        page = await http.get("/zag/jobs", headers=BEARER)
        assert 'data-confirm="Trash job doomed?"' in page.text
        reply = await http.post(
            f"/zag/jobs/{job.uuid}/trash",
            data={"csrf": token},
            headers={**BEARER, "Origin": "http://ui.test"},
        )
        assert reply.status_code == 303
        assert reply.headers["location"] == "/zag/jobs?done=job+trashed"
        after = await http.get(reply.headers["location"], headers=BEARER)
    assert await board.outcome(job.uuid) == JobOutcome.trashed(
        job, "trashed through the UI by token"
    )
    assert "job trashed" in after.text
    assert f"ui action: token trash-job {job.uuid}" in caplog.text
    (logged,) = await stored.backend.list_actions(target=job.uuid)
    assert (logged.who, logged.action) == ("token", "trash-job")


async def test_trash_refuses_a_job_someone_holds_or_not_due(
    client: Client, board: JobBoard
) -> None:
    held = await board.post("held", flows.approval)
    await board.claim(held, "conductor-1")
    later = await board.post("later", flows.approval, delay=3600)
    async with client(board=board, actions=True, token=TOKEN) as http:
        token = await csrf_of(http, **BEARER)
        busy = await http.post(f"/zag/jobs/{held.uuid}/trash", data={"csrf": token}, headers=BEARER)
        early = await http.post(
            f"/zag/jobs/{later.uuid}/trash", data={"csrf": token}, headers=BEARER
        )
        gone = await http.post("/zag/jobs/no-such-job/trash", data={"csrf": token}, headers=BEARER)
    assert busy.status_code == 409
    assert "conductor-1" in busy.text and "suspend or cancel its flow" in busy.text
    assert early.status_code == 409 and "not due" in early.text
    assert gone.status_code == 404
    assert await board.outcome(held.uuid) is None and await board.outcome(later.uuid) is None


async def test_retry_posts_one_new_job_per_failed_job(
    client: Client, board: JobBoard, stored: Stored, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="zag_async.ui")
    failed = await trashed(board)
    async with client(board=board, actions=True, token=TOKEN) as http:
        token = await csrf_of(http, **BEARER)
        page = await http.get("/zag/jobs", headers=BEARER)
        assert "Run job approve again as a new job?" in page.text
        first = await http.post(
            f"/zag/jobs/{failed.uuid}/retry", data={"csrf": token}, headers=BEARER
        )
        second = await http.post(
            f"/zag/jobs/{failed.uuid}/retry", data={"csrf": token}, headers=BEARER
        )
        assert first.status_code == second.status_code == 303
        assert first.headers["location"] == second.headers["location"]
        shown = await http.get(first.headers["location"], headers=BEARER)
    assert shown.status_code == 200 and "retried as job" in shown.text
    (again,) = await board.jobs()
    assert again.uuid != failed.uuid and again.flow_id != failed.flow_id
    assert first.headers["location"].startswith(f"/zag/flows/{again.flow_id}?done=")
    assert again.name == "approve" and again.factory == failed.factory
    assert again.priority == 3  # as urgent as the job it retries
    detail = await stored.backend.load_flow(again.flow_id)
    assert detail.store == {"who": "ann"}
    assert again.idempotency_key == f"retry-of:{failed.uuid}"
    assert f"ui action: token retry-job {failed.uuid} new job {again.uuid}" in caplog.text
    logged = await stored.backend.list_actions(target=failed.uuid)  # newest first
    assert [(a.action, a.detail.split(" job ")[0]) for a in logged] == [
        ("retry-job", "already retried as"),
        ("retry-job", "new"),
    ]


async def test_retry_refuses_jobs_that_did_not_fail(client: Client, board: JobBoard) -> None:
    pending = await board.post("pending", flows.approval)
    done = await board.post("done", flows.approval)
    claim = await board.claim(done, "conductor-1")
    await board.consume(claim, JobOutcome(done.uuid, done.flow_id, "SUCCESS", {}))
    async with client(board=board, actions=True, token=TOKEN) as http:
        token = await csrf_of(http, **BEARER)
        replies = [
            await http.post(f"/zag/jobs/{j.uuid}/retry", data={"csrf": token}, headers=BEARER)
            for j in (pending, done)
        ]
    assert [r.status_code for r in replies] == [409, 409]
    assert "SUCCESS" in replies[1].text
    assert [j.uuid for j in await board.jobs()] == [pending.uuid]


async def test_a_conductor_failed_job_retried_runs_again(
    client: Client, board: JobBoard, stored: Stored
) -> None:
    """The whole loop with a real conductor: the flow fails and reverts (its job ends
    REVERTED), the retry's job is claimed and reverts again (a second failure shows)."""
    failed = await board.post("nasty", flows.nasty)
    async with zag.Conductor(board, backend=stored.backend, name="c1") as conductor:
        running = asyncio.create_task(conductor.run())
        try:
            async with asyncio.timeout(10):
                outcome = await failed.wait()
            assert outcome.state == "REVERTED"
            async with client(board=board, actions=True, token=TOKEN) as http:
                token = await csrf_of(http, **BEARER)
                reply = await http.post(
                    f"/zag/jobs/{failed.uuid}/retry", data={"csrf": token}, headers=BEARER
                )
                assert reply.status_code == 303
                again = await board.find_key(f"retry-of:{failed.uuid}")
                assert again is not None
                async with asyncio.timeout(10):
                    assert (await board.wait(again.uuid)).state == "REVERTED"
                page = await http.get("/zag/jobs")
        finally:
            conductor.stop()
            await running
    failures = page.text.split("<h2>Trash and failures</h2>")[1]
    assert failed.uuid in failures and again.uuid in failures
    assert failures.count('class="state state-reverted"') == 2


async def test_the_jobs_page_is_labelled(client: Client, board: JobBoard) -> None:
    """Every table captioned with column headers, every control labelled, every
    action button named after its job (the same forms repeat on each row)."""
    from .test_accessibility import parsed

    await board.post("pending", flows.approval)
    await board.claim(await board.post("held", flows.approval), "conductor-1")
    await trashed(board)
    async with client(board=board, actions=True, token=TOKEN) as http:
        text = (await http.get("/zag/jobs", headers=BEARER)).text
    page = parsed(text)
    assert page.lang == "en"
    assert set(page.controls) <= page.labelled
    assert page.tables == page.captions == 3
    assert page.headers and all(scope == "col" for scope in page.headers)
    buttons = re.findall(r'<button type="submit" aria-label="([^"]+)">', text)
    assert len(buttons) == 2 and len(set(buttons)) == 2


async def test_a_long_section_is_cut_and_says_so(client: Client, stored: Stored) -> None:
    async with zag.jobs.connect(f"memory://cut-{uuid.uuid4().hex}", backend=stored.backend) as b:
        for n in range(201):
            await b.post(f"job-{n}", flows.approval)
        async with client(board=b) as http:
            text = (await http.get("/zag/jobs")).text
    pending = text.split("<h2>Pending (due now)</h2>")[1].split("<h2>")[0]
    assert pending.count("<tr><td>") == 200
    assert "Showing the first 200 only." in pending


async def test_the_board_clock_is_read_once_a_minute(
    client: Client, board: JobBoard, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On ZooKeeper reading the clock is a write: page views in between estimate it."""
    reads: list[float] = []
    real = board.now

    async def counted() -> float:
        reads.append(await real())
        return reads[-1]

    monkeypatch.setattr(board, "now", counted)
    async with client(board=board) as http:
        for _ in range(3):
            assert (await http.get("/zag/jobs")).status_code == 200
    assert len(reads) == 1
