"""An expense approval on FastAPI: submit, wait up to 2 days for a manager, then pay.

    POST /expenses                                 submits an expense: starts its flow, 202
    POST /api/flows/{flow_id}/signals/approval     the manager approves (JSON body: who);
                                                   the ready route of `signal_router`
    POST /expenses/{flow_id}/reject                the manager rejects (`zag.reject`)
    GET  /expenses/{flow_id}                       the flow's status (and what it waits for)

The flow is `submit -> wait_for("approve", event="approval", timeout=2 days) -> pay`.
While it waits nothing runs and nothing is held: the flow is a row in the
database and its job is parked on the board until the deadline. An approval
resumes it and it pays; a rejection, or no answer by the deadline, fails the
wait, so the flow reverts: `submit`'s revert marks the expense refused and
tells the employee.

Run as a script it drives itself through httpx's ASGI transport: one expense
approved, one rejected, one left unanswered until its deadline (`--timeout
SECONDS` shortens the 2 days; the golden test passes 1).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

import zag_async as zag
from zag_async.contrib.fastapi import ZagDep, signal_router, zag_lifespan
from zag_async.errors import WaitRejected, WaitTimeout

TWO_DAYS = 2 * 86400.0


@zag.task(provides="expense")
async def submit(employee: str, amount: float, what: str) -> dict[str, Any]:
    return {"id": f"EXP-{employee}", "employee": employee, "amount": amount, "what": what}


@submit.revert
async def refuse(employee: str, *, result: Any, flow_failures: dict[str, zag.Failure]) -> None:
    failure = flow_failures.get("approve")
    if failure is not None and failure.check(WaitRejected):
        why = failure.message.split("was rejected: ", 1)[-1]
    elif failure is not None and failure.check(WaitTimeout):
        why = "no answer before the deadline"
    else:
        why = "the expense could not be processed"
    print(f"  mail to {employee}: {result['id']} refused ({why})")  # a stand-in for e-mail


@zag.task(provides="payment")
async def pay(expense: dict[str, Any], approval: dict[str, Any]) -> str:
    print(f"  mail to {expense['employee']}: {expense['id']} paid, approved by {approval['by']}")
    return f"PAY-{expense['id']}-{expense['amount']:.2f}"


def expense_flow(timeout: float = TWO_DAYS) -> zag.Flow:
    """The factory flow records and jobs name ('expense_approval:expense_flow')."""
    approve = zag.wait_for("approve", event="approval", timeout=timeout, provides="approval")
    return zag.linear("expense", submit, approve, pay)


class Expense(BaseModel):
    employee: str
    amount: float
    what: str


class Rejection(BaseModel):
    reason: str


def create_app(*, backend: str, timeout: float = TWO_DAYS) -> FastAPI:
    """The app: flows and jobs in `backend`, a conductor in the process."""
    app = FastAPI(title="expenses", lifespan=zag_lifespan(backend=backend, conductor=True))
    app.include_router(signal_router("/api"))  # POST /api/flows/{id}/signals/{event}

    @app.post("/expenses", status_code=202)
    async def submit_expense(expense: Expense, service: ZagDep) -> dict[str, str]:
        flow_id = await service.start(
            "expense_approval:expense_flow", timeout, store=expense.model_dump()
        )
        return {"flow_id": flow_id, "status_url": f"/expenses/{flow_id}"}

    @app.post("/expenses/{flow_id}/reject", status_code=202)
    async def reject_expense(flow_id: str, rejection: Rejection, service: ZagDep) -> dict[str, str]:
        try:
            stored = await service.signal(flow_id, "approval", zag.reject(rejection.reason))
        except zag.errors.SignalRefused as exc:
            raise HTTPException(409, str(exc)) from None
        return {"signal": stored.id}

    @app.get("/expenses/{flow_id}")
    async def expense_status(flow_id: str, service: ZagDep) -> dict[str, Any]:
        try:
            return (await service.flow_status(flow_id)).to_dict()
        except zag.errors.NotFound:
            raise HTTPException(404, f"no expense {flow_id}") from None

    return app


# -- the self-driving demo ----------------------------------------------------------------


async def poll(client: httpx.AsyncClient, url: str, states: set[str]) -> dict[str, Any]:
    """GET `url` until the flow is in one of `states` (at most 30 s)."""
    async with asyncio.timeout(30):
        while True:
            body: dict[str, Any] = (await client.get(url)).json()
            if body["state"] in states:
                return body
            await asyncio.sleep(0.02)


async def submitted(client: httpx.AsyncClient, employee: str, amount: float, what: str) -> str:
    """POST /expenses, then wait until the flow waits for its approval; returns its id."""
    expense = {"employee": employee, "amount": amount, "what": what}
    r = await client.post("/expenses", json=expense)
    flow_id: str = r.json()["flow_id"]
    body = await poll(client, f"/expenses/{flow_id}", {"WAITING"})
    [wait] = body["waiting_for"]
    print(
        f"POST /expenses {employee} {amount:.2f} {what} -> {r.status_code}; {body['state']}", end=""
    )
    print(f" at {wait['atom']} for {wait['event']!r}, deadline set: {wait['deadline'] is not None}")
    return flow_id


async def ended(client: httpx.AsyncClient, flow_id: str, answer: httpx.Response | None) -> None:
    """Wait for the flow's end (its steps print their mail first); print how it ended."""
    body = await poll(client, f"/expenses/{flow_id}", {"SUCCESS", "REVERTED", "FAILURE"})
    if body["state"] == "SUCCESS":
        outcome = f"payment {body['results']['payment']}"
    else:  # the error's type only: a timeout's message holds the deadline
        outcome = body["error"].split(":")[0]
    answered = "" if answer is None else f"answered {answer.status_code}; "
    print(f"  {answered}flow {body['state']}: {outcome}")


async def demo(approval_timeout: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(backend=f"sqlite+aiosqlite:///{tmp}/expenses.db", timeout=approval_timeout)
        async with (
            LifespanManager(app) as started,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=started.app), base_url="http://expenses"
            ) as client,
        ):
            taxi = await submitted(client, "ann", 42.0, "taxi")
            print("  maria approves: POST /api/flows/<id>/signals/approval")
            r = await client.post(f"/api/flows/{taxi}/signals/approval", json={"by": "maria"})
            await ended(client, taxi, r)

            laptop = await submitted(client, "bob", 1800.0, "laptop")
            print("  maria rejects: POST /expenses/<id>/reject")
            r = await client.post(f"/expenses/{laptop}/reject", json={"reason": "over budget"})
            await ended(client, laptop, r)

            lunch = await submitted(client, "cho", 15.5, "lunch")
            print("  nobody answers")
            await ended(client, lunch, None)

            late = await client.post(f"/api/flows/{lunch}/signals/approval", json={"by": "maria"})
            detail = late.json()["detail"].replace(lunch, "<id>")
            print(f"approving it now -> {late.status_code} {detail}")
            unknown = await client.post("/api/flows/nope/signals/approval", json={"by": "maria"})
            print(f"approving an unknown expense -> {unknown.status_code}")
            bad = await client.post(f"/api/flows/{taxi}/signals/approval", content=b"{oops")
            print(f"a body that is not JSON -> {bad.status_code}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument(
        "--timeout", type=float, default=TWO_DAYS, help="seconds an approval may take"
    )
    asyncio.run(demo(parser.parse_args().timeout))
