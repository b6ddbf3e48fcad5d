"""`Storage`: the engine's read/write view of one flow's state.

The engine changes state only through here: changes mark records dirty and
`commit()` writes them all in one backend call (one transaction), so a
linear flow costs one commit per atom and concurrent atoms share commits.
With no backend, state lives only in memory and commits cost nothing.

On a backend, the engine running the flow holds its lease through here too:
a new flow's record is written holding it, a loaded one takes it in one
statement, `heartbeat()` renews it while the run goes on and the run's last
commit clears it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .backoff import Backoff
from .codec import JsonCodec
from .errors import (
    ConcurrentUpdate,
    NotFound,
    SerializationError,
    StorageError,
    StorageUnavailable,
)
from .failure import Failure
from .models import AtomDetail, FlowDetail
from .persistence.leases import Lease
from .states import ENDED, AtomState, FlowState, check_flow_transition

if TYPE_CHECKING:
    from .persistence.base import Backend
    from .resolver import Resolver

__all__ = ["Storage", "WritePolicy"]


logger = logging.getLogger("zag_async")

_DEFAULT_CODEC = JsonCodec()  # what results are checked with when there is no backend


@dataclass(frozen=True, slots=True)
class WritePolicy:
    """How long a commit keeps trying while the database is unreachable.

    With the defaults a commit gives up after about 3 seconds (5 attempts,
    0.2 s doubling up to 1 s); the engine then suspends the flow and raises
    `StorageUnavailable`. Nothing is retried forever.
    """

    attempts: int = 5
    delay: float = 0.2
    backoff: float = 2.0
    max_delay: float = 1.0


class Storage:
    """Reads (`fetch`, `fetch_all`, `get`) come from memory; writes are
    buffered and made durable together by `commit()`."""

    def __init__(
        self,
        flow: FlowDetail,
        *,
        backend: Backend | None = None,
        store: Mapping[str, Any] | None = None,
        policy: WritePolicy | None = None,
        lease: Lease | None = None,
    ) -> None:
        self.flow = flow
        self.backend = backend
        self.durable = backend is not None
        #: The lease this storage's engine holds on the flow (None without a backend).
        self.lease: Lease | None = None
        if backend is not None:
            self.lease = lease if lease is not None else backend.lease_for()
        self._release = False  # the next commit clears the lease
        self.policy = policy if policy is not None else WritePolicy()
        if store:
            flow.store.update(store)
        self._dirty: dict[str, AtomDetail] = {}
        self._flow_dirty = True
        self._writing: asyncio.Future[None] | None = None  # the write in flight, if any
        # Set by the engine once the flow is compiled: how symbols are read.
        self._resolver: Resolver | None = None
        self._details: list[AtomDetail] = []

    @property
    def store(self) -> dict[str, Any]:
        """The flow's initial values (saved with the flow)."""
        return self.flow.store

    def attach(self, resolver: Resolver, details: list[AtomDetail]) -> None:
        """Read symbols through the engine's resolver (called once the flow is compiled)."""
        self._resolver, self._details = resolver, details

    def _value(self, symbol: str) -> tuple[bool, Any]:
        if self._resolver is None:
            return False, None
        return self._resolver.latest(symbol)

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
        for symbol in self._resolver.symbols if self._resolver is not None else ():
            found, value = self._value(symbol)
            if found:
                out[symbol] = value
        return out

    @property
    def failures(self) -> dict[str, Failure]:
        """Failures recorded on the flow's atoms (what reverts get as `flow_failures`)."""
        details = self._details or list(self.flow.atoms.values())
        return {d.name: d.failure for d in details if d.failure is not None}

    # -- writes ------------------------------------------------------------------

    def touch(self, detail: AtomDetail) -> None:
        """Mark an atom record changed (the engine mutates records in place)."""
        if self.durable:
            self._dirty[detail.name] = detail

    def touch_flow(self) -> None:
        """Mark the flow record (state, meta, store) changed."""
        self._flow_dirty = True

    @property
    def pending(self) -> bool:
        """True when some change is not written yet (what `commit()` would write)."""
        return bool(self._dirty) or self._flow_dirty

    def set_flow_state(self, state: FlowState) -> None:
        """Move the flow to `state` (checked against the allowed transitions)."""
        check_flow_transition(self.flow.name, self.flow.state, state)
        self.flow.state = state
        self._flow_dirty = True

    def restore_flow_state(self, state: FlowState) -> None:
        """Set the state with no transition check: `Engine.reset()`, or putting back
        the state that an end state which could not be written replaced."""
        self.flow.state = state
        self._flow_dirty = True

    def check_value(self, value: Any, *, atom: str | None = None, what: str = "result") -> None:
        """Raise SerializationError now if the backend could not store `value`.

        With no backend the default codec decides, so a flow that runs in memory
        also runs on a database. Given the `atom`, the error names it and `what`.
        """
        codec = self.backend.codec if self.backend is not None else _DEFAULT_CODEC
        try:
            if isinstance(codec, JsonCodec):
                codec.check(value)  # the same verdict, without writing the text
            else:
                codec.dumps(value)
        except SerializationError as exc:
            if atom is None:
                raise
            raise SerializationError(f"atom {atom!r}: its {what} cannot be saved: {exc}") from exc

    async def commit(self) -> None:
        """Write every change made since the last commit, in one backend call.

        While the backend is unreachable the write is retried per the
        `WritePolicy`, then `StorageUnavailable` is raised. A retry that finds
        its own earlier attempt already applied counts as success.

        Cancelling a commit does not cut its write short: the write goes on and
        the next commit waits for it, so the version this process expects stays
        the stored one (a write abandoned halfway could have landed unseen).
        """
        if self._writing is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._writing)
        if not self._dirty and not self._flow_dirty:
            return
        if self.backend is None:
            self._dirty.clear()
            self._flow_dirty = False
            return
        # Take what is dirty now; changes made while the write is in flight stay
        # dirty for the next commit.
        atoms, self._dirty = self._dirty, {}
        self._flow_dirty = False
        release, self._release = self._release, False
        self._writing = writing = asyncio.ensure_future(self._write(self.backend, atoms, release))
        writing.add_done_callback(_retrieve)  # a write outliving a cancelled commit
        await asyncio.shield(writing)

    async def _write(self, backend: Backend, atoms: dict[str, AtomDetail], release: bool) -> None:
        flow = self.flow
        lease = self.lease
        inserting = flow.version == 0
        flow.updated_at = time.time()  # also identifies this write if an attempt's ack is lost
        policy = self.policy
        backoff = Backoff(
            first=policy.delay,
            factor=policy.backoff,
            cap=policy.max_delay,
            max_attempts=policy.attempts,
        )
        try:
            async for attempt in backoff.attempts():
                try:
                    await self._save(backend, atoms, lease if inserting else None, release)
                except ConcurrentUpdate:
                    if attempt.number > 1 and await self._landed(backend):
                        _note_lease(lease, inserting, release)
                        return
                    raise
                except StorageUnavailable as exc:
                    if attempt.last:
                        raise StorageUnavailable(
                            f"flow {flow.name!r} ({flow.uuid}): could not write its state "
                            f"after {attempt.number} attempts: {exc}"
                        ) from exc
                else:
                    _note_lease(lease, inserting, release)
                    return
        except BaseException:
            # Not written: everything stays dirty for the next commit.
            for name, detail in atoms.items():
                self._dirty.setdefault(name, detail)
            self._flow_dirty = True
            self._release = self._release or release
            raise

    async def _save(
        self,
        backend: Backend,
        atoms: dict[str, AtomDetail],
        taking: Lease | None,
        release: bool,
    ) -> None:
        """One attempt at the write, carrying the lease if it takes or clears it."""
        flow = self.flow
        if taking is None and not release:
            await backend.save(flow, list(atoms.values()))
            return
        kept = flow.lease_owner
        flow.lease_owner = taking.owner if taking is not None else None
        flow.lease_term = taking.seconds if taking is not None else 0.0
        try:
            await backend.save(flow, list(atoms.values()))
        except BaseException:
            flow.lease_owner = kept
            raise
        finally:
            flow.lease_term = None

    # -- the lease ---------------------------------------------------------------

    async def take_lease(self, *, claim: bool = False, takeover: bool = False) -> None:
        """Hold the flow's lease (see `Backend.take_lease`): at load, and when a run starts.

        A flow not stored yet takes it with its first write; one already held
        costs nothing. A finished flow is not leased at load (only `claim`ed:
        its owner recorded, its version bumped).
        """
        lease, backend = self.lease, self.backend
        if lease is None or backend is None:
            return
        if self.flow.state in ENDED and not lease.held:
            if claim and lease.stable_owner is not None:
                await backend.claim_flow(self.flow, lease.stable_owner)
            return
        if lease.held or self.flow.version == 0:
            if lease.held:
                lease.taken()  # live again in this process
            return  # (a new record is inserted holding the lease)
        if self._writing is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._writing)
        await backend.take_lease(self.flow, lease, claim=claim, takeover=takeover)

    def release_lease_on_commit(self) -> None:
        """Clear the lease with the next commit (the run's last)."""
        if self.lease is not None and self.lease.held:
            self._release = True
            self._flow_dirty = True

    def lease_idle(self) -> None:
        """The run is over: whatever it left stored is free to this process."""
        self._release = False
        if self.lease is not None:
            self.lease.idle()

    @contextlib.contextmanager
    def heartbeat(
        self,
        tg: asyncio.TaskGroup,
        lost: Callable[[], None],
        beat: Callable[[], Awaitable[None]] | None = None,
    ) -> Iterator[None]:
        """Keep the lease renewed from a task of `tg` while the block runs, and
        call `beat` after each renewal (the engine looks for control requests).

        The block's end stops the heartbeat at once, even in the middle of a
        renewal (an outage must not hold up the end of the run).
        """
        lease = self.lease
        if lease is None:
            yield
            return
        # A timer until the first beat is due: most runs end before it, and a
        # timer costs far less than a task started and cancelled for each of them.
        beating: asyncio.Task[None] | None = None

        def start() -> None:
            nonlocal beating
            beating = tg.create_task(
                self._keep_lease(lost, beat), name=f"zag-lease-{self.flow.uuid}"
            )

        timer = asyncio.get_running_loop().call_later(lease.renew_every, start)
        try:
            yield
        finally:
            timer.cancel()
            if beating is not None:
                beating.cancel()

    async def _keep_lease(
        self,
        lost: Callable[[], None],
        beat: Callable[[], Awaitable[None]] | None,
    ) -> None:
        """Renew the lease every third of its term, calling `beat` after each renewal.

        A renewal that finds the lease taken over calls `lost` (the engine
        suspends: its next write would be refused anyway); one that cannot
        reach the database in a beat's time is logged and tried again at the
        next beat.
        """
        lease, backend = self.lease, self.backend
        if lease is None or backend is None:
            return
        while True:  # (started when the first beat is due)
            if lease.held:  # (not stored yet: its first write takes it)
                try:
                    async with asyncio.timeout(lease.renew_every):
                        renewed = await backend.renew_lease(self.flow.uuid, lease)
                except (StorageError, TimeoutError) as exc:
                    logger.warning("flow %r: could not renew its lease: %r", self.flow.name, exc)
                    renewed = True  # unknown: try again at the next beat
                if not renewed:
                    logger.warning(
                        "flow %r (%s): its lease was taken over; stopping this run",
                        self.flow.name,
                        self.flow.uuid,
                    )
                    lost()
                    return
            if beat is not None:
                try:
                    async with asyncio.timeout(lease.renew_every):
                        await beat()
                except (StorageError, TimeoutError) as exc:
                    logger.warning(
                        "flow %r: could not look for control requests: %r", self.flow.name, exc
                    )
            await asyncio.sleep(lease.renew_every)

    async def commit_shielded(self) -> None:
        """Finish this commit even if the caller is cancelled again while it runs.

        Plain asyncio on purpose: an anyio shielded scope does not hold off a
        native `Task.cancel()`, which is how callers (a server's shutdown, a
        timeout) stop a run.
        """
        task = asyncio.ensure_future(self.commit())
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await task
            raise

    async def _landed(self, backend: Backend) -> bool:
        """Did an earlier attempt of this write commit before its connection died?"""
        try:
            stored = await backend.load_flow_row(self.flow.uuid)
        except Exception:
            return False
        if (
            stored["version"] == self.flow.version + 1
            and stored["updated_at"] == self.flow.updated_at
        ):
            self.flow.version += 1
            return True
        return False


def _note_lease(lease: Lease | None, inserted: bool, released: bool) -> None:
    """A write went through: the record now holds the lease, or no longer does."""
    if lease is None:
        return
    if released:
        lease.released()
    elif inserted:
        lease.taken()


def _retrieve(write: asyncio.Future[None]) -> None:
    """Mark a write's outcome seen: the next commit or the awaiting caller handles it."""
    if not write.cancelled():
        write.exception()
