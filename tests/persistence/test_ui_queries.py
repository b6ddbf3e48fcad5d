"""What the operations UI asks of the flow database, on every backend: keyset
paging, name and age filters, counts per state, failures over time, and the
record of operator actions."""

from __future__ import annotations

import random
import uuid

import pytest

import zag_async as zag
from zag_async.errors import ConfigurationError, NotFound
from zag_async.persistence.base import ACTION_LIMITS, MAX_NAME_FILTER

F = zag.FlowState
Backend = zag.persistence.Backend


async def stored(backend: Backend, name: str = "ui", **fields: object) -> zag.FlowDetail:
    detail = zag.FlowDetail(name, **fields)  # type: ignore[arg-type]
    await backend.save(detail, [])
    return detail


def ids(summaries: list[zag.FlowSummary]) -> list[str]:
    return [s.uuid for s in summaries]


def newest_order(details: list[zag.FlowDetail]) -> list[str]:
    return [d.uuid for d in sorted(details, key=lambda d: (d.created_at, d.uuid), reverse=True)]


async def pages(backend: Backend, size: int, **filters: object) -> list[list[str]]:
    """Every page of a newest-first listing, following the keyset cursor."""
    out: list[list[str]] = []
    before = None
    while True:
        page = await backend.list_flows(newest_first=True, limit=size, before=before, **filters)  # type: ignore[arg-type]
        if not page:
            return out
        out.append(ids(page))
        before = (page[-1].created_at, page[-1].uuid)


# -- paging and filters ------------------------------------------------------------------


async def test_keyset_pages_through_equal_creation_times_once_each(backend: Backend) -> None:
    same = [await stored(backend, created_at=1000.0) for _ in range(120)]
    older = await stored(backend, created_at=999.5)
    newer = await stored(backend, created_at=1000.5)

    got = await pages(backend, 50)

    assert [len(p) for p in got] == [50, 50, 22]
    flat = [u for p in got for u in p]
    assert flat == newest_order([*same, older, newer])
    assert flat[0] == newer.uuid and flat[-1] == older.uuid
    assert len(set(flat)) == 122
    # Oldest first is the same order reversed.
    assert ids(await backend.list_flows()) == flat[::-1]


async def test_name_filter_is_a_literal_case_insensitive_substring(backend: Backend) -> None:
    names = [
        "100% done",
        "1000 done",
        "a_b",
        "axb",
        "A_B upper",
        "back\\slash",
        "backXslash",
        "Über-Sync",
        "über-sync",
    ]
    made = {n: await stored(backend, n) for n in names}

    async def named(text: str) -> set[str]:
        found = await backend.list_flows(name_contains=text)
        return {s.name for s in found}

    assert await named("%") == {"100% done"}
    assert await named("0%") == {"100% done"}
    assert await named("_") == {"a_b", "A_B upper"}
    assert await named("a_b") == {"a_b", "A_B upper"}
    assert await named("\\") == {"back\\slash"}
    assert await named("DONE") == {"100% done", "1000 done"}
    assert await named("no such name") == set()
    # ASCII letters only are folded, on every backend alike
    assert await named("ÜBER-SYNC") == {"Über-Sync"}
    assert await named("-sync") == {"Über-Sync", "über-sync"}
    assert await named("") == set(names)  # an empty filter filters nothing
    assert await named("a\x00b") == set()
    page = await backend.list_flows(name_contains="done", newest_first=True, limit=1)
    assert ids(page) == [made["1000 done"].uuid]  # created after "100% done"


async def test_created_after_is_inclusive(backend: Backend) -> None:
    early = await stored(backend, created_at=100.0)
    edge = await stored(backend, created_at=200.0)
    late = await stored(backend, created_at=300.0)

    assert ids(await backend.list_flows(created_after=200.0)) == [edge.uuid, late.uuid]
    assert ids(await backend.list_flows(created_after=300.5)) == []
    assert ids(await backend.list_flows(created_after=0)) == [early.uuid, edge.uuid, late.uuid]


async def test_filters_combine_with_the_keyset(backend: Backend) -> None:
    book = zag.LogBook("tenant")
    await backend.save_logbook(book)
    wanted: list[zag.FlowDetail] = []
    for i in range(90):
        state = (F.FAILURE, F.SUCCESS, F.REVERTED)[i % 3]
        name = "Order-sync" if i % 2 else "billing"
        detail = await stored(
            backend,
            name,
            state=state,
            logbook=book.uuid if i % 5 else None,
            created_at=5000.0 + i // 7,  # runs of equal creation times
        )
        if (
            state in (F.FAILURE, F.REVERTED)
            and name == "Order-sync"
            and i % 5
            and detail.created_at >= 5002.0
        ):
            wanted.append(detail)
    filters = {
        "states": [F.FAILURE, F.REVERTED],
        "name_contains": "order",
        "logbook": book.uuid,
        "created_after": 5002.0,
    }

    got = await pages(backend, 7, **filters)

    assert all(len(p) == 7 for p in got[:-1]) and 0 < len(got[-1]) <= 7
    assert [u for p in got for u in p] == newest_order(wanted)


async def test_listings_follow_rewrites_and_deletions(backend: Backend) -> None:
    moved = await stored(backend, "first name", created_at=100.0)
    other = await stored(backend, "other", created_at=200.0)
    moved.name, moved.created_at, moved.state = "second name", 300.0, F.FAILURE
    await backend.save(moved, [])

    assert ids(await backend.list_flows(newest_first=True)) == [moved.uuid, other.uuid]
    assert ids(await backend.list_flows(name_contains="second")) == [moved.uuid]
    assert await backend.list_flows(name_contains="first") == []
    assert await backend.count_flows(created_after=250.0) == {F.FAILURE: 1}

    await backend.delete_flow(moved.uuid)

    assert ids(await backend.list_flows(newest_first=True)) == [other.uuid]
    assert await backend.list_flows(name_contains="second") == []
    assert await backend.count_flows() == {F.PENDING: 1}


async def test_bad_listing_arguments_are_configuration_errors(backend: Backend) -> None:
    bad: list[tuple[dict[str, object], str]] = [
        ({"before": (1.0, "x")}, "newest_first"),
        ({"newest_first": True, "before": (1.0,)}, "before"),
        ({"newest_first": True, "before": ("now", "x")}, r"before\[0\]"),
        ({"newest_first": True, "before": (float("nan"), "x")}, r"before\[0\]"),
        ({"name_contains": "x" * (MAX_NAME_FILTER + 1)}, "name_contains"),
        ({"name_contains": 7}, "name_contains"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"limit": -1}, "limit"),
    ]
    for kwargs, named in bad:
        with pytest.raises(ConfigurationError, match=named):
            await backend.list_flows(**kwargs)  # type: ignore[arg-type]
    assert await backend.list_flows(limit=0) == []


# -- counts -----------------------------------------------------------------------------


async def test_count_flows_per_state(backend: Backend) -> None:
    assert await backend.count_flows() == {}
    for state, n in ((F.SUCCESS, 4), (F.FAILURE, 2), (F.RUNNING, 1)):
        for i in range(n):
            await stored(backend, state=state, created_at=100.0 * (i + 1))

    assert await backend.count_flows() == {F.SUCCESS: 4, F.FAILURE: 2, F.RUNNING: 1}
    assert await backend.count_flows(created_after=200.0) == {F.SUCCESS: 3, F.FAILURE: 1}
    assert await backend.count_flows(created_after=10_000.0) == {}
    with pytest.raises(ConfigurationError, match="created_after"):
        await backend.count_flows(created_after=float("inf"))


async def test_failures_over_time_counts_bad_ends_per_bucket(backend: Backend) -> None:
    for state, updated in [
        (F.FAILURE, 1000.0),  # bucket 0 (its start is included)
        (F.FAILURE, 1059.9),  # bucket 0
        (F.REVERTED, 1060.0),  # bucket 1
        (F.STUCK_PAST_PIVOT, 1061.0),  # bucket 1
        (F.REVERTED, 1200.0),  # bucket 3
        (F.UNCOMPENSATED, 4600.0),  # bucket 60
        (F.FAILURE, 999.9),  # before `since`
        (F.SUCCESS, 1010.0),  # ended well
        (F.RUNNING, 1010.0),  # not ended
    ]:
        await stored(backend, state=state, updated_at=updated)

    got = await backend.failures_over_time(since=1000.0, bucket=60.0)

    assert got == [(1000.0, 2), (1060.0, 2), (1180.0, 1), (4600.0, 1)]
    assert await backend.failures_over_time(since=5000.0, bucket=60.0) == []
    hourly = await backend.failures_over_time(since=0.0, bucket=3600.0)
    assert hourly == [(0.0, 6), (3600.0, 1)]
    for kwargs, named in [
        ({"since": 0.0, "bucket": 0.0}, "bucket"),
        ({"since": 0.0, "bucket": -5}, "bucket"),
        ({"since": "dawn", "bucket": 60.0}, "since"),
    ]:
        with pytest.raises(ConfigurationError, match=named):
            await backend.failures_over_time(**kwargs)  # type: ignore[arg-type]


# -- the record of operator actions --------------------------------------------------------


async def test_actions_are_recorded_and_listed_newest_first(backend: Backend) -> None:
    before = await backend.clock()
    first = await backend.record_action("alice", "resume", "flow-1")
    second = await backend.record_action("bob", "signal", "flow-2", "approved: yes")
    third = await backend.record_action("alice", "trash", "job-9", "ünïcode ✓ detail")
    after = await backend.clock()

    assert first.id < second.id < third.id
    assert (second.who, second.action, second.target, second.detail) == (
        "bob",
        "signal",
        "flow-2",
        "approved: yes",
    )
    assert first.detail == ""
    assert before - 1 <= first.at <= third.at <= after + 1
    assert await backend.list_actions() == [third, second, first]
    assert await backend.list_actions(limit=2) == [third, second]
    assert await backend.list_actions(limit=0) == []
    assert await backend.list_actions(target="flow-2") == [second]
    assert await backend.list_actions(target="nothing") == []
    assert await backend.list_actions(target="a\x00") == []


async def test_actions_outlive_the_flows_they_name(backend: Backend) -> None:
    book = zag.LogBook("doomed")
    await backend.save_logbook(book)
    flow = await stored(backend, logbook=book.uuid)
    other = await stored(backend)
    done = await backend.record_action("ops", "delete", flow.uuid)
    kept = await backend.record_action("ops", "resume", other.uuid)

    await backend.delete_flow(other.uuid)
    await backend.delete_logbook(book.uuid)

    assert await backend.list_actions(target=flow.uuid) == [done]
    assert await backend.list_actions() == [kept, done]


async def test_bad_action_arguments_are_configuration_errors(backend: Backend) -> None:
    ok = {"who": "ops", "action": "resume", "target": str(uuid.uuid4()), "detail": ""}
    for name, value in [
        ("who", ""),
        ("action", ""),
        ("target", ""),
        ("who", None),
        ("detail", 3),
        ("action", "x" * (ACTION_LIMITS["action"] + 1)),
        ("detail", "x" * (ACTION_LIMITS["detail"] + 1)),
        ("target", "nul\x00"),
    ]:
        with pytest.raises(ConfigurationError, match=name):
            await backend.record_action(**{**ok, name: value})  # type: ignore[arg-type]
    for limit in (-1, 10_000, True, "5"):
        with pytest.raises(ConfigurationError, match="limit"):
            await backend.list_actions(limit=limit)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="target"):
        await backend.list_actions(target=5)  # type: ignore[arg-type]
    assert await backend.list_actions() == []
    longest = {k: "x" * ACTION_LIMITS[k] for k in ("who", "action", "target", "detail")}
    recorded = await backend.record_action(**longest)
    assert (await backend.list_actions())[0] == recorded


# -- against a model ---------------------------------------------------------------------


async def test_random_flows_page_and_count_as_a_model_says(backend: Backend) -> None:
    """80 flows with many equal creation times; every filter combination, paged
    in several sizes, lists what a plain Python filter and sort of them lists."""
    rnd = random.Random(16)
    book = zag.LogBook("model")
    await backend.save_logbook(book)
    states = [F.SUCCESS, F.FAILURE, F.RUNNING, F.REVERTED]
    names = ["Alpha_sync", "alpha%sync", "beta", "BETA-Sync"]
    made = [
        await stored(
            backend,
            rnd.choice(names),
            state=rnd.choice(states),
            logbook=rnd.choice([book.uuid, None]),
            created_at=float(rnd.randint(1, 6)),
            updated_at=float(rnd.randint(0, 500)),
        )
        for _ in range(80)
    ]
    for wanted_states, text, logbook, after in [
        (None, None, None, None),
        ([F.FAILURE, F.REVERTED], None, None, None),
        (None, "SYNC", None, 3.0),
        (None, "a_s", book.uuid, None),
        ([F.SUCCESS], "%", None, 2.0),
        ([F.RUNNING], "beta", book.uuid, 6.0),
    ]:
        model = [
            d
            for d in made
            if (wanted_states is None or d.state in wanted_states)
            and (text is None or text.lower() in d.name.lower())
            and (logbook is None or d.logbook == logbook)
            and (after is None or d.created_at >= after)
        ]
        filters = {
            "states": wanted_states,
            "name_contains": text,
            "logbook": logbook,
            "created_after": after,
        }
        for size in (1, 7, 50):
            got = [u for p in await pages(backend, size, **filters) for u in p]
            assert got == newest_order(model), (filters, size)
        oldest = await backend.list_flows(limit=5, **filters)  # type: ignore[arg-type]
        assert ids(oldest) == newest_order(model)[::-1][:5], filters
    counted: dict[zag.FlowState, int] = {}
    for d in made:
        counted[d.state] = counted.get(d.state, 0) + 1
    assert await backend.count_flows() == counted
    buckets: dict[float, int] = {}
    for d in made:
        if d.state in (F.FAILURE, F.REVERTED) and d.updated_at >= 100.0:
            start = 100.0 + (d.updated_at - 100.0) // 50.0 * 50.0
            buckets[start] = buckets.get(start, 0) + 1
    got_buckets = await backend.failures_over_time(since=100.0, bucket=50.0)
    assert got_buckets == sorted(buckets.items())


@pytest.mark.parametrize("bad", ["\ud800", "a\x00b"])
async def test_ids_no_database_holds_are_simply_not_found(backend: Backend, bad: str) -> None:
    with pytest.raises(NotFound):
        await backend.load_flow(bad)
    with pytest.raises(NotFound):
        await backend.load_flow_row(bad)
    assert await backend.find_signal(bad) is None
    assert await backend.list_signals(bad) == []
    assert await backend.list_actions(target=bad) == []
