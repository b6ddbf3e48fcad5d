"""`memory://`: flow state kept in this process, stored as the same rows a
database would hold (so the conformance suite means something here too).

`memory://` alone gives a private store; `memory://NAME` shares one store
per name within the process, which lets a second engine resume a flow.
Leases expire by this process's clock.
"""

from __future__ import annotations

import bisect
import collections
import copy
import itertools
import math
import time

from ..codec import Codec
from ..errors import NotFound
from ..models import LogBook
from ..states import FlowState
from .base import Backend, Listing, Row, fold
from .leases import DEFAULT_LEASE, Holder

__all__ = ["MemoryBackend"]


class _Tables:
    def __init__(self) -> None:
        self.logbooks: dict[str, Row] = {}
        self.flows: dict[str, Row] = {}
        self.atoms: dict[str, dict[str, Row]] = {}
        self.signals: dict[str, Row] = {}  # by id, in arrival order
        self.signal_seq = 0
        self.actions: list[Row] = []  # in recording order; `id` is the place + 1
        #: (created_at, uuid) of every flow, sorted: the creation index a page walks
        self.created: list[tuple[float, str]] = []
        #: flow name -> how many flows bear it (a name filter checks each name once)
        self.names: dict[str, int] = {}

    def index(self, row: Row, old: Row | None) -> None:
        """Keep `created` and `names` in step with a flow row written over `old`."""
        key = (row["created_at"], row["uuid"])
        if old is None or (old["created_at"], old["uuid"]) != key:
            if old is not None:
                self._drop_key(old)
            bisect.insort(self.created, key)
        if old is None or old["name"] != row["name"]:
            if old is not None:
                self._drop_name(old["name"])
            self.names[row["name"]] = self.names.get(row["name"], 0) + 1

    def unindex(self, row: Row) -> None:
        """Forget a deleted flow row."""
        self._drop_key(row)
        self._drop_name(row["name"])

    def _drop_key(self, row: Row) -> None:
        key = (row["created_at"], row["uuid"])
        at = bisect.bisect_left(self.created, key)
        if at < len(self.created) and self.created[at] == key:
            del self.created[at]

    def _drop_name(self, name: str) -> None:
        left = self.names.get(name, 0) - 1
        if left > 0:
            self.names[name] = left
        else:
            self.names.pop(name, None)


_SHARED: dict[str, _Tables] = {}


class MemoryBackend(Backend):
    def __init__(
        self, url: str = "memory://", *, codec: Codec | None = None, lease: float = DEFAULT_LEASE
    ) -> None:
        super().__init__(url, codec=codec, lease=lease)
        name = url.partition("://")[2].strip("/")
        self._t = _SHARED.setdefault(name, _Tables()) if name else _Tables()

    async def upgrade(self) -> int:
        return 1

    async def save_logbook(self, book: LogBook) -> None:
        self._check_open()
        self._t.logbooks[book.uuid] = self.logbook_row(book)

    async def get_logbook(self, uuid: str) -> LogBook:
        self._check_open()
        try:
            return self.logbook_from_row(self._t.logbooks[uuid])
        except KeyError:
            raise NotFound(f"no logbook {uuid!r} in {self.url}") from None

    async def list_logbooks(self) -> list[LogBook]:
        self._check_open()
        rows = sorted(self._t.logbooks.values(), key=lambda r: r["created_at"])
        return [self.logbook_from_row(r) for r in rows]

    async def delete_logbook(self, uuid: str) -> None:
        self._check_open()
        self._t.logbooks.pop(uuid, None)
        for flow_uuid in [u for u, r in self._t.flows.items() if r["logbook"] == uuid]:
            await self.delete_flow(flow_uuid)

    async def _write(self, flow_row: Row, atom_rows: list[Row], expected: int) -> None:
        current = self._t.flows.get(flow_row["uuid"])
        if (current["version"] if current is not None else 0) != expected:
            raise self.stale(flow_row["uuid"], expected)
        row = dict(flow_row)
        seconds = row.pop("lease_seconds", None)
        if "lease_owner" not in row:  # keep the stored lease
            row["lease_owner"] = current["lease_owner"] if current is not None else None
            row["lease_expires"] = current["lease_expires"] if current is not None else None
        elif row["lease_owner"] is None or seconds is None:
            row["lease_owner"] = row["lease_expires"] = None
        else:
            row["lease_expires"] = time.time() + seconds
        self._t.flows[flow_row["uuid"]] = row
        self._t.index(row, current)
        table = self._t.atoms.setdefault(flow_row["uuid"], {})
        for row in atom_rows:
            table[row["name"]] = dict(row)

    async def _read(self, uuid: str) -> tuple[Row, list[Row]]:
        row = self._t.flows.get(uuid)
        if row is None:
            raise NotFound(f"no flow {uuid!r} in {self.url}")
        return copy.copy(row), [copy.copy(r) for r in self._t.atoms.get(uuid, {}).values()]

    async def _claim(self, uuid: str, owner: str, expected: int) -> None:
        row = self._t.flows.get(uuid)
        if row is None:
            raise NotFound(f"no flow {uuid!r} in {self.url}")
        if row["version"] != expected:
            raise self.stale(uuid, expected)
        row["owner"] = owner
        row["version"] = expected + 1

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
        row = self._t.flows.get(uuid)
        if row is None:
            raise NotFound(f"no flow {uuid!r} in {self.url}")
        now = time.time()
        holder, expires = row["lease_owner"], row["lease_expires"]
        free = holder is None or holder == owner or expires is None or expires < now
        if not (free or steal is True or steal == holder):
            return Holder(holder, expires, now)  # busy, whatever the version
        if row["version"] != expected:
            raise self.stale(uuid, expected)
        row["lease_owner"], row["lease_expires"] = owner, now + seconds
        row["version"] = expected + 1
        if claim is not None:
            row["owner"] = claim
        return None

    async def _renew(self, uuid: str, owner: str, seconds: float) -> bool:
        row = self._t.flows.get(uuid)
        if row is None or row["lease_owner"] != owner:
            return False
        row["lease_expires"] = time.time() + seconds
        return True

    async def clock(self) -> float:
        return time.time()

    async def _insert_signal(self, row: Row) -> tuple[Row, bool]:
        found = self._t.signals.get(row["id"])
        if found is not None:
            return dict(found), False
        self._t.signal_seq += 1
        stored = {**row, "seq": self._t.signal_seq, "created_at": time.time(), "taken_by": None}
        self._t.signals[row["id"]] = stored
        return dict(stored), True

    async def _take_signal(
        self, flow_id: str, event: str, taker: str, arrived_by: float | None
    ) -> Row | None:
        pending = None
        for row in self._t.signals.values():
            if row["flow_uuid"] != flow_id:
                continue
            if row["taken_by"] == taker:
                return dict(row)
            if (
                pending is None
                and row["taken_by"] is None
                and row["event"] == event
                and (arrived_by is None or row["created_at"] <= arrived_by)
            ):
                pending = row
        if pending is None:
            return None
        pending["taken_by"] = taker
        return dict(pending)

    async def _signal_row(self, signal_id: str) -> Row | None:
        found = self._t.signals.get(signal_id)
        return None if found is None else dict(found)

    async def _signalled_flows(self) -> dict[str, int]:
        out: dict[str, int] = {}
        waiting = str(FlowState.WAITING)
        for row in self._t.signals.values():
            flow = self._t.flows.get(row["flow_uuid"])
            if row["taken_by"] is None and flow is not None and flow["state"] == waiting:
                out[row["flow_uuid"]] = max(out.get(row["flow_uuid"], 0), row["seq"])
        return out

    async def _signal_rows(self, flow_id: str) -> list[Row]:
        return [dict(r) for r in self._t.signals.values() if r["flow_uuid"] == flow_id]

    async def _list_flows(self, query: Listing) -> list[Row]:
        """Walk the creation index in the listing's order, from the cursor on, until
        `limit` flows passed the filters (a page costs its rows, not the table)."""
        keys = self._t.created
        low = (
            0
            if query.created_after is None
            else bisect.bisect_left(keys, (query.created_after, ""))
        )
        high = len(keys) if query.before is None else bisect.bisect_left(keys, query.before)
        wanted = None if query.states is None else set(query.states)
        named = None
        if query.name_contains is not None:
            needle = fold(query.name_contains)
            named = {n for n in self._t.names if needle in fold(n)}
            if not named:
                return []
        if query.newest_first:
            window = itertools.islice(reversed(keys), len(keys) - high, len(keys) - low)
        else:
            window = itertools.islice(keys, low, high)
        flows, logbook, limit = self._t.flows, query.logbook, query.limit
        found: list[Row] = []
        for _, uuid in window:
            row = flows[uuid]
            if (
                (logbook is None or row["logbook"] == logbook)
                and (wanted is None or row["state"] in wanted)
                and (named is None or row["name"] in named)
            ):
                found.append(dict(row))
                if limit is not None and len(found) >= limit:
                    break
        return found

    async def _count_flows(self, created_after: float | None) -> dict[str, int]:
        flows, keys = self._t.flows, self._t.created
        if created_after is None:
            return collections.Counter(row["state"] for row in flows.values())
        low = bisect.bisect_left(keys, (created_after, ""))
        return collections.Counter(flows[uuid]["state"] for _, uuid in keys[low:])

    async def _failures_over_time(
        self, since: float, bucket: float, states: list[str]
    ) -> dict[int, int]:
        counts: dict[int, int] = {}
        for row in self._t.flows.values():
            if row["state"] in states and row["updated_at"] >= since:
                index = math.floor((row["updated_at"] - since) / bucket)  # as SQL does
                counts[index] = counts.get(index, 0) + 1
        return counts

    async def _insert_action(self, row: Row) -> Row:
        stored = {**row, "id": len(self._t.actions) + 1, "at": time.time()}
        self._t.actions.append(stored)
        return dict(stored)

    async def _action_rows(self, target: str | None, limit: int) -> list[Row]:
        found: list[Row] = []
        for row in reversed(self._t.actions):
            if len(found) >= limit:
                break
            if target is None or row["target"] == target:
                found.append(dict(row))
        return found

    async def delete_flow(self, uuid: str) -> None:
        self._check_open()
        gone = self._t.flows.pop(uuid, None)
        if gone is not None:
            self._t.unindex(gone)
        self._t.atoms.pop(uuid, None)
        for key in [k for k, r in self._t.signals.items() if r["flow_uuid"] == uuid]:
            del self._t.signals[key]
