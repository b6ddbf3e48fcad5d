"""A small order flow for benchmarks/ui_pages.py: real atoms, a result, and a
revert when the item is "bad" (so a flow page has a failure and a traceback)."""

from __future__ import annotations

import zag_async as zag


@zag.task(provides="reservation")
async def reserve(item: str) -> str:
    return f"R-{item}"


@reserve.revert
async def release(*, result: str) -> None:
    return None


@zag.task(provides="payment")
async def charge(reservation: str, item: str) -> str:
    if item == "bad":
        raise RuntimeError(f"card declined for {reservation}")
    return f"P-{reservation}"


def order() -> zag.Flow:
    return zag.linear("order", reserve, charge)
