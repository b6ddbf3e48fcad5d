"""Tasks the REMOTE benchmark's worker subprocesses serve.

Workers import this module as ``remote_tasks`` (``PYTHONPATH=benchmarks``) and the
engine in ``run.py`` imports it under the same name, so task keys match::

    PYTHONPATH=benchmarks python -m zag_async worker --topic T remote_tasks:TASKS
"""

from __future__ import annotations

import zag_async as zag


@zag.task
async def noop() -> int:
    """The remote no-op: returns immediately (no await)."""
    return 1


TASKS = [noop]
