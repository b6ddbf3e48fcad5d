"""Tasks that live as long as an open resource, owned by one task group.

A ZooKeeper session follows its connection and a board keeps its watches armed
for as long as they are open, but they open in one call and close in another
(often from different tasks: a fixture's set-up and tear-down), so no
`async with TaskGroup()` block can span their lifetime in the caller. Instead
the resource owns a `Background`: one supervising task holds a task group for
the resource's lifetime; `aclose()` ends the group, which cancels its tasks
and waits for them. Nothing is created or cancelled by hand elsewhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

__all__ = ["Background"]


class _Closing(Exception):
    """Raised inside the task group to end it (an asyncio TaskGroup has no cancel())."""


class Background:
    """A task group held open from `start()` to `aclose()`.

    Args:
        name: names the supervising task (for debugging).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._group: asyncio.TaskGroup | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()

    @property
    def running(self) -> bool:
        """True between `start()` and `aclose()`: `spawn` may be called."""
        return self._group is not None and not self._closing.is_set()

    async def start(self) -> None:
        """Open the task group; returns once `spawn` may be called."""
        if self._supervisor is not None:
            return
        ready = asyncio.get_running_loop().create_future()
        self._supervisor = asyncio.create_task(self._supervise(ready), name=self.name)
        await asyncio.wait({ready, self._supervisor}, return_when=asyncio.FIRST_COMPLETED)

    def spawn(self, coro: Coroutine[Any, Any, None], *, name: str) -> None:
        """Run `coro` in the group until it ends or the group is closed."""
        if self._group is None or self._closing.is_set():
            coro.close()
            raise RuntimeError(f"{self.name}: spawn() outside start() ... aclose()")
        self._group.create_task(coro, name=name)

    async def aclose(self) -> None:
        """Cancel the group's tasks and wait for them; re-raise what one of them failed with.

        Idempotent.
        """
        self._closing.set()
        supervisor = self._supervisor
        if supervisor is None:
            return
        try:
            await supervisor
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

    async def _supervise(self, ready: asyncio.Future[None]) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                ready.set_result(None)
                await self._closing.wait()
                raise _Closing
        except* _Closing:
            pass
        finally:
            self._group = None
