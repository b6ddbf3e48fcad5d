"""kill -9 during compensation: revert retries and pivots, on SQLite and PostgreSQL (issue 13).

Each trial runs one order flow of `crash.compensation_flows` in a child process
(forked by `compensation_child.py`, see there why), SIGKILLs it up to four
times (first at a named checkpoint or a random instant after a trigger row
shows up in the call log, then at random instants in the resumed runs),
resumes it each time in a fresh child, and lets the last one run the flow to
its end (LANES trials at a time). The tasks record every business effect under an
idempotency key (a primary key) and every call in an append-only log; after
each kill the test reads the stored flow; at the end it checks the effects,
the log and the record against each other.

Refund trials (charge -> reserve -> ship; ship fails, the reverts of reserve
and charge are flaky, RevertRetry(3 tries)):

- the flow ends REVERTED or UNCOMPENSATED, never anything else;
- every atom whose work took effect has its compensation recorded exactly once
  (state REVERTED), or is named in the flow's meta "unreverted" and in
  FlowStatus.unreverted (and then its compensation never took effect): never
  silently left. REVERTED means nothing is named. The revert *call* is
  at-least-once (a kill after it took effect, before REVERTED was recorded,
  runs it again); the idempotency key keeps the effect single, and a
  checkpoint kill there (every fourth trial) checks that the re-run happens;
- a compensation gives up (REVERT_FAILURE) only once the policy's tries are
  spent; charge is not reverted past reserve's failed compensation;
- the bound on revert calls. Each try is counted in the atom's record and
  committed before its call starts, so calls <= tries recorded. In one
  process a failed try is retried only while tries < attempts; a resumed run
  retries the try a kill interrupted whatever the count (the kill is not the
  revert's failure). So tries <= attempts + L, L the kills that caught the
  atom REVERTING with its tries already >= attempts; L <= the kills that
  caught it mid-try. Both `calls <= tries <= attempts + L` are asserted.

Pivot trials (charge -> reserve -> ship, irreversible -> notify, notify flaky
under Times(3)), killed before the pivot's effect, after it but before its
result is recorded, after that, and during notify's forward retries:

- charge and reserve are never reverted (no revert call, no refund, never a
  reverting state in any record read) once the pivot succeeded, and here the
  pivot always does;
- the pivot runs at most once per recorded launch (its `exec` rows <= its
  stored attempts), and never again after a kill that found its SUCCESS
  recorded; its effect is there exactly once;
- the flow ends SUCCESS or STUCK_PAST_PIVOT; stuck only with the controller's
  attempts spent, naming what is left un-reverted.

A pivot declared idempotent=False and killed in its launch, before or after
its effect, may have taken effect: it is not run again and nothing before it
is reverted; the flow ends STUCK_PAST_PIVOT naming charge, reserve and ship.

Run with -s to see the tally of where the kills landed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import os
import random
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support import eventually, fresh_pg_database

import zag_async as zag

from . import compensation_flows as cf

CHILD = Path(__file__).with_name("compensation_child.py")
ATTEMPTS = cf.REVERT_POLICY.attempts
REFUND_TRIALS = 20  # per backend
PIVOT_TRIALS = 12  # per backend
LANES = 8  # trials run at once (each a few processes in turn)
JITTER = 0.12  # s: a random kill comes this long at most after the row it waits for
#: Random kill instants; ZAG_CRASH_SEED=<n> replays one run's choices (timing aside).
SEED = int(os.environ.get("ZAG_CRASH_SEED", random.randrange(2**32)))


# -- the fork server ------------------------------------------------------------------------


@dataclass
class Child:
    """One child process: its PID, and a future for its exit status."""

    tag: str
    pid: int
    out: Path
    ended: asyncio.Future[int]

    def result(self) -> dict[str, Any] | None:
        path = self.out / f"{self.tag}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def log(self) -> str:
        path = self.out / f"{self.tag}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


class ForkServer:
    """The test's side of `compensation_child.py`."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._spawned: dict[str, asyncio.Future[tuple[int, asyncio.Future[int]]]] = {}
        self._ended: dict[int, asyncio.Future[int]] = {}
        self._count = 0
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        loop = asyncio.get_running_loop()
        while line := await self.proc.stdout.readline():
            msg = json.loads(line)
            if "tag" in msg:
                ended = self._ended[msg["pid"]] = loop.create_future()
                self._spawned.pop(msg["tag"]).set_result((msg["pid"], ended))
            else:
                self._ended.pop(msg["pid"]).set_result(msg["status"])
        for future in [*self._spawned.values(), *self._ended.values()]:
            if not future.done():
                future.set_exception(AssertionError("the fork server died"))

    def _send(self, msg: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg).encode() + b"\n")

    async def spawn(self, out: Path, *argv: str, env: dict[str, str] | None = None) -> Child:
        self._count += 1
        tag = f"c{self._count}"
        spawned = self._spawned[tag] = asyncio.get_running_loop().create_future()
        self._send({"op": "spawn", "tag": tag, "argv": argv, "env": env or {}, "out": str(out)})
        pid, ended = await asyncio.wait_for(spawned, 30)
        return Child(tag, pid, out, ended)

    def kill(self, child: Child) -> None:
        """SIGKILL the child (the fork server ignores this if it has ended)."""
        self._send({"op": "kill", "pid": child.pid})

    async def aclose(self) -> None:
        """Close its input: it SIGKILLs any child left and exits."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        async with asyncio.timeout(10):
            await self.proc.wait()
            await self._reader


@contextlib.asynccontextmanager
async def fork_server(logs: Path, urls: list[str]) -> AsyncIterator[ForkServer]:
    """The fork server, warmed up on SQLite and on `urls` (PostgreSQL)."""
    with (logs / "fork_server.log").open("wb") as err:  # noqa: ASYNC230 (local, at once)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(CHILD),
            *urls,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
        )
    server = ForkServer(proc)
    try:
        yield server
    finally:
        await server.aclose()


# -- what is stored ---------------------------------------------------------------------------


@dataclass
class Snapshot:
    """One flow as stored at one instant, with its run's call log and effects."""

    flow: str
    states: dict[str, str]
    tries: dict[str, int]  # revert tries recorded
    attempts: dict[str, int]  # launches recorded
    history: int  # len of notify's controller history (pivot flow)
    meta: dict[str, Any]
    log: list[str]
    effects: list[tuple[str, str]]

    def state(self, atom: str) -> str:
        return self.states.get(atom, "")


async def snapshot(backend: zag.Backend, url: str, flow_id: str, run: str) -> Snapshot:
    detail = await backend.load_flow(flow_id)
    atoms = detail.atoms
    controller = atoms.get("notify.retry")
    history = controller.history if controller is not None else None
    return Snapshot(
        flow=str(detail.state),
        states={name: str(a.state) for name, a in atoms.items()},
        tries={name: int((a.meta or {}).get("revert_tries", 0)) for name, a in atoms.items()},
        attempts={name: a.attempts for name, a in atoms.items()},
        history=len(history) if history is not None else 0,
        meta=dict(detail.meta),
        log=await cf.read_log(url, run),
        effects=await cf.read_effects(url, run),
    )


# -- one trial --------------------------------------------------------------------------------


@dataclass
class Trial:
    """One flow run through its kills: what was planned, and what each kill found."""

    number: int
    kind: str
    url: str
    dir: Path
    fails: dict[str, int]
    kills: list[str]  # per planned kill: a checkpoint name, or "random"
    run: str = field(default_factory=lambda: uuid.uuid4().hex)
    flow_id: str = ""
    at_kills: list[Snapshot] = field(default_factory=list)
    outcome: dict[str, Any] | None = None
    final: Snapshot | None = None
    status_unreverted: tuple[str, ...] = ()  # FlowStatus.unreverted at the end

    def where(self) -> str:
        return (
            f"trial {self.number} ({self.kind}, seed {SEED}) fails={self.fails} "
            f"kills={self.kills} flow {self.flow_id} run {self.run}"
        )


async def _until(child: Child, check: Any) -> bool:
    """Poll `check()` until true (True) or the child ends (False)."""

    async def either() -> bool:
        if child.ended.done():
            return True
        value = check()
        return bool(await value if inspect.isawaitable(value) else value)

    await eventually(either, within=30, interval=0.02, what="the child reaching its kill point")
    return not child.ended.done()


async def run_trial(fs: ForkServer, backend: zag.Backend, trial: Trial, rng: random.Random) -> None:
    url, run = trial.url, trial.run
    finished = False  # a run ended the flow before its planned kill
    for n, how in enumerate(trial.kills):
        signal_dir = trial.dir / f"k{n}"
        signal_dir.mkdir()
        env = {"ZAG_CRASH_SIGNAL": str(signal_dir)}
        if how != "random":
            env["ZAG_CRASH_HANG"] = how
        if n == 0:
            argv = ["start", url, trial.kind, run, json.dumps(trial.fails)]
        else:
            argv = ["resume", url, trial.flow_id]
        before = len(await cf.read_log(url, run))
        child = await fs.spawn(trial.dir, *argv, env=env)
        if how != "random":
            alive = await _until(child, (signal_dir / "hang").exists)
        else:
            # Aimed by progress, not by the clock (so that a fast machine is hit as
            # often): once the run has logged a random 0-2 more rows past ship's
            # start (the first run: ship is row 3) or past a resumed run's first,
            # wait a random part of JITTER (a call, its commit, a pause).
            target = (3 if n == 0 else before + 1) + rng.randint(0, 2)
            alive = await _until(child, functools.partial(_rows_at_least, url, run, target))
            await asyncio.sleep(rng.uniform(0, JITTER))
        if alive:
            fs.kill(child)
        status = await asyncio.wait_for(child.ended, 30)
        if n == 0:
            trial.flow_id = (trial.dir / f"{child.tag}.flow_id").read_text()
        if status == 0:  # it finished first: no more kills
            finished = True
            break
        assert status == -signal.SIGKILL, f"{trial.where()}: child ended {status}\n{child.log()}"
        trial.at_kills.append(await snapshot(backend, url, trial.flow_id, run))
    # The last incarnation runs to the end (or finds the flow ended, and runs nothing).
    log_before = await cf.read_log(url, run)
    child = await fs.spawn(trial.dir, "resume", url, trial.flow_id)
    status = await asyncio.wait_for(child.ended, 60)
    assert status == 0, f"{trial.where()}: resume ended {status}\n{child.log()}"
    trial.outcome = child.result()
    trial.final = await snapshot(backend, url, trial.flow_id, run)
    if finished:
        assert trial.final.log == log_before, f"{trial.where()}: an ended flow ran again"
    flow_status = await zag.status.read_flow_status(backend, trial.flow_id)
    trial.status_unreverted = flow_status.unreverted


async def _rows_at_least(url: str, run: str, n: int) -> bool:
    return len(await cf.read_log(url, run)) >= n


async def run_trials(trials: list[Trial], tmp_path: Path) -> float:
    """Run the trials, LANES at a time; returns the seconds it took."""
    rng = random.Random(SEED)
    rngs = [random.Random(rng.random()) for _ in trials]
    started = time.monotonic()
    lanes = asyncio.Semaphore(LANES)
    try:
        async with contextlib.AsyncExitStack() as stack:
            # One by one (DDL races on PostgreSQL), and each backend opened once
            # (connecting checks the schema).
            backends: dict[str, zag.Backend] = {}
            for url in dict.fromkeys(t.url for t in trials):
                await cf.create_tables(url)
                backends[url] = await stack.enter_async_context(zag.connect(url))
            pg = [url for url in backends if not url.startswith("sqlite")]
            fs = await stack.enter_async_context(fork_server(tmp_path, pg))

            async def one(trial: Trial, trial_rng: random.Random) -> None:
                async with lanes:
                    await run_trial(fs, backends[trial.url], trial, trial_rng)

            async with asyncio.TaskGroup() as tg:
                for trial, trial_rng in zip(trials, rngs, strict=True):
                    tg.create_task(one(trial, trial_rng))
    finally:
        await cf.close_pools()
    return time.monotonic() - started


# -- the databases ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_db() -> Iterator[str]:
    """A PostgreSQL database of this module's own (flows, effects and the call log)."""
    with fresh_pg_database("zag_comp") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest) -> str:
    """SQLite (a file per trial, so that trials do not queue on one lock) or a PG URL."""
    if request.param == "sqlite":
        return "sqlite"
    return str(request.getfixturevalue("pg_db"))


def trial_url(db: str, trial_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{trial_dir / 'flow.db'}" if db == "sqlite" else db


def new_trials(db: str, tmp_path: Path, kind: str, count: int) -> list[Trial]:
    rng = random.Random(f"{SEED}-{kind}")
    trials = []
    for n in range(count):
        trial_dir = tmp_path / f"t{n}"
        trial_dir.mkdir()
        if kind == "refund":
            fails = {"charge": rng.randint(0, 3), "reserve": rng.randint(0, 3)}
            # Every fourth trial first stops where a revert took effect but is not
            # recorded yet (random instants seldom hit that window); its reverts
            # fail at most twice, so that the first run gets there.
            first = ("reserve:undone", "charge:undone")[n // 4 % 2] if n % 4 == 0 else "random"
            if first != "random":
                fails = {atom: min(count, ATTEMPTS - 1) for atom, count in fails.items()}
        else:
            fails = {"notify": rng.randint(0, 4)}
            points = ("ship:before-effect", "ship:after-effect", "notify:call#1")
            first = points[n // 2 % 3] if n % 2 == 0 else "random"
        kills = [first] + ["random"] * rng.randint(0, 3)
        trials.append(Trial(n, kind, trial_url(db, trial_dir), trial_dir, fails, kills))
    return trials


def tally(trials: list[Trial], atoms: tuple[str, ...]) -> str:
    """Where the kills landed: the stored state of each atom at each kill."""
    seen: Counter[str] = Counter()
    for trial in trials:
        for snap in trial.at_kills:
            busy = [f"{a}:{snap.state(a)}" for a in atoms if snap.state(a) not in ("SUCCESS", "")]
            seen[" ".join(busy) or "between"] += 1
    ends = Counter(t.final.flow for t in trials if t.final is not None)
    kills = sum(len(t.at_kills) for t in trials)
    return f"{kills} kills, at: {dict(seen)}; ends: {dict(ends)}"


def tally_tries(trials: list[Trial]) -> str:
    """How often a kill cost a try no call used, a resume tried past the policy's
    count, and a call re-ran a compensation that had taken effect."""
    seen: Counter[str] = Counter()
    for trial in trials:
        final = trial.final
        assert final is not None
        for atom in ("charge", "reserve"):
            calls, tries = final.log.count(f"{atom}:undo"), final.tries.get(atom, 0)
            seen["try without a call"] += tries - calls
            seen["tries past the policy"] += max(0, tries - ATTEMPTS)
            seen["re-run after taking effect"] += final.log.count(f"{atom}:undone-dup")
    return ", ".join(f"{what}: {count}" for what, count in seen.items())


def check_checkpoints(trials: list[Trial]) -> None:
    """The planned first kills happened, and caught what they aimed at."""
    for trial in trials:
        first, final = trial.kills[0], trial.final
        if first == "random":
            continue
        assert trial.at_kills and final is not None, f"{trial.where()}: {first} not reached"
        at = trial.at_kills[0]
        atom = first.partition(":")[0]
        if first.endswith(":undone"):  # took effect, not recorded: the re-run finds it applied
            assert at.state(atom) == "REVERTING" and (atom, "undid") in at.effects, trial.where()
            assert final.state(atom) == "REVERTED", trial.where()
            assert final.log.count(f"{atom}:undone-dup") >= 1, trial.where()
        elif first == "ship:before-effect":
            assert at.state("ship") == "RUNNING" and ("ship", "did") not in at.effects
        elif first == "ship:after-effect":  # the pivot took effect, its SUCCESS not recorded
            assert at.state("ship") == "RUNNING" and ("ship", "did") in at.effects
            assert final.log.count("ship:exec") >= 2, trial.where()
        else:
            assert (at.state("ship"), at.state("notify")) == ("SUCCESS", "RUNNING")


# -- the checks ----------------------------------------------------------------------------------


def check_refund(trial: Trial) -> None:
    final, where = trial.final, trial.where()
    assert final is not None and trial.outcome is not None, where
    where = f"{where}\nlog {final.log}\neffects {final.effects}\nstates {final.states}"
    assert final.flow in ("REVERTED", "UNCOMPENSATED"), where
    assert trial.outcome["state"] == final.flow and trial.outcome["error"], (trial.outcome, where)
    left = final.meta.get("unreverted", [])
    did = {atom for atom, effect in final.effects if effect == "did"}
    undid = {atom for atom, effect in final.effects if effect == "undid"}
    assert did == {"charge", "reserve"}, where  # both completed before ship failed
    # Never silently left: every effect undone once, or its atom named.
    assert did <= undid | set(left), where
    assert (final.flow == "REVERTED") == (not left), where
    assert set(left) <= {"charge", "reserve"}, where
    for atom in ("charge", "reserve"):
        state = final.state(atom)
        reverted = state == "REVERTED"
        assert reverted == (atom in undid) == (atom not in left), (atom, where)
        assert state in ("REVERTED", "REVERT_FAILURE", "SUCCESS"), (atom, where)
        caught = [s for s in trial.at_kills if s.state(atom) == "REVERTING"]
        # The effect is applied once (a call re-run after a kill finds it applied);
        # a kill between applying it and logging so may leave no fresh row.
        fresh, dup = final.log.count(f"{atom}:undone"), final.log.count(f"{atom}:undone-dup")
        assert fresh <= int(reverted) and dup <= len(caught), (atom, where)
        assert (fresh + dup > 0) == reverted, (atom, where)
        # The bound on tries and calls (module docstring).
        calls, tries = final.log.count(f"{atom}:undo"), final.tries.get(atom, 0)
        late = sum(1 for s in caught if s.tries.get(atom, 0) >= ATTEMPTS)
        assert calls <= tries <= ATTEMPTS + late, (atom, calls, tries, late, where)
        if reverted:
            assert calls >= trial.fails[atom] + 1, (atom, where)
        elif state == "REVERT_FAILURE":
            assert tries >= ATTEMPTS, (atom, where)  # gave up only with the policy spent
            # Its last call failed (a kill is never a revert's failure): no call took effect.
            assert final.log.count(f"{atom}:undo-failed") <= calls <= trial.fails[atom], where
    if final.state("reserve") != "REVERTED":  # nothing reverted past a failed compensation
        assert final.state("charge") == "SUCCESS", where
        assert final.log.count("charge:undo") == 0, where
    if final.flow == "REVERTED":
        assert set(final.states.values()) == {"REVERTED"}, where


def check_pivot(trial: Trial) -> None:
    final, where = trial.final, trial.where()
    assert final is not None and trial.outcome is not None, where
    where = f"{where}\nlog {final.log}\neffects {final.effects}\nstates {final.states}"
    assert final.flow in ("SUCCESS", "STUCK_PAST_PIVOT"), where
    assert trial.outcome["state"] == final.flow, (trial.outcome, where)
    # Nothing before the pivot is ever reverted, in any record read.
    assert not [e for e in final.log if ":undo" in e], where
    for snap in [*trial.at_kills, final]:
        for atom in ("charge", "reserve", "ship"):
            assert snap.state(atom) in ("", "PENDING", "RUNNING", "SUCCESS"), (atom, snap, where)
    assert {final.state(a) for a in ("charge", "reserve", "ship")} == {"SUCCESS"}, where
    # The pivot: at most once per recorded launch, never again once its SUCCESS is recorded.
    execs = final.log.count("ship:exec")
    assert 1 <= execs <= final.attempts["ship"], where
    for snap in trial.at_kills:
        if snap.state("ship") == "SUCCESS":
            assert snap.log.count("ship:exec") == execs, where
    if not any(snap.state("ship") == "RUNNING" for snap in trial.at_kills):
        assert execs == 1, where
    effects = {a for a, e in final.effects if e == "did"}
    assert {"charge", "reserve", "ship"} <= effects, where
    assert all(e == "did" for _, e in final.effects), where
    # The forward retries: within the controller's attempts, plus a re-run per kill mid-call.
    calls = final.log.count("notify:call")
    caught = sum(1 for snap in trial.at_kills if snap.state("notify") == "RUNNING")
    assert final.history <= cf.FORWARD_ATTEMPTS, where
    assert calls <= cf.FORWARD_ATTEMPTS + caught, (calls, caught, where)
    left = final.meta.get("unreverted", [])
    if final.flow == "SUCCESS":
        assert final.state("notify") == "SUCCESS" and "notify" in effects and not left, where
    else:
        assert final.state("notify") == "FAILURE" and "notify" not in effects, where
        assert final.history == cf.FORWARD_ATTEMPTS, where  # stuck only with attempts spent
        assert {"charge", "reserve", "ship"} <= set(left), where


# -- the tests ------------------------------------------------------------------------------------


def check_status(trial: Trial) -> None:
    """FlowStatus names the same atoms as the flow's meta."""
    assert trial.final is not None
    named = tuple(trial.final.meta.get("unreverted", []))
    assert trial.status_unreverted == named, trial.where()


@pytest.mark.timeout(150)
async def test_kill9_during_revert_retries(db: str, tmp_path: Path) -> None:
    trials = new_trials(db, tmp_path, "refund", REFUND_TRIALS)
    took = await run_trials(trials, tmp_path)
    print(f"\nrefund on {db.split('+')[0]}: {len(trials)} trials in {took:.1f}s; "
          f"{tally(trials, ('ship', 'reserve', 'charge'))}; {tally_tries(trials)}")  # fmt: skip
    check_checkpoints(trials)
    for trial in trials:
        check_refund(trial)
        check_status(trial)


@pytest.mark.timeout(150)
async def test_kill9_around_a_pivot(db: str, tmp_path: Path) -> None:
    trials = new_trials(db, tmp_path, "pivot", PIVOT_TRIALS)
    took = await run_trials(trials, tmp_path)
    print(f"\npivot on {db.split('+')[0]}: {len(trials)} trials in {took:.1f}s; "
          f"{tally(trials, ('charge', 'reserve', 'ship', 'notify'))}")  # fmt: skip
    check_checkpoints(trials)
    for trial in trials:
        check_pivot(trial)
        check_status(trial)


async def test_kill9_cuts_off_a_non_idempotent_pivot(db: str, tmp_path: Path) -> None:
    """A pivot declared idempotent=False, killed in its launch (before its effect,
    and after it): whether it took effect is unknown and it cannot be undone, so
    it is not run again and nothing before it is reverted either; the flow stops
    past the point of no return, naming what is left."""
    trials = []
    for n, point in enumerate(["ship:before-effect", "ship:after-effect"]):
        trial_dir = tmp_path / f"t{n}"
        trial_dir.mkdir()
        url = trial_url(db, trial_dir)
        trials.append(Trial(n, "pivot-once", url, trial_dir, {"notify": 0}, [point]))
    await run_trials(trials, tmp_path)
    for trial in trials:
        final = trial.final
        assert final is not None and len(trial.at_kills) == 1, trial.where()
        where = f"{trial.where()}\nlog {final.log}\nstates {final.states}"
        assert not [e for e in final.log if ":undo" in e], where  # no refund, no restock
        assert final.log.count("ship:exec") == 1, where  # not run again
        assert final.flow == "STUCK_PAST_PIVOT", where
        assert final.states["ship"] == "FAILURE", where  # AtomInterrupted: never "reverted"
        assert final.meta["unreverted"] == ["charge", "reserve", "ship"], where
        check_status(trial)
