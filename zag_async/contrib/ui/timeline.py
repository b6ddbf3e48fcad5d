"""The flow page's timeline: when each atom's executes and reverts ran, as a
Gantt-like chart (one row per atom, one bar per call) and as a table.

The data is what the engine records in each atom's `meta["timeline"]`
(`zag_async.scheduler.TIMELINE_KEY`). It comes from the database, so it is not
trusted: an entry that is not `[kind, start, end, outcome]` with plausible
epoch seconds is skipped, and every text is escaped, so a damaged or hostile
record draws what it can and never fails the page.

One layout (`layout`) feeds three outputs: the inline SVG of the page
(`svg`), the same SVG served alone (`/flows/<id>/timeline.svg`), and the JSON
that ui.js turns into SVG elements with `createElementNS` when the flow moves
on (`as_json`), so the chart updates without a reload and without putting
server text through innerHTML. Colours are `fill` attributes from one palette
(a served SVG is an image: no stylesheet reaches it); ui.css styles the rest.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from html import escape
from typing import Any

from ...models import FlowDetail
from ...scheduler import TIMELINE_KEY
from ...states import ENDED, FlowState

__all__ = ["Bar", "Chart", "as_json", "bars", "layout", "svg", "table", "took"]

#: Fill per outcome (None: still running); anything else is drawn grey.
PALETTE = {
    "SUCCESS": "#2e7d32",
    "FAILURE": "#c62828",
    "REVERTED": "#8e6c00",
    "REVERT_FAILURE": "#6a1b9a",
    "INTERRUPTED": "#616161",
    None: "#1565c0",
}
OTHER = "#9e9e9e"
KINDS = ("execute", "revert")
#: Epoch seconds outside this range are not believed (garbage, or another unit).
EARLIEST, LATEST = 0.0, 1e11
#: The most atoms drawn (the table lists the same ones).
MAX_ROWS = 200
LABEL_W, CHART_W, ROW_H, AXIS_H, PAD = 180, 620, 22, 26, 8
RIGHT = 40  #: room right of the chart for the last axis label
LABEL_CHARS = 26
OUTCOME_CHARS = 40


@dataclass(frozen=True)
class Bar:
    """One recorded call: `end` None while it runs or when its end is unknown."""

    atom: str
    kind: str
    start: float
    end: float | None
    outcome: str | None

    @property
    def running(self) -> bool:
        return self.end is None and self.outcome is None


def _epoch(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) and EARLIEST <= number <= LATEST else None


def _entry(atom: str, raw: Any) -> Bar | None:
    """A stored entry as a Bar, or None when it is not one."""
    if not isinstance(raw, (list, tuple)) or len(raw) != 4:
        return None
    kind, start, end, outcome = raw
    begun = _epoch(start)
    if kind not in KINDS or begun is None:
        return None
    ended = _epoch(end)
    if ended is not None and ended < begun:
        ended = begun
    if outcome is not None and (not isinstance(outcome, str) or not outcome):
        outcome = "?"  # an ended call whose outcome is not readable
    return Bar(atom, kind, begun, ended, outcome[:OUTCOME_CHARS] if outcome else None)


def bars(detail: FlowDetail) -> list[list[Bar]]:
    """Each atom's recorded calls (atoms in flow order; those with none left out)."""
    rows = []
    for atom in sorted(detail.atoms.values(), key=lambda a: a.position):
        meta = atom.meta if isinstance(atom.meta, dict) else {}
        line = meta.get(TIMELINE_KEY)
        if not isinstance(line, list):
            continue
        found = [b for b in (_entry(atom.name, raw) for raw in line[-100:]) if b is not None]
        if found:
            rows.append(found)
        if len(rows) == MAX_ROWS:
            break
    return rows


def _upto(detail: FlowDetail) -> float:
    """Where a running bar ends: now while the flow can still move, else its last write."""
    if detail.state in ENDED or detail.state is FlowState.SUSPENDED:
        return detail.updated_at
    return time.time()


def _step(span: float) -> float:
    """A round tick step giving about five ticks over `span` seconds."""
    raw = span / 5
    magnitude: float = 10.0 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if factor * magnitude >= raw:
            return factor * magnitude
    return 10 * magnitude


def _seconds(value: float, step: float = 0.001) -> str:
    """Seconds with as many decimals as `step` needs."""
    places = max(0, -math.floor(math.log10(step)))
    return f"{value:.{places}f} s"


#: One SVG element: (tag, attributes, text, hover title).
Item = tuple[str, dict[str, str], str | None, str | None]


@dataclass
class Chart:
    """The laid-out timeline: SVG items, the table's rows and a one-line summary."""

    width: int
    height: int
    label: str
    items: list[Item] = field(default_factory=list)
    rows: list[tuple[str, ...]] = field(default_factory=list)
    running: bool = False


def took(seconds: float) -> str:
    """A duration for people: milliseconds under a second, else seconds."""
    return f"{seconds * 1000:.2f} ms" if seconds < 1 else f"{seconds:.3f} s"


def _title(bar: Bar, t0: float, upto: float) -> str:
    start = _seconds(bar.start - t0, 0.0001)
    if bar.end is not None:
        spent = took(bar.end - bar.start)
        return f"{bar.atom}: {bar.kind} from {start}, took {spent}: {bar.outcome or 'unknown'}"
    if bar.running:
        return f"{bar.atom}: {bar.kind} from {start}, running ({took(upto - bar.start)} so far)"
    return f"{bar.atom}: {bar.kind} from {start}, {bar.outcome or 'unknown'} (end not known)"


def layout(detail: FlowDetail, *, now: float | None = None) -> Chart:
    """Lay out the flow's timeline (times in seconds from its first recorded call)."""
    rows = bars(detail)
    every = [b for row in rows for b in row]
    if not every:
        return Chart(0, 0, "No atom has run yet.")
    upto = now if now is not None else _upto(detail)
    t0 = min(b.start for b in every)
    t1 = max(max(b.end if b.end is not None else max(upto, b.start) for b in every), t0)
    span = max(t1 - t0, 1e-3)
    scale = CHART_W / span
    width = LABEL_W + CHART_W + RIGHT
    height = AXIS_H + len(rows) * ROW_H + PAD
    calls = len(every)
    chart = Chart(
        width,
        height,
        f"Timeline of {calls} call{'s' * (calls != 1)} to {len(rows)} "
        f"atom{'s' * (len(rows) != 1)} over {took(span)}",
    )
    step = _step(span)
    for k in range(int(span / step + 1e-9) + 1):
        at = f"{LABEL_W + k * step * scale:.1f}"
        tick = {"class": "tl-tick", "x1": at, "x2": at, "y1": "18", "y2": str(height - PAD)}
        chart.items.append(("line", tick, None, None))
        axis = {"class": "tl-axis", "x": at, "y": "13", "text-anchor": "middle"}
        chart.items.append(("text", axis, _seconds(k * step, step), None))
    for r, row in enumerate(rows):
        y = AXIS_H + r * ROW_H
        name = row[0].atom
        shown = name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1] + "…"
        chart.items.append(("text", {"class": "tl-label", "x": "0", "y": str(y + 15)}, shown, name))
        for bar in row:
            end = bar.end if bar.end is not None else (upto if bar.running else bar.start)
            x = LABEL_W + (bar.start - t0) * scale
            w = max((max(end, bar.start) - bar.start) * scale, 2.0)
            outcome = bar.outcome if bar.outcome in PALETTE else ("other" if bar.outcome else None)
            state = (outcome or "running").lower()
            chart.items.append(
                (
                    "rect",
                    {
                        "class": f"tl-bar tl-{bar.kind} tl-{state}",
                        "x": f"{x:.1f}",
                        "y": str(y + 3 + (6 if bar.kind == "revert" else 0)),
                        "width": f"{min(w, LABEL_W + CHART_W - x + 1):.1f}",
                        "height": str(ROW_H - 12 if bar.kind == "revert" else ROW_H - 6),
                        "fill": PALETTE.get(bar.outcome, OTHER),
                    },
                    None,
                    _title(bar, t0, upto),
                )
            )
            chart.rows.append(
                (
                    bar.atom,
                    bar.kind,
                    f"{bar.start - t0:.4f}",
                    "" if bar.end is None else f"{bar.end - t0:.4f}",
                    "" if bar.end is None else took(bar.end - bar.start),
                    bar.outcome or ("running" if bar.running else ""),
                )
            )
            chart.running = chart.running or bar.running
    return chart


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def svg(chart: Chart, *, standalone: bool = False) -> str:
    """The chart as SVG markup: inline in the page, or `standalone` as a served file."""
    parts = []
    for tag, attrs, text, title in chart.items:
        attributes = "".join(f' {k}="{_e(v)}"' for k, v in attrs.items())
        inner = (_e(text) if text is not None else "") + (
            f"<title>{_e(title)}</title>" if title is not None else ""
        )
        parts.append(f"<{tag}{attributes}>{inner}</{tag}>")
    head = '<?xml version="1.0" encoding="UTF-8"?>\n' if standalone else ""
    ns = ' xmlns="http://www.w3.org/2000/svg"'
    return (
        f'{head}<svg{ns} id="timeline" class="timeline" role="img" aria-label="{_e(chart.label)}" '
        f'width="{chart.width}" height="{chart.height}" '
        f'viewBox="0 0 {chart.width} {chart.height}" font-family="sans-serif" font-size="12">'
        f"{''.join(parts)}</svg>"
    )


def table(chart: Chart) -> str:
    """The chart's calls as rows of an accessible table body."""
    return "".join(
        "<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in chart.rows
    )


def as_json(chart: Chart) -> dict[str, Any]:
    """What ui.js redraws the chart and the table from (it sets text, never HTML)."""
    return {
        "width": chart.width,
        "height": chart.height,
        "label": chart.label,
        "items": [list(item) for item in chart.items],
        "rows": [list(row) for row in chart.rows],
        "running": chart.running,
    }
