"""The board's operator listing of ended jobs (`finished`) and posting a factory
reference as it is (`post_ref`), on every board (memory, ZooKeeper, SQLite,
PostgreSQL; see conftest.py)."""

from __future__ import annotations

import pytest

import zag_async as zag
from zag_async.factory import FactoryRef
from zag_async.jobs import JobBoard, JobOutcome, JobState

from . import flows


async def finish(board: JobBoard, name: str, state: str) -> zag.jobs.Job:
    """Post, claim and end a job named `name` as `state` (TRASHED: through the trash)."""
    job = await board.post(name, flows.steps, name)
    claim = await board.claim(job, "ops")
    if state == "TRASHED":
        await board.trash(claim, f"{name} could not run")
    else:
        error = None if state == "SUCCESS" else f"{name} failed"
        await board.consume(claim, JobOutcome(job.uuid, job.flow_id, state, error=error))
    return job


async def test_finished_lists_ended_jobs_last_first(board: JobBoard) -> None:
    assert await board.finished() == []
    done = await finish(board, "done", "SUCCESS")
    assert [f.job.uuid for f in await board.finished()] == [done.uuid]  # read (and kept)
    reverted = await finish(board, "reverted", "REVERTED")
    trashed = await finish(board, "trashed", "TRASHED")
    pending = await board.post("pending", flows.steps, "p")
    listed = await board.finished()
    assert [f.job.uuid for f in listed] == [trashed.uuid, reverted.uuid, done.uuid]
    assert pending.uuid not in {f.job.uuid for f in listed}
    first = listed[0]
    assert (first.job.name, first.job.flow_id) == ("trashed", trashed.flow_id)
    assert first.job.state is JobState.TRASHED
    assert first.outcome.state == "TRASHED"
    assert first.outcome.error == "trashed could not run"
    assert listed[1].outcome.error == "reverted failed"
    assert listed[2].job.state is JobState.COMPLETE
    assert listed[0].finished_at >= listed[1].finished_at >= listed[2].finished_at > 0
    listed[0].job.name = "changed by the caller"
    assert (await board.finished(limit=1))[0].job.name == "trashed"  # copies handed out


async def test_finished_filters_by_state_before_the_limit(board: JobBoard) -> None:
    trashed = await finish(board, "trashed", "TRASHED")
    reverted = await finish(board, "reverted", "REVERTED")
    for n in range(3):
        await finish(board, f"ok-{n}", "SUCCESS")
    bad = await board.finished(limit=2, states={"TRASHED", "REVERTED", "FAILURE"})
    assert [f.job.uuid for f in bad] == [reverted.uuid, trashed.uuid]
    assert len(await board.finished(limit=2)) == 2
    assert [f.job.name for f in await board.finished(limit=1, states={"TRASHED"})] == ["trashed"]


async def test_post_ref_runs_a_stored_reference_once_per_key(
    board: JobBoard, backend: zag.persistence.Backend
) -> None:
    first = await board.post("order", flows.steps, "o", store={"x": 1})
    saved = (await backend.load_flow(first.flow_id)).meta["factory"]
    ref = FactoryRef.from_dict(saved)
    again = await board.post_ref("order", ref, store={"x": 1}, idempotency_key="retry-of:1")
    twice = await board.post_ref("order", ref, store={"x": 1}, idempotency_key="retry-of:1")
    assert again.uuid == twice.uuid
    assert again.flow_id != first.flow_id
    detail = await backend.load_flow(again.flow_id)
    assert detail.meta["factory"] == saved
    assert detail.store == {"x": 1}
    assert len(await board.jobs()) == 2
    with pytest.raises(zag.errors.ConfigurationError):
        await board.post_ref("order", saved, store={})  # type: ignore[arg-type]


async def test_holders_name_the_owner_and_what_keeps_the_claim(board: JobBoard) -> None:
    held = await board.post("held", flows.steps, "h")
    free = await board.post("free", flows.steps, "f")
    await board.claim(held, "alice")
    found = await board.holders([held, free.uuid, "no-such-job"])
    assert list(found) == [held.uuid]
    holder = found[held.uuid]
    assert holder.owner == "alice"
    if board.url.startswith("zookeeper"):
        assert holder.session is not None and holder.session.startswith("0x")
    elif board.releases_owners:  # SQL: a lease, ahead of the board's clock
        assert holder.lease_until is not None and holder.lease_until > await board.now()
    assert await board.holders([]) == {}


async def test_find_finished_reads_one_ended_job(board: JobBoard) -> None:
    pending = await board.post("pending", flows.steps, "p", priority=4)
    assert await board.find_finished(pending.uuid) is None
    assert await board.find_finished("no-such-job") is None
    job = await board.post("urgent", flows.steps, "u", priority=7)
    await board.trash(await board.claim(job, "ops"), "no")
    found = await board.find_finished(job.uuid)
    assert found is not None
    assert (found.job.name, found.job.priority, found.job.flow_id) == ("urgent", 7, job.flow_id)
    assert found.job.factory == job.factory
    assert (found.outcome.state, found.outcome.error) == ("TRASHED", "no")
    assert found.job.state is JobState.TRASHED and found.finished_at > 0
