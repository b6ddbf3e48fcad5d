"""The jobs page of the operations UI, and its two actions: trash a job, retry a failed one.

An operator's questions about a job board are "what is waiting, what is
running and who has it, what will run later, what went wrong": the page
answers them in sections (pending, delayed, parked, claimed, schedules, trash
and failures), each bounded, every job linked to its flow's page. Times are
the board's clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from ...errors import (
    AlreadyClaimed,
    BoardUnavailable,
    ClaimLost,
    ConfigurationError,
    JobNotFound,
    NotFound,
    NotYetDue,
    StorageError,
)
from ...factory import FactoryRef
from ...jobs.base import PARKED, JobBoard
from ...jobs.records import FinishedJob, Holder, Job, JobState
from ...jobs.schedule import Schedule, next_fire
from . import views
from .common import Ui, root

__all__ = ["routes"]

#: The most jobs one section shows.
SECTION_LIMIT = 200
#: The most unclaimed jobs read to fill the pending, delayed and parked sections.
UNCLAIMED_SCAN = 2000
#: Seconds between readings of the board's clock (estimated in between).
CLOCK_EVERY = 60.0
#: Outcomes a retry is offered for.
FAILED = frozenset({"FAILURE", "REVERTED", "TRASHED"})

e = views.e


@dataclass
class Board:
    """What the page shows, read from the board once per request."""

    now: float
    pending: list[Job]
    delayed: list[Job]
    parked: list[Job]
    claimed: list[Job]
    holders: dict[str, Holder]
    schedules: dict[str, Schedule]
    failed: list[FinishedJob]
    scanned_all: bool


class Clock:
    """The board's clock for the page: read (a round trip; on ZooKeeper a write) at
    most every CLOCK_EVERY seconds, estimated from that reading in between."""

    def __init__(self) -> None:
        self.read_at: float | None = None

    async def now(self, board: JobBoard) -> float:
        if self.read_at is None or time.monotonic() - self.read_at > CLOCK_EVERY:
            self.read_at = time.monotonic()
            return await board.now()
        return board.estimate_now()


async def read_board(board: JobBoard, clock: Clock) -> Board:
    """One look at the board: its clock, jobs by section, holders, schedules, failures."""
    now = await clock.now(board)
    unclaimed = await board.jobs(state=JobState.UNCLAIMED, limit=UNCLAIMED_SCAN)
    claimed = await board.jobs(state=JobState.CLAIMED, limit=SECTION_LIMIT + 1)
    holders, schedules, failed = await asyncio.gather(
        board.holders(claimed[:SECTION_LIMIT]),
        board.schedules(),
        board.finished(limit=SECTION_LIMIT + 1, states=FAILED),
    )
    return Board(
        now=now,
        pending=[j for j in unclaimed if j.due_at <= now],
        delayed=sorted((j for j in unclaimed if now < j.due_at < PARKED), key=lambda j: j.due_at),
        parked=[j for j in unclaimed if j.due_at >= PARKED],
        claimed=claimed,
        holders=holders,
        schedules=schedules,
        failed=failed,
        scanned_all=len(unclaimed) < UNCLAIMED_SCAN,
    )


# -- HTML ---------------------------------------------------------------------------


def _in(seconds: float) -> str:
    """A span of time as an operator reads it: '42 s', '5 min', '3 h', '2 d'."""
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= 2 * size:
            return f"{seconds / size:.0f} {unit}"
    return f"{max(seconds, 0):.0f} s"


def _flow(prefix: str, job: Job) -> str:
    return f'<a href="{e(prefix)}/flows/{e(job.flow_id)}">{e(job.name)}</a>'


def _form(prefix: str, csrf: str, job: Job, action: str, label: str, question: str) -> str:
    return (
        f'<form method="post" action="{e(prefix)}/jobs/{e(job.uuid)}/{action}" class="confirm" '
        f'data-confirm="{e(question)}"><input type="hidden" name="csrf" value="{e(csrf)}">'
        f'<button type="submit" aria-label="{e(label)} job {e(job.name)} {e(job.uuid)}">'
        f"{e(label)}</button></form>"
    )


def _table(caption: str, heads: Sequence[str], rows: Sequence[str], empty: str) -> str:
    if not rows:
        return f'<h2>{e(caption)}</h2><p class="empty">{e(empty)}</p>'
    cut = ""
    if len(rows) > SECTION_LIMIT:
        cut = f'<p class="notice">Showing the first {SECTION_LIMIT} only.</p>'
    th = "".join(f'<th scope="col">{e(h)}</th>' for h in heads)
    return (
        f'<h2>{e(caption)}</h2><table class="jobs"><caption>{e(caption)}</caption>'
        f"<thead><tr>{th}</tr></thead><tbody>{''.join(rows[:SECTION_LIMIT])}</tbody></table>{cut}"
    )


def _unclaimed_row(prefix: str, job: Job, due: str, action: str) -> str:
    return (
        f"<tr><td>{_flow(prefix, job)}</td><td><code>{e(job.uuid)}</code></td>"
        f"<td>{e(job.priority)}</td><td>{views.when(job.posted_at)}</td><td>{due}</td>"
        f"<td>{e(job.build_failures)}</td><td>{action}</td></tr>"
    )


def _holder(holder: Holder | None, now: float) -> tuple[str, str]:
    if holder is None:
        return "", "released just now"
    if holder.lease_until is not None:
        return holder.owner, f"lease ends in {_in(holder.lease_until - now)}"
    if holder.session is not None:
        return holder.owner, f"ZooKeeper session {holder.session}"
    return holder.owner, "held by session"


def render(prefix: str, seen: Board, csrf: str | None, notice: str) -> str:
    """The whole jobs page."""
    now = seen.now
    unclaimed_heads = ("Job", "Id", "Priority", "Posted", "Due", "Build failures", "Action")

    def trash_of(job: Job) -> str:
        if csrf is None:
            return ""
        return _form(prefix, csrf, job, "trash", "Trash", f"Trash job {job.name}?")

    pending = [_unclaimed_row(prefix, j, "now", trash_of(j)) for j in seen.pending]
    delayed = [
        _unclaimed_row(prefix, j, f"in {_in(j.due_at - now)} ({views.when(j.due_at)})", "")
        for j in seen.delayed
    ]
    parked = [_unclaimed_row(prefix, j, "when its flow is woken", "") for j in seen.parked]
    claimed = []
    for job in seen.claimed:
        owner, keeps = _holder(seen.holders.get(job.uuid), now)
        claimed.append(
            f"<tr><td>{_flow(prefix, job)}</td><td><code>{e(job.uuid)}</code></td>"
            f"<td>{e(owner)}</td><td>{e(keeps)}</td><td>{views.when(job.posted_at)}</td></tr>"
        )
    schedules = []
    runs = {j.schedule: j for j in (*seen.claimed, *seen.pending, *seen.delayed) if j.schedule}
    for name, schedule in sorted(seen.schedules.items()):
        run = runs.get(name)
        if run is not None:  # its run on the board says when (it may be late, or running)
            upcoming = "running now" if run in seen.claimed else views.when(max(run.due_at, now))
        else:
            try:
                upcoming = views.when(next_fire(schedule.cron, now))
            except ConfigurationError as exc:  # croniter missing: say so in the cell
                upcoming = e(exc)
        schedules.append(
            f"<tr><td>{e(name)}</td><td><code>{e(schedule.cron)}</code></td>"
            f"<td>{e(schedule.factory.path)}</td><td>{upcoming}</td></tr>"
        )
    failed = []
    for item in seen.failed:
        retry = ""
        if csrf is not None:
            question = f"Run job {item.job.name} again as a new job?"
            retry = _form(prefix, csrf, item.job, "retry", "Retry", question)
        failed.append(
            f"<tr><td>{_flow(prefix, item.job)}</td><td><code>{e(item.job.uuid)}</code></td>"
            f'<td><span class="state state-{e(item.outcome.state.lower())}">'
            f"{e(item.outcome.state)}</span></td>"
            f'<td><pre class="failure">{e(item.outcome.error or "")}</pre></td>'
            f"<td>{views.when(item.finished_at)}</td><td>{retry}</td></tr>"
        )
    shown = f'<p class="notice" role="status">{e(notice)}</p>' if notice else ""
    scan = (
        ""
        if seen.scanned_all
        else f'<p class="notice">The board holds more than {UNCLAIMED_SCAN} unclaimed jobs: '
        "the pending, delayed and parked sections show those first in claim order.</p>"
    )
    body = (
        f"<h1>Jobs</h1>{shown}<p>Board clock: {views.when(now)}</p>{scan}"
        + _table("Pending (due now)", unclaimed_heads, pending, "No job is due.")
        + _table("Delayed", unclaimed_heads, delayed, "No delayed job.")
        + _table("Parked (waiting for a signal)", unclaimed_heads, parked, "No parked job.")
        + _table(
            "Claimed",
            ("Job", "Id", "Owner", "Claim kept by", "Posted"),
            claimed,
            "No job is claimed.",
        )
        + _table("Schedules", ("Name", "Cron", "Factory", "Next run"), schedules, "No schedule.")
        + _table(
            "Trash and failures",
            ("Job", "Id", "Outcome", "Reason or error", "Ended", "Action"),
            failed,
            "Nothing failed or was trashed.",
        )
    )
    return views.page(prefix, "Jobs", body, script=True)


# -- routes -------------------------------------------------------------------------


def _message(prefix: str, status: int, title: str, text: str) -> HTMLResponse:
    body = f"<h1>{e(title)}</h1><p>{e(text)}</p>"
    return HTMLResponse(views.page(prefix, title, body), status)


def routes(ui: Ui) -> list[Route]:
    """GET /jobs, POST /jobs/{job_id}/trash and /jobs/{job_id}/retry."""
    clock = Clock()

    async def jobs_page(request: Request) -> Response:
        prefix = root(request)
        if ui.board is None:
            return _message(
                prefix,
                200,
                "Jobs",
                "No job board is configured: start the UI with --board URL "
                "(or asgi_app(..., board=...)) to see jobs.",
            )
        started = time.perf_counter()
        try:
            seen = await read_board(ui.board, clock)
        except BoardUnavailable as exc:
            return _message(prefix, 503, "Jobs", f"The job board is unavailable: {exc}")
        csrf = await ui.csrf_for(request)
        notice = views.notice_of(request.query_params.get("done", ""))
        took = (time.perf_counter() - started) * 1000
        page = HTMLResponse(
            render(prefix, seen, csrf, notice), headers={"Server-Timing": f"app;dur={took:.1f}"}
        )
        return ui.with_csrf(request, page, csrf)

    async def trash(request: Request, who: str) -> Response:
        board = ui.board
        if board is None:
            return PlainTextResponse("no job board is configured", 404)
        job_id = request.path_params["job_id"]
        try:
            claim = await board.claim(job_id, f"zag-ui:{who}")
        except JobNotFound:
            return PlainTextResponse(f"no job {job_id} on the board (it ended, or never was)", 404)
        except AlreadyClaimed:
            owner = await board.find_owner(job_id)
            return PlainTextResponse(
                f"job {job_id} is claimed by {owner or 'another owner'}: suspend or cancel "
                "its flow instead",
                409,
            )
        except NotYetDue as exc:
            return PlainTextResponse(
                f"job {job_id} is not due yet ({exc}): only a due job can be trashed here",
                409,
            )
        reason = f"trashed through the UI by {who}"
        try:
            await board.trash(claim, reason)
        except ClaimLost as exc:  # our claim went (a lease or session lapsed) before the trash
            return PlainTextResponse(f"job {job_id} could not be trashed: {exc}", 409)
        await ui.record(who, "trash-job", job_id, f"{claim.job.name} flow {claim.job.flow_id}")
        return RedirectResponse(f"{root(request)}/jobs?done=job+trashed", status_code=303)

    async def retry(request: Request, who: str) -> Response:
        board = ui.board
        if board is None:
            return PlainTextResponse("no job board is configured", 404)
        job_id = request.path_params["job_id"]
        ended = await board.find_finished(job_id)
        if ended is None:
            return PlainTextResponse(
                f"job {job_id} has not ended (or never was): nothing to retry", 409
            )
        if ended.outcome.state not in FAILED:
            return PlainTextResponse(
                f"job {job_id} ended {ended.outcome.state}: only failed jobs retry", 409
            )
        try:
            detail = await board.backend.load_flow(ended.job.flow_id)
            ref = FactoryRef.from_dict(detail.meta["factory"])
        except (NotFound, StorageError, ConfigurationError, KeyError, TypeError) as exc:
            return PlainTextResponse(
                f"job {job_id}: its flow {ended.job.flow_id} has no factory to run again: {exc}",
                409,
            )
        key = f"retry-of:{job_id}"
        before = await board.find_key(key)
        job = await board.post_ref(
            ended.job.name,
            ref,
            store=detail.store,
            priority=ended.job.priority,
            idempotency_key=key,
        )
        posted = "already retried as" if before is not None else "new"
        await ui.record(who, "retry-job", job_id, f"{posted} job {job.uuid} flow {job.flow_id}")
        return RedirectResponse(
            f"{root(request)}/flows/{job.flow_id}?done=retried+as+job+{job.uuid}", status_code=303
        )

    return [
        Route("/jobs", jobs_page),
        Route("/jobs/{job_id}/trash", ui.action(trash), methods=["POST"]),
        Route("/jobs/{job_id}/retry", ui.action(retry), methods=["POST"]),
    ]
