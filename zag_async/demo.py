"""The built-in demo (`python -m zag_async demo`): a small order pipeline.

Everything runs on the embedded default, one SQLite file for flows and jobs.
The pipeline runs three times: once cleanly, once with a payment that fails
(watch the completed steps being compensated in reverse order), and once with
a flaky courier API that succeeds on the third attempt under a retry
controller. Then a service starts an order in the background and stops in the
middle of it; the next service on the same file takes the order back and
finishes it, without running the finished steps again.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections import Counter
from typing import Any

import zag_async as zag

from .events import Event
from .failure import error_text
from .status import read_flow_status

#: How many times each step ran, across services (what the restart must not repeat).
CALLS: Counter[str] = Counter()
_COURIER_BOOKING = asyncio.Event()


def order_flow(*, card_ok: bool = True, courier_failures: int = 0, slow: bool = False) -> zag.Flow:
    """The order pipeline (importable, so a restarted service can rebuild it)."""
    courier_calls = 0

    @zag.task(provides="reservation")
    async def reserve_stock(item: str, qty: int) -> str:
        CALLS["reserve_stock"] += 1
        await asyncio.sleep(0.01)
        return f"R-{item}-{qty}"

    @reserve_stock.revert
    async def release_stock(item: str, qty: int, *, result: Any, flow_failures: Any) -> None:
        await asyncio.sleep(0.01)

    @zag.task(provides="payment")
    async def charge_card(card: str, amount: float) -> str:
        CALLS["charge_card"] += 1
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
        CALLS["book_courier"] += 1
        _COURIER_BOOKING.set()
        await asyncio.sleep(1.0 if slow and CALLS["book_courier"] == 1 else 0.01)
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


async def _run(title: str, backend: zag.persistence.Backend, **kwargs: Any) -> None:
    print(f"\n== {title}")
    store = {"item": "book", "qty": 2, "card": "4242", "amount": 25.0}
    engine = zag.Engine(order_flow(**kwargs), store=store, listeners=[_show], backend=backend)
    try:
        results = await engine.run()
    except Exception as exc:
        print(f"  run() raised {error_text(exc)}  (flow state {engine.state})")
    else:
        print(f"  results: tracking={results['tracking']!r} payment={results['payment']!r}")


async def _restart(url: str) -> None:
    print("\n== 4. the service stops in the middle of an order; the next one finishes it")
    store = {"item": "lamp", "qty": 1, "card": "4242", "amount": 40.0}
    CALLS.clear()
    _COURIER_BOOKING.clear()
    service = zag.ZagService(backend=url, shutdown_timeout=0.0)
    await service.__aenter__()
    flow_id = await service.start(order_flow, kwargs={"slow": True}, store=store)
    await _COURIER_BOOKING.wait()
    quiet = logging.getLogger("zag_async.service")
    level, quiet.level = quiet.level, logging.ERROR  # its "cancelling" warning is the point
    try:
        await service.aclose()
    finally:
        quiet.setLevel(level)
    status = await _status(url, flow_id)
    print(f"  service stopped while booking the courier: flow {status.state}")
    done = ", ".join(a.name for a in status.atoms if a.state == "SUCCESS")
    print(f"    done before the stop: {done}")
    finished = asyncio.Event()

    def on_job(event: zag.ConductorEvent) -> None:
        if event.kind == "consumed":
            finished.set()

    conductor = {"engine_listeners": lambda job: [_show], "listeners": [on_job]}
    async with zag.ZagService(backend=url, conductor=conductor) as again:
        print("  a new service opens the same file and takes the order back:")
        await finished.wait()
        status = await again.flow_status(flow_id)
    print(f"  results: tracking={status.results and status.results['tracking']!r}")
    print(
        f"  steps run: reserve_stock x{CALLS['reserve_stock']}, "
        f"charge_card x{CALLS['charge_card']}, book_courier x{CALLS['book_courier']} "
        f"(interrupted once)"
    )


async def _status(url: str, flow_id: str) -> zag.FlowStatus:
    async with zag.connect(url) as db:
        return await read_flow_status(db, flow_id)


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/demo.db"
        print("zag-async demo: an order pipeline on the embedded default (one SQLite file)")
        async with zag.connect(url) as db:
            await _run("1. everything works", db)
            await _run("2. the card is declined: completed steps are reverted", db, card_ok=False)
            await _run(
                "3. the courier API fails twice: the retry controller tries again",
                db,
                courier_failures=2,
            )
        await _restart(url)


def run_demo() -> None:
    asyncio.run(main())
