"""Examples that scale out by URL print the same output against real servers."""

from __future__ import annotations

import os
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
