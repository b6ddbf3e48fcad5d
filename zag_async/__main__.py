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
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
