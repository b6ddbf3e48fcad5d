"""The engine's decisions, as a plain synchronous state machine over a compiled flow.

Given the atoms' recorded states, the scheduler says what may run next
(readiness by predecessor counts), records what came back (success, failure,
revert), propagates reverts backwards in dependency order, asks retry
controllers what a failure means and restarts their scope, and skips what a
decider rejected. A failure with no controller to retry it reverts the whole
flow; a revert that fails is tried again by the atom's `RevertRetry`; once an
irreversible atom (a pivot) has succeeded, failures are retried forward in
place and never reverted (`compensation` judges how such runs end). It never
awaits and never calls an atom: the engine does that and feeds outcomes back.
So every rule of the model can be exercised in a unit test without an event
loop, and the engine's loop stays about I/O.

State changes go to the atom records (`AtomDetail`) and are marked in
`Storage` as pending writes; the engine commits them before launching what
`pick()` returned, so a durable backend always knows what was running.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from .bus import EventBus
from .compensation import (
    UNREVERTED_KEY,
    clear_revert_tries,
    count_revert_try,
    failed_end,
    pivot_passed,
    revert_tries,
    unreverted,
)
from .compiler import CompiledFlow, DeciderSpec
from .control import CANCELLED_KEY
from .errors import AtomInterrupted, NotFound, SerializationError, ZagError
from .events import Event
from .failure import Failure
from .flow import Depth
from .models import AtomDetail, History
from .resolver import Resolver
from .retry import Decision
from .states import (
    RETRY_TRANSITIONS,
    TASK_TRANSITIONS,
    AtomState,
    FlowState,
    Intention,
    check_atom_transition,
)
from .storage import Storage

__all__ = ["Launch", "Outcome", "Scheduler"]

logger = logging.getLogger("zag_async")

S = AtomState
_DONE = (S.SUCCESS, S.IGNORE)
_BUSY = (S.RUNNING, S.REVERTING, S.RETRYING)
_REVERTIBLE = (S.SUCCESS, S.FAILURE)

Kind = Literal["exec", "revert"]


#: Call node `index`'s execute or revert with `kwargs`: (kind, index, kwargs), what
#: `pick()` returns. Plain tuples: one is made per atom call, on the hot path.
Launch = tuple[Kind, int, dict[str, Any]]

#: What a call came back with: (kind, index, ok, value or `Failure`, duration in seconds).
Outcome = tuple[Kind, int, bool, Any, float]


class Scheduler:
    """Decides what runs next and what a finished call means for the rest.

    Args:
        compiled: the compiled flow.
        details: the atom records, by node index.
        storage: where changes are marked for the next commit.
        resolver: reads the atoms' arguments.
        bus: receives an `Event` per atom state change while it has listeners.
        active: the nodes to consider (a target run); None means all.
        max_concurrency: how many calls may run at once (None: no limit).
    """

    def __init__(
        self,
        compiled: CompiledFlow,
        details: list[AtomDetail],
        storage: Storage,
        resolver: Resolver,
        *,
        bus: EventBus | None = None,
        active: list[bool] | None = None,
        max_concurrency: int | None = None,
    ) -> None:
        self.name = compiled.name
        self.nodes = compiled.nodes
        self.details = details
        self.storage = storage
        self._durable = storage.durable  # in memory, nothing is marked for a commit
        self.resolver = resolver
        self.bus = bus if bus is not None else EventBus()
        self.active = active
        self.max_concurrency = max_concurrency
        n = len(self.nodes)
        self.waiting = [0] * n
        self.ready: deque[int] = deque()
        self.revert_ready: deque[int] = deque()
        self.running: set[int] = set()
        self.retrying: set[int] = set()
        self.revert_all = False
        self.revert_failed = False
        self.past_pivot = False  # an irreversible atom succeeded: never revert again
        self.gave_up = False  # past the pivot, a failure outlasted its retries
        self._forward_delays: dict[int, float] = {}  # node -> pause before its forward retry
        self._cleared: set[int] = set()  # nodes whose deciders passed, not yet launched

    # -- state changes ---------------------------------------------------------------

    def set(self, i: int, new: AtomState, **fields: Any) -> None:
        """Move node i to `new` (checked), set record fields, mark it for the commit."""
        d = self.details[i]
        node = self.nodes[i]
        if (d.state, new) not in (RETRY_TRANSITIONS if node.is_retry else TASK_TRANSITIONS):
            check_atom_transition(node.name, d.state, new, retry=node.is_retry)
        d.state = new
        for key, value in fields.items():
            setattr(d, key, value)
        if self._durable:
            self.storage.touch(d)
        if self.bus.wanted:
            self.bus.emit(
                Event(
                    "atom",
                    self.name,
                    new,
                    node.name,
                    result=fields.get("result", fields.get("revert_result")),
                    failure=fields.get("failure", fields.get("revert_failure")),
                    duration=fields.get("duration"),
                )
            )

    def intend(self, i: int, intention: Intention) -> None:
        d = self.details[i]
        if d.intention is not intention:
            d.intention = intention
            if self._durable:
                self.storage.touch(d)

    # -- starting ----------------------------------------------------------------------

    def scan(self) -> None:
        """Work out what to do from the recorded states (a fresh run or a resume)."""
        nodes, details, active = self.nodes, self.details, self.active
        waiting = self.waiting
        self.ready.clear()
        self.revert_ready.clear()
        self.running.clear()
        self.retrying.clear()
        self._cleared.clear()
        self.revert_all = bool(self.storage.flow.meta.get("revert_all"))
        self.revert_failed = any(d.state is S.REVERT_FAILURE for d in details)
        self.past_pivot = pivot_passed(nodes, details)
        # A failure still recorded past the pivot is one that was given up on
        # (a forward retry clears it in the same step that records it).
        self.gave_up = self.past_pivot and any(
            d.state is S.FAILURE and d.intention is Intention.EXECUTE for d in details
        )
        for i, node in enumerate(nodes):
            if active is not None and not active[i]:
                continue
            d = details[i]
            count = 0
            for p in node.preds:
                if details[p].state not in _DONE:
                    count += 1
            waiting[i] = count
            if d.intention is Intention.EXECUTE:
                if d.state is S.PENDING and count == 0 or d.state in (S.RUNNING, S.RETRYING):
                    self.ready.append(i)
            elif d.intention is Intention.REVERT:
                if d.state is S.REVERTING:
                    self.revert_ready.append(i)
                else:
                    self.maybe_revert(i)
            elif d.intention is Intention.RETRY:
                self.retrying.add(i)
        interrupted = [
            i
            for i in self.ready
            if details[i].state is S.RUNNING and not nodes[i].atom.is_idempotent
        ]
        if interrupted:
            # Whether they finished is unknown: fail them (which reverts them) instead.
            # A pivot among them may have taken effect and cannot be undone: the
            # flow stops past it (nothing is reverted, nothing runs again).
            self.ready = deque(i for i in self.ready if i not in interrupted)
            failures = [Failure.from_exception(AtomInterrupted(nodes[i].name)) for i in interrupted]
            for i, failure in zip(interrupted, failures, strict=True):
                self.set(i, S.FAILURE, failure=failure)
                if nodes[i].atom.is_pivot:
                    self.past_pivot = self.gave_up = True
            for i, failure in zip(interrupted, failures, strict=True):
                if not nodes[i].atom.is_pivot:
                    self.on_failure(i, failure)

    @property
    def halted(self) -> bool:
        """True when nothing new may start: a revert failed for good, or the flow
        gave up past its pivot (what runs is let finish)."""
        return self.revert_failed or self.gave_up

    @property
    def queued(self) -> bool:
        """True when some call waits for room (or for a failure found while picking)."""
        return bool(self.ready or self.revert_ready)

    def pick(self) -> tuple[list[Launch], int | None]:
        """What to launch now, and a node whose deciders must be asked first.

        When a node guarded by deciders comes up, picking stops there and its
        index is returned: the caller evaluates `deciders(i)` (they may be
        coroutines), reports with `decided()`, and picks again, so launch order
        is the same as if the deciders had been asked in line.
        """
        limit = self.max_concurrency
        room = (limit - len(self.running)) if limit is not None else len(self.nodes)
        if room <= 0:
            return [], None
        details, nodes = self.details, self.nodes
        launch: list[Launch] = []
        revert_ready = self.revert_ready
        while revert_ready and room > 0:
            i = revert_ready.popleft()
            d = details[i]
            if i in self.running or d.intention is not Intention.REVERT:
                continue
            if d.state is not S.REVERTING:
                if d.state not in _REVERTIBLE:
                    continue
                self.set(i, S.REVERTING)
            if nodes[i].atom.revert_fn is not None:
                count_revert_try(d)  # with this launch, so a crash counts as a try
                if self._durable:
                    self.storage.touch(d)
            try:
                kwargs = self.revert_kwargs(i)
            except ZagError as exc:
                self.finished([("revert", i, False, Failure.from_exception(exc), 0.0)])
                continue
            launch.append(("revert", i, kwargs))
            room -= 1
        ready = self.ready
        while ready and room > 0:
            i = ready.popleft()
            d = details[i]
            if d.intention is not Intention.EXECUTE or i in self.running:
                continue
            state = d.state
            if state is S.PENDING:
                if nodes[i].deciders is not None:
                    if i not in self._cleared:
                        ready.appendleft(i)
                        return launch, i
                    self._cleared.discard(i)
                self.set(i, S.RUNNING)
            elif state is S.RETRYING:
                self.set(i, S.RUNNING)
            elif state is not S.RUNNING:
                continue
            elif self._durable:  # in flight when its engine died: store this launch too
                self.storage.touch(d)
            d.attempts += 1
            node = nodes[i]
            try:
                kwargs = self.resolver.arguments(i, node.atom.args, node.cands)
            except ZagError as exc:
                self.finished([("exec", i, False, Failure.from_exception(exc), 0.0)])
                continue
            launch.append(("exec", i, kwargs))
            room -= 1
        return launch, None

    def deciders(self, i: int) -> list[tuple[DeciderSpec, dict[str, Any]]]:
        """Node i's deciders, each with the results of its sources that succeeded."""
        details, nodes = self.details, self.nodes
        out = []
        for spec in nodes[i].deciders or ():
            history = {
                nodes[s].name: details[s].result
                for s in spec.sources
                if details[s].state is S.SUCCESS
            }
            if history:
                out.append((spec, history))
        return out

    def decided(self, i: int, rejected_by: DeciderSpec | None, error: Failure | None) -> None:
        """Report node i's deciders: all passed, one rejected it, or one raised."""
        if error is not None:
            self.ready.remove(i)
            self.set(i, S.RUNNING)
            self.finished([("exec", i, False, error, 0.0)])
        elif rejected_by is not None:
            self.ready.remove(i)
            self.ignore(rejected_by.target, rejected_by.depth, rejected_by.scope)
        else:
            self._cleared.add(i)

    def started(self, i: int) -> None:
        self.running.add(i)

    def forward_delay(self, i: int) -> float:
        """Seconds node i's execute must wait first: its controller's delay when it is
        retried forward past a pivot (asked once per launch), else 0."""
        return self._forward_delays.pop(i, 0.0) if self._forward_delays else 0.0

    def revert_kwargs(self, i: int) -> dict[str, Any]:
        node = self.nodes[i]
        atom = node.atom
        d = self.details[i]
        if atom.revert_fn is None:
            return {}
        resolver = self.resolver
        if atom.revert_var_kw:
            kwargs = resolver.arguments(i, atom.args, node.cands, optional=True)
        else:
            kwargs = dict(atom.revert_injected)
        kwargs.update(resolver.arguments(i, atom.revert_args, node.revert_cands))
        if atom.revert_var_kw or "result" in atom.revert_keywords:
            kwargs["result"] = d.failure if d.failure is not None else d.result
        if atom.revert_var_kw or "flow_failures" in atom.revert_keywords:
            kwargs["flow_failures"] = self.storage.failures
        return kwargs

    # -- completions -------------------------------------------------------------------

    def finished(self, outcomes: list[Outcome]) -> None:
        """Record finished calls and what follows from each; empties `outcomes`."""
        items = outcomes[:]
        outcomes.clear()
        running = self.running
        for kind, i, ok, value, duration in items:
            running.discard(i)
            if kind == "exec":
                self._executed(i, ok, value, duration)
            else:
                self._reverted(i, ok, value, duration)

    def _executed(self, i: int, ok: bool, value: Any, duration: float) -> None:
        node = self.nodes[i]
        d = self.details[i]
        if ok and self.storage.durable:
            ok, value = self._storable(node.name, "result", value)
        if ok:
            if node.is_retry:
                assert d.history is not None
                d.history.add_attempt(value)
            self.set(i, S.SUCCESS, result=value, failure=None, duration=duration)
            if node.atom.is_pivot:
                self.past_pivot = True
            if d.intention is Intention.EXECUTE:
                waiting, details, ready, active = (
                    self.waiting,
                    self.details,
                    self.ready,
                    self.active,
                )
                for s in node.succs:
                    waiting[s] -= 1
                    if (
                        waiting[s] == 0
                        and details[s].state is S.PENDING
                        and (active is None or active[s])
                    ):
                        ready.append(s)
            else:
                self.maybe_revert(i)
        else:
            self.set(i, S.FAILURE, failure=value, duration=duration)
            self.on_failure(i, value)
        self._recheck_preds(i)

    def _storable(self, atom: str, what: str, value: Any) -> tuple[bool, Any]:
        """Check a value can be saved; if not, the atom fails now (not on a later load)."""
        try:
            self.storage.check_value(value)
        except SerializationError as exc:
            error = SerializationError(f"atom {atom!r}: its {what} cannot be saved: {exc}")
            error.__cause__ = exc
            return False, Failure.from_exception(error)
        return True, value

    def _reverted(self, i: int, ok: bool, value: Any, duration: float) -> None:
        if ok and self.storage.durable:
            ok, value = self._storable(self.nodes[i].name, "revert result", value)
        if ok:
            self.set(i, S.REVERTED, revert_result=value, duration=duration)
            self._recheck_preds(i)
            return
        d = self.details[i]
        atom = self.nodes[i].atom
        # Arguments that cannot be found and results that cannot be stored fail
        # the same way every time: only the revert's own errors are retried.
        settled = value.check(NotFound, SerializationError) is not None
        if revert_tries(d) < atom.revert_policy.attempts and not settled:
            # Stays REVERTING: the next launch waits out the policy's pause.
            logger.info(
                "flow %r: revert of %r failed (try %d of %d), trying again: %s",
                self.name,
                atom.name,
                revert_tries(d),
                atom.revert_policy.attempts,
                value,
            )
            self.revert_ready.append(i)
            return
        self.set(i, S.REVERT_FAILURE, revert_failure=value, duration=duration)
        self.revert_failed = True

    def _recheck_preds(self, i: int) -> None:
        """Node i settled: its predecessors (seen through skipped atoms) may revert now."""
        details, nodes = self.details, self.nodes
        stack = list(nodes[i].preds)
        seen: set[int] | None = None
        while stack:
            p = stack.pop()
            dp = details[p]
            if dp.state is S.IGNORE:
                seen = seen if seen is not None else set()
                for q in nodes[p].preds:
                    if q not in seen:
                        seen.add(q)
                        stack.append(q)
            elif dp.intention is Intention.REVERT:
                self.maybe_revert(p)

    def maybe_revert(self, i: int) -> None:
        """Queue node i's revert once nothing that ran after it is still to be reverted."""
        d = self.details[i]
        if d.intention is not Intention.REVERT or d.state not in _REVERTIBLE or i in self.running:
            return
        details, nodes = self.details, self.nodes
        if nodes[i].atom.is_pivot and d.state is S.SUCCESS:
            return  # it cannot be undone; it (and what precedes it) is left as is
        stack = list(nodes[i].succs)
        seen: set[int] | None = None
        while stack:
            s = stack.pop()
            ds = details[s]
            if ds.state in _BUSY or (ds.intention is Intention.REVERT and ds.state in _REVERTIBLE):
                return
            if ds.state is S.IGNORE:  # look through skipped atoms to what ran after them
                seen = seen if seen is not None else set()
                for t in nodes[s].succs:
                    if t not in seen:
                        seen.add(t)
                        stack.append(t)
        self.revert_ready.append(i)

    # -- failures and retry controllers ---------------------------------------------------

    def on_failure(self, i: int, failure: Failure) -> None:
        if self.past_pivot and not self.revert_all:
            self._retry_forward(i, failure)
            return
        kind, r = self._resolve(self.nodes[i].retry, self.nodes[i].name, failure)
        if self.revert_all:
            self.intend(i, Intention.REVERT)
            self.maybe_revert(i)
            return
        if kind == "all":
            self.revert_all = True
            self.storage.flow.meta["revert_all"] = True
            self.storage.touch_flow()
            targets: Iterable[int] = range(len(self.nodes))
        else:
            rd = self.details[r]
            scope = self.nodes[r].scope or []
            if rd.intention is Intention.REVERT:
                targets = (i,)  # an enclosing revert already covers this scope
            else:
                if rd.intention is not Intention.RETRY:
                    self.intend(r, Intention.RETRY)
                    self.retrying.add(r)
                targets = scope
        for n in targets:
            self.intend(n, Intention.REVERT)
        for n in targets:
            self.maybe_revert(n)

    def cancel(self, request: Mapping[str, Any], failure: Failure, parked: Iterable[int]) -> bool:
        """Revert everything that ran, as a failure reverting the whole flow would
        (the request is kept in the flow's meta); False past a pivot (nothing can
        be undone there, so nothing changes).

        Atoms recorded as running that are not in flight (left by an earlier run,
        or armed waits of a resumed flow) fail with `failure` so they are reverted
        too; `parked` waits of this run are ended by the engine instead.
        """
        if self.past_pivot:
            return False
        kept = set(parked)
        for i, d in enumerate(self.details):
            if d.state in (S.RUNNING, S.RETRYING) and i not in self.running and i not in kept:
                if d.state is S.RETRYING:
                    self.set(i, S.RUNNING)
                self.set(i, S.FAILURE, failure=failure)
        meta = self.storage.flow.meta
        meta[CANCELLED_KEY] = dict(request)
        self.revert_all = True
        meta["revert_all"] = True
        self.storage.touch_flow()
        everything = range(len(self.nodes))
        for n in everything:
            self.intend(n, Intention.REVERT)
        for n in everything:
            self.maybe_revert(n)
        return True

    def _resolve(self, r: int, failed: str, failure: Failure) -> tuple[str, int]:
        """Ask the retry controllers, innermost first, what this failure means."""
        if r < 0:
            return ("all", -1)
        node = self.nodes[r]
        d = self.details[r]
        if d.history is None:
            d.history = History()
        d.history.add_failure(failed, failure)
        self.storage.touch(d)
        ctl = node.atom
        try:
            extra: dict[str, Any] = {}
            wanted = getattr(ctl, "on_failure_args", ())
            if wanted:
                args = self.resolver.arguments(r, ctl.args, node.cands, optional=True)
                extra = {k: v for k, v in args.items() if k in wanted}
            decision = Decision(ctl.on_failure(d.history.copy(), **extra))  # type: ignore[attr-defined]
        except Exception:
            logger.exception("retry controller %r failed to decide", node.name)
            return ("all", -1)
        if decision is Decision.RETRY:
            return ("retry", r)
        if decision is Decision.REVERT_ALL:
            return ("all", -1)
        # REVERT defers to the enclosing controller; with none, the whole flow is
        # reverted (REVERTED means everything that ran was compensated).
        return self._resolve(node.retry, node.name, failure)

    def _retry_forward(self, i: int, failure: Failure) -> None:
        """Past a pivot: run node i again in place if its controllers say RETRY
        (nothing is reverted), else give up, leaving everything as it stands."""
        kind, r = self._resolve(self.nodes[i].retry, self.nodes[i].name, failure)
        if kind != "retry":
            logger.info(
                "flow %r: %r failed past the point of no return with no retry left; stopping: %s",
                self.name,
                self.nodes[i].name,
                failure,
            )
            self.gave_up = True
            return
        rd = self.details[r]
        assert rd.history is not None
        rd.history.add_attempt(rd.result)  # counts as the controller's next attempt
        self.storage.touch(rd)
        ctl = self.nodes[r].atom
        self._forward_delays[i] = ctl.delay_before(len(rd.history) - 1)  # type: ignore[attr-defined]
        self.set(i, S.PENDING, failure=None)
        if self.waiting[i] == 0:
            self.ready.append(i)

    def settle_retries(self) -> None:
        """Restart each retry scope whose atoms have all been reverted."""
        details = self.details
        for r in list(self.retrying):
            rd = details[r]
            if rd.intention is not Intention.RETRY:
                self.retrying.discard(r)
                continue
            scope = self.nodes[r].scope or []
            if any(details[n].state not in (S.PENDING, S.REVERTED, S.IGNORE) for n in scope):
                continue
            if rd.state in _BUSY or r in self.running:
                continue
            self.retrying.discard(r)
            for n in scope:
                d = details[n]
                if d.state is not S.PENDING:
                    self.set(n, S.PENDING)
                d.result = d.failure = d.revert_result = d.revert_failure = None
                clear_revert_tries(d)
                if d.history is not None:
                    d.history = History()
                self.intend(n, Intention.EXECUTE)
                self.storage.touch(d)
            self.set(r, S.RETRYING)
            self.intend(r, Intention.EXECUTE)
            waiting = self.waiting
            for n in scope:
                waiting[n] = sum(1 for p in self.nodes[n].preds if details[p].state not in _DONE)
            self.ready.append(r)

    # -- deciders ------------------------------------------------------------------------

    def ignore(self, targets: list[int], depth: Depth, scope: list[int]) -> None:
        """Skip what a decider rejected (how far: `depth`) and release what follows it."""
        nodes, details = self.nodes, self.details
        chosen: list[int] = list(targets)
        seen = set(chosen)
        if depth is Depth.NEIGHBORS:
            for t in targets:
                for s in nodes[t].succs:
                    if s not in seen:
                        seen.add(s)
                        chosen.append(s)
        elif depth in (Depth.ALL, Depth.FLOW):
            allowed = set(scope) if depth is Depth.FLOW else None
            stack = list(targets)
            while stack:
                t = stack.pop()
                for s in nodes[t].succs:
                    if s not in seen and (allowed is None or s in allowed):
                        seen.add(s)
                        chosen.append(s)
                        stack.append(s)
        ignored = [n for n in chosen if details[n].state is S.PENDING]
        for n in ignored:
            self.set(n, S.IGNORE)
            self.intend(n, Intention.IGNORE)
        waiting, ready = self.waiting, self.ready
        for n in ignored:
            for s in nodes[n].succs:
                waiting[s] -= 1
                if waiting[s] == 0 and details[s].state is S.PENDING:
                    ready.append(s)

    # -- the end ----------------------------------------------------------------------------

    def work_left(self) -> bool:
        """True when some atom could still make progress."""
        active, waiting = self.active, self.waiting
        if self.retrying:
            return True
        for i, d in enumerate(self.details):
            if active is not None and not active[i]:
                continue
            if d.state in _BUSY:
                return True
            if d.intention is Intention.EXECUTE and d.state is S.PENDING and waiting[i] == 0:
                return True
            if d.intention in (Intention.REVERT, Intention.RETRY) and d.state in _REVERTIBLE:
                return True
        return False

    def verdict(self) -> tuple[FlowState, bool]:
        """How the run ended, and whether it stopped with work left that nothing
        blocks (an engine bug, reported as FAILURE).

        A run without failures ends SUCCESS. One with failures ends REVERTED
        only if everything that ran was reverted; else UNCOMPENSATED or, once a
        pivot succeeded, STUCK_PAST_PIVOT, with the atoms left un-reverted
        named in the flow's meta.
        """
        failures = self.storage.failures
        revert_failed = any(d.state is S.REVERT_FAILURE for d in self.details)
        if not (failures or revert_failed or CANCELLED_KEY in self.storage.flow.meta):
            if self.work_left():
                return FlowState.FAILURE, True
            return FlowState.SUCCESS, False
        nodes, details = self.nodes, self.details
        end = failed_end(nodes, details)
        left = unreverted(nodes, details) if end is not FlowState.REVERTED else []
        meta = self.storage.flow.meta
        if left or UNREVERTED_KEY in meta:
            meta[UNREVERTED_KEY] = left
            self.storage.touch_flow()
        return end, False
