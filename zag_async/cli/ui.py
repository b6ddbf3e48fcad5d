"""`zag-async ui --backend URL`: serve the operations UI on its own (uvicorn).

Read-only unless `--actions`, which needs `--token` (or ZAG_UI_TOKEN): a
browser logs in at /login, a script sends `Authorization: Bearer TOKEN`.
With `--board` a signal wakes the flow's job so a conductor resumes it, and the
jobs page shows the board; with `--broker` the workers page shows live workers
and their queues.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import click

from .common import BadInput, backend_option, open_board, optional_board_option

__all__ = ["ui_command"]


@click.command("ui")
@backend_option(required=True)
@optional_board_option("The job board: for the jobs page, and a signal wakes the flow's job.")
@click.option(
    "--broker",
    envvar="ZAG_AMQP",
    show_envvar=True,
    metavar="URL",
    help="The workers' RabbitMQ (amqp://...), for the workers page.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8765, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--token",
    envvar="ZAG_UI_TOKEN",
    show_envvar=True,
    metavar="T",
    help="The token that allows actions (login form or Bearer header).",
)
@click.option(
    "--actions",
    is_flag=True,
    help="Allow actions (signal, resume, suspend, cancel; trash and retry jobs); needs --token.",
)
@click.option(
    "--factories",
    "factories",
    multiple=True,
    metavar="MODULE",
    help="A module whose flow factories the UI may run to draw flows and show atoms' "
    "inputs (repeat for more; none by default: this process runs no flows).",
)
@click.option(
    "--secret",
    envvar="ZAG_UI_SECRET",
    show_envvar=True,
    metavar="S",
    help="Signs logins and forms; give every instance serving the UI the same one.",
)
def ui_command(
    backend: str,
    board: str | None,
    broker: str | None,
    host: str,
    port: int,
    token: str | None,
    actions: bool,
    factories: tuple[str, ...],
    secret: str | None,
) -> None:
    """Serve the operations UI for the flows in --backend (read-only by default).

    Anyone who can reach --host:--port can read every page (inputs, results,
    tracebacks); the token guards the actions only.
    """
    if actions and not token:
        raise BadInput("--actions needs --token (or ZAG_UI_TOKEN): actions need a login")
    if token is not None and len(token) < 8:
        raise BadInput("--token must be at least 8 characters (wrong guesses are also limited)")
    if broker is not None and not broker.startswith(("amqp://", "amqps://")):
        raise BadInput("--broker takes a RabbitMQ URL: amqp://user:password@host[:port]/")
    try:
        import uvicorn

        from ..contrib.ui import asgi_app
    except ImportError as exc:
        raise BadInput(
            f"the UI needs extra packages: pip install 'zag-async[ui]' ({exc})"
        ) from None

    @contextlib.asynccontextmanager
    async def opened() -> AsyncIterator[tuple[Any, Any]]:
        if board is None:
            from ..persistence import connect

            async with connect(backend) as database:
                yield database, None
        else:
            async with open_board(board, backend, None) as pair:
                yield pair

    async def serve() -> None:
        async with opened() as (database, jobs):
            app = asgi_app(
                database,
                board=jobs,
                actions=actions,
                token=token,
                broker=broker,
                factories=factories,
                secret=secret,
            )
            click.echo(f"zag-async ui: http://{host}:{port}/flows", err=True)
            config = uvicorn.Config(app, host=host, port=port, log_level="warning")
            await uvicorn.Server(config).serve()

    asyncio.run(serve())
