"""Flow state: what the engine knows about a flow and each of its atoms.

The engine changes state only through `Storage`: every change marks the
record dirty, and `commit()` hands all dirty records to the backend in one
write. The in-memory backend keeps them as they are; durable backends (SQL)
implement the same `Backend` protocol.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import NotFound
from .failure import Failure
from .retry import History
from .states import AtomState, FlowState, Intention

__all__ = ["AtomDetail", "Backend", "FlowDetail", "MemoryBackend", "Storage"]


@dataclass(slots=True, eq=False)
class AtomDetail:
    """Everything recorded about one atom of one flow."""

    name: str
    kind: str = "task"  #: "task" or "retry"
    state: AtomState = AtomState.PENDING
    intention: Intention = Intention.EXECUTE
    result: Any = None
    failure: Failure | None = None
    revert_result: Any = None
    revert_failure: Failure | None = None
    history: History | None = None  #: retry controllers: the attempts so far
    duration: float | None = None  #: seconds the last execute took
    attempts: int = 0  #: how many times execute was started
    meta: dict[str, Any] | None = None
    version: int = 0


@dataclass(slots=True, eq=False)
class FlowDetail:
    """One run of a flow: its state and its atoms' details."""

    name: str
    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))
    state: FlowState = FlowState.PENDING
    atoms: dict[str, AtomDetail] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    version: int = 0


class Backend(Protocol):
    """Where flow state goes when the engine commits."""

    async def save(self, flow: FlowDetail, atoms: Sequence[AtomDetail]) -> None:
        """Persist the flow record and the given (changed) atom records together."""
        ...


class MemoryBackend:
    """Keeps flow details in this process (the default; nothing survives a restart)."""

    def __init__(self) -> None:
        self.flows: dict[str, FlowDetail] = {}

    async def save(self, flow: FlowDetail, atoms: Sequence[AtomDetail]) -> None:
        self.flows[flow.uuid] = flow


class Storage:
    """The engine's read/write view of one flow's state.

    Reads (`fetch`, `fetch_all`, `get`) come from memory; writes are buffered
    and made durable together by `commit()`.
    """

    def __init__(
        self,
        flow: FlowDetail,
        *,
        backend: Backend | None = None,
        store: Mapping[str, Any] | None = None,
    ) -> None:
        self.flow = flow
        self.backend: Backend = backend if backend is not None else MemoryBackend()
        self.store: dict[str, Any] = dict(store or {})
        self._dirty: dict[str, AtomDetail] = {}
        self._flow_dirty = True
        #: False for the memory backend: records live in memory already.
        self.durable = not isinstance(self.backend, MemoryBackend)
        # Set by the engine: symbol -> provider indices, and the records/atoms by index.
        self._providers: dict[str, list[int]] = {}
        self._details: list[AtomDetail] = []
        self._atoms: list[Any] = []

    def attach(
        self, providers: dict[str, list[int]], details: list[AtomDetail], atoms: list[Any]
    ) -> None:
        """Tell storage who provides what (the engine calls this after compiling)."""
        self._providers, self._details, self._atoms = providers, details, atoms

    def _value(self, symbol: str) -> tuple[bool, Any]:
        for n in reversed(self._providers.get(symbol, ())):
            detail = self._details[n]
            if detail.state is AtomState.SUCCESS:
                atom = self._atoms[n]
                return True, atom.pick(symbol, atom.provided[symbol], detail.result)
        return False, None

    # -- reads -------------------------------------------------------------------

    def get(self, atom: str) -> AtomDetail:
        try:
            return self.flow.atoms[atom]
        except KeyError:
            raise NotFound(f"flow {self.flow.name!r} has no atom named {atom!r}") from None

    def get_state(self, atom: str) -> AtomState:
        return self.get(atom).state

    def fetch(self, symbol: str) -> Any:
        """The current value of `symbol`: the latest provider's output, else the store."""
        found, value = self._value(symbol)
        if found:
            return value
        if symbol in self.store:
            return self.store[symbol]
        raise NotFound(f"flow {self.flow.name!r}: nothing provides {symbol!r} (yet)")

    def fetch_all(self) -> dict[str, Any]:
        """Every symbol available now: the store overlaid with atom outputs."""
        out = dict(self.store)
        for symbol in self._providers:
            found, value = self._value(symbol)
            if found:
                out[symbol] = value
        return out

    @property
    def failures(self) -> dict[str, Failure]:
        """Failures recorded on atoms (the flow's `flow_failures`)."""
        return {name: d.failure for name, d in self.flow.atoms.items() if d.failure is not None}

    # -- writes ------------------------------------------------------------------

    def touch(self, detail: AtomDetail) -> None:
        """Mark an atom record changed (the engine mutates it in place)."""
        if self.durable:
            self._dirty[detail.name] = detail

    def set_flow_state(self, state: FlowState) -> None:
        self.flow.state = state
        self.flow.updated_at = time.time()
        self._flow_dirty = True

    @property
    def pending(self) -> bool:
        return bool(self._dirty) or self._flow_dirty

    async def commit(self) -> None:
        """Write every change made since the last commit, in one backend call."""
        if not self._dirty and not self._flow_dirty:
            return
        atoms = list(self._dirty.values())
        self._dirty.clear()
        self._flow_dirty = False
        if self.durable:
            await self.backend.save(self.flow, atoms)
