"""`zag-async flows ...` (list, show, suspend and cancel stored flows),
`zag-async graph` (draw a flow) and `zag-async db upgrade` (create or upgrade a
database's schema).

These commands run nothing: list and show read; suspend and cancel store a
request that the engine running the flow applies.
"""

from __future__ import annotations

import asyncio
from typing import Any

import click

from ..errors import NotFound
from ..factory import FactoryRef
from ..models import FlowDetail
from ..persistence.base import Backend
from ..states import FlowState
from .common import (
    BadInput,
    backend_option,
    limit_option,
    load_target,
    more_note,
    optional_board_option,
    picture_format_option,
)
from .output import emit_table, make_console, show_flow, time_text, write_bytes

__all__ = ["db", "flows", "graph"]


@click.group()
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
@limit_option
def flows_list(backend: str, states: tuple[str, ...], logbook: str | None, limit: int) -> None:
    """List stored flows, newest first (the 50 newest unless --limit says otherwise)."""
    from ..persistence import connect

    async def listing() -> list[Any]:
        async with connect(backend) as database:
            wanted = [FlowState(s) for s in states] or None
            return await database.list_flows(
                logbook=logbook,
                states=wanted,
                newest_first=True,
                limit=limit + 1 if limit else None,
            )

    found = asyncio.run(listing())
    more = bool(limit) and len(found) > limit
    found = found[:limit] if more else found
    more_note(len(found), limit, more, "flows")
    rows = [[f.uuid, f.name, str(f.state), time_text(f.updated_at), f.owner or ""] for f in found]
    emit_table(make_console(), ["FLOW", "NAME", "STATE", "UPDATED", "OWNER"], rows)


async def load_detail(database: Backend, flow_id: str) -> FlowDetail:
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
    from ..persistence import connect

    async def load() -> FlowDetail:
        async with connect(backend) as database:
            return await load_detail(database, flow_id)

    detail = asyncio.run(load())
    if not as_graph:
        show_flow(make_console(), detail)
        return
    from ..pictures import render

    if factory is not None:
        flow, _ref = load_target(factory, ())
    else:
        saved = detail.meta.get("factory")
        if saved is None:
            raise BadInput(
                f"flow {detail.name} ({detail.uuid}) was not started from a factory; "
                f"pass --factory MODULE:FACTORY to draw it"
            )
        flow = FactoryRef.from_dict(saved).build()
    states = {name: str(atom.state) for name, atom in detail.atoms.items()}
    write_bytes(render(flow, fmt, states), output, binary=fmt == "png")


@click.command()
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
    from ..pictures import render

    flow, _ref = load_target(factory, args)
    write_bytes(render(flow, fmt), output, binary=fmt == "png")


@click.group()
def db() -> None:
    """Manage a storage database."""


@db.command("upgrade")
@click.argument("url")
def db_upgrade(url: str) -> None:
    """Create or upgrade the schema at URL (sqlite+aiosqlite:///f.db, postgresql+asyncpg://...)."""
    from ..persistence import upgrade

    version = asyncio.run(upgrade(url))
    click.echo(f"schema at version {version}")


@flows.command("suspend")
@click.argument("flow_id")
@backend_option(required=True)
@click.option("--by", default="cli", show_default=True, help="Who asks (recorded on the flow).")
@click.option("--reason", default="", help="Why (recorded on the flow).")
def flows_suspend(flow_id: str, backend: str, by: str, reason: str) -> None:
    """Suspend the running flow FLOW_ID (or a unique prefix of it): its running steps
    finish, nothing new starts.

    The engine running it (in any process) stops at its next lease renewal and
    the flow stays SUSPENDED until resumed. Refused (exit 1) for an unknown,
    finished, WAITING or SUSPENDED flow.
    """
    _control("suspend", flow_id, backend, None, by, reason)


@flows.command("cancel")
@click.argument("flow_id")
@backend_option(required=True)
@optional_board_option(
    "Wake a waiting or suspended flow's job here, so a conductor reverts it now."
)
@click.option("--by", default="cli", show_default=True, help="Who asks (recorded on the flow).")
@click.option("--reason", default="", help="Why (recorded on the flow).")
def flows_cancel(flow_id: str, backend: str, board: str | None, by: str, reason: str) -> None:
    """Cancel the flow FLOW_ID (or a unique prefix of it): nothing new starts and
    everything it did is reverted.

    A running flow is reverted by its engine; a WAITING or SUSPENDED one when it is
    next resumed (at once with --board). The flow ends REVERTED. Refused (exit 1)
    for an unknown or finished flow.
    """
    _control("cancel", flow_id, backend, board, by, reason)


def _control(
    action: str, flow_id: str, backend: str, board: str | None, by: str, reason: str
) -> None:
    from ..control import cancel_flow, suspend_flow
    from ..persistence import connect
    from .common import open_board

    async def ask() -> str:
        if board is not None:
            async with open_board(board, backend, None) as (database, opened):
                full = (await load_detail(database, flow_id)).uuid
                await cancel_flow(full, backend=database, board=opened, by=by, reason=reason)
                return full
        async with connect(backend) as database:
            full = (await load_detail(database, flow_id)).uuid
            if action == "suspend":
                await suspend_flow(full, backend=database, by=by, reason=reason)
            else:
                await cancel_flow(full, backend=database, by=by, reason=reason)
            return full

    click.echo(f"{action} of flow {asyncio.run(ask())} requested")
