"""Choosing one of two branches with deciders on graph links.

After checking stock, an order either ships (pick, then ship) or goes on back
order (reserve with the supplier, then tell the customer). Both branches hang
off ``check_stock`` with ``link(..., decider=...)``: the decider receives
``{source atom name: result}`` and returns True to let the branch run or
False to skip it. A skipped atom ends IGNORE, and with the default
``depth=zag.Depth.ALL`` so does everything after it. Ignored atoms are not
failures: the flow still ends SUCCESS, and they are never reverted.

``audit`` is linked without a decider, so it runs either way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import zag_async as zag

STOCK = {"widget": 12, "gadget": 0}


@zag.task(provides="stock")
async def check_stock(item: str) -> int:
    return STOCK[item]


@zag.task(provides="picked")
async def pick_items(item: str, qty: int) -> str:
    return f"{qty} x {item} from shelf B4"


@zag.task(provides="tracking")
async def ship(picked: str) -> str:
    return "TRK-0001"


@zag.task(provides="supplier_ref")
async def reserve_with_supplier(item: str, qty: int) -> str:
    return f"SUP-{item}-{qty}"


@zag.task(provides="notice")
async def notify_customer(supplier_ref: str) -> str:
    return f"back-ordered ({supplier_ref})"


@zag.task(provides="audited")
async def audit(item: str) -> bool:
    return True


def in_stock(history: Mapping[str, int]) -> bool:
    return history["check_stock"] > 0


def out_of_stock(history: Mapping[str, int]) -> bool:
    return history["check_stock"] == 0


ATOMS = (check_stock, pick_items, ship, reserve_with_supplier, notify_customer, audit)


def build_flow() -> zag.GraphFlow:
    flow = zag.graph("fulfil", *ATOMS)
    flow.link(check_stock, pick_items, decider=in_stock)
    flow.link(check_stock, reserve_with_supplier, decider=out_of_stock)
    flow.link(check_stock, audit)
    return flow


async def fulfil(item: str) -> None:
    engine = zag.Engine(build_flow(), store={"item": item, "qty": 2})
    results = await engine.run()
    print(f"order for {item} (stock {results['stock']}): flow {engine.state}")
    for atom in ATOMS:
        print(f"  {atom.name:<22} {engine.storage.get(atom.name).state}")
    for name in ("tracking", "notice"):
        print(f"  {name}: {results.get(name, '(not provided)')}")


async def main() -> None:
    await fulfil("widget")
    print()
    await fulfil("gadget")


if __name__ == "__main__":
    asyncio.run(main())
