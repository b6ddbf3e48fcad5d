"""`zag-async run` (one flow, with a live view of its atoms) and `zag-async demo`.

On a terminal the run is a rich table redrawn as events arrive; piped, it is
one plain line per change, so scripts and tests can follow it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import click

from ..atom import Atom
from ..events import Event
from ..factory import FactoryRef
from ..failure import error_text
from ..flow import Flow
from ..states import FlowState
from ..status import failure_lines
from .common import PROG, STORE_HELP, BadInput, is_memory, load_target, parse_store
from .output import interactive, make_console, seconds_text, styled

if TYPE_CHECKING:  # rich is imported when a run draws (see output.py)
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

__all__ = ["RunView", "demo", "run_command"]

#: Seconds between redraws of the live table while nothing happens.
_TICK = 0.125


class _AtomLine:
    __slots__ = ("duration", "failure", "name", "progress", "started", "state")

    def __init__(self, name: str, state: str, duration: float | None, failure: str | None):
        self.name = name
        self.state = state
        self.duration = duration
        self.failure = failure
        self.started: float | None = None
        self.progress: float | None = None


class RunView:
    """Follows an engine's events: a live table on a terminal, one line per change when piped."""

    def __init__(self, engine: Any, console: Console, *, live: bool) -> None:
        self.engine = engine
        self.console = console
        self.live = live
        self.lines: dict[str, _AtomLine] = {}
        for node in engine.compiled.nodes:
            detail = engine.storage.get(node.name)
            failure = detail.revert_failure or detail.failure
            self.lines[node.name] = _AtomLine(
                node.name,
                str(detail.state),
                detail.duration,
                None if failure is None else error_text(failure),
            )
        self._live: Live | None = None

    def __call__(self, event: Event) -> None:
        if event.kind == "flow":
            if not self.live:
                click.echo(f"flow {event.flow} {event.state}")
            return
        line = self.lines.get(event.atom or "")
        if line is None:
            return
        if event.kind == "progress":
            line.progress = event.progress
        else:
            line.state = event.state
            if event.state == "RUNNING":
                line.started, line.duration, line.progress = time.monotonic(), None, None
            if event.duration is not None:
                line.duration = event.duration
            if event.failure is not None:
                line.failure = error_text(event.failure)
            if not self.live:
                text = f"{line.name} {line.state}"
                if event.duration is not None:
                    text += f" {seconds_text(event.duration)}"
                if event.failure is not None:
                    text += f" ({line.failure})"
                click.echo(text)
        if self._live is not None:
            self._live.refresh()

    def table(self) -> Table:
        from rich import box
        from rich.table import Table

        table = Table(box=box.SIMPLE_HEAVY, title=f"flow {self.engine.name}", title_justify="left")
        for header in ("ATOM", "STATE", "ATTEMPTS", "DURATION", "FAILURE"):
            table.add_column(header, no_wrap=header != "FAILURE")
        now = time.monotonic()
        for line in self.lines.values():
            state = styled(line.state)
            if line.state == "RUNNING" and line.progress is not None:
                state.append(f" {line.progress * 100:.0f}%")
            duration = line.duration
            if line.state == "RUNNING" and line.started is not None:
                duration = now - line.started
            attempts = self.engine.storage.get(line.name).attempts
            table.add_row(
                line.name, state, str(attempts), seconds_text(duration), line.failure or ""
            )
        return table

    @contextlib.asynccontextmanager
    async def showing(self) -> AsyncIterator[None]:
        """Draw the live table while inside (a no-op for plain lines).

        Redrawn on every event, and a few times a second by a timer on this
        event loop so running atoms' durations advance (rich's own refresh
        thread stays off; a timer, unlike a task, needs no owner to stop it).
        """
        if not self.live:
            yield
            return
        from rich.live import Live

        loop = asyncio.get_running_loop()
        with Live(get_renderable=self.table, console=self.console, auto_refresh=False) as live:
            self._live = live
            timer: asyncio.TimerHandle

            def tick() -> None:
                nonlocal timer
                live.refresh()
                timer = loop.call_later(_TICK, tick)

            timer = loop.call_later(_TICK, tick)
            try:
                yield
            finally:
                timer.cancel()
                live.refresh()
                self._live = None


@click.command()
def demo() -> None:
    """Run the built-in demonstration flow (an order pipeline)."""
    from ..demo import run_demo

    run_demo()


@click.command("run")
@click.argument("factory", required=False, metavar="MODULE:FACTORY")
@click.argument("args", nargs=-1, metavar="[ARG]...")
@click.option("--store", "-s", "store", multiple=True, metavar="KEY=VALUE", help=STORE_HELP)
@click.option(
    "--backend",
    default="memory://",
    show_default=True,
    envvar="ZAG_BACKEND",
    show_envvar=True,
    metavar="URL",
    help="Where the flow's state is kept; with a database the flow id is printed.",
)
@click.option("--resume", "resume_id", metavar="FLOW_ID", help="Resume a stored flow instead.")
@click.option(
    "--allow-changes",
    is_flag=True,
    help="With --resume: match stored atoms by name even if the flow changed since.",
)
@click.option("--max-concurrency", type=click.IntRange(min=1), help="Atoms run at once.")
@click.option("--plain", is_flag=True, help="Plain lines even on a terminal.")
def run_command(
    factory: str | None,
    args: tuple[str, ...],
    store: tuple[str, ...],
    backend: str,
    resume_id: str | None,
    allow_changes: bool,
    max_concurrency: int | None,
    plain: bool,
) -> int:
    """Run a flow, with a live view of its atoms.

    Runs the flow MODULE:FACTORY builds (or resumes a stored one). On a
    terminal a live table shows each atom's state, attempts, duration and
    failure; piped, one line per change (`atom STATE 12.3ms`). Exits 0 when
    the flow ends SUCCESS, 1 when it ends REVERTED or FAILURE.

    ARGs are passed to the factory, each read as JSON when it parses, else as
    a string.
    """
    values = parse_store(store)
    if factory is None and resume_id is None:
        raise click.UsageError("missing MODULE:FACTORY (or --resume FLOW_ID)")
    if allow_changes and resume_id is None:
        raise click.UsageError("--allow-changes applies only with --resume FLOW_ID")
    flow: Flow | Atom | None = None
    ref: FactoryRef | None = None
    if factory is not None:
        flow, ref = load_target(factory, args)
    console = make_console()
    return asyncio.run(
        _run_flow(
            flow,
            ref,
            values,
            backend,
            resume_id,
            max_concurrency,
            console,
            not plain,
            allow_changes=allow_changes,
        )  # fmt: skip
    )


async def _run_flow(
    flow: Flow | Atom | None,
    ref: FactoryRef | None,
    store: dict[str, Any],
    backend_url: str,
    resume_id: str | None,
    max_concurrency: int | None,
    console: Console,
    live: bool,
    *,
    allow_changes: bool = False,
) -> int:
    from ..engine import Engine
    from ..errors import FlowChanged
    from ..persistence import connect

    durable = not is_memory(backend_url)
    async with connect(backend_url) as backend:
        options: dict[str, Any] = {"max_concurrency": max_concurrency}
        if store:
            options["store"] = store
        if resume_id is not None:
            if flow is None and "factory" not in (await backend.load_flow(resume_id)).meta:
                raise BadInput(
                    f"flow {resume_id} was not started from a factory: give the flow to resume, "
                    f"as in: {PROG} run MODULE:NAME --resume {resume_id}"
                )
            try:
                engine = await Engine.load(
                    resume_id, backend=backend, flow=flow, allow_changes=allow_changes, **options
                )
            except FlowChanged as exc:
                # The engine's advice names its keyword; here the same choice is a flag.
                advice = str(exc).replace("pass allow_changes=True", "pass --allow-changes")
                raise BadInput(advice) from None
        elif ref is not None:
            engine = Engine.from_factory(
                ref.path, args=ref.args, backend=backend if durable else None, **options
            )
        else:
            assert flow is not None
            engine = Engine(flow, backend=backend if durable else None, **options)
        if durable:
            click.echo(f"flow {engine.name} {engine.flow_id}")
        view = RunView(engine, console, live=live and interactive(console))
        engine.add_listener(view)
        started = time.monotonic()
        # SIGINT and SIGTERM suspend the flow. Both are handled here: asyncio.run only
        # turns SIGINT into a cancel when the process did not inherit it ignored (as
        # commands started in the background by a non-interactive shell do).
        received: list[signal.Signals] = []
        main_task = asyncio.current_task()
        assert main_task is not None

        def interrupt(sig: signal.Signals) -> None:
            received.append(sig)
            main_task.cancel()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, interrupt, sig)
        try:
            async with view.showing():
                results = await engine.run()
        except asyncio.CancelledError:
            if durable:
                click.echo(
                    f"{PROG}: flow {engine.flow_id} {engine.state}; resume it with: "
                    f"{PROG} run --resume {engine.flow_id} --backend {backend_url}",
                    err=True,
                )
            if received:
                raise click.exceptions.Exit(128 + received[0]) from None
            raise
        except Exception:
            if engine.state not in (
                FlowState.REVERTED,
                FlowState.FAILURE,
                FlowState.UNCOMPENSATED,
                FlowState.STUCK_PAST_PIVOT,
            ):
                raise
            click.echo(
                f"flow {engine.name} {engine.state} in {seconds_text(time.monotonic() - started)}"
            )
            for line in failure_lines(engine.storage.flow):
                click.echo(f"{PROG}: flow {engine.name} {engine.state}: {line}", err=True)
            return 1
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        click.echo(
            f"flow {engine.name} {engine.state} in {seconds_text(time.monotonic() - started)}"
        )
        click.echo(f"results: {json.dumps(dict(results), default=repr, sort_keys=True)}")
        return 0
