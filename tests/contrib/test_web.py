"""The example apps (examples/fastapi_app.py, examples/aiohttp_app.py) through their
frameworks' own test clients, each on SQLite and on PostgreSQL + ZooKeeper."""

from __future__ import annotations

import asyncio
from typing import Any

from support import eventually

import zag_async as zag

from .conftest import Framework, Urls, pg_connections


def atoms(flow: dict[str, Any]) -> dict[str, tuple[str, int]]:
    return {a["name"]: (a["state"], a["attempts"]) for a in flow["atoms"]}


async def test_the_app_opens_and_closes_the_service(web: Framework, urls: Urls) -> None:
    before = asyncio.all_tasks()
    async with web.open(**urls.options()) as client:
        service = client.service
        conductor = service.conductor
        assert conductor is not None and conductor.max_jobs == 4
        await eventually(lambda: conductor.running, what="the conductor to run")
        assert (await client.post("/orders", item="book")).status == 200
        backend, board = service.backend, service.board
    assert backend.closed and board.closed and not conductor.running
    await eventually(lambda: asyncio.all_tasks() == before, what="no task left behind")
    if urls.backend.startswith("postgresql"):
        await eventually(lambda: pg_connections(urls.backend) == 0, what="no connection left")


async def test_a_flow_awaited_in_the_request(web: Framework, urls: Urls) -> None:
    async with web.open(**urls.options()) as client:
        reply = await client.post("/orders", item="book", qty=2)
        assert reply.status == 200
        body = reply.body
        assert body["state"] == "SUCCESS"
        assert body["results"]["receipt"] == "P-24 TRK-book-2"
        assert "location" not in {k.lower() for k in reply.headers}
        again = await client.get(f"/flows/{body['flow_id']}")
        assert again.status == 200 and again.body == body

        reverted = await client.post("/orders", item="piano")
        assert reverted.status == 409
        assert reverted.body["state"] == "REVERTED"
        assert reverted.body["error"].endswith("OutOfStock: piano: 0 in stock, 1 ordered")
        assert atoms(reverted.body)["reserve_stock"] == ("REVERTED", 1)

        assert (await client.get("/flows/0f6c1ee6-1f5c-4b4c-9d0f-3a1e2b7c9d10")).status == 404
        assert (await client.get("/jobs/0f6c1ee6-1f5c-4b4c-9d0f-3a1e2b7c9d10")).status == 404


async def test_a_posted_job_answers_202_and_its_status_url_reaches_complete(
    web: Framework, urls: Urls
) -> None:
    async with web.open(**urls.options()) as client:
        reply = await client.post("/orders/async", item="lamp", qty=3)
        assert reply.status == 202
        job_id = reply.body["job_id"]
        location = {k.lower(): v for k, v in reply.headers.items()}["location"]
        assert location == reply.body["status_url"] == f"/jobs/{job_id}"
        body = await client.poll(location, lambda b: b["state"] == "COMPLETE")
        assert body["job_id"] == job_id and body["error"] is None
        assert body["flow"]["flow_id"] == reply.body["flow_id"]
        assert body["flow"]["results"]["receipt"] == "P-120 TRK-lamp-3"


async def test_shutdown_while_a_job_runs_hands_it_to_the_next_start(
    web: Framework, urls: Urls
) -> None:
    async with web.open(**urls.options()) as client:
        reply = await client.post("/orders/async", item="book", ship_delay=0.3)
        job_id, flow_id = reply.body["job_id"], reply.body["flow_id"]
        await client.poll(f"/flows/{flow_id}", lambda b: atoms(b).get("ship") == ("RUNNING", 1))
    # Shut down mid-ship: the step finished, the next did not start, the job is back.
    async with zag.connect(urls.backend) as db:
        detail = await db.load_flow(flow_id)
    assert detail.state == "SUSPENDED"
    assert {n: str(a.state) for n, a in detail.atoms.items()} == {
        "reserve_stock": "SUCCESS",
        "charge_card": "SUCCESS",
        "ship": "SUCCESS",
        "send_receipt": "PENDING",
    }

    async with web.open(**urls.options()) as client:  # a restart on the same servers
        body = await client.poll(f"/jobs/{job_id}", lambda b: b["state"] == "COMPLETE")
        assert body["flow"]["state"] == "SUCCESS"
        assert atoms(body["flow"]) == {
            "reserve_stock": ("SUCCESS", 1),
            "charge_card": ("SUCCESS", 1),
            "ship": ("SUCCESS", 1),
            "send_receipt": ("SUCCESS", 1),
        }
