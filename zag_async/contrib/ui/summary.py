"""The summary page: how many flows are in each state, failures over the last day,
and the latest actions taken through the UI.

Counts and buckets are computed by the database (`Backend.count_flows`,
`Backend.failures_over_time`), so the page costs a few indexed queries however
many flows are stored. The charts are inline SVG (bars as rects: no script, no
style attributes), each with a table of the same figures for screen readers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from ...models import Action
from ...states import FlowState
from . import views
from .common import Ui, root
from .views import e

__all__ = ["routes", "summary_page"]

#: The failures chart: how far back, and the width of each bar.
FAILURE_WINDOW = 86400.0
FAILURE_BUCKET = 3600.0
#: Flows that ended badly (what the failures chart counts).
BAD_ENDS = (
    FlowState.FAILURE,
    FlowState.REVERTED,
    FlowState.UNCOMPENSATED,
    FlowState.STUCK_PAST_PIVOT,
)


def _counts(prefix: str, counts: dict[FlowState, int]) -> str:
    total = sum(counts.values())
    most = max(counts.values(), default=0) or 1
    rows, bars = [], []
    for n, state in enumerate(s for s in FlowState if counts.get(s)):
        count = counts[state]
        link = f"{e(prefix)}/flows?state={e(state)}"
        rows.append(
            f'<tr><th scope="row"><a href="{link}">{views.state_badge(state)}</a></th>'
            f"<td>{count:,}</td></tr>"
        )
        width = max(1, round(300 * count / most))
        y = n * 22
        bars.append(
            f'<text x="0" y="{y + 15}" class="label">{e(state)}</text>'
            f'<rect x="150" y="{y + 3}" width="{width}" height="16" '
            f'class="bar bar-{e(state.lower())}"><title>{e(state)}: {count}</title></rect>'
            f'<text x="{155 + width}" y="{y + 15}" class="label">{count:,}</text>'
        )
    if not rows:
        return '<p class="empty">No flows are stored yet.</p>'
    height = len(bars) * 22 + 4
    chart = (
        f'<svg class="chart" role="img" aria-label="Flows by state" viewBox="0 0 560 {height}" '
        f'width="560" height="{height}">{"".join(bars)}</svg>'
    )
    table = (
        f'<table class="counts"><caption>Flows by state ({total:,} in all)</caption>'
        '<thead><tr><th scope="col">State</th><th scope="col">Flows</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    return chart + table


def _failures(buckets: Sequence[tuple[float, int]], since: float) -> str:
    slots = int(FAILURE_WINDOW // FAILURE_BUCKET)
    counts = [0] * slots
    for start, count in buckets:
        slot = int((start - since) // FAILURE_BUCKET)
        if 0 <= slot < slots:
            counts[slot] += count
    total = sum(counts)
    most = max(counts) or 1
    bars = []
    for slot, count in enumerate(counts):
        height = round(100 * count / most) if count else 0
        when = views.when(since + slot * FAILURE_BUCKET)
        bars.append(
            f'<rect x="{slot * 20 + 2}" y="{110 - height}" width="16" height="{height}" '
            f'class="bar bar-failure"><title>{when}: {count}</title></rect>'
        )
    axis = (
        f'<text x="0" y="126" class="label">{views.when(since)}</text>'
        f'<text x="{slots * 20}" y="126" class="label" text-anchor="end">now</text>'
    )
    chart = (
        f'<svg class="chart" role="img" viewBox="0 0 {slots * 20 + 4} 130" '
        f'width="{slots * 20 + 4}" height="130" '
        f'aria-label="Flows that ended badly per hour over the last day: {total}">'
        f'<line x1="0" y1="110" x2="{slots * 20}" y2="110" class="axis"/>'
        f"{''.join(bars)}{axis}</svg>"
    )
    rows = "".join(
        f"<tr><td>{views.when(since + slot * FAILURE_BUCKET)}</td><td>{count}</td></tr>"
        for slot, count in enumerate(counts)
        if count
    )
    table = (
        '<details><summary>As a table</summary><table class="failures-table">'
        "<caption>Flows that ended badly, per hour (hours with none left out)</caption>"
        '<thead><tr><th scope="col">Hour from (UTC)</th><th scope="col">Flows</th></tr>'
        f"</thead><tbody>{rows}</tbody></table></details>"
    )
    return chart + table


def _actions(prefix: str, actions: Sequence[Action]) -> str:
    if not actions:
        return '<p class="empty">No actions have been taken through the UI.</p>'
    rows = "".join(
        f"<tr><td>{views.when(a.at)}</td><td>{e(a.who)}</td><td>{e(a.action)}</td>"
        f'<td><a href="{e(prefix)}/flows/{e(a.target)}"><code>{e(a.target)}</code></a></td>'
        f"<td>{e(a.detail)}</td></tr>"
        for a in actions
    )
    return (
        '<table class="actions-log"><caption>Latest actions taken here</caption><thead><tr>'
        '<th scope="col">When</th><th scope="col">Who</th><th scope="col">Action</th>'
        '<th scope="col">Flow or job</th><th scope="col">Detail</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>"
    )


def summary_page(
    prefix: str,
    counts: dict[FlowState, int],
    failures: Sequence[tuple[float, int]],
    since: float,
    actions: Sequence[Action],
) -> str:
    """The whole summary page."""
    body = (
        "<h1>Summary</h1>"
        f"<section><h2>Flows by state</h2>{_counts(prefix, counts)}</section>"
        f"<section><h2>Failures over the last day</h2>{_failures(failures, since)}</section>"
        f"<section><h2>Actions</h2>{_actions(prefix, actions)}</section>"
    )
    return views.page(prefix, "Summary", body)


def routes(ui: Ui) -> list[Route]:
    """GET /summary."""

    async def summary(request: Request) -> Response:
        started = time.perf_counter()
        database = await ui.backend()
        now = await database.clock()
        since = (now // FAILURE_BUCKET + 1) * FAILURE_BUCKET - FAILURE_WINDOW
        counts = await database.count_flows()
        failures = await database.failures_over_time(since=since, bucket=FAILURE_BUCKET)
        actions = await database.list_actions(limit=20)
        body = summary_page(root(request), counts, failures, since, actions)
        took = (time.perf_counter() - started) * 1000
        return HTMLResponse(body, headers={"Server-Timing": f"app;dur={took:.1f}"})

    return [Route("/summary", summary)]
