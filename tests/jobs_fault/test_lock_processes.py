"""`board.lock(name)` across processes: mutual exclusion, and release when a holder dies.

Each contender is a worker.py subprocess with its own ZooKeeper session.
Inside the lock it writes an `enter` row, holds, and writes an `exit` row;
the rows' times come from one clock (PostgreSQL's clock_timestamp()), so the
intervals of different processes can be compared directly.
"""

from __future__ import annotations

import collections
import signal

from support import eventually

from . import flows
from .conftest import CALL, SESSION, Workers

LOCK = "volume-42"


def _intervals(log: list[dict[str, object]]) -> list[tuple[float, float, str]]:
    """(enter, exit, who) per round, checking that each process alternates enter/exit."""
    open_at: dict[str, float] = {}
    out = []
    for row in log:
        who, at = str(row["who"]), float(row["at"])  # type: ignore[arg-type]
        if row["entry"] == "enter":
            assert who not in open_at, f"{who} entered twice without leaving"
            open_at[who] = at
        elif row["entry"] == "exit":
            out.append((open_at.pop(who), at, who))
    return sorted(out)


async def test_contending_processes_never_overlap(
    zk_url: str, pg_url: str, run_id: str, workers: Workers
) -> None:
    """3 processes x 4 rounds on one lock: no two holding intervals overlap."""
    contenders = [
        workers.spawn(
            "lock",
            f"p{i}",
            board=zk_url,
            pg=pg_url,
            run=run_id,
            lock=LOCK,
            rounds=4,
            hold=0.05,
            wait_go=True,
            session_timeout=SESSION,
            call_timeout=CALL,
        )
        for i in range(3)
    ]
    for p in contenders:
        await p.ready()
    for p in contenders:
        p.signal(signal.SIGUSR1)
    for p in contenders:
        assert await p.exited(within=40) == 0, p.output()

    log = [r for r in await flows.read_log(pg_url, run_id) if r["entry"] in ("enter", "exit")]
    intervals = _intervals(log)
    assert collections.Counter(who for _, _, who in intervals) == {"p0": 4, "p1": 4, "p2": 4}
    for (_, left, who), (entered, _, next_who) in zip(intervals, intervals[1:], strict=False):
        assert left <= entered, f"{who} still held {LOCK} when {next_who} entered"
    # They did contend: the holders changed hands more than once.
    handovers = sum(a[2] != b[2] for a, b in zip(intervals, intervals[1:], strict=False))
    assert handovers >= 2, intervals


async def test_killed_holder_releases_the_lock_by_session_expiry(
    zk_url: str, pg_url: str, run_id: str, workers: Workers
) -> None:
    """A holder SIGKILLed inside the lock: a waiter gets in within session timeout + 2 s."""
    options = {
        "board": zk_url,
        "pg": pg_url,
        "run": run_id,
        "lock": LOCK,
        "session_timeout": SESSION,
        "call_timeout": CALL,
    }
    holder = workers.spawn("lock", "holder", hang=True, **options)
    await eventually(lambda: holder.events("entered"), within=20, what="holder inside the lock")
    waiter = workers.spawn("lock", "waiter", hold=0.0, **options)
    await eventually(lambda: waiter.events("waiting"), within=20, what="waiter waiting")
    assert not waiter.events("entered")

    killed_at = holder.kill()
    entered = await eventually(
        lambda: waiter.events("entered"), within=SESSION + 10, what="waiter enters"
    )
    latency = entered[0]["t"] - killed_at
    print(f"\nlock released {latency:.2f} s after its holder was killed (session {SESSION} s)")
    assert 0 < latency < SESSION + 2.0
    assert await waiter.exited(within=20) == 0, waiter.output()

    log = [r for r in await flows.read_log(pg_url, run_id) if r["entry"] in ("enter", "exit")]
    assert [(r["entry"], r["who"]) for r in log] == [
        ("enter", "holder"),
        ("enter", "waiter"),
        ("exit", "waiter"),
    ]
    assert log[1]["at"] > killed_at  # type: ignore[operator]
