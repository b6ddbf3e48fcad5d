"""Steps that wait for a person, a webhook or a time, holding nothing meanwhile.

A step that waits by polling holds a coroutine (and a lease) for the whole
wait, restarts its timeout on every resume, and nothing can push the answer
into it. Here a wait is an atom of its own (`wait_for`, `sleep`): the engine
never calls it. When a run reaches one it records the wait (the event, a
deadline on the database's clock counted from that moment, and a token) and
looks for a signal; when nothing else of the flow can run, the flow is left
WAITING and `run()` returns. `signal()` stores a signal durably, once per
signal id; resuming the flow (`zag.resume`, `Engine.load(...).run()`) hands
each wait the oldest pending signal of its event, or fails it with
`WaitTimeout` once its deadline has passed (a signal that arrived before the
deadline still wins). Consuming a signal is one conditional write naming the
wait's token, so a signal ends at most one wait and a wait resumed after a
crash finds the signal it had already taken.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol
from uuid import NAMESPACE_URL, uuid5

from .atom import Provides, Task, check_name
from .codec import storable_text
from .errors import (
    ConfigurationError,
    ExecutionError,
    InvalidAtom,
    NotFound,
    SignalRefused,
    WaitRejected,
    WaitTimeout,
)
from .failure import Failure
from .models import AtomDetail, FlowDetail, Signal, new_id
from .states import ENDED, AtomState, Intention

if TYPE_CHECKING:
    from .compiler import Node
    from .persistence.base import Backend
    from .scheduler import Launch, Outcome
    from .storage import Storage

__all__ = [
    "Wait",
    "WaitingFor",
    "Waits",
    "reject",
    "signal",
    "sleep",
    "wait_for",
    "wake_job_id",
]

#: The key of a payload made by `reject()`.
REJECT_KEY = "zag:reject"
_NO_DEFAULT: Any = object()


class Wait(Task):
    """An atom that ends when a signal arrives or its deadline passes.

    Made by `wait_for` or `sleep`; the engine completes it, never calls it.
    Its result is the payload of the signal that ended it, else (on the
    deadline) its default; with no default the deadline fails it with
    `WaitTimeout` and the flow reverts.
    """

    is_wait: ClassVar[bool] = True

    __slots__ = ("default", "delay", "event", "has_default", "until", "wait_timeout")

    def __init__(
        self,
        name: str,
        *,
        event: str | None,
        timeout: float | None = None,
        until: float | None = None,
        provides: Provides = None,
        default: Any = _NO_DEFAULT,
    ) -> None:
        check_name("a wait's name", name)
        if event is not None and (not isinstance(event, str) or not event):
            raise InvalidAtom(f"wait {name!r}: event must be a non-empty string, got {event!r}")
        if timeout is not None and (
            not isinstance(timeout, int | float)
            or isinstance(timeout, bool)
            or not math.isfinite(timeout)
            or timeout < 0
        ):
            raise InvalidAtom(
                f"wait {name!r}: timeout must be a finite number of seconds >= 0, got {timeout!r}"
            )
        if until is not None and not math.isfinite(until):
            raise InvalidAtom(f"wait {name!r}: until must be a finite time, got {until!r}")
        self.event = event
        self.wait_timeout = None if timeout is None else float(timeout)
        self.until = until
        self.has_default = default is not _NO_DEFAULT
        self.default = None if default is _NO_DEFAULT else default
        super().__init__(name=name, provides=provides)

    async def execute(self) -> Any:
        raise ExecutionError(f"wait {self.name!r} is completed by the engine, not called")

    def deadline_from(self, now: float) -> float | None:
        """When the wait times out, for a wait reached at `now` (epoch seconds)."""
        if self.until is not None:
            return self.until
        if self.wait_timeout is not None:
            return now + self.wait_timeout
        return None


def wait_for(
    name: str,
    *,
    event: str,
    timeout: float | None = None,
    provides: Provides = None,
    default: Any = _NO_DEFAULT,
) -> Wait:
    """An atom that waits for a signal of `event`; its result is the signal's payload.

    Args:
        name: the atom's name.
        event: the event it waits for (what `zag.signal(flow_id, event, ...)` names).
        timeout: seconds, counted from when the flow reaches the wait (by the
            database's clock, unchanged by suspensions and resumes); past it
            the wait fails with `WaitTimeout`, or ends with `default` if given.
        provides: the name(s) the payload is provided under.
        default: the result when the timeout passes (instead of failing).
    """
    return Wait(name, event=event, timeout=timeout, provides=provides, default=default)


def sleep(name: str, *, delay: float | None = None, until: datetime | float | None = None) -> Wait:
    """A durable timer: an atom that ends (with result None) at a time.

    Args:
        name: the atom's name.
        delay: seconds from when the flow reaches it (by the database's clock).
        until: an absolute time (an aware `datetime` or epoch seconds).
    """
    if (delay is None) == (until is None):
        raise InvalidAtom(f"sleep {name!r}: give exactly one of delay= or until=")
    at: float | None = None
    if isinstance(until, datetime):
        if until.tzinfo is None:
            raise InvalidAtom(f"sleep {name!r}: until= needs a timezone-aware datetime")
        at = until.timestamp()
    elif until is not None:
        at = float(until)
    return Wait(name, event=None, timeout=delay, until=at, default=None)


def reject(reason: str) -> dict[str, str]:
    """A signal payload that makes the wait taking it fail with `WaitRejected`."""
    return {REJECT_KEY: str(reason)}


def wake_job_id(flow_id: str) -> str:
    """The id of the job that resumes a waiting flow that was not started as a
    job (`JobBoard.post_waiting`): derived, so a signal finds it from the flow id."""
    return str(uuid5(NAMESPACE_URL, f"zag-wait:{flow_id}"))


def job_of(detail: FlowDetail) -> str:
    """The id of the job that resumes this flow: the one it was posted as, else
    the one a service hands it to when it waits (`wake_job_id`)."""
    return str(detail.meta.get("job") or wake_job_id(detail.uuid))


class Wakes(Protocol):
    """What `signal` needs of a job board: making a flow's parked job due now."""

    async def wake(self, job_id: str) -> bool: ...


async def signal(
    flow_id: str,
    event: str,
    payload: Any = None,
    *,
    backend: Backend,
    board: Wakes | None = None,
    signal_id: str | None = None,
) -> Signal:
    """Send a signal to a stored flow; returns it as stored.

    It is stored durably, once per `signal_id` (sending the same id again
    returns the first one and stores nothing, even once the flow has ended;
    ids are unique across flows), and kept until a wait of `event` takes it:
    each signal ends at most one wait, oldest first.

    With `board` (the job board the flow's job is on) the flow's parked job is
    made due now, so a conductor resumes the flow at once. Without it the
    conductors' sweep of the flow database finds the signal within
    `RECOVER_EVERY` (10) seconds; a flow that no conductor runs is resumed by
    `zag.resume` (or `ZagService.signal`, which wakes it itself).

    Raises:
        SignalRefused: (its `kind` says which) the flow does not exist or has
            finished, no wait of it declares `event`, or `signal_id` was used
            for another flow or event.
        ConfigurationError: `event` or `signal_id` is not a string every
            database can store.
        SerializationError: the payload cannot be stored (a type the codec does
            not know, or nesting deeper than JSON allows).
    """
    _check_text("event", event, 1000)
    if signal_id is not None:
        _check_text("signal_id", signal_id, 200)
    if not storable_text(flow_id) or not 0 < len(flow_id) <= 36:
        raise SignalRefused(str(flow_id), event, "no such flow", kind="unknown_flow")
    if signal_id is not None:
        earlier = await backend.find_signal(signal_id)
        if earlier is not None:
            if (earlier.flow_id, earlier.event) != (flow_id, event):
                raise SignalRefused(
                    flow_id,
                    event,
                    f"signal id {signal_id!r} is already used by signal {earlier.event!r} "
                    f"of flow {earlier.flow_id}",
                    kind="id_taken",
                )
            return earlier  # a retry (a webhook delivered twice): nothing new to wake
    try:
        row = await backend.load_flow_row(flow_id)
    except NotFound:
        raise SignalRefused(flow_id, event, "no such flow", kind="unknown_flow") from None
    detail = backend.flow_from_row(row)
    if detail.state in ENDED:
        raise SignalRefused(
            flow_id, event, f"the flow has finished ({detail.state})", kind="finished"
        )
    declared = detail.meta.get("events") or []
    if event not in declared:
        waits = ", ".join(repr(e) for e in declared) or "none"
        raise SignalRefused(
            flow_id, event, f"no wait of the flow declares it (it waits for {waits})"
        )
    stored, _ = await backend.add_signal(flow_id, event, payload, signal_id or new_id())
    if (stored.flow_id, stored.event) != (flow_id, event):  # the same id, sent concurrently
        raise SignalRefused(
            flow_id,
            event,
            f"signal id {stored.id!r} is already used by signal {stored.event!r} "
            f"of flow {stored.flow_id}",
            kind="id_taken",
        )
    if board is not None:
        await board.wake(job_of(detail))
    return stored


def _check_text(what: str, value: Any, most: int) -> None:
    if not (storable_text(value) and 0 < len(value) <= most):
        raise ConfigurationError(
            f"{what} must be a string of 1 to {most} characters with no NUL or lone "
            f"surrogate, got {value!r}"[:300]
        )


@dataclass(frozen=True, slots=True)
class WaitingFor:
    """One wait a WAITING flow is stopped at (see `Engine.waiting_for`)."""

    atom: str
    event: str | None  #: None for a `sleep`
    deadline: float | None  #: epoch seconds by the database's clock; None: no deadline


def declared_events(nodes: Sequence[Node]) -> list[str]:
    """The events the flow's waits wait for, sorted."""
    return sorted({n.atom.event for n in nodes if isinstance(n.atom, Wait) and n.atom.event})


def waiting_for(nodes: Sequence[Node], details: Sequence[AtomDetail]) -> tuple[WaitingFor, ...]:
    """The waits recorded as reached and not ended, in flow order."""
    out = []
    for node, d in zip(nodes, details, strict=True):
        armed = (d.meta or {}).get("wait")
        if armed is not None and d.state is AtomState.RUNNING:
            out.append(WaitingFor(node.name, armed["event"], armed["deadline"]))
    return tuple(out)


class Waits:
    """The engine's side of one flow's waits: records them as reached, ends them
    from signals or deadlines, and knows which are parked (reached, not ended).

    A reached wait's record (`meta["wait"]`: event, deadline, token) is
    committed before it looks for a signal, so the token that marks a consumed
    signal is durable first; the record is replaced by `meta["waited"]` (how it
    ended) in the write that records its result.
    """

    def __init__(
        self, nodes: Sequence[Node], details: Sequence[AtomDetail], storage: Storage
    ) -> None:
        self._backend = storage.backend  # None: a wait reached fails (nowhere to keep it)
        self._storage = storage
        self._nodes = nodes
        self._details = details
        self._checking: list[int] = []
        self.parked: set[int] = set()

    def arm(self, launch: list[Launch], now: float | None) -> bool:
        """Take the waits out of `launch` (in place), recording those reached now;
        True when there were any. `now` is the database's clock (None: not read)."""
        nodes = self._nodes
        kept = [item for item in launch if item[0] != "exec" or not nodes[item[1]].atom.is_wait]
        if len(kept) == len(launch):
            return False
        for kind, i, _ in launch:
            atom = nodes[i].atom
            if kind != "exec" or not isinstance(atom, Wait):
                continue
            d = self._details[i]
            meta = d.meta if d.meta is not None else {}
            if "wait" not in meta:
                deadline = atom.deadline_from(now if now is not None else 0.0)
                meta["wait"] = {"event": atom.event, "deadline": deadline, "token": new_id()}
                d.meta = meta
                self._storage.touch(d)
            self._checking.append(i)
        launch[:] = kept
        return True

    def needs_clock(self, launch: list[Launch]) -> bool:
        """True when some wait in `launch` is reached now and has a relative deadline."""
        nodes, details = self._nodes, self._details
        for kind, i, _ in launch:
            atom = nodes[i].atom
            if (
                kind == "exec"
                and isinstance(atom, Wait)
                and atom.wait_timeout is not None
                and "wait" not in (details[i].meta or {})
            ):
                return True
        return False

    async def clock(self) -> float:
        return await self._backend.clock() if self._backend is not None else 0.0

    def forget_reached(self) -> None:
        """The records of the waits just reached could not be written: check none."""
        self._checking.clear()

    async def check_reached(self) -> list[Outcome]:
        """End the waits just reached that can end now; park the others."""
        items, self._checking = self._checking, []
        return await self._check(items)

    async def recheck(self) -> list[Outcome]:
        """Look again at the parked waits (a signal or a deadline may have come)."""
        return await self._check(sorted(self.parked))

    def abandoned(self) -> list[Outcome]:
        """Parked waits the flow no longer wants (it is reverting them): each ends
        now with result None, so its revert can follow."""
        out: list[Outcome] = []
        for i in sorted(self.parked):
            d = self._details[i]
            if d.intention is not Intention.EXECUTE:
                self.parked.discard(i)
                self._ended(d, "abandoned", None)
                out.append(("exec", i, True, None, 0.0))
        return out

    async def _check(self, items: list[int]) -> list[Outcome]:
        out: list[Outcome] = []
        now: float | None = None
        backend = self._backend
        for i in items:
            d = self._details[i]
            armed = (d.meta or {}).get("wait")
            if armed is None or d.state is not AtomState.RUNNING:
                self.parked.discard(i)
                continue
            atom = self._nodes[i].atom
            assert isinstance(atom, Wait)
            if backend is None:
                self._ended(d, "no backend", None)
                error = ConfigurationError(
                    f"wait {atom.name!r}: a flow with waits needs a backend to keep its "
                    f"signals and deadlines; memory:// will do within one process"
                )
                out.append(("exec", i, False, Failure.from_exception(error), 0.0))
                continue
            event, deadline = armed["event"], armed["deadline"]
            if deadline is not None and now is None:
                # Read before looking for signals: a signal stored before the
                # deadline and before this reading is then found by the look
                # (read after it, the deadline could pass between the two).
                now = await backend.clock()
            got = None
            if event is not None:
                got = await backend.take_signal(
                    self._storage.flow.uuid, event, armed["token"], arrived_by=deadline
                )
            if got is not None:
                self.parked.discard(i)
                out.append(self._from_signal(i, atom, got))
                continue
            if deadline is not None and now is not None and now >= deadline:
                self.parked.discard(i)
                out.append(self._timed_out(i, atom, deadline))
                continue
            self.parked.add(i)
        return out

    def _from_signal(self, i: int, atom: Wait, got: Signal) -> Outcome:
        d = self._details[i]
        payload = got.payload
        if isinstance(payload, dict) and set(payload) == {REJECT_KEY}:
            self._ended(d, "rejected", got.id)
            error = WaitRejected(atom.name, atom.event, str(payload[REJECT_KEY]))
            return ("exec", i, False, Failure.from_exception(error), 0.0)
        self._ended(d, "signal", got.id)
        return ("exec", i, True, payload, 0.0)

    def _timed_out(self, i: int, atom: Wait, deadline: float) -> Outcome:
        d = self._details[i]
        self._ended(d, "timeout", None)
        if atom.has_default:
            return ("exec", i, True, atom.default, 0.0)
        error = WaitTimeout(atom.name, atom.event, deadline)
        return ("exec", i, False, Failure.from_exception(error), 0.0)

    def _ended(self, d: AtomDetail, how: str, signal_id: str | None) -> None:
        """Replace the wait's record by how it ended (written with its result)."""
        meta = d.meta if d.meta is not None else {}
        armed = meta.pop("wait", None) or {}
        meta["waited"] = {
            "event": armed.get("event"),
            "deadline": armed.get("deadline"),
            "ended_by": how,
            "signal": signal_id,
        }
        d.meta = meta
        self._storage.touch(d)


async def wake_delay(backend: Backend, waits: Sequence[WaitingFor]) -> float | None:
    """Seconds until the earliest deadline of `waits`, by the database's clock
    (None: they wait for signals only): when to park a WAITING flow's job until."""
    deadlines = [w.deadline for w in waits if w.deadline is not None]
    if not deadlines:
        return None
    return max(0.0, min(deadlines) - await backend.clock())


async def signalled(backend: Backend, flow_id: str, waits: Sequence[WaitingFor]) -> bool:
    """True when a signal that one of `waits` would take is pending: one sent
    while the flow's job was held woke nothing, so whoever parks the job looks
    once more after parking."""
    events = {w.event for w in waits if w.event is not None}
    if not events:
        return False
    return any(
        s.taken_by is None and s.event in events for s in await backend.list_signals(flow_id)
    )


def declare_events(detail: FlowDetail, nodes: Sequence[Node]) -> None:
    """Record the events the flow's waits wait for (what `zag.signal` accepts)."""
    events = declared_events(nodes)
    if events:
        detail.meta["events"] = events
