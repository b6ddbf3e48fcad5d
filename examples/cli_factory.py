"""A flow factory to try the command line with (the README's "Command line" section).

    zag-async run examples.cli_factory:order --store item=widget --store qty=2 --store card=4242
    zag-async graph examples.cli_factory:order --format svg -o order.svg

``order()`` builds a small order pipeline: reserve the stock, then charge the
card while the customer is emailed, then a delivery graph in which deciders
pick express or standard shipping from the parcel's size. The card ``0000`` is
declined, which reverts the reservation. Give ``--store pause=0.5`` to slow
every step down and watch the live view. Run as a script, this file prints
the flow as Mermaid text, as ``zag-async graph examples.cli_factory:order``
does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import zag_async as zag
from zag_async.pictures import to_mermaid


@zag.task(provides="reservation")
async def reserve(item: str, qty: int, pause: float = 0.0) -> str:
    await asyncio.sleep(pause)
    return f"R-{item}-{qty}"


@reserve.revert
async def release(item: str, qty: int, *, result: Any, flow_failures: Any) -> None:
    pass


@zag.task(provides="payment")
async def charge(card: str, qty: int, pause: float = 0.0) -> str:
    await asyncio.sleep(pause)
    if card == "0000":
        raise RuntimeError(f"card {card} declined")
    return f"P-{qty * 9.5:.2f}"


@zag.task(provides="notice")
async def email(item: str, pause: float = 0.0) -> str:
    await asyncio.sleep(pause)
    return f"your {item} is on its way"


@zag.task(provides="parcel")
async def pack(
    reservation: str, qty: int, express_limit: int, pause: float = 0.0
) -> dict[str, Any]:
    await asyncio.sleep(pause)
    return {"ref": reservation, "small": qty <= express_limit}


@zag.task(provides="tracking")
async def ship_express(parcel: dict[str, Any], payment: str) -> str:
    return f"EXP-{parcel['ref']}"


@zag.task(provides="tracking", retry=zag.retry.Times(3))
async def ship_standard(parcel: dict[str, Any], payment: str) -> str:
    return f"STD-{parcel['ref']}"


def small_parcel(history: Mapping[str, Any]) -> bool:
    return bool(history["pack"]["small"])


def large_parcel(history: Mapping[str, Any]) -> bool:
    return not history["pack"]["small"]


def order(express_limit: int = 2) -> zag.Flow:
    """The order pipeline; parcels of up to `express_limit` items ship express."""
    delivery = zag.graph(
        "delivery", pack.bind(inject={"express_limit": express_limit}), ship_express, ship_standard
    )
    delivery.link("pack", ship_express, decider=small_parcel)
    delivery.link("pack", ship_standard, decider=large_parcel)
    return zag.linear("order", reserve, zag.unordered("payment", charge, email), delivery)


if __name__ == "__main__":
    print(to_mermaid(order()), end="")
