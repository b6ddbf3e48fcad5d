"""`zag-async jobs ...` (post, list, show and trash jobs on a board) and
`zag-async conductor` (claim jobs and run their flows until stopped).

`jobs show` reads the job through `status.find_job`, as the service's
`job_status` does, so both see the same job at the same point of its life.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
from typing import Any

import click

from ..errors import AlreadyClaimed, JobNotFound, NotFound, NotYetDue
from ..factory import FactoryRef
from ..jobs.base import JobBoard, JobState
from ..models import FlowDetail
from ..status import find_job
from .common import (
    PROG,
    STORE_HELP,
    CliError,
    backend_option,
    board_option,
    is_memory,
    limit_option,
    more_note,
    on_signals,
    open_board,
    parse_store,
    parse_value,
    require_shared,
    timeout_option,
)
from .output import emit_table, make_console, show_flow, time_text

__all__ = ["conductor", "jobs"]


@click.group()
def jobs() -> None:
    """Post, list, show and trash jobs on a job board."""


@jobs.command("list")
@board_option
@timeout_option
@click.option("--state", type=click.Choice(["UNCLAIMED", "CLAIMED"]), help="Only these jobs.")
@limit_option
def jobs_list(board: str, timeout: float, state: str | None, limit: int) -> None:
    """List the jobs on a board, newest first (the board alone: no database needed)."""
    more = False

    async def listing() -> list[list[str]]:
        nonlocal more
        async with open_board(board, "memory://", timeout) as (_database, opened):
            found = await opened.jobs(state=None if state is None else JobState(state))
            found.sort(key=lambda job: job.posted_at, reverse=True)
            more = bool(limit) and len(found) > limit
            found = found[:limit] if more else found
            now = await opened.now()
            rows = []
            for job in found:
                owner = await opened.find_owner(job) if job.state == JobState.CLAIMED else None
                due = f"in {job.due_at - now:.1f}s" if job.due_at > now else "now"
                rows.append(
                    [job.uuid, job.name, str(job.state), str(job.priority), due, owner or "",
                     job.flow_id]
                )  # fmt: skip
            return rows

    rows = asyncio.run(listing())
    more_note(len(rows), limit, more, "jobs")
    headers = ["JOB", "NAME", "STATE", "PRIORITY", "DUE", "OWNER", "FLOW"]
    emit_table(make_console(), headers, rows)


@jobs.command("post")
@click.argument("factory", metavar="MODULE:FACTORY")
@click.argument("args", nargs=-1, metavar="[ARG]...")
@board_option
@backend_option(required=False)
@timeout_option
@click.option("--store", "-s", "store", multiple=True, metavar="KEY=VALUE", help=STORE_HELP)
@click.option("--name", help="The job's name (default: the factory's name).")
@click.option("--key", help="Idempotency key: posting again with it returns the same job.")
@click.option("--priority", type=int, default=0, show_default=True)
@click.option("--delay", type=click.FloatRange(min=0), default=0.0, help="Seconds before due.")
def jobs_post(
    factory: str,
    args: tuple[str, ...],
    board: str,
    backend: str,
    timeout: float,
    store: tuple[str, ...],
    name: str | None,
    key: str | None,
    priority: int,
    delay: float,
) -> None:
    """Post a job that runs the flow MODULE:FACTORY builds from ARGs.

    ARGs are passed to the factory, each read as JSON when it parses, else as
    a string. Prints the job's id and its flow's id.
    """
    from ..factory import resolve_factory

    values = parse_store(store)
    require_shared(board, backend)
    resolve_factory(factory)  # an unknown module fails here, not in a conductor
    job_name = name or factory.rsplit(":", 1)[-1].rsplit(".", 1)[-1]

    async def post() -> tuple[Any, bool]:
        async with open_board(board, backend, timeout) as (_database, opened):
            earlier = None if key is None else await opened.find_key(key)
            job = await opened.post(
                job_name,
                factory,
                *(parse_value(a) for a in args),
                store=values,
                priority=priority,
                delay=delay,
                idempotency_key=key,
            )
            return job, earlier is not None and earlier.uuid == job.uuid

    job, again = asyncio.run(post())
    if again:
        click.echo(
            f"job {job.uuid} {job.name} flow {job.flow_id} was already posted with key {key!r}; "
            f"nothing new posted"
        )
    else:
        click.echo(f"posted job {job.uuid} {job.name} flow {job.flow_id}")


@jobs.command("show")
@click.argument("job_id")
@board_option
@backend_option(required=False)
@timeout_option
def jobs_show(job_id: str, board: str, backend: str, timeout: float) -> None:
    """Show one job (or how it ended); with --backend, its flow's atoms too.

    JOB_ID may be a unique prefix of the id of a job still on the board.
    """

    async def show() -> tuple[list[tuple[str, str]], FlowDetail | None]:
        async with open_board(board, backend, timeout) as (database, opened):
            found = await find_job(opened, await full_job_id(opened, job_id))
            fields: list[tuple[str, str]]
            if found.outcome is not None:
                outcome = found.outcome
                fields = [
                    ("job", outcome.job_id),
                    ("state", str(found.state)),
                    ("outcome", outcome.state),
                    ("flow", outcome.flow_id),
                ]
                if outcome.error:
                    fields.append(("error", outcome.error))
            else:
                job = found.job
                assert job is not None
                fields = [
                    ("job", job.uuid),
                    ("name", job.name),
                    ("state", str(job.state)),
                    ("owner", found.owner or ""),
                    ("flow", job.flow_id),
                    ("factory", factory_text(job.factory)),
                    ("priority", str(job.priority)),
                    ("posted", time_text(job.posted_at) if job.posted_at else ""),
                    ("due", time_text(job.due_at) if job.due_at else "at once"),
                    ("key", job.idempotency_key or ""),
                    ("schedule", job.schedule or ""),
                    ("build failures", str(job.build_failures)),
                ]
            detail = None
            if not is_memory(backend):
                with contextlib.suppress(NotFound):
                    detail = await database.load_flow(found.flow_id)
            return fields, detail

    fields, detail = asyncio.run(show())
    width = max(len(k) for k, _ in fields)
    for key, value in fields:
        click.echo(f"{key.ljust(width)}  {value}".rstrip())
    if detail is not None:
        click.echo("")
        show_flow(make_console(), detail)


async def full_job_id(board: JobBoard, job_id: str) -> str:
    """`job_id`, or the one job on the board whose id starts with it (as `flows show`
    takes a prefix); JobNotFound when none or several do."""
    if len(job_id) >= 36 or await board.outcome(job_id) is not None:
        return job_id
    try:
        await board.get(job_id)
        return job_id
    except JobNotFound:
        pass
    matches = [job.uuid for job in await board.jobs() if job.uuid.startswith(job_id)]
    if len(matches) == 1:
        return matches[0]
    raise JobNotFound(
        f"no job {job_id!r} on {board.url}, nor one whose id starts with it"
        if not matches
        else f"{job_id!r} starts {len(matches)} job ids; give more of it"
    )


def factory_text(ref: FactoryRef) -> str:
    parts = [json.dumps(a, default=repr) for a in ref.args]
    parts += [f"{k}={json.dumps(v, default=repr)}" for k, v in ref.kwargs.items()]
    return f"{ref.path}({', '.join(parts)})"


@jobs.command("trash")
@click.argument("job_id")
@board_option
@timeout_option
@click.option("--reason", default="trashed by hand", show_default=True)
def jobs_trash(job_id: str, board: str, timeout: float, reason: str) -> None:
    """Move an unclaimed job to the trash (it will not run).

    The job is claimed for a moment to trash it, so a delayed job can be
    trashed only once it is due. JOB_ID may be a unique prefix.
    """

    async def trash() -> str:
        # Trashing records the outcome on the board; the flow record is left as it is.
        async with open_board(board, "memory://", timeout) as (_database, opened):
            owner = f"{PROG}@{socket.gethostname()}:{os.getpid()}"
            full_id = await full_job_id(opened, job_id)
            try:
                claim = await opened.claim(full_id, owner)
            except AlreadyClaimed:
                holder = await opened.find_owner(full_id)
                raise CliError(
                    f"job {job_id} is claimed by {holder or 'another owner'}; "
                    f"only an unclaimed job can be trashed"
                ) from None
            except NotYetDue as exc:
                # Trashing goes through a claim, and a delayed job cannot be claimed early.
                raise CliError(f"{exc}: a delayed job can be trashed once it is due") from None
            await opened.trash(claim, reason)
            return full_id

    click.echo(f"trashed job {asyncio.run(trash())}")


@click.command()
@board_option
@backend_option(required=True)
@click.option("--max-jobs", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--name", help="This conductor's name (owner of its claims); default host:pid.")
@click.option("--build-attempts", type=click.IntRange(min=1), default=3, show_default=True)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    help="Serve Prometheus metrics on http://HOST:PORT/metrics (needs zag-async[prometheus]).",
)
@click.option("--metrics-host", default="127.0.0.1", show_default=True)
def conductor(
    board: str,
    backend: str,
    max_jobs: int,
    name: str | None,
    build_attempts: int,
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    """Claim jobs from a board and run their flows.

    Runs until SIGINT or SIGTERM: then it stops claiming, lets running flows reach a safe point and
    hands their jobs back, so another conductor resumes them. With --metrics-port it counts jobs,
    atoms, retries and durations, and the board's pending jobs, for Prometheus to scrape.
    """
    require_shared(board, backend)

    def report(event: Any) -> None:
        text = f"{event.kind} job {event.job.name} {event.job.uuid}"
        if event.outcome is not None:
            text += f" {event.outcome.state}"
        if event.detail:
            text += f": {event.detail}"
        click.echo(text)
        sys.stdout.flush()

    async def conduct() -> None:
        from ..jobs.conductor import Conductor

        async with contextlib.AsyncExitStack() as stack:
            database, opened = await stack.enter_async_context(open_board(board, backend, None))
            listeners: list[Any] = [report]
            engine_listeners = None
            if metrics_port is not None:
                from ..metrics import Metrics, serve_metrics

                metrics = Metrics()
                listeners.append(metrics)
                engine_listeners = lambda _job: [metrics]  # noqa: E731
                await stack.enter_async_context(metrics.watch_board(opened))
                served = await stack.enter_async_context(
                    serve_metrics(metrics, host=metrics_host, port=metrics_port)
                )
                click.echo(f"metrics at {served.url}")
            running = await stack.enter_async_context(
                Conductor(
                    opened,
                    backend=database,
                    name=name,
                    max_jobs=max_jobs,
                    build_attempts=build_attempts,
                    listeners=listeners,
                    engine_listeners=engine_listeners,
                )
            )
            with on_signals(running.stop):
                click.echo(f"conductor {running.name} running jobs from {board}")
                sys.stdout.flush()
                await running.run()
        click.echo("conductor stopped")

    asyncio.run(conduct())
