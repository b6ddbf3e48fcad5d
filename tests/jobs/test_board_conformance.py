"""The job board contract, checked on memory:// and on a real ZooKeeper.

Every test takes the parametrized `board` fixture (conftest.py): a board of its
own, flow records in a memory:// backend.
"""

from __future__ import annotations

import asyncio
import math

import pytest
from support import eventually

import zag_async as zag
from zag_async.errors import AlreadyClaimed, ClaimLost, JobNotFound, NotYetDue
from zag_async.jobs import JobBoard, JobOutcome, JobState

from . import flows
from .conftest import BoardOpener, wait_outcome

# Every second (croniter's optional sixth field is seconds).
EVERY_SECOND = "* * * * * *"
# Far away (midnight on January 1st): a schedule whose job never becomes due in a test.
YEARLY = "0 0 1 1 *"


async def claim_when_due(board: JobBoard, job: zag.jobs.Job | str, owner: str) -> zag.jobs.Claim:
    """Claim a delayed job as soon as the board lets us."""

    async def attempt() -> zag.jobs.Claim | None:
        try:
            return await board.claim(job, owner)
        except NotYetDue:
            return None

    claim: zag.jobs.Claim = await eventually(attempt, what="delayed job claimable")
    return claim


def success(claim: zag.jobs.Claim, **results: object) -> JobOutcome:
    return JobOutcome(claim.job.uuid, claim.job.flow_id, "SUCCESS", dict(results))


# -- posting -------------------------------------------------------------------------


async def test_post_and_get(board: JobBoard) -> None:
    job = await board.post("order", flows.adder, "o1", store={"x": 1, "y": 2}, priority=3)
    assert job.name == "order"
    assert job.priority == 3
    assert job.state is JobState.UNCLAIMED
    assert job.factory.path == f"{flows.__name__}:adder"
    assert tuple(job.factory.args) == ("o1",)
    got = await board.get(job.uuid)
    assert (got.uuid, got.name, got.flow_id, got.priority) == (
        job.uuid,
        "order",
        job.flow_id,
        3,
    )
    assert got.state is JobState.UNCLAIMED
    assert got.board is board
    with pytest.raises(JobNotFound):
        await board.get("no-such-job")


async def test_jobs_in_claim_order_priority_then_post_order(board: JobBoard) -> None:
    posted = {}
    for name, priority in [("a", 0), ("b", 5), ("c", 0), ("d", 5), ("e", -1), ("f", 9)]:
        posted[name] = await board.post(name, flows.steps, name, priority=priority)
    listed = await board.jobs()
    assert [j.name for j in listed] == ["f", "b", "d", "a", "c", "e"]
    assert [j.uuid for j in listed] == [posted[n].uuid for n in "fbdace"]
    assert all(j.state is JobState.UNCLAIMED for j in listed)


async def test_jobs_filtered_by_state(board: JobBoard) -> None:
    a = await board.post("a", flows.steps, "a")
    b = await board.post("b", flows.steps, "b")
    await board.claim(a, "alice")
    assert [j.uuid for j in await board.jobs(state=JobState.CLAIMED)] == [a.uuid]
    assert [j.uuid for j in await board.jobs(state=JobState.UNCLAIMED)] == [b.uuid]
    states = {j.uuid: j.state for j in await board.jobs()}
    assert states == {a.uuid: JobState.CLAIMED, b.uuid: JobState.UNCLAIMED}
    assert (await board.get(a.uuid)).state is JobState.CLAIMED


async def test_flow_record_created_at_post(
    board: JobBoard, backend: zag.persistence.Backend
) -> None:
    job = await board.post(
        "adder", flows.adder, "rec", store={"x": 2, "y": 40}, idempotency_key="rec-1"
    )
    detail = await backend.load_flow(job.flow_id)
    assert detail.store == {"x": 2, "y": 40}
    assert detail.meta["factory"] == {
        "path": f"{flows.__name__}:adder",
        "args": ["rec"],
        "kwargs": {},
    }
    assert detail.meta["job"] == job.uuid
    assert detail.state is zag.FlowState.PENDING


async def test_post_by_path_with_kwargs(board: JobBoard, backend: zag.persistence.Backend) -> None:
    job = await board.post("by-path", f"{flows.__name__}:steps", "p", kwargs={"n": 3})
    assert job.factory.path == f"{flows.__name__}:steps"
    assert dict(job.factory.kwargs) == {"n": 3}
    detail = await backend.load_flow(job.flow_id)
    assert detail.meta["factory"]["kwargs"] == {"n": 3}
    # The saved reference rebuilds the flow.
    engine = await zag.Engine.load(job.flow_id, backend=backend)
    await engine.run()
    assert flows.LOG == ["p:s0", "done p:s0", "p:s1", "done p:s1", "p:s2", "done p:s2"]


async def test_post_rejects_bad_arguments(board: JobBoard) -> None:
    with pytest.raises(zag.errors.ConfigurationError):
        await board.post("", flows.steps, "x")
    with pytest.raises(zag.errors.ConfigurationError):
        await board.post("x", flows.steps, "x", delay=-1)
    with pytest.raises(zag.errors.ConfigurationError):
        await board.post("x", lambda: None)
    assert await board.jobs() == []


async def test_idempotency_key_returns_the_same_job(
    board: JobBoard, backend: zag.persistence.Backend
) -> None:
    first = await board.post("pay", flows.steps, "k", idempotency_key="invoice-7")
    again = await board.post("pay", flows.steps, "k", idempotency_key="invoice-7")
    assert (again.uuid, again.flow_id) == (first.uuid, first.flow_id)
    other = await board.post("pay", flows.steps, "k", idempotency_key="invoice-8")
    assert other.uuid != first.uuid
    assert sorted(j.uuid for j in await board.jobs()) == sorted([first.uuid, other.uuid])
    found = await board.find_key("invoice-7")
    assert found is not None and found.uuid == first.uuid
    assert await board.find_key("invoice-9") is None


async def test_idempotency_key_after_completion(board: JobBoard) -> None:
    first = await board.post("pay", flows.steps, "k", idempotency_key="invoice/7")
    claim = await board.claim(first, "alice")
    await board.consume(claim, success(claim, paid=True))
    again = await board.post("pay", flows.steps, "k", idempotency_key="invoice/7")
    assert again.uuid == first.uuid
    assert again.flow_id == first.flow_id
    assert again.state is JobState.COMPLETE
    assert await board.jobs() == []
    assert (await wait_outcome(again)).results == {"paid": True}


# -- delays --------------------------------------------------------------------------


async def test_delayed_job_not_claimable_before_its_time(board: JobBoard) -> None:
    delay = 0.6
    before = await board.now()
    job = await board.post("later", flows.steps, "d", delay=delay)
    assert before <= job.posted_at + 0.01
    assert job.due_at == pytest.approx(job.posted_at + delay)
    with pytest.raises(NotYetDue) as caught:
        await board.claim(job, "eager")
    assert 0 < caught.value.due_in <= delay
    assert caught.value.job == job.uuid
    # Listed (it is on the board), but not among the jobs due now.
    assert [j.uuid for j in await board.jobs()] == [job.uuid]
    assert await board.jobs(include_delayed=False) == []
    assert await board.find_owner(job) is None  # the refused claim left nothing behind

    claim = await claim_when_due(board, job, "patient")
    assert await board.now() >= job.due_at
    assert claim.owner == "patient"
    assert [j.uuid for j in await board.jobs(include_delayed=False, state=JobState.CLAIMED)] == [
        job.uuid
    ]


# -- claims --------------------------------------------------------------------------


async def test_claim_already_claimed_abandon_and_reclaim(board: JobBoard) -> None:
    job = await board.post("j", flows.steps, "j")
    assert await board.find_owner(job) is None
    claim = await board.claim(job, "alice")
    assert claim.owner == "alice"
    assert claim.job.uuid == job.uuid
    assert claim.job.state is JobState.CLAIMED
    assert claim.fence == f"alice#{claim.token}"
    assert board.holds(claim)
    assert await board.find_owner(job) == "alice"
    assert await board.find_owner(job.uuid) == "alice"
    assert await board.claim_owners() == {"alice"}

    with pytest.raises(AlreadyClaimed):
        await board.claim(job, "bob")
    with pytest.raises(AlreadyClaimed):
        await board.claim(job.uuid, "alice")  # not even its owner twice
    assert await board.find_owner(job) == "alice"

    await board.abandon(claim)
    assert not board.holds(claim)
    assert await board.claim_owners() == set()
    assert await board.find_owner(job) is None
    assert (await board.get(job.uuid)).state is JobState.UNCLAIMED
    with pytest.raises(ClaimLost):
        await board.abandon(claim)  # a stale claim cannot act

    again = await board.claim(job.uuid, "bob")
    assert await board.find_owner(job) == "bob"
    with pytest.raises(ClaimLost):
        await board.consume(claim, success(claim))  # alice's old claim is dead
    assert board.holds(again)


async def test_claim_unknown_job(board: JobBoard) -> None:
    with pytest.raises(JobNotFound):
        await board.claim("no-such-job", "alice")


async def test_fencing_tokens_increase_across_claims(board: JobBoard) -> None:
    a = await board.post("a", flows.steps, "a")
    b = await board.post("b", flows.steps, "b")
    tokens = []
    for owner in ("c1", "c2", "c3"):
        claim = await board.claim(a, owner)
        tokens.append(claim.token)
        await board.abandon(claim)
    claim_b = await board.claim(b, "c4")
    tokens.append(claim_b.token)
    assert all(isinstance(t, int) for t in tokens)
    assert tokens == sorted(tokens)
    assert len(set(tokens)) == len(tokens)


# -- finishing -----------------------------------------------------------------------


async def test_consume_records_outcome_and_wakes_waiters(board: JobBoard) -> None:
    job = await board.post("j", flows.steps, "j")
    early = asyncio.create_task(wait_outcome(job))
    # The waiter is really waiting (and has armed whatever it needs) before the end.
    done, _ = await asyncio.wait({early}, timeout=0.2)
    assert not done
    assert await board.outcome(job.uuid) is None

    claim = await board.claim(job, "alice")
    outcome = JobOutcome(job.uuid, job.flow_id, "SUCCESS", {"total": 3})
    await board.consume(claim, outcome)

    assert await asyncio.wait_for(early, 10) == outcome
    assert await wait_outcome(job) == outcome  # after completion too
    assert await board.outcome(job.uuid) == outcome
    assert outcome.ok
    assert await board.jobs() == []
    with pytest.raises(JobNotFound):
        await board.get(job.uuid)
    assert not board.holds(claim)
    assert await board.find_owner(job) is None


async def test_wait_for_unknown_job(board: JobBoard) -> None:
    if board.url.startswith("zookeeper"):
        pytest.skip("ZooKeeper waits for a results node that may yet appear; no error there")
    with pytest.raises(JobNotFound):
        await board.wait("no-such-job")


async def test_trash_records_reason(board: JobBoard) -> None:
    job = await board.post("poison", flows.steps, "t", idempotency_key="poison-1")
    waiter = asyncio.create_task(wait_outcome(job))
    claim = await board.claim(job, "alice")
    await board.trash(claim, "cannot parse the input")
    outcome = await asyncio.wait_for(waiter, 10)
    assert outcome.state == "TRASHED"
    assert outcome.error == "cannot parse the input"
    assert (outcome.job_id, outcome.flow_id) == (job.uuid, job.flow_id)
    assert not outcome.ok
    assert await board.outcome(job.uuid) == outcome
    assert await board.jobs() == []
    with pytest.raises(JobNotFound):
        await board.get(job.uuid)
    found = await board.find_key("poison-1")
    assert found is not None
    assert (found.uuid, found.state) == (job.uuid, JobState.TRASHED)


async def test_record_build_failure_counts_on_the_job(board: JobBoard) -> None:
    job = await board.post("j", flows.steps, "j")
    claim = await board.claim(job, "alice")
    assert await board.record_build_failure(claim, "ImportError: nope") == 1
    assert await board.record_build_failure(claim, "ImportError: nope") == 2
    assert (await board.get(job.uuid)).build_failures == 2
    await board.abandon(claim)
    # The count lives with the job: the next owner continues it.
    other = await board.claim(job.uuid, "bob")
    assert other.job.build_failures == 2
    assert await board.record_build_failure(other, "ImportError: still") == 3
    assert (await board.get(job.uuid)).build_failures == 3
    with pytest.raises(ClaimLost):
        await board.record_build_failure(claim, "stale claim")


async def test_claim_carries_the_stored_job(
    board: JobBoard, board_kind: str, request: pytest.FixtureRequest
) -> None:
    job = await board.post("j", flows.steps, "j")
    claim = await board.claim(job, "alice")
    await board.record_build_failure(claim, "ImportError: nope")
    await board.abandon(claim)
    again = await board.claim(job, "bob")  # the Job object from post(): stale by now
    assert again.job.build_failures == 1


# -- watching ------------------------------------------------------------------------


async def test_watch_yields_existing_then_new_jobs(board: JobBoard) -> None:
    a = await board.post("a", flows.steps, "a")
    claimed = await board.post("claimed", flows.steps, "c")
    await board.claim(claimed, "someone")
    b = await board.post("b", flows.steps, "b", priority=5)

    watch = board.watch()
    try:
        async with asyncio.timeout(5):
            existing = [await anext(watch), await anext(watch)]
        assert [j.uuid for j in existing] == [b.uuid, a.uuid]  # claim order, unclaimed only

        nxt = asyncio.create_task(anext(watch))
        done, _ = await asyncio.wait({nxt}, timeout=0.2)
        assert not done  # nothing new yet: it waits
        c = await board.post("c", flows.steps, "c")
        # Pushed by the board's notification: it wakes at once (bounded generously).
        async with asyncio.timeout(5):
            new = await nxt
        assert new.uuid == c.uuid
        assert new.board is board
    finally:
        await watch.aclose()


async def test_watch_sees_jobs_posted_through_another_board_object(
    board: JobBoard, open_board: BoardOpener
) -> None:
    poster = await open_board()
    watch = board.watch()
    try:
        nxt = asyncio.create_task(anext(watch))
        done, _ = await asyncio.wait({nxt}, timeout=0.2)
        assert not done
        job = await poster.post("remote", flows.steps, "r")
        async with asyncio.timeout(5):
            assert (await nxt).uuid == job.uuid
    finally:
        await watch.aclose()


# -- schedules -----------------------------------------------------------------------


async def test_post_scheduled_first_run_due_at_next_fire(
    board: JobBoard, backend: zag.persistence.Backend
) -> None:
    store = {"payload": {"n": 1, "tags": ["a", "b"]}}
    before = await board.now()
    job = await board.post_scheduled(EVERY_SECOND, "tick", flows.echo, "tick", store=store)
    after = await board.now()
    assert job.schedule == "tick"
    assert job.name == "tick"
    assert job.due_at == math.floor(job.due_at)  # on a whole second
    assert before < job.due_at <= after + 1
    assert job.idempotency_key == f"schedule:tick:{job.due_at:.3f}"
    assert (await backend.load_flow(job.flow_id)).store == store
    schedules = await board.schedules()
    assert set(schedules) == {"tick"}
    assert schedules["tick"].cron == EVERY_SECOND
    assert dict(schedules["tick"].store) == store
    assert schedules["tick"].factory.path == f"{flows.__name__}:echo"
    assert [j.uuid for j in await board.jobs()] == [job.uuid]


async def test_post_scheduled_again_does_not_double_the_schedule(board: JobBoard) -> None:
    """A program that declares its schedule at every start must not add runs."""
    job = await board.post_scheduled(YEARLY, "nightly", flows.steps, "n")
    again = await board.post_scheduled(YEARLY, "nightly", flows.steps, "n")
    assert again.uuid == job.uuid
    tick = await board.post_scheduled(EVERY_SECOND, "tick", flows.steps, "t")
    # Declared again once its first run is due (a later next fire time).
    await eventually(lambda: _after(board, tick.due_at), what="first tick due")
    await board.post_scheduled(EVERY_SECOND, "tick", flows.steps, "t")
    pending = [j.idempotency_key for j in await board.jobs() if j.schedule == "tick"]
    assert pending == [tick.idempotency_key]


async def _after(board: JobBoard, when: float) -> bool:
    return await board.now() > when


async def test_consuming_a_scheduled_job_posts_the_next_with_the_same_store(
    board: JobBoard, backend: zag.persistence.Backend
) -> None:
    store = {"payload": "keep me"}
    job = await board.post_scheduled(EVERY_SECOND, "tick", flows.echo, "tick", store=store)
    claim = await claim_when_due(board, job, "alice")
    next_job = await board.next_scheduled(claim.job, after=await board.now())
    assert next_job is not None
    await board.consume(claim, success(claim, echo="keep me"), next_job=next_job)

    listed = await board.jobs()
    assert [j.uuid for j in listed] == [next_job.uuid]
    follow = listed[0]
    assert follow.schedule == "tick"
    assert follow.due_at > job.due_at
    assert follow.due_at == math.floor(follow.due_at)
    assert follow.uuid != job.uuid and follow.flow_id != job.flow_id
    assert (await backend.load_flow(follow.flow_id)).store == store
    assert (await wait_outcome(job)).results == {"echo": "keep me"}


async def test_reset_schedule_adds_removes_and_keeps(board: JobBoard) -> None:
    kept = await board.post_scheduled(YEARLY, "yearly", flows.steps, "y")
    await board.post_scheduled(YEARLY, "dropped", flows.steps, "d")
    current = await board.schedules()
    fresh = zag.jobs.Schedule(
        "fresh", YEARLY, zag.FactoryRef.of(flows.echo, ("f",)), {"payload": 1}, 2
    )
    await board.reset_schedule({"yearly": current["yearly"], "fresh": fresh})

    assert set(await board.schedules()) == {"yearly", "fresh"}
    by_schedule = {j.schedule: j for j in await board.jobs()}
    assert set(by_schedule) == {"yearly", "fresh"}
    assert by_schedule["yearly"].uuid == kept.uuid  # unchanged: same pending job
    assert by_schedule["fresh"].priority == 2
    assert by_schedule["fresh"].due_at == kept.due_at

    # The same set again changes nothing (no doubled runs).
    await board.reset_schedule(await board.schedules())
    assert sorted(j.uuid for j in await board.jobs()) == sorted(
        j.uuid for j in by_schedule.values()
    )

    await board.reset_schedule({})
    assert await board.schedules() == {}
    assert await board.jobs() == []


async def test_reset_schedule_with_a_changed_cron_keeps_one_pending_run(
    board: JobBoard,
) -> None:
    await board.post_scheduled(YEARLY, "report", flows.steps, "r")
    changed = zag.jobs.Schedule("report", "0 0 1 6 *", zag.FactoryRef.of(flows.steps, ("r",)))
    await board.reset_schedule({"report": changed})
    assert (await board.schedules())["report"].cron == "0 0 1 6 *"
    pending = [j for j in await board.jobs() if j.schedule == "report"]
    assert len(pending) == 1, [j.idempotency_key for j in pending]


async def test_reset_schedule_rejects_bad_input(board: JobBoard) -> None:
    ref = zag.FactoryRef.of(flows.steps, ("x",))
    with pytest.raises(zag.errors.ConfigurationError):
        await board.reset_schedule({"a": zag.jobs.Schedule("b", YEARLY, ref)})
    with pytest.raises(zag.errors.ConfigurationError):
        await board.reset_schedule({"a": zag.jobs.Schedule("a", "not cron", ref)})
    with pytest.raises(zag.errors.ConfigurationError):
        await board.post_scheduled("every tuesday", "x", flows.steps, "x")
    assert await board.schedules() == {}


# -- sessions (ZooKeeper) ------------------------------------------------------------


async def test_claim_vanishes_with_the_claiming_session(
    board: JobBoard, open_board: BoardOpener, board_kind: str
) -> None:
    if board_kind != "zookeeper":
        pytest.skip("claims are tied to ZooKeeper sessions")
    job = await board.post("j", flows.steps, "j")
    other = await open_board()
    claim = await other.claim(job.uuid, "doomed")
    assert await board.find_owner(job) == "doomed"
    with pytest.raises(AlreadyClaimed):
        await board.claim(job, "survivor")

    await other.aclose()  # its session ends: the ephemeral claim node goes with it

    async def take() -> zag.jobs.Claim | None:
        try:
            return await board.claim(job, "survivor")
        except AlreadyClaimed:
            return None

    mine = await eventually(take, within=5, what="claim released with the session")
    assert mine.token > claim.token
    assert await board.find_owner(job) == "survivor"
