"""`zag-async signal FLOW_ID EVENT --data JSON`: send a signal to a waiting flow.

What an approval script, a cron job or an operator types to end a wait
(`zag.wait_for`) without a web route: the signal is stored once per
`--signal-id`, then a wait of EVENT takes it when the flow resumes. With
`--board` the flow's job is woken at once, so a conductor resumes it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click

from .common import BadInput, backend_option, open_board, optional_board_option, timeout_option

__all__ = ["signal_command"]


@click.command("signal")
@click.argument("flow_id")
@click.argument("event")
@click.option(
    "--data", metavar="JSON", default="null", help="The payload, as JSON (default: null)."
)
@click.option(
    "--signal-id",
    metavar="ID",
    help="Idempotency key: sending again with it stores nothing (default: a new id).",
)
@backend_option(required=True)
@optional_board_option("Also wake the flow's job on this board, so a conductor resumes it now.")
@timeout_option
def signal_command(
    flow_id: str,
    event: str,
    data: str,
    signal_id: str | None,
    backend: str,
    board: str | None,
    timeout: float,
) -> None:
    """Send the signal EVENT to the stored flow FLOW_ID.

    The payload (--data) is JSON; it is what the wait taking the signal ends
    with. Refused (exit 1) for an unknown or finished flow, or an EVENT no
    wait of the flow declares. Prints the stored signal's id and arrival time.
    """
    try:
        payload = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise BadInput(f'--data must be JSON (e.g. --data \'{{"by": "ann"}}\'): {exc}') from None

    from ..status import iso_utc
    from ..waiting import signal

    async def send() -> Any:
        if board is None:
            from ..persistence import connect

            async with connect(backend) as database:
                return await signal(flow_id, event, payload, backend=database, signal_id=signal_id)
        async with open_board(board, backend, timeout) as (database, opened):
            return await signal(
                flow_id, event, payload, backend=database, board=opened, signal_id=signal_id
            )

    stored = asyncio.run(send())
    click.echo(
        f"signal {stored.event} {stored.id} for flow {stored.flow_id} "
        f"stored at {iso_utc(stored.created_at)}"
    )
