"""A linear flow whose last step fails, and the compensation that follows.

Booking a trip takes three steps: reserve a flight, reserve a hotel, charge
the card. The card is declined. Every step has a ``revert`` that undoes it,
and the engine calls them in reverse order: first the failing step's own
revert (its ``result`` is the ``zag.Failure``, so it knows it did not finish),
then the hotel, then the flight. The flow ends REVERTED and the original
exception reaches the caller unchanged.
"""

from __future__ import annotations

import asyncio

import zag_async as zag


class CardDeclined(Exception):
    pass


@zag.task(provides="flight")
async def reserve_flight(traveller: str) -> str:
    print(f"execute reserve_flight: seat for {traveller}")
    return "FL-204/12C"


@reserve_flight.revert
async def cancel_flight(
    traveller: str, *, result: str, flow_failures: dict[str, zag.Failure]
) -> None:
    # ``flow_failures`` says which atoms failed and why.
    why = ", ".join(f"{atom} failed" for atom in sorted(flow_failures))
    print(f"revert  reserve_flight: cancel {result} ({why})")


@zag.task(provides="room")
async def reserve_hotel(traveller: str, nights: int) -> str:
    print(f"execute reserve_hotel: {nights} nights for {traveller}")
    return "HOTEL-88/room-31"


@reserve_hotel.revert
async def cancel_hotel(*, result: str, flow_failures: dict[str, zag.Failure]) -> None:
    print(f"revert  reserve_hotel: cancel {result}")


@zag.task(provides="receipt")
async def charge_card(card: str, flight: str, room: str) -> str:
    print(f"execute charge_card: {card} for {flight} + {room}")
    raise CardDeclined(f"card {card} declined: insufficient funds")


@charge_card.revert
async def void_charge(*, result: str | zag.Failure, flow_failures: dict[str, zag.Failure]) -> None:
    # The failing step is reverted too; its result is its own Failure.
    if isinstance(result, zag.Failure):
        print(f"revert  charge_card: nothing was charged ({result.exception_type})")
    else:
        print(f"revert  charge_card: refund {result}")


async def main() -> None:
    flow = zag.linear("book-trip", reserve_flight, reserve_hotel, charge_card)
    engine = zag.Engine(
        flow, store={"traveller": "Ada", "nights": 2, "card": "4000-0000-0000-0002"}
    )
    try:
        await engine.run()
    except CardDeclined as exc:
        print()
        print(f"caught {type(exc).__name__}: {exc}")

    print(f"flow state: {engine.state}")
    for name in ("reserve_flight", "reserve_hotel", "charge_card"):
        detail = engine.storage.get(name)
        print(f"  {name}: {detail.state}")
    # Reverted steps no longer provide anything; only the store is left.
    print(f"values left: {sorted(engine.storage.fetch_all())}")


if __name__ == "__main__":
    asyncio.run(main())
