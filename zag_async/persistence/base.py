"""The storage backend interface, and the row format every backend shares.

A backend stores LogBooks, FlowDetails and AtomDetails. Every value a user
supplies (results, store, retry history) goes through the backend's codec,
so what cannot be stored fails when it is saved, never later on load.
Writes are conditional: `save()` names the flow version it expects and a
stale writer gets `ConcurrentUpdate` instead of overwriting newer state.
An engine running a flow also holds its lease (see `leases`): taking one bumps
the version too, and a live lease held by someone else is `FlowBusy`.
A backend also keeps the signals sent to waiting flows, and tells the time by
the database's clock, which is what a wait's deadline is reckoned by. For the
operations UI it pages and counts flows in the database (keyset paging, a name
filter, counts per state, failures per time bucket) and keeps the log of
operator actions.
"""

from __future__ import annotations

import abc
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from ..codec import Codec, JsonCodec, storable_text
from ..errors import ConcurrentUpdate, ConfigurationError, FlowBusy, NotFound, StorageError
from ..failure import Failure
from ..models import Action, AtomDetail, FlowDetail, FlowSummary, History, LogBook, Signal
from ..states import AtomState, FlowState, Intention
from .leases import DEFAULT_LEASE, Holder, Lease

__all__ = ["ENDED_BADLY", "Backend", "Listing", "Row"]

Row = dict[str, Any]

#: The states of a flow that ended badly (what `Backend.failures_over_time` counts).
ENDED_BADLY: tuple[FlowState, ...] = (
    FlowState.FAILURE,
    FlowState.REVERTED,
    FlowState.UNCOMPENSATED,
    FlowState.STUCK_PAST_PIVOT,
)

#: Longest `name_contains` accepted (a LIKE pattern of SQLite is bounded in bytes).
MAX_NAME_FILTER = 1000
#: Longest `who`, `action`, `target` and `detail` of a recorded action.
ACTION_LIMITS = {"who": 200, "action": 64, "target": 200, "detail": 4000}
#: Most actions one `list_actions` returns.
MAX_ACTIONS = 1000

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fold(text: str) -> str:
    """`text` with ASCII letters lowered: the case folding every backend's name filter
    shares (SQLite's LIKE folds ASCII letters only)."""
    return text.lower() if text.isascii() else text.translate(_ASCII_LOWER)


def like_pattern(text: str) -> str:
    """A LIKE pattern (ESCAPE '\\') matching names that contain `text` literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@dataclass(frozen=True, slots=True)
class Listing:
    """A checked `list_flows` query, as each backend's `_list_flows` takes it.

    Order is (created_at, uuid), descending when `newest_first`; `before` keeps
    the flows strictly before that key in this order (a keyset cursor).
    """

    logbook: str | None = None
    states: tuple[str, ...] | None = None
    newest_first: bool = False
    limit: int | None = None
    name_contains: str | None = None
    created_after: float | None = None
    before: tuple[float, str] | None = None


def _number(name: str, value: object, what: str = "epoch seconds") -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigurationError(f"{name} must be a finite number of {what}, got {value!r}")
    return float(value)


def _listing(
    logbook: str | None,
    states: Sequence[FlowState] | None,
    newest_first: bool,
    limit: int | None,
    name_contains: str | None,
    created_after: float | None,
    before: tuple[float, str] | None,
) -> Listing:
    """The arguments of `list_flows`, checked (ConfigurationError names the bad one)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ConfigurationError(f"limit must be an int >= 0 or None, got {limit!r}")
    if name_contains is not None:
        if not isinstance(name_contains, str):
            raise ConfigurationError(f"name_contains must be a str, got {name_contains!r}")
        if len(name_contains) > MAX_NAME_FILTER:
            raise ConfigurationError(
                f"name_contains is {len(name_contains)} characters long, at most "
                f"{MAX_NAME_FILTER} are allowed"
            )
    cursor = None
    if before is not None:
        if not newest_first:
            raise ConfigurationError("before= pages a newest_first=True listing")
        if not (isinstance(before, tuple) and len(before) == 2 and isinstance(before[1], str)):
            raise ConfigurationError(
                f"before must be (created_at, uuid) of the last flow shown, got {before!r}"
            )
        cursor = (_number("before[0]", before[0]), before[1])
    return Listing(
        logbook=logbook,
        states=None if states is None else tuple(str(s) for s in states),
        newest_first=bool(newest_first),
        limit=limit,
        name_contains=name_contains or None,
        created_after=None if created_after is None else _number("created_after", created_after),
        before=cursor,
    )


#: JSON text of plain values, by the C encoder alone (what the codec ends with too).
_plain_json = json.JSONEncoder(separators=(",", ":"), allow_nan=True).encode


def _meta_text(meta: dict[str, Any], dumps: Callable[[Any], str]) -> str:
    """An atom's meta as stored. It is the engine's own plain JSON (waits, revert
    tries, the timeline of calls), written twice per call: straight through the C
    encoder, and through the codec only if something else is in it."""
    try:
        return _plain_json(meta)
    except (TypeError, ValueError):
        return dumps(meta)


def check_key(what: str, value: object) -> None:
    """NotFound for an id no database could hold (instead of a driver's own error)."""
    if not storable_text(value):
        raise NotFound(f"no {what} {value!r}")


def _action_text(name: str, value: object, *, empty: bool = False) -> str:
    """An argument of `record_action`, checked: a str, non-empty unless `empty`,
    bounded, with no NUL character (PostgreSQL text cannot hold one)."""
    limit = ACTION_LIMITS[name]
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a str, got {value!r}")
    if not value and not empty:
        raise ConfigurationError(f"{name} must not be empty")
    if len(value) > limit:
        raise ConfigurationError(f"{name} is {len(value)} characters long, at most {limit}")
    if "\x00" in value:
        raise ConfigurationError(f"{name} must not contain a NUL character")
    return value


def _failure_text(failure: Failure | None) -> str | None:
    return None if failure is None else json.dumps(failure.to_dict())


def _failure(text: str | None) -> Failure | None:
    return None if text is None else Failure.from_dict(json.loads(text))


#: Takes of a lease that lapses between a take's update and its check, before giving up.
_TAKE_TRIES = 3


class _TakeAgain(Exception):
    """A take's update found the lease held, its check found it free: try again."""


class Backend(abc.ABC):
    """Where flow state lives. Use as `async with`; `aclose()` is idempotent.

    `lease` is how many seconds an engine's lease on a flow lasts unless
    renewed, for engines that do not set their own (`Engine(lease=...)`).
    """

    url: str

    def __init__(
        self, url: str, *, codec: Codec | None = None, lease: float = DEFAULT_LEASE
    ) -> None:
        if not (isinstance(lease, int | float) and lease > 0):
            raise ConfigurationError(f"lease must be a number of seconds > 0, got {lease!r}")
        self.url = url
        self.codec: Codec = codec if codec is not None else JsonCodec()
        self.lease_seconds = float(lease)
        self._closed = False

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def closed(self) -> bool:
        """True once `aclose()` has been called."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"storage backend {self.url!r} is closed")

    # -- lifecycle ---------------------------------------------------------------

    async def open(self) -> None:  # noqa: B027 (optional hook)
        """Connect (and, unless disabled, bring the schema up to date)."""

    @abc.abstractmethod
    async def upgrade(self) -> int:
        """Create or upgrade the schema; returns the schema version now in place."""

    async def aclose(self) -> None:
        self._closed = True

    # -- logbooks ----------------------------------------------------------------

    @abc.abstractmethod
    async def save_logbook(self, book: LogBook) -> None:
        """Create the logbook, or update its name and meta."""

    @abc.abstractmethod
    async def get_logbook(self, uuid: str) -> LogBook: ...

    @abc.abstractmethod
    async def list_logbooks(self) -> list[LogBook]: ...

    @abc.abstractmethod
    async def delete_logbook(self, uuid: str) -> None:
        """Delete a logbook and every flow in it."""

    # -- flows -------------------------------------------------------------------

    async def save(self, flow: FlowDetail, atoms: Sequence[AtomDetail]) -> None:
        """Write the flow record and the given atom records in one transaction.

        The write succeeds only if the stored flow is still at `flow.version`
        (or does not exist yet when that is 0); `flow.version` is then bumped.
        The stored lease is left as it is unless `flow.lease_term` is set: then
        a new record is written holding `flow.lease_owner`'s lease for that
        many seconds, and a write with no `lease_owner` clears the lease.
        """
        self._check_open()
        flow_row = self.flow_row(flow)
        if flow.lease_term is not None:
            if flow.version == 0 and flow.lease_owner is not None:
                flow_row["lease_owner"], flow_row["lease_seconds"] = (
                    flow.lease_owner,
                    flow.lease_term,
                )
            elif flow.lease_owner is None:
                flow_row["lease_owner"] = None
        atom_rows = [self.atom_row(flow.uuid, a) for a in atoms]
        await self._write(flow_row, atom_rows, flow.version)
        flow.version += 1

    async def load_flow(self, uuid: str) -> FlowDetail:
        """The flow with all its atoms, as last committed."""
        self._check_open()
        check_key("flow", uuid)
        flow_row, atom_rows = await self._read(uuid)
        flow = self.flow_from_row(flow_row)
        for row in sorted(atom_rows, key=lambda r: r["position"] or 0):
            detail = self.atom_from_row(row)
            flow.atoms[detail.name] = detail
        return flow

    async def load_flow_row(self, uuid: str) -> Row:
        """The flow's own row (version, updated_at, ...) without its atoms."""
        self._check_open()
        check_key("flow", uuid)
        flow_row, _ = await self._read(uuid)
        return flow_row

    async def claim_flow(self, flow: FlowDetail, owner: str) -> None:
        """Take the flow over for `owner`, fencing off any earlier writer.

        Bumps the stored version, so whoever still holds the old version can
        no longer write. Raises ConcurrentUpdate if `flow` is already stale.
        """
        self._check_open()
        await self._claim(flow.uuid, owner, flow.version)
        flow.owner = owner
        flow.version += 1

    async def take_lease(
        self, flow: FlowDetail, lease: Lease, *, claim: bool = False, takeover: bool = False
    ) -> None:
        """Take the flow's lease for `lease.owner` (or renew our own), in one statement.

        Like `claim_flow`, this bumps the stored version, so an earlier engine
        still holding the flow can no longer write; with `claim`, the flow's
        `owner` becomes the lease's stable owner. Raises `FlowBusy` while
        another owner's lease is live (unless `takeover`: the caller holds the
        flow by some other authority, such as a job board claim),
        `ConcurrentUpdate` if `flow` is stale, `NotFound` if it does not exist.
        A live lease of the same stable owner, or of an engine known to be gone
        (`Lease.may_take_from`), is taken with a second statement at once.
        """
        self._check_open()
        owner = lease.owner
        claimant = lease.stable_owner if claim else None
        holder = await self._taking(flow, owner, lease.seconds, claimant, takeover)
        if holder is not None and lease.may_take_from(holder.owner):
            holder = await self._taking(flow, owner, lease.seconds, claimant, holder.owner)
        if holder is not None:
            raise FlowBusy(
                flow.name,
                flow.uuid,
                holder.owner,
                holder.expires_at,
                holder.expires_at - holder.now,
            )
        flow.version += 1
        flow.lease_owner = owner
        if claimant is not None:
            flow.owner = claimant
        lease.taken()

    async def _taking(
        self, flow: FlowDetail, owner: str, seconds: float, claim: str | None, steal: bool | str
    ) -> Holder | None:
        """`_take`, again when the lease lapsed between its update and its check."""
        for _ in range(_TAKE_TRIES):
            try:
                return await self._take(
                    flow.uuid, owner, flow.version, seconds, claim=claim, steal=steal
                )
            except _TakeAgain:
                continue
        raise self.stale(flow.uuid, flow.version)

    def lease_for(self, owner: str | None = None, seconds: float | None = None) -> Lease:
        """A lease for an engine on this backend (`seconds` defaults to the backend's term)."""
        return Lease(owner, self.lease_seconds if seconds is None else seconds)

    async def renew_lease(self, flow_id: str, lease: Lease) -> bool:
        """Extend our lease by its term; False if the flow's lease is no longer ours."""
        self._check_open()
        return await self._renew(flow_id, lease.owner, lease.seconds)

    @abc.abstractmethod
    async def _write(self, flow_row: Row, atom_rows: list[Row], expected: int) -> None:
        """Insert (expected 0) or conditionally update the flow row, and upsert atom rows.

        `flow_row` may carry `lease_owner` (with `lease_seconds` on an insert: the
        lease to write; on an update, always None: clear the lease); without
        that key the stored lease is left as it is.
        """

    @abc.abstractmethod
    async def _take(
        self,
        uuid: str,
        owner: str,
        expected: int,
        seconds: float,
        *,
        claim: str | None,
        steal: bool | str,
    ) -> Holder | None:
        """Set the lease if the flow is at `expected` and the lease is free, ours,
        expired or (`steal`) held by that owner (True: by anyone); bump the
        version, and record `claim` as the flow's owner if given.

        Returns None when taken, the holder when another owner's lease is live.
        """

    @abc.abstractmethod
    async def _renew(self, uuid: str, owner: str, seconds: float) -> bool: ...

    @abc.abstractmethod
    async def _read(self, uuid: str) -> tuple[Row, list[Row]]: ...

    @abc.abstractmethod
    async def _claim(self, uuid: str, owner: str, expected: int) -> None: ...

    async def list_flows(
        self,
        *,
        logbook: str | None = None,
        states: Sequence[FlowState] | None = None,
        newest_first: bool = False,
        limit: int | None = None,
        name_contains: str | None = None,
        created_after: float | None = None,
        before: tuple[float, str] | None = None,
    ) -> list[FlowSummary]:
        """Flows (optionally of one logbook, in some states), oldest first, or
        newest first; at most `limit` of them. The database filters and pages, so
        a listing costs the same on page 1 and page 200.

        Args:
            logbook: only this logbook's flows.
            states: only flows in these states.
            newest_first: order by (created_at, uuid) descending, not ascending;
                ties on created_at are broken by uuid, so paging is stable.
            limit: at most this many.
            name_contains: only flows whose name contains this text, ignoring the
                case of ASCII letters (only theirs, on every backend); `%`, `_`
                and `\\` match themselves.
            created_after: only flows created at or after this (epoch seconds).
            before: a keyset cursor for newest-first listings: the
                (created_at, uuid) of the last flow of the previous page; only
                flows after it in that order are listed.

        Raises:
            ConfigurationError: an argument that cannot work (named).
        """
        self._check_open()
        query = _listing(logbook, states, newest_first, limit, name_contains, created_after, before)
        if query.limit == 0 or query.states == () or "\x00" in (query.name_contains or ""):
            return []  # (no stored name holds a NUL: PostgreSQL text cannot)
        return [self.summary_from_row(r) for r in await self._list_flows(query)]

    @abc.abstractmethod
    async def _list_flows(self, query: Listing) -> list[Row]:
        """The summary rows (`names.SUMMARY_COLUMNS`) `query` selects, in its order."""

    async def count_flows(self, *, created_after: float | None = None) -> dict[FlowState, int]:
        """How many flows are in each state (states with none are left out), of
        those created at or after `created_after` if given: counted by the database."""
        self._check_open()
        since = None if created_after is None else _number("created_after", created_after)
        counts = await self._count_flows(since)
        known = set(FlowState)  # (a newer zag-async's states are not ours to name)
        return {FlowState(s): n for s, n in counts.items() if s in known and n}

    @abc.abstractmethod
    async def _count_flows(self, created_after: float | None) -> dict[str, int]:
        """State name -> number of flows (created at or after `created_after`)."""

    async def failures_over_time(self, *, since: float, bucket: float) -> list[tuple[float, int]]:
        """How many flows ended badly (`ENDED_BADLY`), per `bucket` seconds of their
        last update, from `since` on: (bucket start, count), oldest first, empty
        buckets left out. Buckets start at `since` + k * `bucket`; the database
        groups the rows.

        Raises:
            ConfigurationError: `since` is not a number, or `bucket` not > 0.
        """
        self._check_open()
        start = _number("since", since)
        width = _number("bucket", bucket, "seconds")
        if width <= 0:
            raise ConfigurationError(f"bucket must be a number of seconds > 0, got {bucket!r}")
        counts = await self._failures_over_time(start, width, [str(s) for s in ENDED_BADLY])
        return [(start + index * width, n) for index, n in sorted(counts.items()) if n]

    @abc.abstractmethod
    async def _failures_over_time(
        self, since: float, bucket: float, states: list[str]
    ) -> dict[int, int]:
        """Bucket index (floor((updated_at - since) / bucket)) -> flows in `states`
        updated at or after `since`."""

    @abc.abstractmethod
    async def delete_flow(self, uuid: str) -> None: ...

    # -- the record of operator actions -------------------------------------------

    async def record_action(self, who: str, action: str, target: str, detail: str = "") -> Action:
        """Record that `who` did `action` to `target` (a flow or job id), stamped by
        the database's clock. Actions are an audit log: deleting their flow keeps them.

        Raises:
            ConfigurationError: an argument is empty (but `detail`), too long, or
                holds a NUL character (named).
        """
        self._check_open()
        row = {
            "who": _action_text("who", who),
            "action": _action_text("action", action),
            "target": _action_text("target", target),
            "detail": _action_text("detail", detail, empty=True),
        }
        return self.action_from_row(await self._insert_action(row))

    async def list_actions(self, *, target: str | None = None, limit: int = 50) -> list[Action]:
        """The recorded actions (only those on `target`, if given), newest first, at
        most `limit` (up to `MAX_ACTIONS`)."""
        self._check_open()
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_ACTIONS:
            raise ConfigurationError(f"limit must be an int from 0 to {MAX_ACTIONS}, got {limit!r}")
        if target is not None and not isinstance(target, str):
            raise ConfigurationError(f"target must be a str or None, got {target!r}")
        if limit == 0 or (target is not None and not storable_text(target)):
            return []
        return [self.action_from_row(r) for r in await self._action_rows(target, limit)]

    @abc.abstractmethod
    async def _insert_action(self, row: Row) -> Row:
        """Insert the action (stamping `id` and `at`); returns the stored row."""

    @abc.abstractmethod
    async def _action_rows(self, target: str | None, limit: int) -> list[Row]:
        """Up to `limit` action rows (of `target`), newest (highest id) first."""

    @staticmethod
    def action_from_row(row: Row) -> Action:
        return Action(
            id=int(row["id"]),
            at=float(row["at"]),
            who=row["who"],
            action=row["action"],
            target=row["target"],
            detail=row["detail"] or "",
        )

    # -- signals and the clock -----------------------------------------------------

    @abc.abstractmethod
    async def clock(self) -> float:
        """Now, in epoch seconds, by the database's clock (this process's for memory://)."""

    async def add_signal(
        self, flow_id: str, event: str, payload: Any, signal_id: str
    ) -> tuple[Signal, bool]:
        """Store a signal unless one with `signal_id` exists; returns it and whether it is new."""
        self._check_open()
        text = self.codec.dumps(payload)
        row, new = await self._insert_signal(
            {"id": signal_id, "flow_uuid": flow_id, "event": event, "payload": text}
        )
        return self.signal_from_row(row), new

    async def take_signal(
        self, flow_id: str, event: str, taker: str, *, arrived_by: float | None = None
    ) -> Signal | None:
        """The signal wait `taker` consumed, consuming the oldest pending one of
        `event` (that arrived by `arrived_by`, if given) when it has none yet.

        One statement marks the signal taken, so each is consumed by one wait;
        asking again with the same `taker` returns the same signal (a wait
        resumed after a crash finds what it had consumed).
        """
        self._check_open()
        row = await self._take_signal(flow_id, event, taker, arrived_by)
        return None if row is None else self.signal_from_row(row)

    async def find_signal(self, signal_id: str) -> Signal | None:
        """The signal stored under `signal_id` (any flow's), or None."""
        self._check_open()
        if not storable_text(signal_id):
            return None  # no stored id is such text
        row = await self._signal_row(signal_id)
        return None if row is None else self.signal_from_row(row)

    @abc.abstractmethod
    async def _signal_row(self, signal_id: str) -> Row | None: ...

    async def list_signals(self, flow_id: str) -> list[Signal]:
        """Every signal stored for the flow, in arrival order (taken or not)."""
        self._check_open()
        if not storable_text(flow_id):
            return []  # no stored id is such text
        return [self.signal_from_row(r) for r in await self._signal_rows(flow_id)]

    async def signalled_flows(self) -> dict[str, int]:
        """WAITING flows with signals no wait has taken yet: flow id -> the newest
        such signal's sequence number (what a conductor's sweep wakes)."""
        self._check_open()
        return await self._signalled_flows()

    @abc.abstractmethod
    async def _signalled_flows(self) -> dict[str, int]: ...

    @abc.abstractmethod
    async def _insert_signal(self, row: Row) -> tuple[Row, bool]:
        """Insert the signal row (stamping `seq` and `created_at`) unless its id exists;
        returns the stored row and whether it was inserted."""

    @abc.abstractmethod
    async def _take_signal(
        self, flow_id: str, event: str, taker: str, arrived_by: float | None
    ) -> Row | None: ...

    @abc.abstractmethod
    async def _signal_rows(self, flow_id: str) -> list[Row]: ...

    def signal_from_row(self, row: Row) -> Signal:
        return Signal(
            id=row["id"],
            flow_id=row["flow_uuid"],
            event=row["event"],
            payload=self.codec.loads(row["payload"]) if row["payload"] is not None else None,
            seq=int(row["seq"]),
            created_at=float(row["created_at"]),
            taken_by=row["taken_by"],
        )

    # -- rows --------------------------------------------------------------------

    def flow_row(self, flow: FlowDetail) -> Row:
        return {
            "uuid": flow.uuid,
            "name": flow.name,
            "state": str(flow.state),
            "logbook": flow.logbook,
            "owner": flow.owner,
            "store": self.codec.dumps(flow.store),
            "meta": self.codec.dumps(flow.meta),
            "created_at": flow.created_at,
            "updated_at": flow.updated_at,
            "version": flow.version + 1,
        }

    def flow_from_row(self, row: Row) -> FlowDetail:
        return FlowDetail(
            name=row["name"],
            uuid=row["uuid"],
            state=FlowState(row["state"]),
            store=self.codec.loads(row["store"]) if row["store"] else {},
            meta=self.codec.loads(row["meta"]) if row["meta"] else {},
            logbook=row["logbook"],
            owner=row["owner"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            version=row["version"],
            lease_owner=row.get("lease_owner"),
            lease_expires=row.get("lease_expires"),
        )

    def summary_from_row(self, row: Row) -> FlowSummary:
        return FlowSummary(
            uuid=row["uuid"],
            name=row["name"],
            state=FlowState(row["state"]),
            logbook=row["logbook"],
            owner=row["owner"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            version=row["version"],
        )

    def atom_row(self, flow_uuid: str, atom: AtomDetail) -> Row:
        dumps = self.codec.dumps
        try:
            return {
                "flow_uuid": flow_uuid,
                "name": atom.name,
                "kind": atom.kind,
                "state": str(atom.state),
                "intention": str(atom.intention),
                "result": dumps(atom.result),
                "failure": _failure_text(atom.failure),
                "revert_result": dumps(atom.revert_result),
                "revert_failure": _failure_text(atom.revert_failure),
                "history": None if atom.history is None else dumps(atom.history.to_list()),
                "duration": atom.duration,
                "attempts": atom.attempts,
                "meta": None if atom.meta is None else _meta_text(atom.meta, dumps),
                "position": atom.position,
            }
        except StorageError as exc:
            raise type(exc)(f"atom {atom.name!r}: {exc}") from exc

    def atom_from_row(self, row: Row) -> AtomDetail:
        loads = self.codec.loads
        return AtomDetail(
            name=row["name"],
            kind=row["kind"],
            state=AtomState(row["state"]),
            intention=Intention(row["intention"]),
            result=loads(row["result"]) if row["result"] is not None else None,
            failure=_failure(row["failure"]),
            revert_result=loads(row["revert_result"]) if row["revert_result"] is not None else None,
            revert_failure=_failure(row["revert_failure"]),
            history=None if row["history"] is None else History.from_list(loads(row["history"])),
            duration=row["duration"],
            attempts=row["attempts"] or 0,
            meta=loads(row["meta"]) if row["meta"] is not None else None,
            position=row["position"] or 0,
        )

    def logbook_row(self, book: LogBook) -> Row:
        return {
            "uuid": book.uuid,
            "name": book.name,
            "meta": self.codec.dumps(book.meta),
            "created_at": book.created_at,
        }

    def logbook_from_row(self, row: Row) -> LogBook:
        return LogBook(
            name=row["name"],
            uuid=row["uuid"],
            meta=self.codec.loads(row["meta"]) if row["meta"] else {},
            created_at=row["created_at"],
        )

    def refused_take(
        self,
        uuid: str,
        expected: int,
        owner: str,
        steal: bool | str,
        version: int,
        holder: str | None,
        expires: float | None,
        now: float,
    ) -> Holder:
        """Why a take's conditional update changed nothing, from the row it then read
        (a second statement, with its own clock): the live lease of another owner
        (returned) or a stale version (raised); when neither holds any more, the lease
        lapsed or was released in between and `take_lease` tries again."""
        live = holder is not None and expires is not None and expires >= now
        if live and holder not in (owner, steal) and steal is not True:
            assert holder is not None and expires is not None
            return Holder(holder, float(expires), float(now))  # busy, whatever the version
        if version != expected:
            raise self.stale(uuid, expected)
        raise _TakeAgain

    @staticmethod
    def stale(uuid: str, expected: int) -> ConcurrentUpdate:
        return ConcurrentUpdate(
            f"flow {uuid}: stored state moved past version {expected}; another engine or "
            f"conductor owns this flow now"
        )
