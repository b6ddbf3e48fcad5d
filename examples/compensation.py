"""Compensation you can trust: revert retries, a pivot, and what each ending says.

An order takes four steps: reserve stock, charge the card, ship the parcel and
notify the customer. Shipping cannot be undone (the parcel left), so ``ship``
is marked ``irreversible=True``: it is the order's pivot.

- Before the pivot, a failure reverts everything that ran. The refund API
  times out once; ``revert_retry`` tries it again, and the order ends
  REVERTED, which here always means every step that ran was undone.
- After the pivot, a failure is retried forward (by ``notify``'s own retry
  policy) instead of reverted: a parcel on its way is not refunded because an
  e-mail bounced.
- When forward retries run out, the flow ends STUCK_PAST_PIVOT with the
  failure, nothing reverted; when a refund keeps failing, it ends
  UNCOMPENSATED. Both name the steps a person has to see to.
"""

from __future__ import annotations

import asyncio

import zag_async as zag

TROUBLE: dict[str, int] = {}  # step -> how many more calls of it fail


def trouble(step: str) -> bool:
    left = TROUBLE.get(step, 0)
    TROUBLE[step] = max(left - 1, 0)
    return left > 0


@zag.task(provides="reservation")
async def reserve(item: str) -> str:
    print(f"  reserve {item}")
    return f"R-{item}"


@reserve.revert
async def release(*, result: str) -> None:
    print(f"  release {result}")


@zag.task(provides="payment", revert_retry=zag.retry.RevertRetry(attempts=3, delay=0.01))
async def charge(amount: float) -> str:
    print(f"  charge {amount}")
    return f"P-{amount}"


@charge.revert
async def refund(*, result: str) -> None:
    if trouble("refund"):
        print(f"  refund {result}: payment API timed out")
        raise TimeoutError("payment API timed out")
    print(f"  refund {result}")


@zag.task(provides="tracking", irreversible=True)
async def ship(reservation: str, address: str) -> str:
    if not address:
        print("  ship: no address")
        raise ValueError("no address to ship to")
    print(f"  ship {reservation} to {address}")
    return "TRK-7"


@zag.task(retry=zag.retry.Times(3))
async def notify(tracking: str) -> None:
    if trouble("notify"):
        print("  notify: mail server refused")
        raise ConnectionError("mail server refused")
    print(f"  notify: parcel {tracking} is on its way")


ORDER = zag.linear("order", reserve, charge, ship, notify)


async def place(title: str, address: str, **failing: int) -> None:
    print(title)
    TROUBLE.clear()
    TROUBLE.update(failing)
    engine = zag.Engine(ORDER, store={"item": "lamp", "amount": 30.0, "address": address})
    try:
        await engine.run()
    except Exception as exc:
        print(f"  raised {type(exc).__name__}: {exc}")
    status = zag.FlowStatus.of(engine.storage.flow)
    left = f", not reverted: {', '.join(status.unreverted)}" if status.unreverted else ""
    print(f"  -> {status.state}{left}")


async def main() -> None:
    await place("1. no address: revert all, the refund tried twice", "", refund=1)
    await place("2. the mail bounces twice: retried forward", "1 Main St", notify=2)
    await place("3. the mail never goes: stuck past the pivot", "1 Main St", notify=9)
    await place("4. the refund never goes through: uncompensated", "", refund=9)


if __name__ == "__main__":
    asyncio.run(main())
