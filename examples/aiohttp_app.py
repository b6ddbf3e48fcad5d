"""An order service on aiohttp: flows awaited in a request, jobs handed to a conductor.

    POST /orders         runs the order flow inside the request: 200 with its results,
                         409 when it was reverted, 503 when the app shut down meanwhile
                         (`zag_async.contrib.http.http_status`); 422 for a malformed order
    POST /orders/async   posts a job and answers 202 with a Location to poll
    POST /orders/later   starts the flow in the background: 202 with a Location to poll
    GET  /jobs/{id}      the job's state and its flow's status
    GET  /flows/{id}     a flow's status (404 for an unknown id, as /jobs/{id})

`zag_context` (a `cleanup_ctx` entry) opens one SQLite file that holds both the
flows' state and the job board, and runs a conductor in the same process. At
cleanup it suspends whatever is running and the jobs go back on the board;
after a shutdown, a crash or a kill -9, the next start (or any other conductor
on the same database) takes that work back and finishes it without redoing
finished steps.

Run as a script it drives itself through aiohttp's test client and prints what
it sees, including a shutdown in the middle of a job; `--serve` starts the app
instead (`--db PATH_OR_URL`, default $ORDERS_DB or orders.db; `--port N`,
default $ORDERS_PORT or 8080).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

import zag_async as zag
from zag_async.contrib.aiohttp import get_zag, zag_context
from zag_async.contrib.http import http_status

STOCK = {"book": 10, "lamp": 3}
PRICES = {"book": 12, "lamp": 40}


class OutOfStock(Exception):
    """Raised by reserve_stock; reverts the order."""


@zag.task(provides="reservation")
async def reserve_stock(item: str, qty: int) -> str:
    if STOCK.get(item, 0) < qty:
        raise OutOfStock(f"{item}: {STOCK.get(item, 0)} in stock, {qty} ordered")
    return f"R-{item}-{qty}"


@zag.task(provides="payment")
async def charge_card(item: str, qty: int) -> str:
    return f"P-{PRICES[item] * qty}"


@charge_card.revert
async def refund(**kwargs: Any) -> None:
    pass


@zag.task(provides="tracking")
async def ship(reservation: str, ship_delay: float = 0.0) -> str:
    await asyncio.sleep(ship_delay)  # the slow step (the demo makes it take a while)
    return "TRK-" + reservation.removeprefix("R-")


@zag.task(provides="receipt")
async def send_receipt(payment: str, tracking: str) -> str:
    return f"{payment} {tracking}"


def order_flow() -> zag.Flow:
    """The factory jobs and flow records name ('aiohttp_app:order_flow')."""
    return zag.linear("order", reserve_stock, charge_card, ship, send_receipt)


ORDER_FLOW = "aiohttp_app:order_flow"

routes = web.RouteTableDef()


async def read_order(request: web.Request) -> dict[str, Any]:
    """The order in the request's JSON body; 422 for anything else (never a 500)."""
    try:
        body = await request.json()
        if not isinstance(body, dict) or not isinstance(body.get("item"), str):
            raise ValueError("an order needs an item")
        return {
            "item": body["item"],
            "qty": int(body.get("qty", 1)),
            "ship_delay": float(body.get("ship_delay", 0.0)),  # demo knob: how long shipping takes
        }
    except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise web.HTTPUnprocessableEntity(text=f"malformed order: {exc}") from None


@routes.post("/orders")
async def place_order(request: web.Request) -> web.Response:
    status = await get_zag(request).run(ORDER_FLOW, store=await read_order(request))
    headers = {} if status.done else {"Location": f"/flows/{status.flow_id}"}
    return web.json_response(status.to_dict(), status=http_status(status), headers=headers)


@routes.post("/orders/async")
async def place_order_later(request: web.Request) -> web.Response:
    order = await read_order(request)
    job = await get_zag(request).post(f"order {order['item']}", ORDER_FLOW, store=order)
    url = str(request.app.router["job_status"].url_for(job_id=job.uuid))
    body = {"job_id": job.uuid, "flow_id": job.flow_id, "status_url": url}
    return web.json_response(body, status=202, headers={"Location": url})


@routes.post("/orders/later")
async def place_order_in_background(request: web.Request) -> web.Response:
    flow_id = await get_zag(request).start(ORDER_FLOW, store=await read_order(request))
    body = {"flow_id": flow_id, "status_url": f"/flows/{flow_id}"}
    return web.json_response(body, status=202, headers={"Location": body["status_url"]})


@routes.get("/jobs/{job_id}", name="job_status")
async def job_status(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    try:
        return web.json_response((await get_zag(request).job_status(job_id)).to_dict())
    except zag.errors.JobNotFound:
        raise web.HTTPNotFound(text=f"no job {job_id}") from None


@routes.get("/flows/{flow_id}")
async def flow_status(request: web.Request) -> web.Response:
    flow_id = request.match_info["flow_id"]
    try:
        return web.json_response((await get_zag(request).flow_status(flow_id)).to_dict())
    except zag.errors.NotFound:
        raise web.HTTPNotFound(text=f"no flow {flow_id}") from None


def create_app(
    *, backend: str = "sqlite+aiosqlite:///orders.db", **options: Any
) -> web.Application:
    """The app; `options` go to `ZagService` (e.g. `shutdown_timeout=`, `name=`).

    The job board is the backend's own database unless `board=` says otherwise.
    """
    options.setdefault("conductor", {"max_jobs": 4})
    app = web.Application()
    app.cleanup_ctx.append(zag_context(backend=backend, **options))
    app.add_routes(routes)
    return app


# -- the self-driving demo ----------------------------------------------------------------


async def poll(client: TestClient[web.Request, web.Application], url: str, until: Any) -> Any:
    """GET `url` until `until(body)` holds (at most 10 s)."""
    async with asyncio.timeout(10):
        while True:
            body = await (await client.get(url)).json()
            if until(body):
                return body
            await asyncio.sleep(0.02)


def atoms(flow: dict[str, Any]) -> str:
    """One flow's atoms as "name STATE xATTEMPTS" (from a status body)."""
    return ", ".join(f"{a['name']} {a['state']} x{a['attempts']}" for a in flow["atoms"])


async def stored(backend: str, flow_id: str) -> str:
    """The flow's record, read straight from the database while no app runs."""
    async with zag.connect(backend) as db:
        detail = await db.load_flow(flow_id)
    rows = zag.inspection.describe_flow(detail)
    return f"{detail.state}; " + ", ".join(f"{r.name} {r.state} x{r.attempts}" for r in rows)


async def demo() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        urls = {"backend": f"sqlite+aiosqlite:///{tmp}/orders.db"}  # flows and jobs
        async with TestClient(TestServer(create_app(**urls))) as client:
            r = await client.post("/orders", json={"item": "book", "qty": 2})
            body = await r.json()
            print(f"POST /orders book x2     -> {r.status} {body['state']}", end=" ")
            print(f"receipt={body['results']['receipt']!r}")
            r = await client.post("/orders", json={"item": "piano"})
            body = await r.json()
            print(f"POST /orders piano       -> {r.status} {body['state']} {body['error']}")
            print(f"  {atoms(body)}")

            r = await client.post("/orders/async", json={"item": "lamp", "qty": 3})
            job_id = (await r.json())["job_id"]
            location = r.headers["Location"]
            print(
                f"POST /orders/async lamp  -> {r.status}, Location is /jobs/<job id>:",
                location == f"/jobs/{job_id}",
            )
            body = await poll(client, location, lambda b: b["state"] == "COMPLETE")
            print(f"GET  /jobs/<job id>      -> {body['state']} {body['flow']['state']}", end=" ")
            print(f"receipt={body['flow']['results']['receipt']!r}")

            # A slow order: stop the app while it ships.
            r = await client.post("/orders/async", json={"item": "book", "ship_delay": 0.3})
            ids = await r.json()
            job_id, flow_id = ids["job_id"], ids["flow_id"]
            await poll(client, f"/flows/{flow_id}", lambda b: "ship RUNNING" in atoms(b))
            print("stopping the app while the order ships")
        print(f"  stored: {await stored(urls['backend'], flow_id)}")

        # A restart: same database.
        async with TestClient(TestServer(create_app(**urls))) as client:
            body = await poll(client, f"/jobs/{job_id}", lambda b: b["state"] == "COMPLETE")
            print(f"after the restart        -> {body['state']} {body['flow']['state']}")
            print(f"  {atoms(body['flow'])}")


def database_url(db: str) -> str:
    """A database URL, or a path taken as a SQLite file."""
    return db if "://" in db else f"sqlite+aiosqlite:///{db}"


def serve(db: str, port: int, **options: Any) -> None:
    """Serve the app on 127.0.0.1:`port` until stopped."""
    web.run_app(create_app(backend=database_url(db), **options), host="127.0.0.1", port=port)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--serve", action="store_true", help="serve HTTP instead of the demo")
    parser.add_argument("--db", default=os.environ.get("ORDERS_DB", "orders.db"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("ORDERS_PORT", "8080")))
    args = parser.parse_args()
    if args.serve:
        serve(args.db, args.port)
    else:
        asyncio.run(demo())
