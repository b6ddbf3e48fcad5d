"""`python -m zag_async` and the `zag-async` script; the commands live in zag_async/cli/."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on `argv` (default: sys.argv[1:]); returns the exit code."""
    from .cli import run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
