"""Examples that scale out by URL print the same output against real servers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.services


def _reachable(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _need(service: str, port: int) -> None:
    if _reachable(port):
        return
    message = f"{service} is not reachable on 127.0.0.1:{port} (scripts/services.sh starts it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def test_jobs_board_example_on_zookeeper_and_postgres() -> None:
    _need("ZooKeeper", 2181)
    _need("PostgreSQL", 5432)
    board = f"zookeeper://127.0.0.1:2181/zag-test/example-{uuid.uuid4().hex}"
    store = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "jobs_board.py"), board, store],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == (ROOT / "examples" / "golden" / "jobs_board.out").read_text()


@pytest.mark.parametrize(("example", "how"), [("fastapi_app", "env"), ("aiohttp_app", "options")])
def test_web_example_serves_on_the_database_and_port_it_is_given(
    example: str, how: str, tmp_path: Path
) -> None:
    """`--serve` as documented: a background order finishes; SIGTERM stops the server."""
    import httpx
    from support import eventually_sync, free_port

    port, db = free_port(), tmp_path / "orders.db"
    args, env = ["--serve"], {**os.environ, "PYTHONPATH": str(ROOT)}
    if how == "env":
        env.update(ORDERS_DB=str(db), ORDERS_PORT=str(port))
    else:
        args += ["--db", str(db), "--port", str(port)]
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / f"{example}.py"), *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:

            def posted() -> httpx.Response | None:
                assert server.poll() is None, server.communicate()[1].decode()
                try:
                    return client.post("/orders/later", json={"item": "book"})
                except httpx.TransportError:
                    return None

            reply = eventually_sync(posted, within=30)
            assert reply.status_code == 202, reply.text
            status_url = reply.headers["location"]
            body = eventually_sync(
                lambda: (b := client.get(status_url).json())["state"] == "SUCCESS" and b
            )
            assert body["results"]["receipt"] == "P-12 TRK-book-1"
        assert db.exists()
        server.terminate()
        err = server.communicate(timeout=30)[1].decode()
        # A clean stop (uvicorn re-raises SIGTERM once it has shut down).
        assert server.returncode in (0, -signal.SIGTERM) and "Traceback" not in err, err
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
