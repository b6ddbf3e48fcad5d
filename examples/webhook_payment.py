"""A payment confirmed by the provider's webhook, on aiohttp: charge, wait, ship.

    POST /orders                 starts an order's flow: 202 with its id
    POST /webhooks/payments      the payment provider's webhook
    GET  /orders/{flow_id}       the flow's status (and what it waits for)

The flow is `charge -> wait_for("paid", event="payment.succeeded") -> ship`.
`charge` asks the provider (a fake one, in this process) for a payment and
returns at once; the money arrives later, announced by a webhook. The webhook
handler sends it to the flow as a signal whose id is the provider's event id,
so a webhook delivered twice (providers retry) is stored once and ends the
wait once. A webhook that comes before the flow reaches its wait is kept
until it does.

Run as a script it drives itself through aiohttp's test client, playing the
provider: it delivers the same webhook twice.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

import zag_async as zag
from zag_async.contrib.aiohttp import get_zag, zag_context


@dataclass
class FakeProvider:
    """A payment provider: creates payments; its events are what the webhook carries."""

    pending: list[dict[str, Any]] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def create_payment(self, amount: float, metadata: dict[str, str]) -> str:
        n = next(self._ids)
        event = {
            "id": f"evt_{n}",
            "type": "payment.succeeded",
            "data": {"payment": f"pay_{n}", "amount": amount, "metadata": metadata},
        }
        self.pending.append(event)  # delivered later, by the provider's webhook
        return f"pay_{n}"


PROVIDER = FakeProvider()


@zag.task(provides="payment")
async def charge(order: str, amount: float) -> str:
    # The metadata comes back in the webhook: it says which order was paid.
    return PROVIDER.create_payment(amount, {"order": order})


@zag.task(provides="tracking")
async def ship(order: str, paid: dict[str, Any]) -> str:
    return f"TRK-{order}-{paid['payment']}"


def order_flow() -> zag.Flow:
    """The factory flow records and jobs name ('webhook_payment:order_flow')."""
    paid = zag.wait_for("paid", event="payment.succeeded", timeout=86400, provides="paid")
    return zag.linear("order", charge, paid, ship)


routes = web.RouteTableDef()
#: The shop's own table: which flow handles which order.
ORDERS = web.AppKey("orders", dict[str, str])


@routes.post("/orders")
async def place_order(request: web.Request) -> web.Response:
    body = await request.json()
    store = {"order": body["order"], "amount": float(body["amount"])}
    flow_id = await get_zag(request).start("webhook_payment:order_flow", store=store)
    request.app[ORDERS][body["order"]] = flow_id
    return web.json_response({"flow_id": flow_id}, status=202)


@routes.post("/webhooks/payments")
async def payment_webhook(request: web.Request) -> web.Response:
    event = await request.json()
    flow_id = request.app[ORDERS].get(event["data"]["metadata"]["order"], "")
    try:
        await get_zag(request).signal(flow_id, event["type"], event["data"], signal_id=event["id"])
    except zag.errors.SignalRefused as exc:
        if "finished" not in exc.reason:
            raise web.HTTPNotFound(text=str(exc)) from None
        # a retried delivery after the flow took the first one and ended: already done
    return web.json_response({"received": event["id"]})


@routes.get("/orders/{flow_id}")
async def order_status(request: web.Request) -> web.Response:
    try:
        status = await get_zag(request).flow_status(request.match_info["flow_id"])
    except zag.errors.NotFound:
        raise web.HTTPNotFound() from None
    return web.json_response(status.to_dict())


def create_app(*, backend: str) -> web.Application:
    app = web.Application()
    app[ORDERS] = {}
    app.cleanup_ctx.append(zag_context(backend=backend, conductor=True))
    app.add_routes(routes)
    return app


# -- the self-driving demo ----------------------------------------------------------------


async def poll(client: TestClient[Any, Any], flow_id: str, states: set[str]) -> dict[str, Any]:
    """GET the order until its flow is in one of `states` (at most 30 s)."""
    async with asyncio.timeout(30):
        while True:
            body: dict[str, Any] = await (await client.get(f"/orders/{flow_id}")).json()
            if body["state"] in states:
                return body
            await asyncio.sleep(0.02)


async def demo() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(backend=f"sqlite+aiosqlite:///{tmp}/shop.db")
        async with TestClient(TestServer(app)) as client:
            r = await client.post("/orders", json={"order": "A-17", "amount": 99.0})
            flow_id = (await r.json())["flow_id"]
            body = await poll(client, flow_id, {"WAITING"})
            waits = [(w["atom"], w["event"]) for w in body["waiting_for"]]
            print(f"POST /orders A-17 -> {r.status}; {body['state']} {waits}")

            [event] = PROVIDER.pending
            for delivery in (1, 2):  # the provider delivers its webhook twice
                r = await client.post("/webhooks/payments", json=event)
                print(f"webhook {event['id']} delivery {delivery} -> {r.status} {await r.json()}")
            body = await poll(client, flow_id, {"SUCCESS", "REVERTED", "FAILURE"})
            print(f"order A-17 -> {body['state']} tracking={body['results']['tracking']}")
            signals = await get_zag(app).backend.list_signals(flow_id)
            print(f"signals stored: {[(s.id, s.event) for s in signals]}")


if __name__ == "__main__":
    # The conductor rebuilds flows from 'webhook_payment:order_flow': let that name be
    # this very module, so the flow's tasks and this demo share PROVIDER.
    sys.modules["webhook_payment"] = sys.modules[__name__]
    asyncio.run(demo())
