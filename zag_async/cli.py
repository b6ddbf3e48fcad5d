"""The `zag-async` command line: run flows, serve workers and conductors, manage
jobs, inspect stored flows and draw flows.

    zag-async run myapp.flows:provision web-1 --store size=32 --backend sqlite+aiosqlite:///f.db
    zag-async flows show FLOW_ID --backend sqlite+aiosqlite:///f.db
    zag-async graph myapp.flows:provision web-1 --format svg -o provision.svg

Mistakes a user can make (an unknown module, a malformed --store value, a
server that does not answer) print one line `zag-async: ...` on stderr and
exit non-zero; `zag-async --debug ...` shows the traceback instead. Tables
and the live view of `run` use rich on a terminal and plain, aligned lines
when the output is piped. Only this module imports click and rich, so
`import zag_async` does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from . import __version__
from .atom import Atom
from .errors import (
    AlreadyClaimed,
    ConfigurationError,
    FlowDefinitionError,
    JobNotFound,
    NotFound,
    NotYetDue,
    ZagError,
)
from .events import Event
from .factory import FactoryRef, import_object
from .flow import Flow
from .models import FlowDetail
from .persistence.base import Backend
from .states import FlowState

__all__ = ["main", "run"]

PROG = "zag-async"
STORE_HELP = (
    "An initial store value, KEY=VALUE (repeatable). VALUE is read as JSON when it parses "
    '(42, 1.5, true, null, [1, 2], {"a": 1}, "quoted"), else taken as a plain string.'
)
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
}


# -- errors ---------------------------------------------------------------------------


class CliError(click.ClickException):
    """One line `zag-async: message` on stderr, then exit 1."""

    def show(self, file: Any = None) -> None:
        click.echo(f"{PROG}: {self.format_message()}", err=True)


class BadInput(CliError):
    """What the user typed cannot work: one line, then exit 2."""

    exit_code = 2


def _describe(exc: BaseException) -> str:
    """A one-line description of an exception a command let escape."""
    if isinstance(exc, (ZagError, OSError, TimeoutError)):
        text = str(exc) or repr(exc)
    else:
        text = f"{type(exc).__name__}: {exc} (run with --debug for the traceback)"
    return " ".join(text.split())


class _Group(click.Group):
    """The root group: every error below it becomes one line, unless --debug."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            bad_input = isinstance(exc, (ConfigurationError, FlowDefinitionError))
            raise (BadInput if bad_input else CliError)(_describe(exc)) from exc


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command line on `argv` (default: sys.argv[1:]); returns the exit code."""
    try:
        result = main.main(args=argv, prog_name=PROG, standalone_mode=False)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else PROG
        message = " ".join(exc.format_message().split())
        click.echo(f"{PROG}: {message} (see '{where} --help')", err=True)
        return 2
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo(f"{PROG}: interrupted", err=True)
        return 130
    return result if isinstance(result, int) else 0


class _OneLine(logging.Formatter):
    """Log records as single lines, without tracebacks."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{PROG}: {record.levelname.lower()}: {record.getMessage()}".split())


def _setup_logging(debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    root = logging.getLogger()
    if debug:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.setLevel(logging.INFO)
    else:
        # Our own warnings, one line each; drivers' reconnect chatter stays quiet.
        handler.setFormatter(_OneLine())
        handler.addFilter(logging.Filter("zag_async"))
        root.setLevel(logging.WARNING)
        threading.excepthook = _thread_failed
    root.handlers[:] = [handler]


def _thread_failed(args: threading.ExceptHookArgs) -> None:
    """One line for an exception that ends a driver's thread (no traceback).

    aiosqlite's thread may outlive a failed connect and then find the event
    loop closed: that is teardown noise after the error already reported.
    """
    exc = args.exc_value
    if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
        return
    name = args.thread.name if args.thread is not None else "?"
    text = exc if exc is not None else args.exc_type.__name__
    click.echo(f"{PROG}: warning: thread {name} failed: {text!r}", err=True)


# -- parsing ------------------------------------------------------------------------------


def parse_value(text: str) -> Any:
    """JSON when `text` parses as JSON, else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_store(pairs: Sequence[str]) -> dict[str, Any]:
    """`["a=1", "b=x"]` -> `{"a": 1, "b": "x"}`; CliError (exit 2) for a malformed pair."""
    store: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise BadInput(f"--store {pair!r} must be written KEY=VALUE (e.g. --store size=32)")
        store[key] = parse_value(value)
    return store


def _load_target(ref: str, args: Sequence[str]) -> tuple[Flow | Atom, FactoryRef | None]:
    """The flow at `module:name`: a factory (called with args) or a flow/atom object."""
    target = import_object(ref, "flow factory")
    if isinstance(target, (Flow, Atom)):
        if args:
            raise BadInput(f"{ref} is a flow, not a factory: it takes no arguments")
        return target, None
    if not callable(target):
        raise BadInput(
            f"{ref} is neither a flow factory nor a flow (it is {type(target).__name__})"
        )
    factory = FactoryRef(ref, tuple(parse_value(a) for a in args))
    return factory.build(), factory


def _is_memory(url: str) -> bool:
    return url.split("://", 1)[0].lower() == "memory"


def _require_shared(board: str, backend: str) -> None:
    if not _is_memory(board) and _is_memory(backend):
        raise BadInput(
            f"a {board.split('://', 1)[0]}:// board needs --backend set to the database its "
            f"jobs' flows are stored in (a memory:// backend lives and dies with this process)"
        )


# -- output -------------------------------------------------------------------------------


def _console() -> Console:
    return Console(highlight=False)


def _interactive(console: Console) -> bool:
    return console.is_terminal


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.1f}ms"
    return f"{seconds:.2f}s"


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _styled(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


def emit_table(
    console: Console, headers: Sequence[str], rows: Sequence[Sequence[str]], title: str = ""
) -> None:
    """A rich table on a terminal; plain aligned columns (header first) when piped."""
    if _interactive(console):
        table = Table(title=title or None, box=box.SIMPLE_HEAVY, title_justify="left")
        for header in headers:
            table.add_column(header, no_wrap=header in ("FLOW", "JOB", "ATOM"))
        for row in rows:
            table.add_row(
                *(_styled(c) if h == "STATE" else c for h, c in zip(headers, row, strict=True))
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


def _write_bytes(data: bytes, output: str | None, *, binary: bool) -> None:
    if output is not None and output != "-":
        with open(output, "wb") as out:
            out.write(data)
        click.echo(f"wrote {output} ({len(data)} bytes)", err=True)
        return
    if binary and sys.stdout.isatty():
        raise BadInput("refusing to write a PNG to a terminal: pass -o FILE")
    sys.stdout.buffer.write(data)
    sys.stdout.flush()


# -- the live view of a run ---------------------------------------------------------------


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
                None if failure is None else f"{failure.exception_type}: {failure.message}",
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
                line.failure = f"{event.failure.exception_type}: {event.failure.message}"
            if not self.live:
                text = f"{line.name} {line.state}"
                if event.duration is not None:
                    text += f" {_ms(event.duration)}"
                if event.failure is not None:
                    text += f" ({line.failure})"
                click.echo(text)
        if self._live is not None:
            self._live.refresh()

    def table(self) -> Table:
        table = Table(box=box.SIMPLE_HEAVY, title=f"flow {self.engine.name}", title_justify="left")
        for header in ("ATOM", "STATE", "ATTEMPTS", "DURATION", "FAILURE"):
            table.add_column(header, no_wrap=header != "FAILURE")
        now = time.monotonic()
        for line in self.lines.values():
            state = _styled(line.state)
            if line.state == "RUNNING" and line.progress is not None:
                state.append(f" {line.progress * 100:.0f}%")
            duration = line.duration
            if line.state == "RUNNING" and line.started is not None:
                duration = now - line.started
            attempts = self.engine.storage.get(line.name).attempts
            table.add_row(line.name, state, str(attempts), _ms(duration), line.failure or "")
        return table

    @contextlib.asynccontextmanager
    async def showing(self) -> AsyncIterator[None]:
        """Draw the live table while inside (a no-op for plain lines).

        Redrawn on every event, and a few times a second by a ticker on this
        event loop so running atoms' durations advance (rich's own refresh
        thread stays off).
        """
        if not self.live:
            yield
            return
        with Live(get_renderable=self.table, console=self.console, auto_refresh=False) as live:
            self._live = live
            ticker = asyncio.create_task(self._tick(live))
            try:
                yield
            finally:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
                live.refresh()
                self._live = None

    @staticmethod
    async def _tick(live: Live) -> None:
        while True:
            await asyncio.sleep(0.125)
            live.refresh()


def _failure_lines(detail: FlowDetail) -> list[str]:
    lines = []
    for atom in detail.atoms.values():
        if atom.failure is not None:
            f = atom.failure
            lines.append(f"{atom.name} failed: {f.exception_type}: {f.message}")
        if atom.revert_failure is not None:
            f = atom.revert_failure
            lines.append(f"reverting {atom.name} failed: {f.exception_type}: {f.message}")
    return lines


# -- the commands ------------------------------------------------------------------------


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--debug", is_flag=True, envvar="ZAG_DEBUG", help="Show tracebacks and debug logging."
)
@click.version_option(__version__, prog_name=PROG)
def main(debug: bool) -> None:
    """zag-async: run, distribute and inspect reliable asyncio workflows.

    Flows are named MODULE:NAME, a flow factory (a function returning a flow)
    or a flow object; the current directory is importable.
    """
    _setup_logging(debug)
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


@main.command()
def demo() -> None:
    """Run the built-in demonstration flow (an order pipeline)."""
    from .demo import run_demo

    run_demo()


@main.group()
def db() -> None:
    """Manage a storage database."""


@db.command("upgrade")
@click.argument("url")
def db_upgrade(url: str) -> None:
    """Create or upgrade the schema at URL (sqlite+aiosqlite:///f.db, postgresql+asyncpg://...)."""
    from .persistence import upgrade

    version = asyncio.run(upgrade(url))
    click.echo(f"schema at version {version}")


@main.command("run")
@click.argument("factory", required=False, metavar="MODULE:FACTORY")
@click.argument("args", nargs=-1, metavar="[ARG]...")
@click.option("--store", "-s", "store", multiple=True, metavar="KEY=VALUE", help=STORE_HELP)
@click.option(
    "--backend",
    default="memory://",
    show_default=True,
    envvar="ZAG_BACKEND",
    metavar="URL",
    help="Where the flow's state is kept; with a database the flow id is printed.",
)
@click.option("--resume", "resume_id", metavar="FLOW_ID", help="Resume a stored flow instead.")
@click.option("--max-concurrency", type=click.IntRange(min=1), help="Atoms run at once.")
@click.option("--plain", is_flag=True, help="Plain lines even on a terminal.")
def run_command(
    factory: str | None,
    args: tuple[str, ...],
    store: tuple[str, ...],
    backend: str,
    resume_id: str | None,
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
    flow: Flow | Atom | None = None
    ref: FactoryRef | None = None
    if factory is not None:
        flow, ref = _load_target(factory, args)
    console = _console()
    return asyncio.run(
        _run_flow(flow, ref, values, backend, resume_id, max_concurrency, console, not plain)
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
) -> int:
    from .engine import Engine
    from .persistence import connect

    durable = not _is_memory(backend_url)
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
            engine = await Engine.load(resume_id, backend=backend, flow=flow, **options)
        elif ref is not None:
            engine = Engine.from_factory(
                ref.path, args=ref.args, backend=backend if durable else None, **options
            )
        else:
            assert flow is not None
            engine = Engine(flow, backend=backend if durable else None, **options)
        if durable:
            click.echo(f"flow {engine.name} {engine.flow_id}")
        view = RunView(engine, console, live=live and _interactive(console))
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
            if engine.state not in (FlowState.REVERTED, FlowState.FAILURE):
                raise
            click.echo(f"flow {engine.name} {engine.state} in {_ms(time.monotonic() - started)}")
            for line in _failure_lines(engine.storage.flow):
                click.echo(f"{PROG}: flow {engine.name} {engine.state}: {line}", err=True)
            return 1
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        click.echo(f"flow {engine.name} {engine.state} in {_ms(time.monotonic() - started)}")
        click.echo(f"results: {json.dumps(dict(results), default=repr, sort_keys=True)}")
        return 0


@main.command()
@click.argument("tasks", nargs=-1, required=True, metavar="MODULE:TASKS...")
@click.option("--topic", required=True, help="Queue to take requests from.")
@click.option(
    "--url",
    default="amqp://guest:guest@127.0.0.1/",
    show_default=True,
    envvar="ZAG_AMQP",
    help="RabbitMQ URL.",
)
@click.option("--concurrency", type=click.IntRange(min=1), default=8, show_default=True)
def worker(tasks: tuple[str, ...], topic: str, url: str, concurrency: int) -> None:
    """Serve tasks to remote engines over RabbitMQ.

    Each MODULE:TASKS names an atom or a list of atoms. Runs until SIGINT or
    SIGTERM, then finishes what it is running.
    """
    atoms: list[Atom] = []
    for ref in tasks:
        found = import_object(ref, "task list")
        items = found if isinstance(found, (list, tuple)) else [found]
        for item in items:
            if not isinstance(item, Atom):
                raise BadInput(f"{ref} is not an atom or a list of atoms")
            atoms.append(item)

    async def serve() -> None:
        from .workers.amqp import Worker

        async with Worker(url, topic=topic, tasks=atoms, concurrency=concurrency) as running:
            with _on_signals(running.stop):
                click.echo(
                    f"worker {running.name} serving {len(running.tasks)} tasks on topic {topic!r}"
                )
                sys.stdout.flush()
                await running.serve()

    asyncio.run(serve())


@contextlib.contextmanager
def _on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """Call `stop()` on SIGINT and SIGTERM while inside (graceful shutdown)."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop)
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


BOARD_HELP = "Job board URL: memory:// or zookeeper://host:2181/path."
board_option = click.option(
    "--board", required=True, envvar="ZAG_BOARD", metavar="URL", help=BOARD_HELP
)
timeout_option = click.option(
    "--timeout",
    type=click.FloatRange(min=0.5),
    default=10.0,
    show_default=True,
    help="Seconds to wait for the board's server.",
)


def backend_option(required: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    extra: dict[str, Any] = {"required": True} if required else {"default": "memory://"}
    return click.option(
        "--backend",
        show_default=not required,
        envvar="ZAG_BACKEND",
        metavar="URL",
        help="Flow-state database (sqlite+aiosqlite:///f.db, postgresql+asyncpg://...).",
        **extra,
    )


#: pictures.FORMATS, spelled out: importing pictures loads the compiler, which most
#: commands never need (tests/cli/test_pictures.py checks the two agree).
PICTURE_FORMATS = ("mermaid", "dot", "svg", "png")


def picture_format_option(
    help_text: str | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(PICTURE_FORMATS),
        default="mermaid",
        show_default=True,
        help=help_text,
    )


@contextlib.asynccontextmanager
async def _board(board_url: str, backend_url: str, wait: float | None) -> AsyncIterator[Any]:
    """An open (database, board) pair; `wait` bounds reaching a ZooKeeper board."""
    from . import jobs
    from .persistence import connect

    options: dict[str, Any] = {}
    if wait is not None and board_url.split("://", 1)[0].lower() == "zookeeper":
        options = {"call_timeout": wait / 2, "session_timeout": wait / 2}
    async with (
        connect(backend_url) as database,
        jobs.connect(board_url, persistence=database, **options) as board,
    ):
        yield database, board


@main.command()
@board_option
@backend_option(required=True)
@click.option("--max-jobs", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--name", help="This conductor's name (owner of its claims); default host:pid.")
@click.option("--build-attempts", type=click.IntRange(min=1), default=3, show_default=True)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    help="Serve Prometheus metrics on http://HOST:PORT/metrics (needs zag-async[prometheus]).",
)
@click.option("--metrics-host", default="127.0.0.1", show_default=True)
def conductor(
    board: str,
    backend: str,
    max_jobs: int,
    name: str | None,
    build_attempts: int,
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    """Claim jobs from a board and run their flows.

    Runs until SIGINT or SIGTERM: then it stops claiming, lets running flows reach a safe point and
    hands their jobs back, so another conductor resumes them. With --metrics-port it counts jobs,
    atoms, retries and durations, and the board's pending jobs, for Prometheus to scrape.
    """
    _require_shared(board, backend)

    def report(event: Any) -> None:
        text = f"{event.kind} job {event.job.name} {event.job.uuid}"
        if event.outcome is not None:
            text += f" {event.outcome.state}"
        if event.detail:
            text += f": {event.detail}"
        click.echo(text)
        sys.stdout.flush()

    async def conduct() -> None:
        from .jobs.conductor import Conductor

        async with contextlib.AsyncExitStack() as stack:
            database, opened = await stack.enter_async_context(_board(board, backend, None))
            listeners: list[Any] = [report]
            engine_listeners = None
            if metrics_port is not None:
                from .metrics import Metrics, serve_metrics

                metrics = Metrics()
                listeners.append(metrics)
                engine_listeners = lambda _job: [metrics]  # noqa: E731
                await stack.enter_async_context(metrics.watch_board(opened))
                served = await stack.enter_async_context(
                    serve_metrics(metrics, host=metrics_host, port=metrics_port)
                )
                click.echo(f"metrics at {served.url}")
            running = await stack.enter_async_context(
                Conductor(
                    opened,
                    persistence=database,
                    name=name,
                    max_jobs=max_jobs,
                    build_attempts=build_attempts,
                    listeners=listeners,
                    engine_listeners=engine_listeners,
                )
            )
            with _on_signals(running.stop):
                click.echo(f"conductor {running.name} running jobs from {board}")
                sys.stdout.flush()
                await running.run()
        click.echo("conductor stopped")

    asyncio.run(conduct())


# -- jobs -----------------------------------------------------------------------------------


@main.group()
def jobs() -> None:
    """Post, list, show and trash jobs on a job board."""


@jobs.command("list")
@board_option
@timeout_option
@click.option("--state", type=click.Choice(["UNCLAIMED", "CLAIMED"]), help="Only these jobs.")
def jobs_list(board: str, timeout: float, state: str | None) -> None:
    """List the jobs on a board, in claim order (the board alone: no database needed)."""
    from .jobs import JobState

    async def listing() -> list[list[str]]:
        async with _board(board, "memory://", timeout) as (_database, opened):
            found = await opened.jobs(state=None if state is None else JobState(state))
            now = await opened.now()
            rows = []
            for job in found:
                owner = await opened.find_owner(job) if job.state == JobState.CLAIMED else None
                due = f"in {job.due_at - now:.1f}s" if job.due_at > now else "now"
                rows.append(
                    [job.uuid, job.name, str(job.state), str(job.priority), due, owner or "",
                     job.flow_id]
                )  # fmt: skip
            return rows

    rows = asyncio.run(listing())
    headers = ["JOB", "NAME", "STATE", "PRIORITY", "DUE", "OWNER", "FLOW"]
    emit_table(_console(), headers, rows)


@jobs.command("post")
@click.argument("factory", metavar="MODULE:FACTORY")
@click.argument("args", nargs=-1, metavar="[ARG]...")
@board_option
@backend_option(required=False)
@timeout_option
@click.option("--store", "-s", "store", multiple=True, metavar="KEY=VALUE", help=STORE_HELP)
@click.option("--name", help="The job's name (default: the factory's name).")
@click.option("--key", help="Idempotency key: posting again with it returns the same job.")
@click.option("--priority", type=int, default=0, show_default=True)
@click.option("--delay", type=click.FloatRange(min=0), default=0.0, help="Seconds before due.")
def jobs_post(
    factory: str,
    args: tuple[str, ...],
    board: str,
    backend: str,
    timeout: float,
    store: tuple[str, ...],
    name: str | None,
    key: str | None,
    priority: int,
    delay: float,
) -> None:
    """Post a job that runs the flow MODULE:FACTORY builds from ARGs.

    ARGs are passed to the factory, each read as JSON when it parses, else as
    a string. Prints the job's id and its flow's id.
    """
    from .factory import resolve_factory

    values = parse_store(store)
    _require_shared(board, backend)
    resolve_factory(factory)  # an unknown module fails here, not in a conductor
    job_name = name or factory.rsplit(":", 1)[-1].rsplit(".", 1)[-1]

    async def post() -> Any:
        async with _board(board, backend, timeout) as (_database, opened):
            return await opened.post(
                job_name,
                factory,
                *(parse_value(a) for a in args),
                store=values,
                priority=priority,
                delay=delay,
                idempotency_key=key,
            )

    job = asyncio.run(post())
    click.echo(f"posted job {job.uuid} {job.name} flow {job.flow_id}")


@jobs.command("show")
@click.argument("job_id")
@board_option
@backend_option(required=False)
@timeout_option
def jobs_show(job_id: str, board: str, backend: str, timeout: float) -> None:
    """Show one job (or how it ended); with --backend, its flow's atoms too."""

    async def show() -> tuple[list[tuple[str, str]], FlowDetail | None]:
        async with _board(board, backend, timeout) as (database, opened):
            fields: list[tuple[str, str]]
            try:
                job = await opened.get(job_id)
            except JobNotFound:
                outcome = await opened.outcome(job_id)
                if outcome is None:
                    raise
                fields = [
                    ("job", outcome.job_id),
                    ("state", "TRASHED" if outcome.state == "TRASHED" else "COMPLETE"),
                    ("outcome", outcome.state),
                    ("flow", outcome.flow_id),
                ]
                if outcome.error:
                    fields.append(("error", outcome.error))
                flow_id = outcome.flow_id
            else:
                owner = await opened.find_owner(job)
                fields = [
                    ("job", job.uuid),
                    ("name", job.name),
                    ("state", str(job.state)),
                    ("owner", owner or ""),
                    ("flow", job.flow_id),
                    ("factory", _factory_text(job.factory)),
                    ("priority", str(job.priority)),
                    ("posted", _when(job.posted_at) if job.posted_at else ""),
                    ("due", _when(job.due_at) if job.due_at else "at once"),
                    ("key", job.idempotency_key or ""),
                    ("schedule", job.schedule or ""),
                    ("build failures", str(job.build_failures)),
                ]
                flow_id = job.flow_id
            detail = None
            if not _is_memory(backend):
                with contextlib.suppress(NotFound):
                    detail = await database.load_flow(flow_id)
            return fields, detail

    fields, detail = asyncio.run(show())
    width = max(len(k) for k, _ in fields)
    for key, value in fields:
        click.echo(f"{key.ljust(width)}  {value}".rstrip())
    if detail is not None:
        click.echo("")
        _show_flow(_console(), detail)


def _factory_text(ref: FactoryRef) -> str:
    parts = [json.dumps(a, default=repr) for a in ref.args]
    parts += [f"{k}={json.dumps(v, default=repr)}" for k, v in ref.kwargs.items()]
    return f"{ref.path}({', '.join(parts)})"


@jobs.command("trash")
@click.argument("job_id")
@board_option
@timeout_option
@click.option("--reason", default="trashed by hand", show_default=True)
def jobs_trash(job_id: str, board: str, timeout: float, reason: str) -> None:
    """Move an unclaimed job to the trash (it will not run).

    The job is claimed for a moment to trash it, so a delayed job can be
    trashed only once it is due.
    """

    async def trash() -> None:
        # Trashing records the outcome on the board; the flow record is left as it is.
        async with _board(board, "memory://", timeout) as (_database, opened):
            owner = f"{PROG}@{socket.gethostname()}:{os.getpid()}"
            try:
                claim = await opened.claim(job_id, owner)
            except AlreadyClaimed:
                holder = await opened.find_owner(job_id)
                raise CliError(
                    f"job {job_id} is claimed by {holder or 'another owner'}; "
                    f"only an unclaimed job can be trashed"
                ) from None
            except NotYetDue as exc:
                # Trashing goes through a claim, and a delayed job cannot be claimed early.
                raise CliError(f"{exc}: a delayed job can be trashed once it is due") from None
            await opened.trash(claim, reason)

    asyncio.run(trash())
    click.echo(f"trashed job {job_id}")


# -- flows ------------------------------------------------------------------------------------


@main.group()
def flows() -> None:
    """List and inspect flows stored in a database."""


@flows.command("list")
@backend_option(required=True)
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice([s.value for s in FlowState]),
    help="Only flows in this state (repeatable).",
)
@click.option("--logbook", help="Only flows of this logbook (uuid).")
def flows_list(backend: str, states: tuple[str, ...], logbook: str | None) -> None:
    """List stored flows, oldest first."""
    from .persistence import connect

    async def listing() -> list[Any]:
        async with connect(backend) as database:
            wanted = [FlowState(s) for s in states] or None
            return await database.list_flows(logbook=logbook, states=wanted)

    found = asyncio.run(listing())
    rows = [[f.uuid, f.name, str(f.state), _when(f.updated_at), f.owner or ""] for f in found]
    emit_table(_console(), ["FLOW", "NAME", "STATE", "UPDATED", "OWNER"], rows)


async def _load_detail(database: Backend, flow_id: str) -> FlowDetail:
    """The stored flow `flow_id`, also found by a unique prefix of its id."""
    try:
        return await database.load_flow(flow_id)
    except NotFound:
        if len(flow_id) >= 36:
            raise
        matches = [f.uuid for f in await database.list_flows() if f.uuid.startswith(flow_id)]
        if len(matches) != 1:
            raise NotFound(
                f"no flow {flow_id!r}, nor one whose id starts with it"
                if not matches
                else f"{flow_id!r} starts {len(matches)} flow ids; give more of it"
            ) from None
        return await database.load_flow(matches[0])


def _show_flow(console: Console, detail: FlowDetail) -> None:
    from .inspection import describe_flow

    rows = [
        [
            r.name,
            r.state,
            str(r.attempts),
            _ms(r.duration),
            r.revert_failure or r.failure or "",
        ]
        for r in describe_flow(detail)
    ]
    title = f"flow {detail.name} {detail.uuid} {detail.state} (version {detail.version})"
    emit_table(console, ["ATOM", "STATE", "ATTEMPTS", "DURATION", "FAILURE"], rows, title)


@flows.command("show")
@click.argument("flow_id")
@backend_option(required=True)
@click.option("--graph", "as_graph", is_flag=True, help="Draw the flow, atoms coloured by state.")
@picture_format_option(help_text="With --graph: the picture's format.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="With --graph: write here.")
@click.option(
    "--factory",
    metavar="MODULE:FACTORY",
    help="With --graph: rebuild the flow with this (default: the factory it was started from).",
)
def flows_show(
    flow_id: str,
    backend: str,
    as_graph: bool,
    fmt: str,
    output: str | None,
    factory: str | None,
) -> None:
    """Show a stored flow: a table of its atoms (state, attempts, duration, failure).

    FLOW_ID may be a unique prefix. With --graph, draw the flow instead, atoms
    coloured by their stored state.
    """
    from .persistence import connect

    async def load() -> FlowDetail:
        async with connect(backend) as database:
            return await _load_detail(database, flow_id)

    detail = asyncio.run(load())
    if not as_graph:
        _show_flow(_console(), detail)
        return
    from .pictures import render

    if factory is not None:
        flow, _ref = _load_target(factory, ())
    else:
        saved = detail.meta.get("factory")
        if saved is None:
            raise BadInput(
                f"flow {detail.name} ({detail.uuid}) was not started from a factory; "
                f"pass --factory MODULE:FACTORY to draw it"
            )
        flow = FactoryRef.from_dict(saved).build()
    states = {name: str(atom.state) for name, atom in detail.atoms.items()}
    _write_bytes(render(flow, fmt, states), output, binary=fmt == "png")


# -- pictures ---------------------------------------------------------------------------------


@main.command()
@click.argument("factory", metavar="MODULE:FACTORY")
@click.argument("args", nargs=-1, metavar="[ARG]...")
@picture_format_option()
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write here (not stdout).")
def graph(factory: str, args: tuple[str, ...], fmt: str, output: str | None) -> None:
    """Draw a flow as mermaid, dot, svg or png.

    Draws the flow MODULE:FACTORY builds (svg and png need Graphviz's dot
    program). Patterns are clusters, data edges are labelled with the names they carry,
    dashed edges only order, bold diamond edges are decider links and
    hexagons are retry controllers. ARGs are passed to the factory, each read
    as JSON when it parses, else as a string.
    """
    from .pictures import render

    flow, _ref = _load_target(factory, args)
    _write_bytes(render(flow, fmt), output, binary=fmt == "png")
