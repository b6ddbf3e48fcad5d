"""`zag-async worker`: serve tasks to remote engines over RabbitMQ until stopped."""

from __future__ import annotations

import asyncio
import sys

import click

from ..atom import Atom
from ..factory import import_object
from .common import BadInput, on_signals

__all__ = ["worker"]


@click.command()
@click.argument("tasks", nargs=-1, required=True, metavar="MODULE:TASKS...")
@click.option("--topic", required=True, help="Queue to take requests from.")
@click.option(
    "--url",
    default="amqp://guest:guest@127.0.0.1/",
    show_default=True,
    envvar="ZAG_AMQP",
    show_envvar=True,
    help="RabbitMQ URL.",
)
@click.option("--concurrency", type=click.IntRange(min=1), default=8, show_default=True)
def worker(tasks: tuple[str, ...], topic: str, url: str, concurrency: int) -> None:
    """Serve tasks to remote engines over RabbitMQ.

    Each MODULE:TASKS names an atom or a list of atoms. Runs until SIGINT or
    SIGTERM, then finishes what it is running.
    """
    atoms: list[Atom] = []
    for ref in tasks:
        found = import_object(ref, "task list")
        items = found if isinstance(found, (list, tuple)) else [found]
        for item in items:
            if not isinstance(item, Atom):
                raise BadInput(f"{ref} is not an atom or a list of atoms")
            atoms.append(item)

    async def serve() -> None:
        from ..workers.amqp import Worker

        async with Worker(url, topic=topic, tasks=atoms, concurrency=concurrency) as running:
            with on_signals(running.stop):
                click.echo(
                    f"worker {running.name} serving {len(running.tasks)} tasks on topic {topic!r}"
                )
                sys.stdout.flush()
                await running.serve()

    asyncio.run(serve())
