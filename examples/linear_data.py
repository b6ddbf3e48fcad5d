"""Passing data along a linear flow: provides, requires, rebind and inject.

An invoice is built in steps. Each step names its inputs with its parameters
and its outputs with ``provides``; the engine feeds one to the other, so no
step calls another. Shown here:

- a tuple ``provides`` unpacks a sequence result into several names;
- a set ``provides`` reads names out of a dict result;
- ``bind(rebind=...)`` reuses one task under another name with its
  parameters fed from differently named values;
- ``inject=`` gives a step a fixed private input (no longer a requirement);
- a parameter with a default is optional: used when nobody provides it;
- a class-style task (``zag.Task``) next to function-style ones.

Amounts are whole cents so the printed numbers are exact.
"""

from __future__ import annotations

import asyncio

import zag_async as zag

# A tiny "database" the first steps read from.
ORDERS = {"A-17": ("widget", 3, 1250, "c-9")}
CUSTOMERS = {"c-9": {"email": "ada@example.com", "country": "FR", "vip": True}}


@zag.task(provides=("item", "qty", "unit_price", "customer_id"))
async def load_order(order_id: str) -> tuple[str, int, int, str]:
    """A tuple result, unpacked by position into four names."""
    item, qty, unit_price, customer_id = ORDERS[order_id]
    print(f"load_order: {order_id} -> {qty} x {item} at {unit_price} cents")
    return item, qty, unit_price, customer_id


@zag.task(provides={"email", "country"})
async def load_customer(customer_id: str) -> dict[str, object]:
    """A dict result; only the keys named in ``provides`` are published."""
    record = CUSTOMERS[customer_id]
    print(f"load_customer: {customer_id} -> {record['email']} ({record['country']})")
    return record


@zag.task(provides="subtotal")
async def multiply(qty: int, unit_price: int) -> int:
    subtotal = qty * unit_price
    print(f"multiply: {qty} * {unit_price} = {subtotal}")
    return subtotal


@zag.task
async def percent_of(amount: int, percent: int) -> int:
    """A generic step, used twice below under different names."""
    return amount * percent // 100


# Same function, two atoms. ``rebind`` maps a parameter to the value that
# feeds it; ``inject`` pins a parameter to a constant for this atom only.
discount = percent_of.bind(
    name="discount", provides="discount", rebind={"amount": "subtotal"}, inject={"percent": 10}
)
vat = percent_of.bind(
    name="vat", provides="vat", rebind={"amount": "subtotal", "percent": "vat_percent"}
)


class Total(zag.Task):
    """Class style: ``provides`` as a class attribute, inputs from ``execute``."""

    provides = "total"

    async def execute(self, subtotal: int, discount: int, vat: int, shipping: int = 0) -> int:
        # ``shipping`` has a default and nothing provides it: it stays 0.
        total = subtotal - discount + vat + shipping
        print(f"total: {subtotal} - {discount} + {vat} + {shipping} = {total}")
        return total


@zag.task(provides="invoice")
async def render(item: str, qty: int, email: str, country: str, total: int) -> str:
    return f"{qty} x {item} for {email} ({country}): {total // 100}.{total % 100:02d} EUR"


async def main() -> None:
    flow = zag.linear(
        "invoice", load_order, load_customer, multiply, discount, vat, Total(), render
    )
    results = await zag.run(flow, store={"order_id": "A-17", "vat_percent": 20})
    print()
    print(results["invoice"])
    print()
    print("everything the flow knows:")
    for name, value in sorted(results.items()):
        print(f"  {name} = {value!r}")


if __name__ == "__main__":
    asyncio.run(main())
