"""HTML for the operations UI, built from stored records with no web framework.

Every value that came from the database (flow and atom names, results,
failures, payloads) goes through `html.escape` before it is put in a page,
so a flow named `<script>` shows as text. Links are made relative to `root`
(the ASGI root_path), so the UI works mounted under any prefix.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any
from urllib.parse import urlencode

from ...failure import Failure, error_text
from ...inspection import Inputs
from ...models import Action, AtomDetail, FlowDetail, FlowSummary, Signal
from ...states import ENDED, FlowState
from ...status import failure_lines, iso_utc, waits_of
from . import timeline

__all__ = ["FlowQuery", "atom_states", "flow_page", "flows_page", "page"]

#: Flows shown per page of the listing.
PAGE_SIZE = 50
#: The listing's time filter: key -> (label, seconds back from now).
SINCE = {
    "1h": ("the last hour", 3600.0),
    "24h": ("the last day", 86400.0),
    "7d": ("the last week", 604800.0),
}
#: The nav bar: (path under the mount, label).
SECTIONS = (("flows", "Flows"), ("summary", "Summary"), ("jobs", "Jobs"), ("workers", "Workers"))


#: A lone surrogate: a str may hold one (a step's result, an error message), UTF-8 cannot.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def readable(text: str) -> str:
    """`text` with each lone surrogate replaced by U+FFFD, so the page can be sent as UTF-8."""
    return text if text.isascii() else _LONE_SURROGATE.sub("\ufffd", text)


#: What `?done=` may show after an action: the UI's own words only, so a link
#: cannot put a stranger's text in the page's status line.
_DONE = re.compile(
    r"signal sent|resume started|suspend requested|cancel requested|job trashed"
    r"|retried as job [0-9a-f-]{36}"
)


def notice_of(done: str) -> str:
    """The status line for a `?done=` value ("" for anything the UI did not write)."""
    return done if _DONE.fullmatch(done[:100]) else ""


def e(value: Any) -> str:
    """Any value as escaped text (quotes included: safe in attributes too)."""
    return readable(escape(str(value), quote=True))


@dataclass(frozen=True)
class FlowQuery:
    """The listing's filters, read leniently from query parameters (bad ones are dropped).

    Pages are keyset pages: `before` is the (created_at, uuid) of the last flow
    of the page before, given as `before=<created_at>_<uuid>`, so page 200 costs
    what page 1 costs.
    """

    states: tuple[FlowState, ...] = ()
    name: str = ""
    before: tuple[float, str] | None = None
    since: str = ""  #: a key of SINCE: only flows created that recently

    @property
    def seconds(self) -> float | None:
        return SINCE[self.since][1] if self.since in SINCE else None

    @classmethod
    def parse(cls, params: Mapping[str, str], all_states: Iterable[str]) -> FlowQuery:
        known = {s.upper(): FlowState(s) for s in all_states}
        raw = params.get("state", "")
        states = tuple(known[s] for s in raw.upper().split(",") if s in known)
        name = params.get("name", "")[:200].replace("\x00", "")
        since = params.get("since", "")
        return cls(
            states=states,
            name=name,
            before=_cursor(params.get("before", "")),
            since=since if since in SINCE else "",
        )

    def link(self, root: str, *, before: tuple[float, str] | None = None) -> str:
        """The listing with these filters, from the start or after `before`."""
        values = {
            "state": ",".join(self.states),
            "name": self.name,
            "since": self.since,
            "before": "" if before is None else f"{before[0]!r}_{before[1]}",
        }
        kept = {k: v for k, v in values.items() if v}
        return f"{root}/flows" + (f"?{urlencode(kept)}" if kept else "")


def _cursor(text: str) -> tuple[float, str] | None:
    """`<created_at>_<uuid>` as a keyset cursor; None for anything else."""
    stamp, _, uuid = text[:100].partition("_")
    try:
        when = float(stamp)
    except ValueError:
        return None
    if not uuid or not math.isfinite(when) or not all(c.isalnum() or c == "-" for c in uuid):
        return None
    return when, uuid


def page(root: str, title: str, body: str, *, script: bool = False) -> str:
    """A whole page: head with the shipped stylesheet, a nav bar, `body`."""
    js = f'<script src="{e(root)}/static/ui.js" defer></script>' if script else ""
    links = "".join(f'<a href="{e(root)}/{path}">{label}</a>' for path, label in SECTIONS)
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)} · zag-async</title>"
        f'<link rel="stylesheet" href="{e(root)}/static/ui.css">{js}</head>'
        f'<body><header><nav aria-label="main">{links}</nav>'
        f"</header><main>{body}</main></body></html>\n"
    )


def when(epoch: float | None) -> str:
    """Epoch seconds as escaped `YYYY-MM-DD HH:MM:SSZ` text ("" for None)."""
    text = iso_utc(epoch)
    return "" if text is None else e(text[:19].replace("T", " ") + "Z")


def state_badge(state: Any) -> str:
    """A state as a coloured badge."""
    return f'<span class="state state-{e(str(state).lower())}">{e(state)}</span>'


def flows_page(
    root: str,
    query: FlowQuery,
    rows: Sequence[FlowSummary],
    has_next: bool,
) -> str:
    """The listing: a filter form, a table of flows, previous/next links."""
    options = "".join(
        f'<option value="{e(s)}"{" selected" if s in query.states else ""}>{e(s)}</option>'
        for s in FlowState
    )
    periods = "".join(
        f'<option value="{e(k)}"{" selected" if k == query.since else ""}>{e(label)}</option>'
        for k, (label, _) in SINCE.items()
    )
    form = (
        f'<form method="get" action="{e(root)}/flows" class="filters">'
        f'<label for="state">State</label><select id="state" name="state">'
        f'<option value="">any</option>{options}</select>'
        f'<label for="since">Created in</label><select id="since" name="since">'
        f'<option value="">any time</option>{periods}</select>'
        f'<label for="name">Name</label>'
        f'<input id="name" name="name" value="{e(query.name)}">'
        '<button type="submit">Filter</button></form>'
    )
    lines = "".join(
        f'<tr><td><a href="{e(root)}/flows/{e(f.uuid)}">{e(f.name)}</a></td>'
        f"<td>{state_badge(f.state)}</td><td><code>{e(f.uuid)}</code></td>"
        f"<td>{when(f.created_at)}</td><td>{when(f.updated_at)}</td></tr>"
        for f in rows
    )
    table = (
        '<table class="flows"><caption>Flows, newest first</caption><thead><tr>'
        '<th scope="col">Name</th><th scope="col">State</th><th scope="col">Id</th>'
        '<th scope="col">Created</th><th scope="col">Updated</th></tr></thead>'
        f"<tbody>{lines}</tbody></table>"
        if rows
        else '<p class="empty">No flows match.</p>'
    )
    links = []
    if query.before is not None:
        links.append(f'<a rel="first" href="{e(query.link(root))}">newest</a>')
    if has_next and rows:
        last = rows[-1]
        after = query.link(root, before=(last.created_at, last.uuid))
        links.append(f'<a rel="next" href="{e(after)}">next</a>')
    nav = f'<nav aria-label="pages" class="pager">{" ".join(links)}</nav>'
    return page(root, "Flows", f"<h1>Flows</h1>{form}{table}{nav}")


def _text(value: Any) -> str:
    """A stored value as indented JSON text (repr when it is not JSON), at most 2000 characters."""
    try:
        text = json.dumps(value, default=repr, indent=1, sort_keys=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 2000 else text[:2000] + " …"


def _took(atom: AtomDetail) -> str:
    return "" if atom.duration is None else f"{atom.duration:.3f} s"


def _outcome(atom: AtomDetail) -> tuple[str, bool]:
    """(the text of the atom's failure or result, True for a failure)."""
    failure = atom.failure or atom.revert_failure
    if failure is not None:
        text = error_text(failure)
        return (text if len(text) <= 2000 else text[:2000] + " …"), True
    return _text(atom.result), False


#: The most characters of a traceback shown (the end, where the error is, is kept).
TRACE_CHARS = 20_000


def _failure(failure: Failure, css: str = "failure") -> str:
    """A failure's one line, and its traceback (the last TRACE_CHARS) in a <details>."""
    line = error_text(failure)
    out = f'<pre class="{css}">{e(line if len(line) <= 2000 else line[:2000] + " …")}</pre>'
    trace = failure.traceback_text
    if trace:
        trace = trace if len(trace) <= TRACE_CHARS else "… " + trace[-TRACE_CHARS:]
        out += f"<details><summary>Traceback</summary><pre>{e(trace)}</pre></details>"
    return out


def _inputs(atom: AtomDetail, inputs: Inputs | None) -> str:
    if inputs is None or inputs.unknown is not None:
        why = inputs.unknown if inputs is not None else "not looked up"
        return f'<p class="muted">inputs unknown: {e(why)}</p>'
    values = inputs.values.get(atom.name)
    if values is None:
        return '<p class="muted">inputs unknown: they cannot be read from the stored results</p>'
    missing = inputs.missing.get(atom.name, [])
    if not values and not missing:
        return '<p class="muted">none</p>'
    rows = "".join(
        f"<tr><td><code>{e(k)}</code></td><td><pre>{e(_text(v))}</pre></td></tr>"
        for k, v in values.items()
    ) + "".join(
        f'<tr><td><code>{e(k)}</code></td><td class="muted">not available '
        "(no provider of it succeeded)</td></tr>"
        for k in missing
    )
    return (
        f'<table class="inputs"><caption>Arguments of {e(atom.name)}</caption><thead><tr>'
        '<th scope="col">Name</th><th scope="col">Value</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>"
    )


def _history(atom: AtomDetail) -> str:
    """A retry controller's attempts: each value, and what failed under it."""
    if atom.history is None:
        return ""
    items = []
    for n, attempt in enumerate(atom.history, 1):
        failed = "".join(
            f"<li><code>{e(name)}</code> failed: {_failure(f)}</li>"
            for name, f in attempt.failures.items()
        )
        items.append(
            f"<li>Attempt {n}: <pre>{e(_text(attempt.value))}</pre>"
            + (f"<ul>{failed}</ul>" if failed else "")
            + "</li>"
        )
    body = f'<ol class="history">{"".join(items)}</ol>' if items else "<p>no attempts yet</p>"
    return f"<dt>Retries</dt><dd>{body}</dd>"


def _story(atom: AtomDetail, inputs: Inputs | None, calls: list[tuple[str, ...]]) -> str:
    """Everything recorded about one atom, in a <details> (keyboard-reachable)."""
    parts = [
        f"<dt>Kind</dt><dd>{e(atom.kind)}</dd>",
        f"<dt>Intention</dt><dd>{e(atom.intention)}</dd>",
        f"<dt>Attempts</dt><dd>{atom.attempts}</dd>",
        f"<dt>Inputs</dt><dd>{_inputs(atom, inputs)}</dd>",
    ]
    if atom.failure is None:
        parts.append(f'<dt>Result</dt><dd><pre class="result">{e(_text(atom.result))}</pre></dd>')
    else:
        parts.append(f"<dt>Failure</dt><dd>{_failure(atom.failure)}</dd>")
    parts.append(_history(atom))
    meta = atom.meta if isinstance(atom.meta, dict) else {}
    reverted = atom.revert_result is not None or atom.revert_failure is not None
    if reverted or atom.state in ("REVERTING", "REVERTED", "REVERT_FAILURE"):
        revert = (
            _failure(atom.revert_failure)
            if atom.revert_failure is not None
            else f'<pre class="result">{e(_text(atom.revert_result))}</pre>'
        )
        tries = meta.get("revert_tries")
        if isinstance(tries, int) and not isinstance(tries, bool):
            revert += f"<p>Revert tries: {tries}</p>"
        parts.append(f"<dt>Revert</dt><dd>{revert}</dd>")
    waited = meta.get("waited")
    if isinstance(waited, dict):
        parts.append(
            f"<dt>Waited</dt><dd>for {e(waited.get('event') or 'a timer')}, "
            f"ended by {e(waited.get('ended_by'))}</dd>"
        )
    if calls:
        lines = "".join(
            f"<li>{e(kind)} at {e(start)} s"
            + (f", took {e(took)}" if took else "")
            + f": {e(outcome or 'unknown')}</li>"
            for _, kind, start, _, took, outcome in calls
        )
        parts.append(f'<dt>Calls</dt><dd><ol class="calls">{lines}</ol></dd>')
    return (
        f'<details class="story" data-story="{e(atom.name)}"><summary>'
        f"<code>{e(atom.name)}</code> {state_badge(atom.state)}</summary>"
        f'<dl class="story">{"".join(parts)}</dl></details>'
    )


def _timeline(root: str, detail: FlowDetail, chart: timeline.Chart) -> str:
    base = f"{e(root)}/flows/{e(detail.uuid)}"
    return (
        '<section class="timeline"><h2 id="timeline-heading">Timeline</h2>'
        f'<figure class="timeline" data-poll="{base}/timeline.json">'
        f"{timeline.svg(chart)}"
        f'<figcaption><span id="timeline-label">{e(chart.label)}</span> '
        f'(<a href="{base}/timeline.svg">as a picture</a>)</figcaption></figure>'
        "<details><summary>The timeline as a table</summary>"
        '<table class="calls"><caption>Calls, per atom, seconds from the first start</caption>'
        '<thead><tr><th scope="col">Atom</th><th scope="col">Call</th>'
        '<th scope="col">Start</th><th scope="col">End</th><th scope="col">Took</th>'
        '<th scope="col">Outcome</th></tr></thead>'
        f'<tbody id="timeline-rows">{timeline.table(chart)}</tbody></table></details></section>'
    )


def _atom_row(atom: AtomDetail) -> str:
    text, failed = _outcome(atom)
    outcome = f'<pre class="{"failure" if failed else "result"}">{e(text)}</pre>'
    failure = atom.failure or atom.revert_failure
    if failure is not None and failure.traceback_text:
        trace = failure.traceback_text
        trace = trace if len(trace) <= TRACE_CHARS else "… " + trace[-TRACE_CHARS:]
        outcome += f"<details><summary>Traceback</summary><pre>{e(trace)}</pre></details>"
    return (
        f'<tr data-atom="{e(atom.name)}"><td>{e(atom.name)}</td><td>{e(atom.kind)}</td>'
        f'<td class="atom-state">{state_badge(atom.state)}</td>'
        f'<td class="attempts">{atom.attempts}</td>'
        f'<td class="took">{e(_took(atom))}</td><td class="outcome">{outcome}</td></tr>'
    )


def _actions(root: str, detail: FlowDetail, csrf: str | None) -> str:
    if csrf is None or detail.state in ENDED:
        return ""
    base = f"{e(root)}/flows/{e(detail.uuid)}"
    hidden = f'<input type="hidden" name="csrf" value="{e(csrf)}">'
    events = [str(x) for x in (detail.meta.get("events") or [])]
    out = ['<section class="actions"><h2>Actions</h2>']
    if events and detail.state not in ENDED:
        choices = "".join(f'<option value="{e(x)}">{e(x)}</option>' for x in events)
        out.append(
            f'<form method="post" action="{base}/signal" class="confirm" '
            f'data-confirm="Send this signal?">{hidden}'
            f'<label for="event">Event</label><select id="event" name="event">{choices}</select>'
            f'<label for="payload">Payload (JSON)</label>'
            f'<textarea id="payload" name="payload" rows="3">null</textarea>'
            '<button type="submit">Send signal</button></form>'
        )
    if detail.state in (FlowState.SUSPENDED, FlowState.WAITING):
        out.append(
            f'<form method="post" action="{base}/resume" class="confirm" '
            f'data-confirm="Resume this flow?">{hidden}<button type="submit">Resume</button></form>'
        )
    if detail.state in (FlowState.PENDING, FlowState.RUNNING, FlowState.RESUMING):
        out.append(
            f'<form method="post" action="{base}/suspend" class="confirm" '
            f'data-confirm="Suspend this flow? Running steps finish; nothing new starts.">'
            f'{hidden}<button type="submit">Suspend</button></form>'
        )
    out.append(
        f'<form method="post" action="{base}/cancel" class="confirm" '
        f'data-confirm="Cancel this flow? Everything it did will be reverted.">{hidden}'
        '<label for="reason">Reason</label><input id="reason" name="reason" maxlength="2000">'
        '<button type="submit" class="danger">Cancel flow</button></form>'
    )
    out.append("</section>")
    return "".join(out)


def _asked(detail: FlowDetail, asked: Sequence[Signal]) -> str:
    """Suspend or cancel requests stored but not taken yet (so nobody asks twice)."""
    lines = []
    for request in asked:
        payload = request.payload if isinstance(request.payload, dict) else {}
        action, by = str(payload.get("action", "?")), str(payload.get("by", "") or "someone")
        if detail.state in ENDED:
            what = "was not applied: the flow ended first"
        else:
            what = "waits for the engine running the flow (it looks at each lease renewal)"
        lines.append(
            f"<li>{e(action.capitalize())} asked by {e(by)} at {when(request.created_at)} "
            f"{what}.</li>"
        )
    return f'<ul class="notice asked" role="status">{"".join(lines)}</ul>' if lines else ""


def _done(actions: Sequence[Action]) -> str:
    """The actions taken on the flow through the UI (its record in the action log)."""
    if not actions:
        return ""
    rows = "".join(
        f"<tr><td>{when(a.at)}</td><td>{e(a.who)}</td><td>{e(a.action)}</td>"
        f"<td>{e(a.detail)}</td></tr>"
        for a in actions
    )
    return (
        '<section><h2>Actions taken</h2><table class="actions-log">'
        "<caption>Actions taken on this flow through the UI, newest first</caption><thead><tr>"
        '<th scope="col">When</th><th scope="col">Who</th><th scope="col">Action</th>'
        f'<th scope="col">Detail</th></tr></thead><tbody>{rows}</tbody></table></section>'
    )


def flow_page(
    root: str,
    detail: FlowDetail,
    *,
    csrf: str | None = None,
    notice: str = "",
    inputs: Inputs | None = None,
    done: Sequence[Action] = (),
    asked: Sequence[Signal] = (),
) -> str:
    """One flow: its state, what it waits for, its failures, its picture, a timeline
    of its calls, a table of its atoms and each atom's whole story.

    `csrf` (a token) is given only when actions are allowed; then the action
    forms are shown. `inputs` are the atoms' arguments (`inspection.atom_inputs`).
    The page polls `<flow>/atoms.json` (ui.js) to update the states in place,
    and redraws the timeline from `<flow>/timeline.json` when the flow moves on.
    """
    waits = "".join(
        f"<li>{e(w.atom)} waits for "
        + (f"signal <code>{e(w.event)}</code>" if w.event else "a timer")
        + (f" until {when(w.deadline)}" if w.deadline is not None else " (no deadline)")
        + "</li>"
        for w in waits_of(detail)
    )
    failures = "".join(f"<li>{e(line)}</li>" for line in failure_lines(detail))
    ordered = sorted(detail.atoms.values(), key=lambda a: a.position)
    atoms = "".join(_atom_row(a) for a in ordered)
    chart = timeline.layout(detail)
    calls: dict[str, list[tuple[str, ...]]] = {}
    for row in chart.rows:
        calls.setdefault(row[0], []).append(row)
    stories = "".join(_story(a, inputs, calls.get(a.name, [])) for a in ordered)
    shown = f'<p class="notice" role="status">{e(notice)}</p>' if notice else ""
    shown += _asked(detail, asked)
    body = (
        f"<h1>{e(detail.name)}</h1>{shown}"
        f'<dl class="flow" data-flow="{e(detail.uuid)}" '
        f'data-poll="{e(root)}/flows/{e(detail.uuid)}/atoms.json">'
        f"<dt>Id</dt><dd><code>{e(detail.uuid)}</code></dd>"
        f'<dt>State</dt><dd id="flow-state">{state_badge(detail.state)}</dd>'
        f"<dt>Created</dt><dd>{when(detail.created_at)}</dd>"
        f"<dt>Updated</dt><dd>{when(detail.updated_at)}</dd>"
        f"<dt>Owner</dt><dd>{e(detail.owner or '')}</dd></dl>"
        + (
            f'<section><h2>Waiting for</h2><ul class="waits">{waits}</ul></section>'
            if waits
            else ""
        )
        + (
            f'<section><h2>Failures</h2><ul class="failures">{failures}</ul></section>'
            if failures
            else ""
        )
        + f'<figure class="picture"><img id="picture" alt="The flow, atoms coloured by state" '
        f'src="{e(root)}/flows/{e(detail.uuid)}/picture.svg?v={detail.version}"></figure>'
        + '<table class="atoms"><caption>Atoms</caption><thead><tr>'
        '<th scope="col">Atom</th><th scope="col">Kind</th><th scope="col">State</th>'
        '<th scope="col">Attempts</th><th scope="col">Duration</th>'
        f'<th scope="col">Result or failure</th></tr></thead><tbody>{atoms}</tbody></table>'
        + _timeline(root, detail, chart)
        + '<section class="stories"><h2>Atoms in detail</h2>'
        '<p class="muted">States update live; the rest is as of when this page was loaded.</p>'
        f"{stories}</section>" + _actions(root, detail, csrf) + _done(done)
    )
    return page(root, detail.name, body, script=True)


def _polled(atom: AtomDetail) -> dict[str, Any]:
    text, failed = _outcome(atom)
    return {
        "state": str(atom.state),
        "attempts": atom.attempts,
        "took": _took(atom),
        "outcome": readable(text),
        "failed": failed,
    }


def atom_states(detail: FlowDetail) -> dict[str, Any]:
    """What ui.js polls: the flow's state, and each atom's state, attempts, duration and
    result or failure as plain text (the script sets it as text, never as HTML)."""
    return {
        "flow_id": detail.uuid,
        "state": str(detail.state),
        "version": detail.version,
        "atoms": {a.name: _polled(a) for a in detail.atoms.values()},
    }
