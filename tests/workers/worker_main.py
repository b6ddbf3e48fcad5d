"""Subprocess entry point for a test worker (run with sys.executable, never imported).

    worker_main.py --module workers.tasks --topic T [--name N] [--heartbeat S]
                   [--delivery-limit N] [--concurrency N] [--url URL] [--tasks a,b]

Like `python -m zag_async worker`, plus the knobs the fault tests need (the
CLI has no heartbeat or delivery-limit options). Serves `<module>.ALL`, or the
tasks --tasks names; the module must be importable (the caller sets PYTHONPATH). Prints one line
"worker NAME serving" before serving; SIGTERM stops it gracefully.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import signal

import zag_async as zag


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--module", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--name")
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1/")
    parser.add_argument("--heartbeat", type=float, default=1.0)
    parser.add_argument("--delivery-limit", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--tasks", help="comma-separated names in the module (default: ALL)")
    args = parser.parse_args()
    tasks = importlib.import_module(args.module)
    served = [getattr(tasks, n) for n in args.tasks.split(",")] if args.tasks else tasks.ALL
    async with zag.Worker(
        args.url,
        topic=args.topic,
        tasks=served,
        name=args.name,
        heartbeat=args.heartbeat,
        delivery_limit=args.delivery_limit,
        concurrency=args.concurrency,
        announce_every=0.5,
    ) as worker:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, worker.stop)
        print(f"worker {worker.name} serving", flush=True)
        await worker.serve()
    print(f"worker {worker.name} stopped after {worker.served} requests", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
