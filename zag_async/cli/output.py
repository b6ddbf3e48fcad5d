"""How the `zag-async` command line shows things: rich tables on a terminal,
plain aligned columns when piped, and the few formats (durations, times)
every command prints the same way.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from ..compensation import unreverted_of
from ..inspection import describe_flow
from ..models import FlowDetail
from .common import BadInput

if TYPE_CHECKING:  # rich is imported by the commands that draw (worker, conductor... do not)
    from rich.console import Console
    from rich.text import Text

__all__ = [
    "STATE_STYLES",
    "emit_table",
    "interactive",
    "make_console",
    "seconds_text",
    "show_flow",
    "styled",
    "time_text",
    "write_bytes",
]

STATE_STYLES = {
    "PENDING": "dim",
    "RUNNING": "bold blue",
    "SUCCESS": "green",
    "FAILURE": "bold red",
    "REVERTING": "yellow",
    "REVERTED": "yellow",
    "REVERT_FAILURE": "bold red",
    "RETRYING": "magenta",
    "IGNORE": "dim",
    "UNCOMPENSATED": "bold red",
    "STUCK_PAST_PIVOT": "bold red",
}


def make_console() -> Console:
    from rich.console import Console

    return Console(highlight=False)


def interactive(console: Console) -> bool:
    return console.is_terminal


def seconds_text(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.1f}ms"
    return f"{seconds:.2f}s"


def time_text(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def styled(state: str) -> Text:
    from rich.text import Text

    return Text(state, style=STATE_STYLES.get(state, ""))


def emit_table(
    console: Console, headers: Sequence[str], rows: Sequence[Sequence[str]], title: str = ""
) -> None:
    """A rich table on a terminal; plain aligned columns (header first) when piped."""
    if interactive(console):
        from rich import box
        from rich.table import Table

        table = Table(title=title or None, box=box.SIMPLE_HEAVY, title_justify="left")
        for header in headers:
            table.add_column(header, no_wrap=header in ("FLOW", "JOB", "ATOM"))
        for row in rows:
            table.add_row(
                *(styled(c) if h == "STATE" else c for h, c in zip(headers, row, strict=True))
            )
        console.print(table)
        return
    if title:
        click.echo(title)
    lines = [list(headers), *[list(r) for r in rows]]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers) - 1)]
    for line in lines:
        cells = [c.ljust(w) for c, w in zip(line, widths, strict=False)] + [line[-1]]
        click.echo("  ".join(cells).rstrip())


def write_bytes(data: bytes, output: str | None, *, binary: bool) -> None:
    if output is not None and output != "-":
        with open(output, "wb") as out:
            out.write(data)
        click.echo(f"wrote {output} ({len(data)} bytes)", err=True)
        return
    if binary and sys.stdout.isatty():
        raise BadInput("refusing to write a PNG to a terminal: pass -o FILE")
    sys.stdout.buffer.write(data)
    sys.stdout.flush()


def show_flow(console: Console, detail: FlowDetail) -> None:
    """A stored flow's atoms as a table: state, attempts, duration and failure."""
    rows = [
        [
            r.name,
            r.state,
            str(r.attempts),
            seconds_text(r.duration),
            r.revert_failure or r.failure or "",
        ]
        for r in describe_flow(detail)
    ]
    title = f"flow {detail.name} {detail.uuid} {detail.state} (version {detail.version})"
    emit_table(console, ["ATOM", "STATE", "ATTEMPTS", "DURATION", "FAILURE"], rows, title)
    left = unreverted_of(detail)
    if left:
        console.print(f"not reverted: {', '.join(left)}", style="bold red")
