"""Every exception zag-async raises, in one tree.

```
ZagError
├── FlowDefinitionError        the flow is wrong; raised before anything runs
│   ├── InvalidAtom            bad decorator/constructor arguments, bad rebind/provides
│   ├── DuplicateAtomName      two atoms share a name
│   ├── MissingRequirements    inputs nobody provides (all of them, in one error)
│   ├── AmbiguousProvider      several atoms of a graph provide one required name
│   ├── DependencyCycle        a graph flow links back onto itself
│   └── FlowChanged            a stored flow no longer matches the code rebuilding it
├── ExecutionError             something went wrong while running
│   ├── AtomTimeout            an atom ran past its `timeout=`
│   ├── AtomInterrupted        a non-idempotent atom was running when its process died
│   ├── ResultMismatch         a result does not fit the atom's `provides`
│   ├── RemoteFailure          a failure whose live exception is not in this process
│   ├── WrappedFailure         several atoms failed at once; holds every Failure
│   ├── NoWorkers              no live remote worker serves a task
│   ├── WorkerLost             a remote worker went silent while running a request
│   ├── NotFound               a name, atom or record that does not exist
│   ├── WaitTimeout            a wait's deadline passed before a signal ended it
│   ├── WaitRejected           the signal that ended a wait rejected it (`zag.reject`)
│   ├── SignalRefused          a signal no wait can take (unknown or ended flow, undeclared event)
│   ├── ControlRefused         a suspend or cancel that cannot apply (unknown, ended or idle flow)
│   ├── FlowCancelled          the flow was cancelled on request and reverted (`zag.cancel_flow`)
│   └── BrokerUnavailable      RabbitMQ refused the connection or the login, or did not answer
├── ConfigurationError         a bad option for an engine or backend (max_concurrency=0, ...)
├── JobError                   job boards, claims and locks
│   ├── JobNotFound            no such job (or it is already complete)
│   ├── NotClaimable           the job cannot be claimed now
│   │   ├── AlreadyClaimed     another owner holds it
│   │   └── NotYetDue          a delayed job whose time has not come (by the board's clock)
│   ├── ClaimLost              the claim vanished (session expired, job gone): stop writing
│   ├── LockLost               a distributed lock was lost while held
│   └── BoardUnavailable       the board's server cannot be reached (retried, then raised)
├── InvalidTransition          a state change the state machine forbids (a bug)
└── StorageError               flow state could not be read or written
    ├── StorageUnavailable     the database cannot be reached (retried, then raised)
    ├── ConcurrentUpdate       another writer advanced the same record first
    ├── FlowBusy               another live engine holds the flow's lease
    └── SerializationError     a value cannot be written with the codec
```
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .failure import Failure

__all__ = [
    "AmbiguousProvider",
    "AtomInterrupted",
    "AtomTimeout",
    "AlreadyClaimed",
    "BrokerUnavailable",
    "BoardUnavailable",
    "ClaimLost",
    "ConfigurationError",
    "ControlRefused",
    "JobError",
    "JobNotFound",
    "LockLost",
    "NotClaimable",
    "NotYetDue",
    "NoWorkers",
    "ConcurrentUpdate",
    "DependencyCycle",
    "DuplicateAtomName",
    "ExecutionError",
    "FlowBusy",
    "FlowCancelled",
    "FlowChanged",
    "FlowDefinitionError",
    "InvalidAtom",
    "InvalidTransition",
    "MissingRequirements",
    "NotFound",
    "RemoteFailure",
    "ResultMismatch",
    "SignalRefused",
    "SerializationError",
    "StorageError",
    "StorageUnavailable",
    "WaitRejected",
    "WaitTimeout",
    "WorkerLost",
    "WrappedFailure",
    "ZagError",
]


class ZagError(Exception):
    """Root of every error raised by zag-async."""


class FlowDefinitionError(ZagError):
    """The flow cannot run as declared; raised before any atom runs."""


class InvalidAtom(FlowDefinitionError):
    """An atom was declared with arguments that cannot work."""


class DuplicateAtomName(FlowDefinitionError):
    """Two atoms (or retry controllers) in one flow share a name."""

    def __init__(self, flow: str, name: str) -> None:
        super().__init__(
            f"flow {flow!r}: atom name {name!r} is used more than once; "
            f"give one of them another name with name=... or .bind(name=...)"
        )
        self.flow = flow
        self.name = name


class MissingRequirements(FlowDefinitionError):
    """Inputs that no atom provides and the store does not hold.

    `missing` maps each atom name to the symbols it lacks.
    """

    def __init__(
        self,
        flow: str,
        missing: Mapping[str, list[str]],
        for_revert: Mapping[str, list[str]] | None = None,
    ) -> None:
        revert = for_revert or {}

        def describe(atom: str, symbol: str) -> str:
            return f"{symbol!r} (for revert)" if symbol in revert.get(atom, ()) else repr(symbol)

        parts = "; ".join(
            f"atom {atom!r} requires {', '.join(describe(atom, s) for s in names)}"
            for atom, names in missing.items()
        )
        super().__init__(
            f"flow {flow!r}: missing requirements: {parts} "
            f"(no preceding atom provides them and the store does not hold them)"
        )
        self.flow = flow
        self.missing = dict(missing)


class AmbiguousProvider(FlowDefinitionError):
    """Several atoms of one graph provide a symbol that another atom requires."""

    def __init__(self, flow: str, symbol: str, consumer: str, providers: list[str]) -> None:
        super().__init__(
            f"graph flow {flow!r}: {consumer!r} requires {symbol!r}, which is provided by "
            f"several of its nodes ({', '.join(repr(p) for p in providers)}); rename one "
            f"output or use rebind="
        )
        self.flow = flow
        self.symbol = symbol
        self.consumer = consumer
        self.providers = providers


class DependencyCycle(FlowDefinitionError):
    """A graph flow's edges (inferred or linked) form a cycle."""

    def __init__(self, flow: str, cycle: list[str]) -> None:
        super().__init__(f"graph flow {flow!r} has a dependency cycle: {' -> '.join(cycle)}")
        self.flow = flow
        self.cycle = cycle


class FlowChanged(FlowDefinitionError):
    """A stored flow's atoms differ from the flow rebuilt to resume it."""

    def __init__(self, flow: str, added: list[str], removed: list[str]) -> None:
        parts = []
        if added:
            parts.append(f"added {', '.join(repr(a) for a in added)}")
        if removed:
            parts.append(f"removed {', '.join(repr(a) for a in removed)}")
        detail = "; ".join(parts) or "its links changed"
        super().__init__(
            f"flow {flow!r} changed since it was stored ({detail}); resume it with the code "
            f"that started it, or pass allow_changes=True to match atoms by name"
        )
        self.flow = flow
        self.added = added
        self.removed = removed


class ExecutionError(ZagError):
    """Something went wrong while a flow was running."""


class AtomTimeout(ExecutionError, TimeoutError):
    """An atom ran longer than its `timeout=`."""

    def __init__(self, atom: str, timeout: float) -> None:
        super().__init__(f"atom {atom!r} timed out after {timeout:g}s")
        self.atom = atom
        self.timeout = timeout


class AtomInterrupted(ExecutionError):
    """A non-idempotent atom was running when its process stopped.

    The engine cannot know whether it finished, so instead of running it
    again it fails it, which reverts it (and what the failure policy says).
    """

    def __init__(self, atom: str) -> None:
        super().__init__(
            f"atom {atom!r} was running when its process stopped and is marked "
            f"idempotent=False, so it is reverted instead of run again"
        )
        self.atom = atom


class ResultMismatch(ExecutionError):
    """An atom's result cannot be unpacked into its `provides`."""


class RemoteFailure(ExecutionError):
    """Re-raised for a `Failure` whose original exception object is not available.

    This happens for failures loaded from storage or received from a remote
    worker; `failure` holds everything that was captured.
    """

    def __init__(self, failure: Failure) -> None:
        super().__init__(f"{failure.exception_type}: {failure.message}")
        self.failure = failure


class WrappedFailure(ExecutionError):
    """Several atoms failed in the same run; `failures` holds each of them."""

    def __init__(self, failures: Mapping[str, Failure]) -> None:
        summary = "; ".join(
            f"{name}: {f.exception_type}: {f.message}" for name, f in failures.items()
        )
        super().__init__(f"{len(failures)} atoms failed: {summary}")
        self.failures = dict(failures)

    def __iter__(self) -> Iterator[Failure]:
        return iter(self.failures.values())

    def __len__(self) -> int:
        return len(self.failures)

    def check(self, *types: type[BaseException] | str) -> bool:
        """True when any of the wrapped failures matches one of `types`."""
        return any(f.check(*types) is not None for f in self.failures.values())


class NoWorkers(ExecutionError):
    """No live remote worker serves a task the flow needs (fails fast, never hangs)."""


class WorkerLost(ExecutionError):
    """The remote worker running a request went silent past the stall timeout."""


class NotFound(ExecutionError, LookupError):
    """A name, atom or stored record does not exist."""


class WaitTimeout(ExecutionError, TimeoutError):
    """A wait's deadline (by the database's clock) passed before a signal ended it."""

    def __init__(self, atom: str, event: str | None, deadline: float) -> None:
        when = datetime.fromtimestamp(deadline, UTC).isoformat(timespec="seconds")
        what = f"for {event!r} " if event is not None else ""
        super().__init__(f"wait {atom!r} {what}timed out at {when}")
        self.atom = atom
        self.event = event
        self.deadline = deadline


class WaitRejected(ExecutionError):
    """The signal that ended a wait carried a rejection (`zag.reject(reason)`)."""

    def __init__(self, atom: str, event: str | None, reason: str) -> None:
        super().__init__(f"wait {atom!r} for {event!r} was rejected: {reason}")
        self.atom = atom
        self.event = event
        self.reason = reason


class SignalRefused(ExecutionError):
    """A signal that no wait could ever take, so it is refused instead of stored.

    `kind` says why: "unknown_flow" (no such flow), "finished" (the flow has
    ended), "undeclared" (no wait of the flow declares the event) or "id_taken"
    (the signal id was used for another flow or event).
    """

    def __init__(self, flow_id: str, event: str, reason: str, *, kind: str = "undeclared") -> None:
        super().__init__(f"signal {event!r} for flow {flow_id}: {reason}")
        self.flow_id = flow_id
        self.event = event
        self.reason = reason
        self.kind = kind


class ControlRefused(ExecutionError):
    """A suspend or cancel request that cannot apply, so it is refused instead of stored.

    `kind` says why: "unknown_flow", "finished" (the flow has ended) or
    "not_running" (suspending a flow that is WAITING or SUSPENDED: nothing runs).
    """

    def __init__(self, flow_id: str, action: str, reason: str, *, kind: str) -> None:
        super().__init__(f"{action} of flow {flow_id}: {reason}")
        self.flow_id = flow_id
        self.action = action
        self.reason = reason
        self.kind = kind


class FlowCancelled(ExecutionError):
    """The flow was cancelled on request (`zag.cancel_flow`) and what it did was reverted."""

    def __init__(self, flow: str, by: str, reason: str) -> None:
        who = f" by {by}" if by else ""
        why = f": {reason}" if reason else ""
        super().__init__(f"flow {flow!r} was cancelled{who}{why}")
        self.flow = flow
        self.by = by
        self.reason = reason


class BrokerUnavailable(ExecutionError, ConnectionError):
    """RabbitMQ refused the first connection or its login, or did not answer; the
    message names the URL (password hidden). Established connections reconnect."""


class ConfigurationError(ZagError, ValueError):
    """An option given to an engine, backend or worker cannot work."""


class JobError(ZagError):
    """Something about a job board, a claim or a distributed lock."""


class JobNotFound(JobError, LookupError):
    """No such job on the board (it may have been consumed or trashed)."""


class NotClaimable(JobError):
    """The job cannot be claimed right now."""


class AlreadyClaimed(NotClaimable):
    """Another owner holds the job."""


class NotYetDue(NotClaimable):
    """A delayed job whose time has not come, by the board's own clock."""

    def __init__(self, job: str, due_in: float) -> None:
        super().__init__(f"job {job!r} is due in {due_in:.3f}s (by the board's clock)")
        self.job = job
        self.due_in = due_in


class ClaimLost(JobError):
    """A claim is gone (its session expired or the job was removed): stop working on it."""


class LockLost(JobError):
    """A distributed lock was lost while its holder was still inside it."""


class BoardUnavailable(JobError):
    """The job board's server cannot be reached within the call's deadline."""


class InvalidTransition(ZagError):
    """A state change the state machine does not allow; always a bug."""

    def __init__(self, what: str, name: str, old: str, new: str) -> None:
        super().__init__(f"{what} {name!r}: invalid state transition {old} -> {new}")
        self.name = name
        self.old = old
        self.new = new


class StorageError(ZagError):
    """Flow state could not be read or written."""


class StorageUnavailable(StorageError):
    """The storage backend cannot be reached; the write may be retried later."""


class ConcurrentUpdate(StorageError):
    """Another writer changed the record first; this writer's view is stale."""


class FlowBusy(StorageError):
    """Another live engine holds the flow's lease: it is running the flow now.

    Attributes:
        owner: who holds the lease.
        expires_at: when it lapses unless renewed (epoch seconds, by the database's clock).
        expires_in: seconds left when this was raised.
    """

    def __init__(
        self, name: str, flow_id: str, owner: str, expires_at: float, expires_in: float
    ) -> None:
        when = datetime.fromtimestamp(expires_at, UTC).isoformat(timespec="seconds")
        super().__init__(
            f"flow {name!r} ({flow_id}) is being run by {owner}; its lease expires at "
            f"{when} (in {max(0, math.ceil(expires_in))} s)"
        )
        self.flow_id = flow_id
        self.owner = owner
        self.expires_at = expires_at
        self.expires_in = expires_in


class SerializationError(StorageError):
    """A value (usually an atom's result) cannot be written with the codec."""
