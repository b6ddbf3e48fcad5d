"""Command line entry point: `python -m zag_async demo` (more commands to come)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zag-async", description="zag-async command line")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run the built-in demonstration flow")
    db = sub.add_parser("db", help="manage a storage database")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    up = db_sub.add_parser("upgrade", help="create or upgrade the schema at URL")
    up.add_argument("url", help="e.g. sqlite+aiosqlite:///flows.db or postgresql+asyncpg://...")
    worker = sub.add_parser("worker", help="serve tasks to remote engines over RabbitMQ")
    worker.add_argument("tasks", nargs="+", help="module:name of an atom or a list of atoms")
    worker.add_argument("--topic", required=True, help="queue to take requests from")
    worker.add_argument("--url", default="amqp://guest:guest@127.0.0.1/", help="broker URL")
    worker.add_argument("--concurrency", type=int, default=8, help="requests run at once")
    args = parser.parse_args(argv)
    if args.command == "worker":
        return _worker(args.url, args.topic, args.tasks, args.concurrency)
    if args.command == "demo":
        from .demo import run_demo

        run_demo()
    elif args.command == "db":
        import asyncio

        from .errors import ZagError
        from .persistence import upgrade

        try:
            version = asyncio.run(upgrade(args.url))
        except ZagError as exc:
            print(f"zag-async: {exc}", file=sys.stderr)
            return 1
        print(f"schema at version {version}")
    return 0


def _worker(url: str, topic: str, refs: list[str], concurrency: int) -> int:
    import asyncio
    import signal

    from .atom import Atom
    from .errors import ZagError
    from .factory import import_object

    atoms: list[Atom] = []
    try:
        for ref in refs:
            found = import_object(ref, "task list")
            items = found if isinstance(found, (list, tuple)) else [found]
            for item in items:
                if not isinstance(item, Atom):
                    print(f"zag-async: {ref} is not an atom or a list of atoms", file=sys.stderr)
                    return 2
                atoms.append(item)
    except ZagError as exc:
        print(f"zag-async: {exc}", file=sys.stderr)
        return 2

    async def serve() -> None:
        from .workers.amqp import Worker

        async with Worker(url, topic=topic, tasks=atoms, concurrency=concurrency) as worker:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, worker.stop)
            print(
                f"worker {worker.name} serving {len(worker.tasks)} tasks on topic {topic!r}",
                flush=True,
            )
            await worker.serve()

    try:
        asyncio.run(serve())
    except (ZagError, OSError) as exc:
        print(f"zag-async: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
