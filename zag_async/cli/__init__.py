"""The `zag-async` command line: run flows, serve workers and conductors, manage
jobs, inspect stored flows and draw flows.

    zag-async run myapp.flows:provision web-1 --store size=32 --backend sqlite+aiosqlite:///f.db
    zag-async flows show FLOW_ID --backend sqlite+aiosqlite:///f.db
    zag-async signal FLOW_ID approval --data '{"by": "ann"}' --backend sqlite+aiosqlite:///f.db
    zag-async graph myapp.flows:provision web-1 --format svg -o provision.svg

Mistakes a user can make (an unknown module, a malformed --store value, a
server that does not answer) print one line `zag-async: ...` on stderr and
exit non-zero; `zag-async --debug ...` shows the traceback instead. Tables
and the live view of `run` use rich on a terminal and plain, aligned lines
when the output is piped. Only this package imports click and rich, so
`import zag_async` does not.

This module holds the root group, its error handling and logging; the
commands live in one module per group: `runs` (run, demo), `jobs` (jobs,
conductor), `flows` (flows, graph, db), `signals` (signal), `ui` (ui) and `workers` (worker).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Sequence
from typing import Any

import click

from .. import __version__
from ..errors import ConfigurationError, FlowDefinitionError
from .common import PICTURE_FORMATS, PROG, BadInput, CliError, describe_error
from .flows import db, flows, graph
from .jobs import conductor, jobs
from .runs import demo, run_command
from .signals import signal_command
from .ui import ui_command
from .workers import worker

__all__ = ["PICTURE_FORMATS", "main", "run"]


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
            raise (BadInput if bad_input else CliError)(describe_error(exc)) from exc


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


# -- the commands ------------------------------------------------------------------------


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--debug",
    is_flag=True,
    envvar="ZAG_DEBUG",
    show_envvar=True,
    help="Show tracebacks and debug logging.",
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


for _command in (
    conductor,
    db,
    demo,
    flows,
    graph,
    jobs,
    run_command,
    signal_command,
    ui_command,
    worker,
):
    main.add_command(_command)
