"""SIGKILL around a wait, then resume in a fresh process: the flow ends once,
every task's effect shows once, every signal is taken by one wait at most.

A subprocess (wait_worker.py) runs a flow `a -> wait -> pay` (crash.wait_flows)
on a SQLite file or PostgreSQL. Its backend is wrapped so that it freezes at a
point around the wait (the wait's record written or not, a signal stored, a
signal taken, the timeout recorded or not); the test kills it with SIGKILL,
checks what the database holds at that instant, resumes the flow in new
processes and checks the end: the flow's state, how the wait ended
(meta["waited"]), which signals were taken (zag_signals), and the side-effect
log row for row (tasks log through their own connection, see crash.flows).

The race tests let a signal and a resume meet the deadline from two processes,
many times, and check that each flow has exactly one winner, recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from support import eventually

import zag_async as zag
from zag_async.errors import SignalRefused, WaitTimeout

from . import flows, wait_flows

WORKER = Path(__file__).with_name("wait_worker.py")
DBS = ("sqlite", "postgres")

PAID = ["a:exec", "a:done", "pay:exec({})", "pay:done"]
REVERTED = ["a:exec", "a:done", "a:revert", "a:reverted"]
R, S, P = "RUNNING", "SUCCESS", "PENDING"


def paid(decision: str) -> list[str]:
    return [e.format(decision) for e in PAID]


class Scene:
    """One flow of one test: its processes, and what the database holds."""

    def __init__(self, url: str, folder: Path, kind: str = "approval", timeout: float = 60) -> None:
        self.url, self.folder, self.kind, self.timeout = url, folder, kind, timeout
        self.run = uuid.uuid4().hex
        self.flow_id = ""

    async def _child(self, *args: str, hang: str | None = None) -> dict[str, Any] | None:
        """Run the worker to its end (its JSON line), or until it reaches `hang` and SIGKILL it."""
        env = dict(os.environ)
        if hang is not None:
            env.update(ZAG_CRASH_HANG=hang, ZAG_CRASH_SIGNAL=str(self.folder))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        hang_file = self.folder / "hang"
        if hang is None:
            async with asyncio.timeout(60):
                out, err = await proc.communicate()
            assert proc.returncode == 0, err.decode()
            result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
            return result
        try:
            await eventually(
                # (its content, not just the file: it is created, then written)
                lambda: (
                    (hang_file.exists() and hang_file.read_text()) or proc.returncode is not None
                ),
                within=30,
                what=f"worker reaching {hang!r}",
            )
            if proc.returncode is not None:
                out, err = await proc.communicate()
                pytest.fail(f"worker ended before {hang!r}:\n{out.decode()}{err.decode()}")
        finally:
            if proc.returncode is None:
                proc.kill()  # exactly once (see test_kill9)
            async with asyncio.timeout(30):
                await proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        assert hang_file.read_text() == hang
        hang_file.unlink()
        return None

    async def paused(self, *args: str, pause: str) -> asyncio.subprocess.Process:
        """Start the worker with the pause point `pause`; return once it pauses there."""
        env = {**os.environ, "ZAG_CRASH_PAUSE": pause, "ZAG_CRASH_SIGNAL": str(self.folder)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        paused = self.folder / "paused"

        def there() -> bool:
            if proc.returncode is not None:
                raise AssertionError(f"worker ended before pausing at {pause!r}")
            return paused.exists()

        try:
            await eventually(there, within=30, what=f"worker pausing at {pause!r}")
        except BaseException:
            proc.kill()
            await proc.wait()
            raise
        return proc

    async def finish(self, proc: asyncio.subprocess.Process) -> dict[str, Any]:
        """Let a paused worker go on; its JSON line once it ends (killed if it does not)."""
        (self.folder / "go").write_text("")
        try:
            async with asyncio.timeout(60):
                out, err = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode == 0, err.decode()
        result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        return result

    async def start(self, hang: str | None = None) -> dict[str, Any] | None:
        await flows.create_log(self.url)
        args = ("start", self.url, self.kind, self.run, str(self.timeout), str(self.folder))
        out = await self._child(*args, hang=hang)
        self.flow_id = (self.folder / "flow_id").read_text()
        return out

    async def resume(self, hang: str | None = None) -> dict[str, Any] | None:
        return await self._child("resume", self.url, self.flow_id, hang=hang)

    def sid(self, name: str) -> str:
        """A signal id of this scene (ids are unique across flows)."""
        return f"{name}-{self.run[:8]}"

    async def signal(
        self, payload: str, name: str, *, resume: bool = False, hang: str | None = None
    ) -> dict[str, Any] | None:
        """Send signal `name` (id: `sid(name)`) from a process."""
        then = ("resume",) if resume else ()
        args = ("signal", self.url, self.flow_id, payload, self.sid(name), *then)
        return await self._child(*args, hang=hang)

    async def stored(self) -> tuple[dict[str, str], dict[str, Any], list[zag.Signal]]:
        """Flow and atom states, the wait's meta, and the flow's signals."""
        async with zag.connect(self.url) as backend:
            detail = await backend.load_flow(self.flow_id)
            signals = await backend.list_signals(self.flow_id)
        states = {"flow": str(detail.state)}
        states.update({name: str(a.state) for name, a in detail.atoms.items()})
        return states, detail.atoms["approve"].meta or {}, signals

    async def log(self) -> list[str]:
        return await flows.read_log(self.url, self.run)

    async def past_deadline(self) -> None:
        """Wait (bounded) until the database's clock passes the wait's deadline."""
        _, meta, _ = await self.stored()
        deadline = meta["wait"]["deadline"]
        async with zag.connect(self.url) as backend:

            async def passed() -> bool:
                return await backend.clock() > deadline + 0.01

            await eventually(passed, within=self.timeout + 10, what="the wait's deadline")


#: Most scenes are the same on both databases (the engine's writes and the wait's
#: checks are shared code), so they run on SQLite; those where PostgreSQL differs
#: (a stamp taken before its commit, row locks, a race between processes) run on both.
BOTH = pytest.mark.parametrize("url", DBS, indirect=True)


@pytest.fixture(params=["sqlite"])
def url(request: Any, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite+aiosqlite:///{tmp_path / 'waits.db'}"


def taken(signals: list[zag.Signal]) -> list[tuple[str, bool]]:
    """(name, taken) of every signal, in arrival order (the name: its id without
    the scene's suffix, see Scene.sid)."""
    return [(s.id.rsplit("-", 1)[0], s.taken_by is not None) for s in signals]


async def test_a_signal_id_taken_by_another_flow_is_refused(url: str, tmp_path: Path) -> None:
    """Signal ids are unique across flows (zag_signals.id): re-using one for another
    flow must not hand back the first flow's signal as if this one were stored."""
    first, second = Scene(url, tmp_path / "1"), Scene(url, tmp_path / "2")
    for scene in (first, second):
        scene.folder.mkdir()
        await scene.start()
    shared = first.sid("s1")
    async with zag.connect(url) as backend:
        await zag.signal(first.flow_id, wait_flows.EVENT, "one", backend=backend, signal_id=shared)
        with pytest.raises(SignalRefused, match=first.flow_id):
            await zag.signal(
                second.flow_id, wait_flows.EVENT, "two", backend=backend, signal_id=shared
            )
        assert await backend.list_signals(second.flow_id) == []


# -- kill -9 at each point around a wait ---------------------------------------------------


async def test_kill_entering_the_wait_before_its_record(url: str, tmp_path: Path) -> None:
    """Killed before the wait was recorded as reached: a signal sent meanwhile is
    kept, and the resumed run reaches the wait and takes it.

    The write that records the wait is also the one that records `a`'s result,
    so `a` was still RUNNING and runs again (at least once, as any atom whose
    end was not written; see test_kill9's atom-done-not-recorded)."""
    scene = Scene(url, tmp_path)
    await scene.start(hang="arm:before")
    states, meta, _ = await scene.stored()
    assert states == {"flow": R, "a": R, "approve": P, "pay": P}
    assert "wait" not in meta
    assert await scene.log() == ["a:exec", "a:done"]

    await scene.signal("yes", "s1")
    assert await scene.resume() == {"flow_id": scene.flow_id, "state": S, "error": None}
    states, meta, signals = await scene.stored()
    assert states == {"flow": S, "a": S, "approve": S, "pay": S}
    assert meta["waited"]["ended_by"] == "signal"
    assert meta["waited"]["signal"] == scene.sid("s1")
    assert taken(signals) == [("s1", True)]
    assert await scene.log() == ["a:exec", "a:done", *paid("yes")]


async def test_kill_entering_the_wait_after_its_record(url: str, tmp_path: Path) -> None:
    """Killed once the wait's record was written: the resume keeps its token and
    deadline (the timeout is not restarted) and leaves the flow WAITING."""
    scene = Scene(url, tmp_path)
    await scene.start(hang="arm:after")
    states, meta, _ = await scene.stored()
    assert states == {"flow": R, "a": S, "approve": R, "pay": P}
    armed = meta["wait"]

    assert await scene.resume() == {"flow_id": scene.flow_id, "state": "WAITING", "error": None}
    states, meta, _ = await scene.stored()
    assert states == {"flow": "WAITING", "a": S, "approve": R, "pay": P}
    assert meta["wait"] == armed

    out = await scene.signal("yes", "s1", resume=True)
    assert out == {"flow_id": scene.flow_id, "state": S, "error": None, "signal": scene.sid("s1")}
    states, meta, signals = await scene.stored()
    assert states["flow"] == S
    assert meta["waited"] == {**meta["waited"], "ended_by": "signal", "signal": scene.sid("s1")}
    assert meta["waited"]["deadline"] == armed["deadline"]
    assert taken(signals) == [("s1", True)]
    assert await scene.log() == paid("yes")


@BOTH
async def test_kill_after_the_signal_is_stored_before_the_resume(url: str, tmp_path: Path) -> None:
    """The sender dies between storing the signal and waking the flow; it sends
    again with the same signal id: one signal, taken once, with the first payload."""
    scene = Scene(url, tmp_path)
    assert (await scene.start() or {})["state"] == "WAITING"
    await scene.signal("yes", "s1", resume=True, hang="signal:stored")
    states, _, signals = await scene.stored()
    assert states["flow"] == "WAITING"
    assert taken(signals) == [("s1", False)]

    out = await scene.signal("retried", "s1", resume=True)
    assert out == {"flow_id": scene.flow_id, "state": S, "error": None, "signal": scene.sid("s1")}
    states, meta, signals = await scene.stored()
    assert states == {"flow": S, "a": S, "approve": S, "pay": S}
    assert meta["waited"]["signal"] == scene.sid("s1")
    assert taken(signals) == [("s1", True)]
    assert signals[0].payload == "yes"
    assert await scene.log() == paid("yes")


@BOTH
@pytest.mark.parametrize(
    ("payload", "hang", "ended_by"),
    [
        ("yes", "take:after", "signal"),
        ("yes", "waited:before:signal", "signal"),
        ("no", "take:after", "rejected"),
    ],
)
async def test_kill_during_the_wake(
    url: str, tmp_path: Path, payload: str, hang: str, ended_by: str
) -> None:
    """Killed after the wait took its signal, before its result was written: the
    resumed wait gets the signal it had taken, not the one sent since."""
    scene = Scene(url, tmp_path)
    await scene.start()
    sent = zag.reject("over budget") if payload == "no" else payload
    async with zag.connect(url) as backend:
        await zag.signal(
            scene.flow_id, wait_flows.EVENT, sent, backend=backend, signal_id=scene.sid("s1")
        )
    await scene.resume(hang=hang)
    states, meta, signals = await scene.stored()
    assert states == {"flow": R, "a": S, "approve": R, "pay": P}
    assert [s.taken_by for s in signals] == [meta["wait"]["token"]]
    assert await scene.log() == ["a:exec", "a:done"]

    await scene.signal("second", "s2")
    out = await scene.resume()
    states, meta, signals = await scene.stored()
    assert meta["waited"]["ended_by"] == ended_by
    assert meta["waited"]["signal"] == scene.sid("s1")
    assert taken(signals) == [("s1", True), ("s2", False)]
    if ended_by == "signal":
        assert out == {"flow_id": scene.flow_id, "state": S, "error": None}
        assert states == {"flow": S, "a": S, "approve": S, "pay": S}
        assert await scene.log() == paid("yes")
    else:
        assert out == {"flow_id": scene.flow_id, "state": "REVERTED", "error": "WaitRejected"}
        assert states == {"flow": "REVERTED", "a": "REVERTED", "approve": "REVERTED", "pay": P}
        assert await scene.log() == REVERTED


@BOTH
async def test_a_signal_taken_before_a_kill_wins_over_the_deadline_passed_since(
    url: str, tmp_path: Path
) -> None:
    """Killed after the wait took its signal; the resume comes after the deadline:
    the signal the wait had taken still ends it (no timeout, no second signal)."""
    scene = Scene(url, tmp_path, timeout=6.0)
    await scene.start()
    async with zag.connect(url) as backend:
        await zag.signal(
            scene.flow_id, wait_flows.EVENT, "yes", backend=backend, signal_id=scene.sid("s1")
        )
    await scene.resume(hang="take:after")  # (if the deadline passed already, it fails here)
    await scene.past_deadline()
    assert await scene.resume() == {"flow_id": scene.flow_id, "state": S, "error": None}
    _, meta, signals = await scene.stored()
    assert (meta["waited"]["ended_by"], meta["waited"]["signal"]) == ("signal", scene.sid("s1"))
    assert taken(signals) == [("s1", True)]
    assert await scene.log() == paid("yes")


async def test_kill_after_the_wait_result_is_recorded(url: str, tmp_path: Path) -> None:
    """Killed once the wait's end was written: the resume runs what follows, once,
    and takes no other signal."""
    scene = Scene(url, tmp_path)
    await scene.start()
    await scene.signal("yes", "s1")
    await scene.resume(hang="waited:after:signal")
    states, meta, signals = await scene.stored()
    # The write that ends the wait also launches pay; pay had not logged anything yet.
    assert states == {"flow": R, "a": S, "approve": S, "pay": R}
    assert meta["waited"]["signal"] == scene.sid("s1")
    assert await scene.log() == ["a:exec", "a:done"]

    assert await scene.resume() == {"flow_id": scene.flow_id, "state": S, "error": None}
    states, _, signals = await scene.stored()
    assert states["flow"] == S
    assert taken(signals) == [("s1", True)]
    assert await scene.log() == paid("yes")


TIMEOUT_ENDS = {
    # kind: final flow state, error of the resume, log, last atom
    "approval": ("REVERTED", "WaitTimeout", REVERTED),
    "approval-default": (S, None, paid("auto")),
    "sleep": (S, None, ["a:exec", "a:done", "c:exec", "c:done"]),
}


@pytest.mark.parametrize("hang", ["waited:before:timeout", "waited:after:timeout"])
@pytest.mark.parametrize("kind", list(TIMEOUT_ENDS))
async def test_kill_while_the_timeout_fires(url: str, tmp_path: Path, kind: str, hang: str) -> None:
    """Killed as the deadline ends the wait (before or after that is written); a
    signal sent after the deadline stays pending, and the flow ends once."""
    scene = Scene(url, tmp_path, kind=kind, timeout=1.0)
    await scene.start()
    await scene.past_deadline()
    await scene.resume(hang=hang)
    states, meta, _ = await scene.stored()
    assert states["flow"] == R
    if hang == "waited:before:timeout":
        assert states["approve"] == R
        assert "wait" in meta
    else:
        assert meta["waited"]["ended_by"] == "timeout"
    late = kind != "sleep" and hang == "waited:before:timeout"
    if late:  # the flow has not finished: the late signal is stored, and must stay pending
        out = await scene.signal("late", "s-late")
        assert out is not None and out["signal"] == scene.sid("s-late")

    state, error, log = TIMEOUT_ENDS[kind]
    if error is not None and hang == "waited:after:timeout":
        error = f"stored {error}"  # the failure was recorded before the kill
    out = await scene.resume()
    assert out is not None and (out["state"], out["error"]) == (state, error)
    states, meta, signals = await scene.stored()
    assert states["flow"] == state
    assert meta["waited"]["ended_by"] == "timeout"
    assert meta["waited"]["signal"] is None
    assert taken(signals) == ([("s-late", False)] if late else [])
    assert await scene.log() == log


class TooSlow(Exception):
    """The test could not act before the deadline (a loaded machine): try again later."""


async def _with_deadlines(url: str, tmp_path: Path, body: Any) -> None:
    """Run `body(scene)` on a wait of 6 s, and again of 20 s if it was too slow for that."""
    for n, timeout in enumerate((6.0, 20.0)):
        folder = tmp_path / f"try{n}"
        folder.mkdir()
        scene = Scene(url, folder, timeout=timeout)
        try:
            await body(scene)
        except TooSlow:
            continue
        return
    pytest.fail("too slow to act before a 20 s deadline, twice")


@pytest.mark.timeout(150)  # a slow machine may need the 20 s retry
async def test_a_signal_stored_before_the_deadline_wins_while_the_check_straddles_it(
    url: str, tmp_path: Path
) -> None:
    """A resume looks for a signal just before the deadline and finds none; the
    signal is stored (before the deadline), then the deadline passes before the
    resume reads the clock. The signal arrived in time, so it must win."""

    async def body(scene: Scene) -> None:
        await scene.start()
        proc = await scene.paused("resume", url, scene.flow_id, pause="take:none")
        _, meta, _ = await scene.stored()
        deadline = meta["wait"]["deadline"]
        async with zag.connect(url) as backend:
            sent = await zag.signal(scene.flow_id, wait_flows.EVENT, "yes", backend=backend)
        if sent.created_at > deadline:
            await scene.finish(proc)
            raise TooSlow
        await scene.past_deadline()
        result = await scene.finish(proc)
        _, meta, signals = await scene.stored()
        assert (meta["waited"]["ended_by"], [s.taken_by is not None for s in signals]) == (
            "signal",
            [True],
        )
        assert result == {"flow_id": scene.flow_id, "state": S, "error": None}
        assert await scene.log() == paid("yes")

    await _with_deadlines(url, tmp_path, body)


@BOTH
@pytest.mark.timeout(150)  # a slow machine may need the 20 s retry
async def test_a_signal_stored_before_the_deadline_but_committed_after_it(
    url: str, tmp_path: Path
) -> None:
    """The signal's row is inserted before the deadline (its created_at) and its
    transaction commits after a resume that came after the deadline began: the
    resume must not time the wait out while a signal stamped in time is on its
    way (or, if it does, the sender must not be told the signal was stored)."""

    async def body(scene: Scene) -> None:
        await scene.start()
        _, meta, _ = await scene.stored()
        deadline = meta["wait"]["deadline"]
        sender = await scene.paused(
            "signal", url, scene.flow_id, "yes", scene.sid("s1"), pause="signal:commit"
        )
        if time.time() > deadline - 0.1:  # inserted when? maybe after the deadline
            await scene.finish(sender)
            raise TooSlow
        # The sender holds SQLite's write lock: tell the deadline by this machine's
        # clock (SQLite's, and the local PostgreSQL's).
        await eventually(
            lambda: time.time() > deadline + 0.05, within=scene.timeout + 5, what="the deadline"
        )
        resume = await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            "resume",
            url,
            scene.flow_id,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            with contextlib.suppress(TimeoutError):  # it may wait for the signal's commit
                async with asyncio.timeout(3):
                    await resume.wait()
            sent = await scene.finish(sender)
            async with asyncio.timeout(60):
                out, err = await resume.communicate()
        finally:
            if resume.returncode is None:
                resume.kill()
                await resume.wait()
        assert resume.returncode == 0, err.decode()
        resumed = json.loads(out.decode().strip().splitlines()[-1])
        _, meta, signals = await scene.stored()
        if sent["signal"] == scene.sid("s1"):  # the sender was told it was stored
            (signal_,) = signals
            assert signal_.created_at <= meta["waited"]["deadline"]
            assert (meta["waited"]["ended_by"], signal_.taken_by is not None) == ("signal", True)
            assert resumed == {"flow_id": scene.flow_id, "state": S, "error": None}
            assert await scene.log() == paid("yes")
        else:
            assert sent["signal"] == "refused"
            assert meta["waited"]["ended_by"] == "timeout"

    await _with_deadlines(url, tmp_path, body)


# -- a signal racing the deadline, from two processes ------------------------------------

TRIALS = 12
SPACING = 0.3  # seconds between two trials' deadlines
CREATING = 0.25  # seconds allowed to create each flow (the first deadline comes after all)
JITTER = 0.04  # each process acts within this of the deadline


async def _race_child(proc: asyncio.subprocess.Process) -> list[dict[str, Any]]:
    try:
        async with asyncio.timeout(TRIALS * (CREATING + SPACING) + 60):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    return [json.loads(line) for line in out.decode().splitlines()]


@BOTH
@pytest.mark.timeout(150)
async def test_a_signal_racing_the_deadline_has_one_recorded_winner(
    url: str, tmp_path: Path
) -> None:
    """Many flows each meet a signal (sent, then resumed) and a resume from another
    process within a few ms of their deadline: each ends exactly once, either by the
    signal (taken by the wait, flow paid) or by the timeout (the signal refused or
    left pending, flow reverted); never both, never neither. The winner is the one
    the deadline says: a signal stored by it (its created_at) wins."""
    await flows.create_log(url)
    rng = random.Random(1234)
    plans = {role: tmp_path / f"{role}.json" for role in ("signal", "resume")}
    children = [  # started first: they wait for their plan, then connect
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            "race",
            url,
            role,
            str(plan),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for role, plan in plans.items()
    ]
    racing = asyncio.gather(*(_race_child(c) for c in children))
    scenes: list[tuple[str, str, float]] = []  # flow id, run, deadline
    async with zag.connect(url) as backend:
        first = await backend.clock() + 1.5 + TRIALS * CREATING
        for i in range(TRIALS):
            run = uuid.uuid4().hex
            timeout = first + i * SPACING - await backend.clock()
            engine = zag.Engine.from_factory(
                wait_flows.build, args=("approval", url, run, max(timeout, 0.0)), backend=backend
            )
            await engine.run()
            (waiting,) = engine.waiting_for
            assert waiting.deadline is not None
            scenes.append((engine.flow_id, run, waiting.deadline))
        before = time.time()
        now = await backend.clock()
        offset = (before + time.time()) / 2 - now  # from the database's clock to this one's
    in_time = sum(d > now + 1.0 for _, _, d in scenes)
    for plan in plans.values():
        trials = [
            {"flow_id": f, "at": d + offset + rng.uniform(-JITTER, JITTER)} for f, _, d in scenes
        ]
        plan.with_suffix(".tmp").write_text(json.dumps(trials))
        plan.with_suffix(".tmp").rename(plan)
    signalled, resumed = await racing
    assert len(signalled) == len(resumed) == TRIALS

    # Settle what neither process ended (the resume came first, and the signal's own
    # resume met the other's lease): one more resume, after every deadline.
    async with zag.connect(url) as backend:
        for flow_id, _, _ in scenes:
            if (await backend.load_flow(flow_id)).state is zag.FlowState.WAITING:
                with contextlib.suppress(WaitTimeout):
                    await zag.resume(flow_id, backend=backend)

    refused = {o["flow_id"] for o in signalled if o["signal"] == "refused"}
    tally: dict[str, int] = {}
    close = 0
    async with zag.connect(url) as backend:
        for flow_id, run, deadline in scenes:
            detail = await backend.load_flow(flow_id)
            waited = (detail.atoms["approve"].meta or {})["waited"]
            signals = await backend.list_signals(flow_id)
            log = await flows.read_log(url, run)
            how = waited["ended_by"]
            tally[how] = tally.get(how, 0) + 1
            close += sum(abs(s.created_at - deadline) < 0.01 for s in signals)
            assert waited["deadline"] == deadline
            if how == "signal":
                (sig,) = signals
                assert detail.state is zag.FlowState.SUCCESS
                assert waited["signal"] == sig.id == f"race-{flow_id}"
                assert sig.taken_by is not None
                assert sig.created_at <= deadline
                assert log == paid("close call")
            else:
                assert how == "timeout", waited
                assert detail.state is zag.FlowState.REVERTED
                assert waited["signal"] is None
                if flow_id in refused:
                    assert signals == []
                else:
                    (sig,) = signals
                    assert sig.taken_by is None
                    assert sig.created_at > deadline, (sig.created_at - deadline, waited)
                assert log == REVERTED
    print(
        f"race on {url.split(':')[0]}: {in_time} of {TRIALS} planned in time; {tally}, "
        f"refused {len(refused)}, "
        f"signals within 10 ms of the deadline: {close}"
    )
