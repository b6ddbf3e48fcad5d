"""What every command of the `zag-async` command line shares: its errors, the
parsing of flow references and store values, the common options, opening a
board with its database, and graceful stop on signals.

The commands live in one module per group (runs, jobs, flows, workers); this
module keeps them from each writing their own copy of the same checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import click

from ..atom import Atom
from ..errors import ZagError
from ..factory import FactoryRef, import_object
from ..failure import error_text
from ..flow import Flow

__all__ = [
    "PICTURE_FORMATS",
    "PROG",
    "STORE_HELP",
    "BadInput",
    "CliError",
    "backend_option",
    "board_option",
    "describe_error",
    "is_memory",
    "limit_option",
    "load_target",
    "more_note",
    "on_signals",
    "open_board",
    "parse_store",
    "parse_value",
    "picture_format_option",
    "require_shared",
    "timeout_option",
]

PROG = "zag-async"
STORE_HELP = (
    "An initial store value, KEY=VALUE (repeatable). VALUE is read as JSON when it parses "
    '(42, 1.5, true, null, [1, 2], {"a": 1}, "quoted"), else taken as a plain string.'
)


# -- errors ---------------------------------------------------------------------------


class CliError(click.ClickException):
    """One line `zag-async: message` on stderr, then exit 1."""

    def show(self, file: Any = None) -> None:
        click.echo(f"{PROG}: {self.format_message()}", err=True)


class BadInput(CliError):
    """What the user typed cannot work: one line, then exit 2."""

    exit_code = 2


def describe_error(exc: BaseException) -> str:
    """A one-line description of an exception a command let escape."""
    if isinstance(exc, (ZagError, OSError, TimeoutError)):
        text = str(exc) or repr(exc)
    else:
        text = f"{error_text(exc)} (run with --debug for the traceback)"
    return " ".join(text.split())


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


def load_target(ref: str, args: Sequence[str]) -> tuple[Flow | Atom, FactoryRef | None]:
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


def is_memory(url: str) -> bool:
    return url.split("://", 1)[0].lower() == "memory"


def require_shared(board: str, backend: str) -> None:
    if not is_memory(board) and is_memory(backend):
        raise BadInput(
            f"a {board.split('://', 1)[0]}:// board needs --backend set to the database its "
            f"jobs' flows are stored in (a memory:// backend lives and dies with this process)"
        )


# -- options ------------------------------------------------------------------------------


def _needed(envvar: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A check that an option was given, or its environment variable set: help shows
    the variable (`[env var: ZAG_BOARD]`) rather than `[required]`, which hid it."""

    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            raise click.UsageError(f"Missing option '--{param.name}' (or set {envvar})", ctx)
        return value

    return check


BOARD_HELP = (
    "Job board URL: memory://, zookeeper://host:2181/path, sqlite+aiosqlite:///f.db "
    "or postgresql+asyncpg://..."
)
board_option = click.option(
    "--board",
    envvar="ZAG_BOARD",
    show_envvar=True,
    callback=_needed("ZAG_BOARD"),
    metavar="URL",
    help=BOARD_HELP,
)


def optional_board_option(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`--board URL` (or ZAG_BOARD) for a command that can do without one: `what`
    says what the board is for here."""
    return click.option("--board", envvar="ZAG_BOARD", show_envvar=True, metavar="URL", help=what)


limit_option = click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="Show at most this many, newest first (0: all of them).",
)


def more_note(shown: int, limit: int, more: bool, what: str) -> None:
    """Say on stderr that a listing was cut at `limit` (stdout stays the table)."""
    if more:
        click.echo(f"{PROG}: {shown} newest {what} shown; --limit N for more, 0 for all", err=True)


timeout_option = click.option(
    "--timeout",
    type=click.FloatRange(min=0.5),
    default=10.0,
    show_default=True,
    help="Seconds to wait for the board's server.",
)


def backend_option(required: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    extra: dict[str, Any] = (
        {"callback": _needed("ZAG_BACKEND")} if required else {"default": "memory://"}
    )
    return click.option(
        "--backend",
        show_default=not required,
        envvar="ZAG_BACKEND",
        show_envvar=True,
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
async def open_board(board_url: str, backend_url: str, wait: float | None) -> AsyncIterator[Any]:
    """An open (database, board) pair; `wait` bounds reaching a ZooKeeper board."""
    from .. import jobs
    from ..persistence import connect

    options: dict[str, Any] = {}
    if wait is not None and board_url.split("://", 1)[0].lower() == "zookeeper":
        options = {"call_timeout": wait / 2, "session_timeout": wait / 2}
    async with (
        connect(backend_url) as database,
        jobs.connect(board_url, backend=database, **options) as board,
    ):
        yield database, board


@contextlib.contextmanager
def on_signals(stop: Callable[[], None]) -> Iterator[None]:
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
