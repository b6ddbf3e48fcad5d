"""One storage contract, checked on every backend (memory://, SQLite, PostgreSQL).

Each test takes the parametrized `backend` fixture from conftest.py, so a
failure names the backend that broke the contract.
"""

from __future__ import annotations

import datetime
import decimal
import gc
import uuid
from pathlib import Path
from typing import Any

import pytest

import zag_async as zag
from zag_async.errors import ConcurrentUpdate, NotFound, SerializationError, StorageError
from zag_async.persistence import schema
from zag_async.retry import Attempt, History

S = zag.AtomState
F = zag.FlowState
I = zag.Intention  # noqa: E741


class QuotaExceeded(Exception):
    """A user exception class (module-qualified in Failure.exception_types)."""


def failure_with_cause() -> zag.Failure:
    try:
        try:
            {}["disk"]
        except KeyError as inner:
            raise QuotaExceeded("tenant 7 is over quota: 12 ≥ 10") from inner
    except QuotaExceeded as exc:
        return zag.Failure.from_exception(exc)
    raise AssertionError("unreachable")


RESULTS: dict[str, Any] = {
    "none": None,
    "bool": True,
    "int": 2**70,
    "float": 1.5,
    "inf": float("inf"),
    "str": "naïve – ünïcode ✓",
    "list": [1, "two", None],
    "tuple": (1, "two", (3, 4)),
    "bytes": b"\x00\xffbinary",
    "set": {1, 2, 3},
    "frozenset": frozenset({"a", "b"}),
    "datetime": datetime.datetime(2024, 2, 29, 23, 59, 58, 123456),
    "datetime_tz": datetime.datetime(2024, 2, 29, 12, 0, tzinfo=datetime.UTC),
    "date": datetime.date(1999, 12, 31),
    "decimal": decimal.Decimal("12.3400"),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "nested": {"a": [(1, 2), {"b": b"x", "c": {decimal.Decimal("1")}}], "t": ((),)},
    "tag_lookalike": {"$zag": "tuple", "v": [1, 2]},
}


def flow_with(*atoms: zag.AtomDetail, **fields: Any) -> zag.FlowDetail:
    detail = zag.FlowDetail("conformance", **fields)
    for atom in atoms:
        detail.atoms[atom.name] = atom
    return detail


async def saved(
    backend: zag.persistence.Backend, *atoms: zag.AtomDetail, **fields: Any
) -> zag.FlowDetail:
    detail = flow_with(*atoms, **fields)
    await backend.save(detail, list(detail.atoms.values()))
    return detail


def assert_same_atom(got: zag.AtomDetail, want: zag.AtomDetail) -> None:
    for field in ("name", "kind", "state", "intention", "duration", "attempts", "meta"):
        assert getattr(got, field) == getattr(want, field), field
    for field in ("result", "revert_result"):
        value, expected = getattr(got, field), getattr(want, field)
        assert value == expected, field
        assert type(value) is type(expected), field
    assert got.failure == want.failure
    assert got.revert_failure == want.revert_failure
    if want.history is None:
        assert got.history is None
    else:
        assert got.history is not None
        assert got.history.to_list() == want.history.to_list()


# -- round trips ---------------------------------------------------------------------


async def test_flow_fields_round_trip(backend: zag.persistence.Backend) -> None:
    book = zag.LogBook("tenant-1")
    await backend.save_logbook(book)
    detail = await saved(
        backend,
        state=F.SUSPENDED,
        store={"price": decimal.Decimal("9.50"), "ids": (1, 2), "blob": b"\x01"},
        meta={"factory": {"path": "x:y", "args": [1], "kwargs": {}}, "k": [1, 2]},
        logbook=book.uuid,
        owner="conductor-1",
        created_at=1_700_000_000.25,
        updated_at=1_700_000_001.5,
    )
    assert detail.version == 1

    loaded = await backend.load_flow(detail.uuid)

    assert loaded.uuid == detail.uuid
    assert loaded.name == "conformance"
    assert loaded.state is F.SUSPENDED
    assert loaded.store == detail.store
    assert type(loaded.store["ids"]) is tuple
    assert loaded.meta == detail.meta
    assert loaded.logbook == book.uuid
    assert loaded.owner == "conductor-1"
    assert loaded.created_at == 1_700_000_000.25
    assert loaded.updated_at == 1_700_000_001.5
    assert loaded.version == 1
    assert loaded.atoms == {}


@pytest.mark.parametrize("state", list(F))
async def test_every_flow_state_round_trips(backend: zag.persistence.Backend, state: F) -> None:
    detail = await saved(backend, state=state)
    assert (await backend.load_flow(detail.uuid)).state is state


async def test_atoms_in_every_state_round_trip(backend: zag.persistence.Backend) -> None:
    intentions = list(I)
    atoms = [
        zag.AtomDetail(
            f"atom-{state.lower()}",
            state=state,
            intention=intentions[n % len(intentions)],
            result=(n, str(state)),
            duration=0.25 * n if n else None,
            attempts=n,
            meta={"n": n} if n % 2 else None,
        )
        for n, state in enumerate(S)
    ]
    detail = await saved(backend, *atoms)

    loaded = await backend.load_flow(detail.uuid)

    assert sorted(loaded.atoms) == sorted(a.name for a in atoms)
    for atom in atoms:
        assert_same_atom(loaded.atoms[atom.name], atom)


@pytest.mark.parametrize("kind", list(RESULTS))
async def test_results_keep_their_types(backend: zag.persistence.Backend, kind: str) -> None:
    value = RESULTS[kind]
    atom = zag.AtomDetail("a", state=S.SUCCESS, result=value, revert_result=value)
    detail = await saved(backend, atom)

    loaded = (await backend.load_flow(detail.uuid)).atoms["a"]

    assert_same_atom(loaded, atom)


async def test_nested_types_survive(backend: zag.persistence.Backend) -> None:
    detail = await saved(backend, zag.AtomDetail("a", result=RESULTS["nested"]))

    result = (await backend.load_flow(detail.uuid)).atoms["a"].result

    assert type(result["a"][0]) is tuple
    assert type(result["a"][1]["b"]) is bytes
    assert type(result["a"][1]["c"]) is set
    assert result["t"] == ((),)


async def test_failures_round_trip(backend: zag.persistence.Backend) -> None:
    failure = failure_with_cause()
    revert_failure = zag.Failure.from_exception(RuntimeError("revert broke"))
    atom = zag.AtomDetail(
        "charge",
        state=S.REVERT_FAILURE,
        intention=I.REVERT,
        failure=failure,
        revert_failure=revert_failure,
    )
    detail = await saved(backend, atom)

    loaded = (await backend.load_flow(detail.uuid)).atoms["charge"]

    got = loaded.failure
    assert got is not None
    assert got == failure
    assert got.exception is None  # the live exception stays in the process that raised it
    assert got.exception_type == f"{__name__}.QuotaExceeded"
    assert got.exception_types[-1] == "BaseException"
    assert got.check(QuotaExceeded) is QuotaExceeded
    assert got.check("Exception") == "Exception"
    assert got.message == "tenant 7 is over quota: 12 ≥ 10"
    assert got.args == ("tenant 7 is over quota: 12 ≥ 10",)
    assert "QuotaExceeded" in got.traceback
    assert "failure_with_cause" in got.traceback
    assert got.traceback == failure.traceback
    assert got.cause is not None
    assert got.cause.exception_type == "KeyError"
    assert got.cause.message == "'disk'"
    # Without the live exception, reraise() rebuilds the original (already imported) type,
    # with the stored failure attached as a RemoteFailure cause.
    with pytest.raises(QuotaExceeded) as raised:
        got.reraise()
    assert isinstance(raised.value.__cause__, zag.errors.RemoteFailure)
    assert raised.value.__cause__.failure == failure
    assert loaded.revert_failure == revert_failure
    assert loaded.revert_failure is not None
    assert loaded.revert_failure.message == "revert broke"


async def test_retry_history_round_trips(backend: zag.persistence.Backend) -> None:
    history = History(
        [
            Attempt(1, {"r0": failure_with_cause(), "r1": zag.Failure.from_exception(OSError(5))}),
            Attempt((2, "b"), {}),
            Attempt(None, {"r1": zag.Failure.from_exception(ValueError("again"))}),
        ]
    )
    atom = zag.AtomDetail("guarded.retry", kind="retry", state=S.SUCCESS, result=3, history=history)
    empty = zag.AtomDetail("other.retry", kind="retry", history=History())
    detail = await saved(backend, atom, empty)

    loaded = await backend.load_flow(detail.uuid)

    got = loaded.atoms["guarded.retry"].history
    assert got is not None
    assert len(got) == 3
    assert got.values == [1, (2, "b"), None]
    assert got[0].failures["r0"] == history[0].failures["r0"]
    assert got[0].failures["r1"].check(OSError)
    assert got.failures["r1"].message == "again"
    assert loaded.atoms["guarded.retry"].kind == "retry"
    empty_history = loaded.atoms["other.retry"].history
    assert empty_history is not None
    assert len(empty_history) == 0


async def test_later_saves_update_only_the_atoms_given(backend: zag.persistence.Backend) -> None:
    a, b = zag.AtomDetail("a"), zag.AtomDetail("b")
    detail = await saved(backend, a, b)
    a.state, a.result, a.attempts = S.SUCCESS, {"v": 1}, 1
    detail.state = F.RUNNING

    await backend.save(detail, [a])

    loaded = await backend.load_flow(detail.uuid)
    assert loaded.version == detail.version == 2
    assert loaded.state is F.RUNNING
    assert loaded.atoms["a"].state is S.SUCCESS
    assert loaded.atoms["a"].result == {"v": 1}
    assert loaded.atoms["b"].state is S.PENDING


# -- versions and ownership -------------------------------------------------------------


async def test_stale_version_is_refused(backend: zag.persistence.Backend) -> None:
    detail = await saved(backend, zag.AtomDetail("a"))
    first = await backend.load_flow(detail.uuid)
    second = await backend.load_flow(detail.uuid)
    first.atoms["a"].state = S.RUNNING
    await backend.save(first, [first.atoms["a"]])
    second.atoms["a"].result = "stale"

    with pytest.raises(ConcurrentUpdate):
        await backend.save(second, [second.atoms["a"]])

    assert second.version == 1  # a refused write does not bump the caller's version
    loaded = await backend.load_flow(detail.uuid)
    assert loaded.version == 2
    assert loaded.atoms["a"].state is S.RUNNING
    assert loaded.atoms["a"].result is None


async def test_first_save_of_an_existing_uuid_is_refused(
    backend: zag.persistence.Backend,
) -> None:
    detail = await saved(backend, zag.AtomDetail("a", result="kept"))
    impostor = flow_with(zag.AtomDetail("a", result="overwritten"), uuid=detail.uuid)

    with pytest.raises(ConcurrentUpdate):
        await backend.save(impostor, list(impostor.atoms.values()))

    assert (await backend.load_flow(detail.uuid)).atoms["a"].result == "kept"


async def test_claim_fences_off_the_previous_holder(backend: zag.persistence.Backend) -> None:
    detail = await saved(backend, zag.AtomDetail("a"))
    old = await backend.load_flow(detail.uuid)
    new = await backend.load_flow(detail.uuid)

    await backend.claim_flow(new, "worker-2")

    assert new.owner == "worker-2"
    assert new.version == 2
    with pytest.raises(ConcurrentUpdate):
        await backend.save(old, [old.atoms["a"]])
    with pytest.raises(ConcurrentUpdate):
        await backend.claim_flow(old, "worker-1")
    await backend.save(new, [new.atoms["a"]])
    loaded = await backend.load_flow(detail.uuid)
    assert loaded.owner == "worker-2"
    assert loaded.version == 3
    summary = (await backend.list_flows())[0]
    assert (summary.owner, summary.version) == ("worker-2", 3)


async def test_claim_of_unknown_flow_is_not_found(backend: zag.persistence.Backend) -> None:
    with pytest.raises(NotFound):
        await backend.claim_flow(zag.FlowDetail("ghost", version=1), "me")


async def test_load_flow_row(backend: zag.persistence.Backend) -> None:
    detail = await saved(backend, zag.AtomDetail("a"), updated_at=123.5)

    row = await backend.load_flow_row(detail.uuid)

    assert row["version"] == 1
    assert row["updated_at"] == 123.5
    with pytest.raises(NotFound):
        await backend.load_flow_row(str(uuid.uuid4()))


# -- listing, logbooks, deletion -------------------------------------------------------------


async def test_list_flows_filters_and_orders_by_creation(
    backend: zag.persistence.Backend,
) -> None:
    a, b = zag.LogBook("a", created_at=10.0), zag.LogBook("b", created_at=5.0)
    await backend.save_logbook(a)
    await backend.save_logbook(b)
    # Saved out of creation order, so insertion order cannot pass for creation order.
    f3 = await saved(backend, logbook=a.uuid, state=F.FAILURE, created_at=300.0)
    f1 = await saved(backend, logbook=a.uuid, state=F.SUCCESS, created_at=100.0)
    f4 = await saved(backend, logbook=None, state=F.PENDING, created_at=400.0)
    f2 = await saved(backend, logbook=b.uuid, state=F.RUNNING, created_at=200.0)

    def ids(summaries: list[zag.FlowSummary]) -> list[str]:
        return [s.uuid for s in summaries]

    assert ids(await backend.list_flows()) == [f1.uuid, f2.uuid, f3.uuid, f4.uuid]
    assert ids(await backend.list_flows(logbook=a.uuid)) == [f1.uuid, f3.uuid]
    assert ids(await backend.list_flows(logbook=b.uuid)) == [f2.uuid]
    assert ids(await backend.list_flows(states=[F.SUCCESS, F.PENDING])) == [f1.uuid, f4.uuid]
    assert ids(await backend.list_flows(logbook=a.uuid, states=[F.FAILURE])) == [f3.uuid]
    assert await backend.list_flows(logbook=b.uuid, states=[F.SUCCESS]) == []
    assert await backend.list_flows(states=[]) == []
    assert await backend.list_flows(logbook=str(uuid.uuid4())) == []
    # Paged listings: newest first, at most `limit`.
    newest = await backend.list_flows(newest_first=True)
    assert ids(newest) == [f4.uuid, f3.uuid, f2.uuid, f1.uuid]
    assert ids(await backend.list_flows(newest_first=True, limit=2)) == [f4.uuid, f3.uuid]
    assert ids(await backend.list_flows(limit=1)) == [f1.uuid]
    page = await backend.list_flows(logbook=a.uuid, newest_first=True, limit=1)
    assert ids(page) == [f3.uuid]

    summary = (await backend.list_flows(logbook=b.uuid))[0]
    assert summary == zag.FlowSummary(
        uuid=f2.uuid,
        name="conformance",
        state=F.RUNNING,
        logbook=b.uuid,
        owner=None,
        created_at=200.0,
        updated_at=f2.updated_at,
        version=1,
    )


async def test_logbook_crud(backend: zag.persistence.Backend) -> None:
    assert await backend.list_logbooks() == []
    later = zag.LogBook("later", meta={"team": "infra"}, created_at=20.0)
    earlier = zag.LogBook("earlier", created_at=10.0)
    await backend.save_logbook(later)
    await backend.save_logbook(earlier)

    got = await backend.get_logbook(later.uuid)
    assert (got.uuid, got.name, got.meta, got.created_at) == (
        later.uuid,
        "later",
        {"team": "infra"},
        20.0,
    )
    assert [b.name for b in await backend.list_logbooks()] == ["earlier", "later"]

    later.name, later.meta = "renamed", {"team": "storage", "ids": (1, 2)}
    await backend.save_logbook(later)
    got = await backend.get_logbook(later.uuid)
    assert (got.name, got.meta) == ("renamed", {"team": "storage", "ids": (1, 2)})
    assert len(await backend.list_logbooks()) == 2

    await backend.delete_logbook(earlier.uuid)
    assert [b.uuid for b in await backend.list_logbooks()] == [later.uuid]
    with pytest.raises(NotFound):
        await backend.get_logbook(earlier.uuid)


async def test_deleting_a_logbook_deletes_its_flows(backend: zag.persistence.Backend) -> None:
    doomed, kept = zag.LogBook("doomed"), zag.LogBook("kept")
    await backend.save_logbook(doomed)
    await backend.save_logbook(kept)
    gone = [await saved(backend, zag.AtomDetail(f"a{i}"), logbook=doomed.uuid) for i in range(3)]
    stays = await saved(backend, zag.AtomDetail("a"), logbook=kept.uuid)
    loose = await saved(backend, zag.AtomDetail("a"))

    await backend.delete_logbook(doomed.uuid)

    for detail in gone:
        with pytest.raises(NotFound):
            await backend.load_flow(detail.uuid)
    assert await backend.list_flows(logbook=doomed.uuid) == []
    assert {s.uuid for s in await backend.list_flows()} == {stays.uuid, loose.uuid}
    assert "a" in (await backend.load_flow(stays.uuid)).atoms
    # The atoms went too: a new flow under a reused uuid starts empty.
    reborn = await saved(backend, uuid=gone[0].uuid)
    assert (await backend.load_flow(reborn.uuid)).atoms == {}


async def test_delete_flow(backend: zag.persistence.Backend) -> None:
    doomed = await saved(backend, zag.AtomDetail("a", result=1), zag.AtomDetail("b"))
    other = await saved(backend, zag.AtomDetail("a", result=2))

    await backend.delete_flow(doomed.uuid)

    with pytest.raises(NotFound):
        await backend.load_flow(doomed.uuid)
    assert [s.uuid for s in await backend.list_flows()] == [other.uuid]
    assert (await backend.load_flow(other.uuid)).atoms["a"].result == 2
    reborn = await saved(backend, zag.AtomDetail("c"), uuid=doomed.uuid)
    assert sorted((await backend.load_flow(reborn.uuid)).atoms) == ["c"]
    await backend.delete_flow(str(uuid.uuid4()))  # deleting what is not there is a no-op


async def test_unknown_uuids_are_not_found(backend: zag.persistence.Backend) -> None:
    with pytest.raises(NotFound) as raised:
        await backend.load_flow("no-such-flow")
    assert "no-such-flow" in str(raised.value)
    with pytest.raises(NotFound):
        await backend.get_logbook("no-such-book")


# -- lifecycle, schema, serialisation ------------------------------------------------------


async def test_aclose_is_idempotent_and_use_after_close_fails(
    backend: zag.persistence.Backend,
) -> None:
    detail = await saved(backend, zag.AtomDetail("a"))

    await backend.aclose()
    await backend.aclose()

    calls = [
        lambda: backend.load_flow(detail.uuid),
        lambda: backend.load_flow_row(detail.uuid),
        lambda: backend.save(detail, []),
        lambda: backend.claim_flow(detail, "me"),
        lambda: backend.list_flows(),
        lambda: backend.delete_flow(detail.uuid),
        lambda: backend.save_logbook(zag.LogBook("x")),
        lambda: backend.get_logbook("x"),
        lambda: backend.list_logbooks(),
        lambda: backend.delete_logbook("x"),
    ]
    for call in calls:
        with pytest.raises(StorageError, match="closed"):
            await call()


async def test_upgrade_is_idempotent(backend: zag.persistence.Backend) -> None:
    first = await backend.upgrade()
    second = await backend.upgrade()

    assert first == second
    assert isinstance(first, int)
    assert first >= 1
    if not backend.url.startswith("memory"):
        assert first == schema.SCHEMA_VERSION
        assert await zag.persistence.upgrade(backend.url) == schema.SCHEMA_VERSION


async def test_upgrade_creates_a_fresh_sqlite_schema(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"

    assert await zag.persistence.upgrade(url) == schema.SCHEMA_VERSION
    assert await zag.persistence.upgrade(url) == schema.SCHEMA_VERSION
    async with zag.connect(url, upgrade=False) as backend:
        assert await backend.list_flows() == []


async def test_open_without_upgrade_refuses_an_old_schema_and_leaks_nothing(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"

    with pytest.raises(StorageError, match="zag-async db upgrade"):
        async with zag.connect(url, upgrade=False):
            pass

    # A failed open must close what it opened: the caller has nothing to aclose().
    # Collect now so a leaked connection's ResourceWarning is charged to this test.
    gc.collect()


async def test_unstorable_result_names_the_atom(backend: zag.persistence.Backend) -> None:
    detail = flow_with(zag.AtomDetail("fine", result=1), zag.AtomDetail("weird", result=object()))

    with pytest.raises(SerializationError, match="weird"):
        await backend.save(detail, list(detail.atoms.values()))

    assert detail.version == 0
    with pytest.raises(NotFound):  # nothing of the refused write was stored
        await backend.load_flow(detail.uuid)


async def test_unstorable_store_is_refused(backend: zag.persistence.Backend) -> None:
    detail = flow_with(store={"conn": object()})

    with pytest.raises(SerializationError):
        await backend.save(detail, [])

    assert detail.version == 0
