"""An order service on FastAPI: flows awaited in a request, jobs handed to a conductor.

    POST /orders         runs the order flow inside the request: 200 with its results,
                         409 when it was reverted, 503 when the app shut down meanwhile
                         (`zag_async.contrib.http.http_status`); 422 for a malformed order
    POST /orders/async   posts a job and answers 202 with a Location to poll
    POST /orders/later   starts the flow in the background: 202 with a Location to poll
    GET  /jobs/{id}      the job's state and its flow's status
    GET  /flows/{id}     a flow's status (404 for an unknown id, as /jobs/{id})

`zag_lifespan` opens one SQLite file that holds both the flows' state and the
job board, and runs a conductor in the same process. On shutdown it suspends
whatever is running and the jobs go back on the board; after a shutdown, a
crash or a kill -9, the next start (or any other conductor on the same
database) takes that work back and finishes it without redoing finished steps.

Run as a script it drives itself through httpx's ASGI transport and prints what
it sees, including a shutdown in the middle of a job; `--serve` starts uvicorn
instead (`--db PATH_OR_URL`, default $ORDERS_DB or orders.db; `--port N`,
default $ORDERS_PORT or 8000; try `curl -XPOST localhost:8000/orders/async -d
'{"item": "book"}' -H 'content-type: application/json'`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from pydantic import BaseModel

import zag_async as zag
from zag_async.contrib.fastapi import ZagDep, zag_lifespan
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
    """The factory jobs and flow records name ('fastapi_app:order_flow')."""
    return zag.linear("order", reserve_stock, charge_card, ship, send_receipt)


ORDER_FLOW = "fastapi_app:order_flow"


class Order(BaseModel):
    item: str
    qty: int = 1
    ship_delay: float = 0.0  #: demo knob: how long shipping takes


router = APIRouter()


@router.post("/orders")
async def place_order(order: Order, service: ZagDep, response: Response) -> dict[str, Any]:
    status = await service.run(ORDER_FLOW, store=order.model_dump())
    response.status_code = http_status(status)  # 200, 409 reverted, 503 shut down
    if not status.done:  # suspended by a shutdown: say where to look later
        response.headers["Location"] = f"/flows/{status.flow_id}"
    return status.to_dict()


@router.post("/orders/async", status_code=202)
async def place_order_later(
    order: Order, service: ZagDep, request: Request, response: Response
) -> dict[str, Any]:
    job = await service.post(f"order {order.item}", ORDER_FLOW, store=order.model_dump())
    url = request.app.url_path_for("job_status", job_id=job.uuid)
    response.headers["Location"] = url
    return {"job_id": job.uuid, "flow_id": job.flow_id, "status_url": url}


@router.post("/orders/later", status_code=202)
async def place_order_in_background(
    order: Order, service: ZagDep, response: Response
) -> dict[str, Any]:
    flow_id = await service.start(ORDER_FLOW, store=order.model_dump())
    response.headers["Location"] = f"/flows/{flow_id}"
    return {"flow_id": flow_id, "status_url": f"/flows/{flow_id}"}


@router.get("/jobs/{job_id}", name="job_status")
async def job_status(job_id: str, service: ZagDep) -> dict[str, Any]:
    try:
        return (await service.job_status(job_id)).to_dict()
    except zag.errors.JobNotFound:
        raise HTTPException(404, f"no job {job_id}") from None


@router.get("/flows/{flow_id}")
async def flow_status(flow_id: str, service: ZagDep) -> dict[str, Any]:
    try:
        return (await service.flow_status(flow_id)).to_dict()
    except zag.errors.NotFound:
        raise HTTPException(404, f"no flow {flow_id}") from None


def create_app(*, backend: str = "sqlite+aiosqlite:///orders.db", **options: Any) -> FastAPI:
    """The app; `options` go to `ZagService` (e.g. `shutdown_timeout=`, `name=`).

    The job board is the backend's own database unless `board=` says otherwise.
    """
    options.setdefault("conductor", {"max_jobs": 4})
    app = FastAPI(title="orders", lifespan=zag_lifespan(backend=backend, **options))
    app.include_router(router)
    return app


# -- the self-driving demo ----------------------------------------------------------------


async def poll(client: httpx.AsyncClient, url: str, until: Any) -> dict[str, Any]:
    """GET `url` until `until(body)` holds (at most 10 s)."""
    async with asyncio.timeout(10):
        while True:
            body: dict[str, Any] = (await client.get(url)).json()
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
        app = create_app(**urls)
        async with (
            LifespanManager(app) as started,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=started.app), base_url="http://orders"
            ) as client,
        ):
            r = await client.post("/orders", json={"item": "book", "qty": 2})
            body = r.json()
            print(f"POST /orders book x2     -> {r.status_code} {body['state']}", end=" ")
            print(f"receipt={body['results']['receipt']!r}")
            r = await client.post("/orders", json={"item": "piano"})
            body = r.json()
            print(f"POST /orders piano       -> {r.status_code} {body['state']} {body['error']}")
            print(f"  {atoms(body)}")

            r = await client.post("/orders/async", json={"item": "lamp", "qty": 3})
            job_id = r.json()["job_id"]
            location = r.headers["location"]
            print(
                f"POST /orders/async lamp  -> {r.status_code}, Location is /jobs/<job id>:",
                location == f"/jobs/{job_id}",
            )
            body = await poll(client, location, lambda b: b["state"] == "COMPLETE")
            print(f"GET  /jobs/<job id>      -> {body['state']} {body['flow']['state']}", end=" ")
            print(f"receipt={body['flow']['results']['receipt']!r}")

            # A slow order: stop the app while it ships.
            r = await client.post("/orders/async", json={"item": "book", "ship_delay": 0.3})
            job_id, flow_id = r.json()["job_id"], r.json()["flow_id"]
            await poll(client, f"/flows/{flow_id}", lambda b: "ship RUNNING" in atoms(b))
            print("stopping the app while the order ships")
        print(f"  stored: {await stored(urls['backend'], flow_id)}")

        app = create_app(**urls)  # a restart: same database
        async with (
            LifespanManager(app) as started,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=started.app), base_url="http://orders"
            ) as client,
        ):
            body = await poll(client, f"/jobs/{job_id}", lambda b: b["state"] == "COMPLETE")
            print(f"after the restart        -> {body['state']} {body['flow']['state']}")
            print(f"  {atoms(body['flow'])}")


def database_url(db: str) -> str:
    """A database URL, or a path taken as a SQLite file."""
    return db if "://" in db else f"sqlite+aiosqlite:///{db}"


def serve(db: str, port: int, **options: Any) -> None:
    """Serve the app with uvicorn on 127.0.0.1:`port` until stopped."""
    import uvicorn

    uvicorn.run(create_app(backend=database_url(db), **options), host="127.0.0.1", port=port)


app = create_app()  # for `uvicorn fastapi_app:app` (run from examples/)

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--serve", action="store_true", help="serve HTTP instead of the demo")
    parser.add_argument("--db", default=os.environ.get("ORDERS_DB", "orders.db"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("ORDERS_PORT", "8000")))
    args = parser.parse_args()
    if args.serve:
        serve(args.db, args.port)
    else:
        asyncio.run(demo())
