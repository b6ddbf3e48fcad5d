"""The operations UI's pages, loaded over HTTP with 100,000 flows stored (issue 16).

Issue 16 asks that the pages load in under 200 ms with 100,000 flows in the
database. This fills a scratch SQLite file and a scratch PostgreSQL database
(dropped afterwards) with N flow rows in bulk (`ui_listing.rows`: 30 days of
history, varied states and names), adds a few real flows run by an engine (so a
flow page has atoms, a timeline and a failure) and jobs on the SQL board in the
same database, serves the UI with uvicorn on a loopback port, and times each
page as a browser's first request for it: the median of 5 GETs (after one
warm-up) from connect to the last byte, with the server's own `Server-Timing`
where the page reports it. The picture (Graphviz) is left out: it is drawn by a
subprocess and not part of the page's HTML. Nothing asserts a timing.

    python benchmarks/ui_pages.py [--flows 100000] [--backends sqlite,postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import re
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from common import drop_pg, fresh_pg
from ui_listing import fill_postgres, fill_sqlite, log, rows

HERE = Path(__file__).resolve().parent
REPEATS = 5


@contextlib.asynccontextmanager
async def served(url: str) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """The UI on a free loopback port, over `url`'s flows and its SQL board; yields the
    base URL and the ids of a few real flows."""
    import socket

    import ui_page_flows as flows
    import uvicorn

    import zag_async as zag
    from zag_async.contrib.ui import asgi_app

    async with zag.connect(url) as backend, zag.jobs.connect(url, backend=backend) as board:
        real = {}
        # from the factory, so each flow page also rebuilds the flow for its atoms' inputs
        done = zag.Engine.from_factory(flows.order, store={"item": "lamp"}, backend=backend)
        await done.run()
        real["success"] = done.flow_id
        failed = zag.Engine.from_factory(flows.order, store={"item": "bad"}, backend=backend)
        with contextlib.suppress(Exception):
            await failed.run()
        real["reverted"] = failed.flow_id
        for n in range(200):
            await board.post(f"order-{n}", "ui_page_flows:order", store={"item": f"i{n}"})
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        app = asgi_app(backend, board=board)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
        task = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110 (uvicorn has no event for it)
            await asyncio.sleep(0.02)
        try:
            yield f"http://127.0.0.1:{port}", real
        finally:
            server.should_exit = True
            await task


async def page_time(base: str, path: str) -> tuple[float, float | None, int, str]:
    """(median ms, median server ms, status, body of the last GET) for `path`."""
    import httpx

    took, server = [], []
    status, body = 0, ""
    for n in range(REPEATS + 1):
        async with httpx.AsyncClient(base_url=base) as http:  # a new connection, as a first visit
            started = time.perf_counter()
            reply = await http.get(path)
            elapsed = (time.perf_counter() - started) * 1e3
        status, body = reply.status_code, reply.text
        found = re.search(r"dur=([0-9.]+)", reply.headers.get("server-timing", ""))
        if n:  # the first is a warm-up
            took.append(elapsed)
            if found:
                server.append(float(found.group(1)))
    return statistics.median(took), (statistics.median(server) if server else None), status, body


Timing = tuple[str, float, float | None, int]


async def measure(url: str) -> list[Timing]:
    import httpx

    async with served(url) as (base, real):
        pages = [
            "/flows",
            "/flows?state=FAILURE",
            "/flows?name=sync",
            "/flows?name=no-such-name",
            "/flows?since=24h",
            "/summary",
            "/jobs",
            f"/flows/{real['success']}",
            f"/flows/{real['reverted']}",
            f"/flows/{real['reverted']}/atoms.json",
        ]
        out = []
        # page 200 of the listing: follow "next" 199 times, then time that page
        path = "/flows"
        async with httpx.AsyncClient(base_url=base) as http:
            for _ in range(199):
                found = re.search(r'rel="next" href="([^"]+)"', (await http.get(path)).text)
                if not found:
                    break
                path = html.unescape(found.group(1))
        pages.insert(1, path)
        for page in pages:
            ms, server, status, _ = await page_time(base, page)
            label = "/flows (page 200)" if page == path and page != "/flows" else page
            out.append((label[:60], ms, server, status))
        return out


async def run(kind: str, n: int, workdir: Path) -> list[Timing]:
    now = time.time()
    data = rows(n, now)
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{workdir / 'ui.db'}"
        await fill_sqlite(url, data)
        return await measure(url)
    url = await fresh_pg("uipages")
    try:
        await fill_postgres(url, data)
        return await measure(url)
    finally:
        await drop_pg(url)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--flows", type=int, default=100_000)
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.backends.split(","):
            log(f"{kind}: {args.flows} flows")
            results = asyncio.run(run(kind, args.flows, Path(tmp)))
            print(f"\n{kind}, {args.flows:,} flows: page load over HTTP (median of {REPEATS}, ms)")
            print(f"  {'page':62} {'total':>8} {'server':>8}  status")
            for name, ms, server, status in results:
                shown = "" if server is None else f"{server:8.1f}"
                print(f"  {name:62} {ms:8.1f} {shown:>8}  {status}")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
