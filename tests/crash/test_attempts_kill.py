"""`AtomDetail.attempts` counts every launch, across repeated kill -9: a resumed run
commits its relaunch of the interrupted atom before the atom starts, so a
process killed during the relaunch leaves it counted."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import zag_async as zag

CHILD = Path(__file__).with_name("attempts_child.py")


def _start(url: str, *flow_id: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(CHILD.parent), *sys.path])}
    return subprocess.Popen(
        [sys.executable, str(CHILD), url, *flow_id],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=CHILD.parent,
    )


def _kill_once_started(child: subprocess.Popen[str]) -> list[str]:
    assert child.stdout is not None
    lines = []
    with child, child.stdout:
        for line in child.stdout:  # bounded: the child prints "started" or dies
            lines.append(line.strip())
            if line.startswith("started"):
                break
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    return lines


async def _attempts(url: str, flow_id: str) -> int:
    async with zag.connect(url) as db:
        return (await db.load_flow(flow_id)).atoms["slow"].attempts


def test_attempts_count_each_launch_across_repeated_kills(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'attempts.db'}"
    lines = _kill_once_started(_start(url))
    assert lines[-1] == "started", lines
    flow_id = lines[0].split()[1]
    assert asyncio.run(_attempts(url, flow_id)) == 1
    for expected in (2, 3):
        assert _kill_once_started(_start(url, flow_id))[-1] == "started"
        assert asyncio.run(_attempts(url, flow_id)) == expected
