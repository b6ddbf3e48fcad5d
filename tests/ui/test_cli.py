"""`zag-async ui --backend URL --port P`: the standalone server serves the pages,
read-only by default; `--actions` without `--token` is refused."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from support import eventually

from .conftest import Stored

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.services  # a server process of its own


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def served(*args: str) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.Response]]:
    """`zag-async <args> --port P` running: a client for it and its first /flows answer."""
    port = free_port()
    server = cli(*args, "--port", str(port))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def up() -> httpx.Response | None:
                assert server.poll() is None, "the UI server exited"
                try:
                    return await http.get("/flows")
                except httpx.TransportError:
                    return None

            listing = await eventually(up, within=20, interval=0.1, what="the UI answering")
            yield http, listing
    finally:
        server.terminate()
        server.communicate(timeout=10)


def cli(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZAG_")}
    # the tests' own modules too, as pytest imports them (the factories of tests/ui/flows.py)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    return subprocess.Popen(
        [sys.executable, "-m", "zag_async", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_the_ui_command_serves_the_pages(stored: Stored) -> None:
    async with served("ui", "--backend", stored.backend.url) as (http, listing):
        page = await http.get(f"/flows/{stored.waiting}")
        refused = await http.post(f"/flows/{stored.waiting}/resume", data={})
    assert listing.status_code == 200 and stored.waiting in listing.text
    assert page.status_code == 200 and "approve waits for signal" in page.text
    assert refused.status_code == 403  # read-only by default


def test_actions_without_a_token_are_refused(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'f.db'}"
    server = cli("ui", "--backend", url, "--actions")
    out, err = server.communicate(timeout=30)
    assert server.returncode == 2
    assert (
        err.strip() == "zag-async: --actions needs --token (or ZAG_UI_TOKEN): actions need a login"
    )


def test_a_short_token_is_refused(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'f.db'}"
    server = cli("ui", "--backend", url, "--actions", "--token", "abc")
    _, err = server.communicate(timeout=30)
    assert server.returncode == 2
    assert "--token must be at least 8 characters" in err


async def test_the_standalone_ui_runs_only_the_factories_it_is_given(stored: Stored) -> None:
    from . import flows

    async with served("ui", "--backend", stored.backend.url) as (http, _):
        plain = await http.get(f"/flows/{stored.done}")
    async with served("ui", "--backend", stored.backend.url, "--factories", flows.__name__) as (
        http,
        _,
    ):
        allowed = await http.get(f"/flows/{stored.done}")
    assert "is not one this UI may run" in plain.text
    assert "is not one this UI may run" not in allowed.text
    assert "inputs unknown" not in allowed.text
