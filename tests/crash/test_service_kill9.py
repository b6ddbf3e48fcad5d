"""The example web services, run as real servers, killed with SIGKILL and restarted.

`order_server.py` serves examples/fastapi_app.py (uvicorn) or
examples/aiohttp_app.py (aiohttp's `web.run_app`) on one database that holds
flows and jobs: the embedded default (a SQLite file) or PostgreSQL. Every task
call leaves committed `<atom>:exec` / `<atom>:done` rows in a side-effect table
of the same database, keyed by the order's item.

Orders go in through all three routes: `/orders/later` (`ZagService.start`, a
job this service claims at once), `/orders/async` (a job any conductor may
take) and `/orders` (a flow awaited inside the request, whose client the kill
cuts off). The server is killed at several points: while atoms run, right after
a post, while a job is claimed, and again while the next incarnation is redoing
interrupted work. After each kill the test reads what the database holds; the
last incarnation must then finish every order, and the log must show:

- an atom whose SUCCESS was committed before a kill never runs again;
- an atom in flight at a kill runs again (at-least-once), and its stored
  `attempts` counts each launch: 1 + the number of kills that caught it RUNNING;
- an atom no kill caught running ran exactly once.

Recovery times (restart to interrupted work running again, and a replica's
takeover of a dead one's work) are printed; run with `-s` to see them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import eventually, free_port, fresh_pg_database

import zag_async as zag
from zag_async.states import FlowState

from . import flows

SERVER = Path(__file__).with_name("order_server.py")
ATOMS = ("reserve_stock", "charge_card", "ship", "send_receipt")
SHIP = 2.0  # seconds the slow atom takes: the window the kills aim at
#: Within this, interrupted work must run again after a restart (issue 11 says about a minute).
RECOVERY_LIMIT = 60.0


@pytest.fixture(scope="module")
def pg_db() -> Iterator[str]:
    """A PostgreSQL database of this module's own (flows, jobs and the effect log)."""
    with fresh_pg_database("zag_svc") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'orders.db'}"
    return str(request.getfixturevalue("pg_db"))


# -- one server process -------------------------------------------------------------


class Server:
    """One incarnation of an example service, on its port; its output goes to a file."""

    def __init__(self, kind: str, url: str, port: int, logs: Path, name: str | None = None):
        self.kind, self.url, self.port, self.logs, self.name = kind, url, port, logs, name
        self.proc: asyncio.subprocess.Process | None = None
        self.started = 0.0  # time.monotonic() at spawn
        self.client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30)
        self.count = 0

    async def start(self) -> float:
        """Spawn the server; returns seconds until it answers HTTP."""
        self.count += 1
        out = self.log_path.open("wb")  # noqa: ASYNC230 (a local file, at once)
        args = [self.kind, self.url, str(self.port), *([self.name] if self.name else [])]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.started = time.monotonic()
        with out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, str(SERVER), *args, stdout=out, stderr=out, env=env
            )
        await eventually(self._answers, within=30, what=f"{self.kind} server on {self.port}")
        return time.monotonic() - self.started

    async def _answers(self) -> bool:
        assert self.proc is not None and self.proc.returncode is None, self.log()
        try:
            r = await self.client.get("/flows/none")
        except httpx.TransportError:
            return False
        return r.status_code == 404

    @property
    def log_path(self) -> Path:
        return self.logs / f"{self.kind}-{self.port}-{self.count}.log"

    def log(self) -> str:
        """The end of this incarnation's output."""
        path = self.log_path
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    async def kill(self) -> None:
        """SIGKILL, and wait until the process is gone."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def post(self, route: str, item: str, ship: float = SHIP) -> dict[str, Any]:
        r = await self.client.post(route, json={"item": item, "ship_delay": ship})
        assert r.status_code == 202, (r.status_code, r.text)
        body: dict[str, Any] = r.json()
        return body

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.kill()
        await self.client.aclose()


@contextlib.asynccontextmanager
async def server(kind: str, url: str, logs: Path, name: str | None = None) -> AsyncIterator[Server]:
    srv = Server(kind, url, free_port(), logs, name)
    try:
        yield srv
    finally:
        await srv.close()


# -- what the database holds ---------------------------------------------------------------


@dataclass
class Snapshot:
    """One order as stored at one instant: flow and atom states, attempts, effect rows."""

    flow: zag.FlowDetail | None
    log: list[str]

    def state(self, atom: str) -> str | None:
        if self.flow is None or atom not in self.flow.atoms:
            return None
        return str(self.flow.atoms[atom].state)

    def runs(self, atom: str) -> tuple[int, int]:
        return self.log.count(f"{atom}:exec"), self.log.count(f"{atom}:done")


@dataclass
class Order:
    item: str
    route: str
    flow_id: str | None = None
    job_id: str | None = None
    at_kills: list[Snapshot] = field(default_factory=list)


def new_item() -> str:
    return "o" + uuid.uuid4().hex[:12]


async def snapshot(url: str, orders: list[Order]) -> dict[str, Snapshot]:
    """Each order's flow record (found by its item) and its effect rows."""
    async with zag.connect(url) as backend:
        by_item: dict[str, zag.FlowDetail] = {}
        for summary in await backend.list_flows():
            detail = await backend.load_flow(summary.uuid)
            item = detail.store.get("item")
            if isinstance(item, str):
                by_item[item] = detail
    return {
        o.item: Snapshot(by_item.get(o.item), await flows.read_log(url, o.item)) for o in orders
    }


async def after_kill(url: str, orders: list[Order]) -> None:
    for order, snap in zip(orders, (await snapshot(url, orders)).values(), strict=True):
        order.at_kills.append(snap)
        if snap.flow is not None:
            order.flow_id = snap.flow.uuid


async def all_done(url: str, orders: list[Order]) -> dict[str, Snapshot] | None:
    snaps = await snapshot(url, orders)
    done = all(s.flow is not None and s.flow.state is FlowState.SUCCESS for s in snaps.values())
    return snaps if done else None


async def running_again(url: str, orders: list[Order], started: float, within: float) -> float:
    """Seconds from `started` until each order a kill interrupted has run a task again."""
    waiting = [
        o
        for o in orders
        if o.at_kills[-1].flow is None or o.at_kills[-1].flow.state is not FlowState.SUCCESS
    ]
    before = {o.item: len(o.at_kills[-1].log) for o in waiting}

    async def moved() -> bool:
        logs = [await flows.read_log(url, o.item) for o in waiting]
        return all(len(log) > before[o.item] for o, log in zip(waiting, logs, strict=True))

    await eventually(moved, within=within, interval=0.05, what="interrupted orders running")
    return time.monotonic() - started


def check_exactly_once(order: Order, final: Snapshot) -> None:
    """The guarantees in the module docstring, for one order."""
    assert final.flow is not None and final.flow.state is FlowState.SUCCESS, order
    for atom in ATOMS:
        execs, dones = final.runs(atom)
        caught = sum(snap.state(atom) == "RUNNING" for snap in order.at_kills)
        attempts = final.flow.atoms[atom].attempts
        where = f"order {order.item} ({order.route}) atom {atom}: log {final.log}"
        assert attempts == 1 + caught, where
        assert 1 <= dones <= execs <= attempts, where
        if caught == 0:
            assert execs == dones == 1, where
        for snap in order.at_kills:
            if snap.state(atom) == "SUCCESS":  # committed before this kill: never again
                assert snap.runs(atom) == (execs, dones), where


async def wait_for_exec(url: str, item: str, atom: str, times: int = 1) -> None:
    async def seen() -> bool:
        return (await flows.read_log(url, item)).count(f"{atom}:exec") >= times

    await eventually(seen, within=20, interval=0.02, what=f"{item} {atom} running")


async def request_in_flight(srv: Server, item: str, ship: float = SHIP) -> asyncio.Task[Any]:
    """POST /orders (the flow runs inside the request) and leave it waiting."""

    async def call() -> Any:
        with contextlib.suppress(httpx.TransportError):  # the kill cuts it off
            return await srv.client.post("/orders", json={"item": item, "ship_delay": ship})

    return asyncio.create_task(call())


# -- the tests --------------------------------------------------------------------------------


async def kill_restart_scenario(kind: str, url: str, logs: Path, *, full: bool = True) -> None:
    await flows.create_log(url)
    async with server(kind, url, logs) as srv:
        ready = await srv.start()
        orders: list[Order] = []

        # Kill 1: three orders inside their slow atom (one of each route), a job
        # claimed, and two posted just before the kill.
        later = Order(new_item(), "/orders/later")
        later.flow_id = (await srv.post(later.route, later.item))["flow_id"]
        orders.append(later)
        job = Order(new_item(), "/orders/async")
        job.job_id = (await srv.post(job.route, job.item))["job_id"]
        orders.append(job)
        calls = []
        if full:
            inline = Order(new_item(), "/orders")
            calls.append(await request_in_flight(srv, inline.item))
            orders.append(inline)
        try:
            for order in orders:
                await wait_for_exec(url, order.item, "ship")
        except AssertionError as exc:  # say what the orders and the server went through
            raise AssertionError(f"{exc}: {await snapshot(url, orders)}\n{srv.log()}") from None
        assert job.job_id is not None
        claimed = (await srv.client.get(f"/jobs/{job.job_id}")).json()
        assert claimed["state"] == "CLAIMED", claimed
        if full:
            fresh = [Order(new_item(), "/orders/async"), Order(new_item(), "/orders/later")]
            for order in fresh:
                await srv.post(order.route, order.item, ship=0.0)
            orders += fresh
        await srv.kill()
        await asyncio.gather(*calls)
        await after_kill(url, orders)

        # Restart; kill 2 while the new incarnation redoes the interrupted slow atoms.
        up = await srv.start()
        again = await running_again(url, orders, srv.started, RECOVERY_LIMIT)
        print(
            f"\n{kind} on {url.split('+')[0]}: server up in {ready:.2f}s; after kill 1, "
            f"up in {up:.2f}s and interrupted work running again {again:.2f}s after spawn"
        )
        if full:
            # The slow atoms the first kill caught (on a loaded machine the first
            # order's may have finished meanwhile) are running again: kill now.
            again_in_ship = [o for o in orders if o.at_kills[0].state("ship") == "RUNNING"]
            assert again_in_ship, [o.at_kills[0] for o in orders]
            for order in again_in_ship:
                await wait_for_exec(url, order.item, "ship", times=2)
            await srv.kill()
            await after_kill(url, orders)
            up = await srv.start()
            again = await running_again(url, orders, srv.started, RECOVERY_LIMIT)
            print(f"after kill 2: up in {up:.2f}s, work running again {again:.2f}s after spawn")

        finals = await eventually(
            lambda: all_done(url, orders), within=30, interval=0.1, what="every order SUCCESS"
        )
        for order in orders:
            check_exactly_once(order, finals[order.item])
        # The job is consumed by its own board write after its flow's last commit:
        # a moment later than the flow reads SUCCESS.
        async def job_complete() -> dict[str, Any] | None:
            reply = (await srv.client.get(f"/jobs/{job.job_id}")).json()
            return reply if reply["state"] == "COMPLETE" else None

        body = await eventually(job_complete, within=30, interval=0.1, what="the job COMPLETE")
        assert body["flow"]["results"]["receipt"].endswith(f"TRK-{job.item}-1")
        status = (await srv.client.get(f"/flows/{later.flow_id}")).json()
        assert status["state"] == "SUCCESS", status


async def test_fastapi_service_survives_kill9(db: str, tmp_path: Path) -> None:
    await kill_restart_scenario("fastapi", db, tmp_path)


async def test_aiohttp_service_survives_kill9(tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'orders.db'}"
    await kill_restart_scenario("aiohttp", db, tmp_path, full=False)


@pytest.mark.timeout(150)
async def test_a_replica_finishes_the_work_of_a_killed_one(pg_db: str, tmp_path: Path) -> None:
    """Two FastAPI replicas on one PostgreSQL; A is killed while its orders run, B finishes them.

    B starts once A runs them all (else B's conductor may claim some jobs first), so
    each route's work is A's when it dies; B has to wait for A's leases (its name is
    no process B could see is dead).
    """
    await flows.create_log(pg_db)
    async with (
        server("fastapi", pg_db, tmp_path, "orders-a") as a,
        server("fastapi", pg_db, tmp_path, "orders-b") as b,
    ):
        await a.start()
        orders = [Order(new_item(), "/orders/later"), Order(new_item(), "/orders/async")]
        for order in orders:
            await a.post(order.route, order.item, ship=5.0)
        inline = Order(new_item(), "/orders")
        # As slow as the others: B's start before the kill can take seconds on a busy
        # machine, and a 2 s ship finished in that time once.
        call = await request_in_flight(a, inline.item, ship=5.0)
        orders.append(inline)
        for order in orders:
            await wait_for_exec(pg_db, order.item, "ship")
        await b.start()
        await a.kill()
        killed = time.monotonic()
        await call
        await after_kill(pg_db, orders)
        owners = {o.item: o.at_kills[0].flow and o.at_kills[0].flow.lease_owner for o in orders}
        of_a = [o for o in orders if (owners[o.item] or "").find("orders-a") >= 0]
        assert of_a == orders, owners

        took: dict[str, float] = {}

        async def taken_over() -> bool:
            for order in of_a:
                if order.item not in took:
                    log = await flows.read_log(pg_db, order.item)
                    if log.count("ship:exec") >= 2:
                        took[order.item] = time.monotonic() - killed
            return len(took) == len(of_a)

        await eventually(taken_over, within=RECOVERY_LIMIT + 15, interval=0.1, what="takeover")
        finals = await eventually(
            lambda: all_done(pg_db, orders), within=30, interval=0.1, what="every order SUCCESS"
        )
        for order in orders:
            check_exactly_once(order, finals[order.item])
        taken = ", ".join(f"{o.route} after {took[o.item]:.1f}s" for o in of_a)
        print(f"\nreplicas: A killed; B took over {taken}")
        assert max(took.values()) < RECOVERY_LIMIT + 10
