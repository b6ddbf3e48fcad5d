"""ZagService, the framework-neutral core: open and close, run, start, post, status,
and shutdown with flows and jobs in flight (nothing lost, nothing re-run)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from support import eventually

import zag_async as zag
from zag_async.errors import ConfigurationError, ExecutionError, JobNotFound, NotFound
from zag_async.jobs import JobState
from zag_async.service import ZagService

from . import flows
from .conftest import Urls, delete_queue, pg_connections

PIPELINE = flows.pipeline
FAILING = flows.failing


async def stored(urls: Urls, flow_id: str) -> zag.FlowDetail:
    async with zag.connect(urls.backend) as db:
        return await db.load_flow(flow_id)


def states(detail: zag.FlowDetail) -> dict[str, str]:
    return {name: str(atom.state) for name, atom in detail.atoms.items()}


# -- open and close -----------------------------------------------------------------------


async def test_opens_and_closes_everything(urls: Urls) -> None:
    before = asyncio.all_tasks()
    service = ZagService(**urls.options(), conductor=True)
    async with service:
        assert service.conductor is not None
        await eventually(lambda: service.conductor is not None and service.conductor.running)
        status = await service.run(PIPELINE, store={"tag": "t"})
        assert status.ok
        backend, board = service.backend, service.board
    assert backend.closed and board.closed
    assert "closed" in repr(service)
    await eventually(lambda: asyncio.all_tasks() == before, what="no task left behind")
    if urls.backend.startswith("postgresql"):
        await eventually(lambda: pg_connections(urls.backend) == 0, what="no connection left")


async def test_opens_once_and_closes_idempotently() -> None:
    service = ZagService()
    async with service:
        pass
    await service.aclose()
    with pytest.raises(ConfigurationError, match="already opened"):
        await service.__aenter__()
    with pytest.raises(ExecutionError, match="shutting down"):
        await service.run(PIPELINE, store={"tag": "t"})


class BrokenExecutor:
    """An executor whose connection fails when the service opens it."""

    async def before_retry(self, delay: float) -> float:
        await asyncio.sleep(delay)
        return 0.0

    async def __aenter__(self) -> BrokenExecutor:
        raise ConnectionRefusedError("no broker here")

    async def __aexit__(self, *exc: object) -> None:
        raise AssertionError("never opened, so never closed")


async def test_a_failed_open_closes_what_it_opened(tmp_path: Any) -> None:
    before = asyncio.all_tasks()
    service = ZagService(
        backend=f"sqlite+aiosqlite:///{tmp_path}/f.db",
        conductor=True,
        executor=BrokenExecutor(),  # type: ignore[arg-type]
    )
    with pytest.raises(ConnectionRefusedError):
        async with service:
            pass
    assert service.backend.closed and service.board.closed
    assert asyncio.all_tasks() == before


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"backend": "flows.db"}, "storage URL"),
        ({"board": "localhost:2181"}, "job board URL"),
        ({"board": None, "conductor": True}, "needs a job board"),
        ({"conductor": {"max_job": 2}}, r"\['max_job'\] are not Conductor arguments"),
        ({"conductor": 4}, "True, False or a mapping"),
        ({"workers": [("compute", [flows.first])]}, "need broker="),
        ({"workers": ["compute"], "broker": "amqp://x"}, r"\(topic, tasks\) pairs"),
        ({"shutdown_timeout": -1}, "shutdown_timeout must be >= 0"),
    ],
)
def test_bad_options_fail_at_construction(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        ZagService(**options)


async def test_without_a_board_posting_says_so() -> None:
    async with ZagService(board=None) as service:
        with pytest.raises(ConfigurationError, match="no job board"):
            await service.post("x", PIPELINE, store={"tag": "t"})


async def test_not_open_yet() -> None:
    with pytest.raises(ExecutionError, match="not open"):
        await ZagService().run(PIPELINE)


# -- running flows ------------------------------------------------------------------------


async def test_run_returns_results_and_flow_id() -> None:
    async with ZagService() as service:
        status = await service.run(PIPELINE, store={"tag": "r"})
        assert status.ok and status.done
        assert status.results == {"tag": "r", "a": "a-r", "b": "b-r", "c": "c-r"}
        assert [(a.name, a.state, a.attempts) for a in status.atoms] == [
            ("first", "SUCCESS", 1),
            ("slow", "SUCCESS", 1),
            ("last", "SUCCESS", 1),
        ]
        again = await service.flow_status(status.flow_id)
        assert again == status
        assert again.to_dict()["results"] == {"tag": "r", "a": "a-r", "b": "b-r", "c": "c-r"}


async def test_a_reverted_flow_is_reported_not_raised() -> None:
    async with ZagService() as service:
        status = await service.run(FAILING, store={"tag": "f"})
    assert status.state == "REVERTED" and status.done and not status.ok
    assert status.results is None
    assert status.error == f"{flows.__name__}.Boom: f exploded"
    assert flows.LOG == ["first f", "explode f", "revert first f"]


async def test_what_keeps_a_flow_from_running_is_raised() -> None:
    async with ZagService() as service:
        with pytest.raises(ConfigurationError, match="cannot import flow factory"):
            await service.run(f"{flows.__name__}:nothing_here")
        with pytest.raises(NotFound):
            await service.flow_status(str(uuid.uuid4()))


async def test_start_runs_in_the_background() -> None:
    flows.HOLD.add("bg")
    async with ZagService() as service:
        flow_id = await service.start(PIPELINE, store={"tag": "bg"})
        assert (await service.flow_status(flow_id)).state in ("PENDING", "RUNNING")
        await flows.started("bg").wait()
        assert service.running_flows == [flow_id]
        flows.release("bg")
        status = await eventually(
            lambda: _done(service.flow_status(flow_id)), what="the flow to end"
        )
        assert status.results["c"] == "c-bg"
        assert service.running_flows == []


async def _done(pending: Any) -> Any:
    status = await pending
    return status if status.done else None


async def test_post_and_job_status_until_complete() -> None:
    async with ZagService(conductor={"max_jobs": 2, "name": "in-app"}) as service:
        flows.HOLD.add("j")
        job = await service.post("job j", PIPELINE, store={"tag": "j"})
        await flows.started("j").wait()
        claimed = await service.job_status(job.uuid)
        assert claimed.state is JobState.CLAIMED and claimed.owner == "in-app"
        assert claimed.flow.flow_id == job.flow_id and claimed.flow.state == "RUNNING"
        assert not claimed.done
        flows.release("j")
        done = await eventually(lambda: _job_done(service, job.uuid), what="the job to end")
        assert done.state is JobState.COMPLETE and done.error is None
        assert done.flow.results["c"] == "c-j"
        assert done.to_dict()["flow"]["state"] == "SUCCESS"
        with pytest.raises(JobNotFound):
            await service.job_status(str(uuid.uuid4()))


async def _job_done(service: ZagService, job_id: str) -> Any:
    status = await service.job_status(job_id)
    return status if status.done else None


async def test_a_job_nobody_claims_is_unclaimed() -> None:
    async with ZagService() as service:
        job = await service.post("waits", PIPELINE, store={"tag": "w"})
        status = await service.job_status(job.uuid)
        assert status.state is JobState.UNCLAIMED and status.owner is None
        assert status.flow.state == "PENDING"


# -- shutdown with work in flight ---------------------------------------------------------


async def test_shutdown_suspends_a_flow_awaited_by_a_caller(urls: Urls) -> None:
    """The caller gets SUSPENDED; the running atom finished, the next one did not start;
    zag.resume finishes the flow without re-running anything."""
    flows.HOLD.add("req")
    service = ZagService(**urls.options())
    await service.__aenter__()
    caller = asyncio.create_task(service.run(PIPELINE, store={"tag": "req"}))
    await flows.started("req").wait()
    closing = asyncio.create_task(service.aclose())
    await eventually(lambda: service.closing)
    flows.release("req")  # the running atom finishes; nothing new starts
    status = await caller
    await closing
    assert status.state == "SUSPENDED" and not status.done
    detail = await stored(urls, status.flow_id)
    assert detail.state == "SUSPENDED"
    assert states(detail) == {"first": "SUCCESS", "slow": "SUCCESS", "last": "PENDING"}

    async with zag.connect(urls.backend) as db:
        results = await zag.resume(status.flow_id, backend=db)
    assert results["c"] == "c-req"
    assert flows.LOG == ["first req", "slow req", "last req"]


async def test_shutdown_timeout_cancels_what_is_still_running(urls: Urls) -> None:
    """An atom that does not finish in shutdown_timeout is cancelled: the flow is still
    SUSPENDED, and only the cancelled atom runs again."""
    flows.HOLD.update({"stuck", "bg-stuck"})
    service = ZagService(**urls.options(), shutdown_timeout=0.2)
    await service.__aenter__()
    caller = asyncio.create_task(service.run(PIPELINE, store={"tag": "stuck"}))
    background = await service.start(PIPELINE, store={"tag": "bg-stuck"})
    await flows.started("stuck").wait()
    await flows.started("bg-stuck").wait()
    [requested] = set(service.running_flows) - {background}
    await service.aclose()
    with pytest.raises(asyncio.CancelledError):
        await caller  # the server would answer it with an error; the flow is safe
    for tag, flow_id in (("stuck", requested), ("bg-stuck", background)):
        detail = await stored(urls, flow_id)
        assert detail.state == "SUSPENDED"
        assert states(detail)["first"] == "SUCCESS" and states(detail)["last"] == "PENDING"
        flows.release(tag)
        async with zag.connect(urls.backend) as db:
            assert (await zag.resume(flow_id, backend=db))["c"] == f"c-{tag}"
        assert flows.count(f"first {tag}") == 1
        assert flows.count(f"slow {tag}") == 2  # cancelled once, run again on resume


async def test_shutdown_gives_a_running_job_back_and_another_service_finishes_it(
    urls: Urls,
) -> None:
    flows.HOLD.add("job")
    first = ZagService(**urls.options(), conductor={"name": "first"})
    await first.__aenter__()
    job = await first.post("held job", PIPELINE, store={"tag": "job"})
    await flows.started("job").wait()
    closing = asyncio.create_task(first.aclose())
    await eventually(lambda: first.closing)
    flows.release("job")
    await closing
    assert states(await stored(urls, job.flow_id)) == {
        "first": "SUCCESS",
        "slow": "SUCCESS",
        "last": "PENDING",
    }

    async with ZagService(**urls.options(), conductor={"name": "second"}) as second:
        status = await eventually(lambda: _job_done(second, job.uuid), what="the job to end")
        assert status.state is JobState.COMPLETE and status.flow.results["c"] == "c-job"
    assert flows.LOG == ["first job", "slow job", "last job"]
    assert (await stored(urls, job.flow_id)).owner.startswith("second#")


async def test_work_offered_while_closing_is_refused() -> None:
    flows.HOLD.add("busy")
    service = ZagService()
    await service.__aenter__()
    caller = asyncio.create_task(service.run(PIPELINE, store={"tag": "busy"}))
    await flows.started("busy").wait()
    closing = asyncio.create_task(service.aclose())
    await eventually(lambda: service.closing)
    with pytest.raises(ExecutionError, match="shutting down"):
        await service.start(PIPELINE, store={"tag": "late"})
    with pytest.raises(ExecutionError, match="shutting down"):
        await service.post("late", PIPELINE, store={"tag": "late"})
    flows.release("busy")
    await closing
    assert (await caller).state == "SUSPENDED"


# -- in-app workers -----------------------------------------------------------------------


async def test_in_app_worker_runs_the_tasks_sent_over_rabbitmq(amqp_url: str) -> None:
    topic = f"web-test-{uuid.uuid4().hex[:8]}"
    try:
        executor = zag.RemoteExecutor(amqp_url, topics=[topic])
        async with ZagService(
            workers=[(topic, flows.REMOTE_TASKS)], broker=amqp_url, executor=executor
        ) as service:
            status = await service.run(PIPELINE, store={"tag": "remote"})
            assert status.results is not None and status.results["c"] == "c-remote"
            [worker] = service.workers
            # (the worker counts a request once its outcome is sent, an instant after)
            await eventually(lambda: worker.served == 3, what="3 requests served in-app")
        with pytest.raises(ExecutionError, match="not open"):  # closed with the service
            await executor.revert(flows.first, "first", "f", {})
    finally:
        await delete_queue(amqp_url, f"zag.q.{topic}")


async def test_closing_cancelled_midway_still_suspends_and_closes(urls: Urls) -> None:
    """A server that gives up on its lifespan cancels the close: what still runs is
    cancelled (SUSPENDED) before the board and the database close."""
    flows.HOLD.add("cut")
    service = ZagService(**urls.options())
    await service.__aenter__()
    flow_id = await service.start(PIPELINE, store={"tag": "cut"})
    await flows.started("cut").wait()
    closing = asyncio.create_task(service.aclose())
    await eventually(lambda: service.closing)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert service.backend.closed and service.board.closed
    detail = await stored(urls, flow_id)
    assert detail.state == "SUSPENDED" and states(detail)["slow"] == "RUNNING"


async def test_a_suspended_flow_resumes_through_the_next_service() -> None:
    flows.HOLD.add("next")
    backend = f"memory://web-test-{uuid.uuid4().hex}"
    service = ZagService(backend=backend)
    await service.__aenter__()
    flow_id = await service.start(PIPELINE, store={"tag": "next"})
    await flows.started("next").wait()
    closing = asyncio.create_task(service.aclose())
    await eventually(lambda: service.closing)
    flows.release("next")
    await closing
    async with ZagService(backend=backend, name="next") as again:
        assert (await again.flow_status(flow_id)).state == "SUSPENDED"
        status = await again.resume(flow_id)
        assert status.ok and status.results is not None and status.results["c"] == "c-next"
        assert (await again.backend.load_flow(flow_id)).owner == "next"
    assert flows.LOG == ["first next", "slow next", "last next"]


async def test_a_conductor_that_crashes_stops_the_service_loudly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(self: zag.Conductor) -> None:
        raise RuntimeError("conductor bug")

    monkeypatch.setattr(zag.Conductor, "run", broken)
    service = ZagService(conductor=True)
    await service.__aenter__()
    await eventually(lambda: service.stopped)
    assert "its conductor or a worker failed" in caplog.text
    with pytest.raises(ExecutionError, match="stopped: its conductor or a worker failed"):
        await service.run(PIPELINE, store={"tag": "x"})
    with pytest.raises(ExceptionGroup) as raised:
        await service.aclose()
    assert raised.group_contains(RuntimeError, match="conductor bug")
    assert service.backend.closed
