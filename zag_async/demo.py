"""The built-in demo (`python -m zag_async demo`): a small order pipeline.

It runs three times: once cleanly, once with a payment that fails (watch the
completed steps being compensated in reverse order), and once with a flaky
courier API that succeeds on the third attempt under a retry controller.
"""

from __future__ import annotations

import asyncio
from typing import Any

import zag_async as zag

from .events import Event
from .failure import error_text


def _order_flow(*, card_ok: bool, courier_failures: int) -> zag.Flow:
    courier_calls = 0

    @zag.task(provides="reservation")
    async def reserve_stock(item: str, qty: int) -> str:
        await asyncio.sleep(0.01)
        return f"R-{item}-{qty}"

    @reserve_stock.revert
    async def release_stock(item: str, qty: int, *, result: Any, flow_failures: Any) -> None:
        await asyncio.sleep(0.01)

    @zag.task(provides="payment")
    async def charge_card(card: str, amount: float) -> str:
        await asyncio.sleep(0.01)
        if not card_ok:
            raise RuntimeError(f"card {card} declined")
        return f"P-{amount:.2f}"

    @charge_card.revert
    async def refund(card: str, amount: float, *, result: Any, flow_failures: Any) -> None:
        await asyncio.sleep(0.01)

    @zag.task(provides="tracking", retry=zag.retry.Times(5, delay=0.05, backoff=2.0))
    async def book_courier(reservation: str) -> str:
        nonlocal courier_calls
        courier_calls += 1
        await asyncio.sleep(0.01)
        if courier_calls <= courier_failures:
            raise ConnectionError(f"courier API unavailable (call {courier_calls})")
        return "TRK-42"

    @zag.task
    async def email_customer(tracking: str) -> None:
        await asyncio.sleep(0.01)

    @zag.task
    async def update_crm(payment: str) -> None:
        await asyncio.sleep(0.01)

    return zag.linear(
        "order",
        reserve_stock,
        charge_card,
        book_courier,
        zag.unordered("notify", email_customer, update_crm),
    )


def _show(event: Event) -> None:
    if event.kind == "flow":
        print(f"  flow {event.flow}: {event.state}")
    elif event.kind == "atom" and event.state not in ("PENDING",):
        detail = ""
        if event.failure is not None:
            detail = f"  <- {error_text(event.failure)}"
        elif event.state == "SUCCESS" and event.result is not None:
            detail = f"  -> {event.result!r}"
        print(f"    {event.atom:<22} {event.state}{detail}")


async def _run(title: str, **kwargs: Any) -> None:
    print(f"\n== {title}")
    store = {"item": "book", "qty": 2, "card": "4242", "amount": 25.0}
    engine = zag.Engine(_order_flow(**kwargs), store=store, listeners=[_show])
    try:
        results = await engine.run()
    except Exception as exc:
        print(f"  run() raised {error_text(exc)}  (flow state {engine.state})")
    else:
        print(f"  results: tracking={results['tracking']!r} payment={results['payment']!r}")


async def main() -> None:
    print("zag-async demo: an order pipeline run on the embedded (in-memory) default")
    await _run("1. everything works", card_ok=True, courier_failures=0)
    await _run(
        "2. the card is declined: completed steps are reverted", card_ok=False, courier_failures=0
    )
    await _run(
        "3. the courier API fails twice: the retry controller tries again",
        card_ok=True,
        courier_failures=2,
    )


def run_demo() -> None:
    asyncio.run(main())
