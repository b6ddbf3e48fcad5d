"""`memory://`: flow state kept in this process, stored as the same rows a
database would hold (so the conformance suite means something here too).

`memory://` alone gives a private store; `memory://NAME` shares one store
per name within the process, which lets a second engine resume a flow.
Leases expire by this process's clock.
"""

from __future__ import annotations

import copy
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
        wanted = None if query.states is None else set(query.states)
        needle = None if query.name_contains is None else fold(query.name_contains)
        rows = [
            r
            for r in self._t.flows.values()
            if (query.logbook is None or r["logbook"] == query.logbook)
            and (wanted is None or r["state"] in wanted)
            and (needle is None or needle in fold(r["name"]))
            and (query.created_after is None or r["created_at"] >= query.created_after)
            and (query.before is None or (r["created_at"], r["uuid"]) < query.before)
        ]
        rows.sort(key=lambda r: (r["created_at"], r["uuid"]), reverse=query.newest_first)
        return [dict(r) for r in rows[: query.limit]]

    async def _count_flows(self, created_after: float | None) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self._t.flows.values():
            if created_after is None or row["created_at"] >= created_after:
                counts[row["state"]] = counts.get(row["state"], 0) + 1
        return counts

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
        self._t.flows.pop(uuid, None)
        self._t.atoms.pop(uuid, None)
        for key in [k for k, r in self._t.signals.items() if r["flow_uuid"] == uuid]:
            del self._t.signals[key]
