"""Parking and waking jobs (flows that wait), checked on every board.

A conductor parks the job of a flow that went WAITING (due at its deadline, or
never) and a signal wakes it; the contract is the same on every board.
"""

from __future__ import annotations

import pytest
from support import eventually

import zag_async as zag
from zag_async.errors import ClaimLost, NotYetDue
from zag_async.jobs import JobBoard, JobState
from zag_async.jobs.base import PARKED, wake_job_id

from . import flows
from .conftest import BoardOpener
from .test_board_conformance import claim_when_due


async def test_parked_job_is_claimable_only_once_woken(board: JobBoard) -> None:
    job = await board.post("approve", flows.steps, "p")
    claim = await board.claim(job, "c1")
    await board.park(claim, delay=None)
    assert not board.holds(claim)
    with pytest.raises(ClaimLost):
        await board.park(claim, delay=None)  # a released claim cannot act
    with pytest.raises(NotYetDue):
        await board.claim(job.uuid, "c2")
    assert await board.jobs(include_delayed=False) == []
    parked = await board.get(job.uuid)
    assert parked.state is JobState.UNCLAIMED
    assert parked.due_at == pytest.approx(PARKED)
    due_in = await board.next_due()
    assert due_in is not None and due_in > 1e9

    assert await board.wake(job.uuid)
    again = await claim_when_due(board, job.uuid, "c2")
    assert again.token > claim.token
    assert not await board.wake(job.uuid)  # claimed: its holder looks for signals itself
    assert board.holds(again)
    assert not await board.wake("no-such-job")


async def test_parked_with_a_delay_comes_due_by_the_board_clock(board: JobBoard) -> None:
    job = await board.post("sleep", flows.steps, "s")
    claim = await board.claim(job, "c1")
    before = await board.now()
    await board.park(claim, delay=0.5)
    with pytest.raises(NotYetDue) as refused:
        await board.claim(job.uuid, "c2")
    assert 0 < refused.value.due_in <= 0.5 + 0.05
    due_in = await board.next_due()
    assert due_in is not None and 0 < due_in <= 0.55
    again = await claim_when_due(board, job.uuid, "c2")
    assert await board.now() >= before + 0.5 - 0.01
    assert again.owner == "c2"
    assert await board.next_due() is None


async def test_waking_is_seen_through_another_board_object(
    board: JobBoard, open_board: BoardOpener
) -> None:
    other = await open_board()
    job = await board.post("hook", flows.steps, "h")
    claim = await board.claim(job, "c1")
    await board.park(claim, delay=None)

    async def parked_there() -> bool:
        listed = await other.jobs(state=JobState.UNCLAIMED)
        return [j.uuid for j in listed] == [job.uuid] and listed[0].due_at > 1e9

    await eventually(parked_there, what="the other board object sees the job parked")
    assert await board.wake(job.uuid)

    async def due_there() -> bool:
        return [j.uuid for j in await other.jobs(include_delayed=False)] == [job.uuid]

    await eventually(due_there, what="the other board object sees the job woken")
    claimed = await other.claim(job.uuid, "c2")
    assert claimed.owner == "c2"


async def test_post_waiting_makes_one_parked_job_per_flow(
    board: JobBoard, backend: zag.persistence.Backend
) -> None:
    posted = await board.post("order", flows.steps, "w")
    ref = posted.factory
    first = await board.post_waiting("flow-1", "order", ref, None)
    second = await board.post_waiting("flow-1", "order", ref, None)
    assert first.uuid == second.uuid == wake_job_id("flow-1")
    assert first.flow_id == "flow-1"
    assert first.due_at == pytest.approx(PARKED)
    timed = await board.post_waiting("flow-2", "order", ref, 30.0)
    assert 25 < timed.due_at - await board.now() <= 30.01
    assert await board.wake(first.uuid)
    claim = await claim_when_due(board, first.uuid, "c")
    assert claim.job.flow_id == "flow-1"
