"""A ZooKeeper board's local view of its jobs and claims, kept current by watches.

Listing `jobs/` and reading every job node on each `jobs()` call would cost a
round trip per job; instead a board that reads jobs keeps one children watch on
`jobs/` and one on `claims/`, re-reads a listing when either fires (which also
re-arms the watch) and after every reconnect, and answers from this cache.
A woken job (`JobBoard.wake`) changes only its node's data, which no children
watch sees, so the waker also leaves a marker under `wakes/` naming the job;
each cache re-reads the jobs that new markers name.
While a watch is not armed the board re-reads both listings itself
(`refresh()`). The watch loops run in the cache's own task group.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiozk import exc as zk_exc

from ..background import Background
from ..errors import BoardUnavailable
from .records import Job, JobState
from .zknodes import EV, decode_job
from .zksession import ZkSession

if TYPE_CHECKING:
    from .base import JobBoard

__all__ = ["JobCache"]

logger = logging.getLogger("zag_async.jobs")

WATCHED = ("/jobs", "/claims", "/wakes")


class JobCache:
    """The jobs on a board by uuid, and which of them are claimed.

    Args:
        zk: the board's session.
        board: the board the jobs read are attached to.
        url: the board's URL (for log messages).
        notify: called after each listing applied, or a watch that failed to arm.
        claims_listed: awaited after each claims listing was applied.
    """

    def __init__(
        self,
        zk: ZkSession,
        *,
        board: JobBoard,
        url: str,
        notify: Callable[[], None],
        claims_listed: Callable[[], Awaitable[None]],
    ) -> None:
        self.zk = zk
        self.board = board
        self.url = url
        #: the jobs on the board, by uuid
        self.jobs: dict[str, Job] = {}
        #: uuids of the claimed jobs
        self.claimed: set[str] = set()
        self._notify = notify
        self._claims_listed = claims_listed
        self._refresh_lock = asyncio.Lock()
        self._armed: dict[str, int] = {}  # watched path -> connection generation it is armed for
        self._tasks = Background("zag-zk-watches")
        self._watching = False
        self._wakes_seen: set[str] = set()

    async def start(self) -> None:
        """Make `watch()` possible (the board is open)."""
        await self._tasks.start()

    async def aclose(self) -> None:
        """Stop the watch loops (idempotent)."""
        await self._tasks.aclose()

    def watch(self) -> None:
        """Keep the cache current through watches from now on (only boards that read jobs do)."""
        if self._watching or not self._tasks.running:
            return
        self._watching = True
        self._tasks.spawn(self._watch_children("/jobs", self._apply_jobs), name="zag-zk-watch/jobs")
        self._tasks.spawn(
            self._watch_children("/claims", self._apply_claims), name="zag-zk-watch/claims"
        )
        self._tasks.spawn(
            self._watch_children("/wakes", self._apply_wakes), name="zag-zk-watch/wakes"
        )

    @property
    def current(self) -> bool:
        """True while both watches are armed on the current connection."""
        generation = self.zk.generation
        return all(self._armed.get(p) == generation for p in WATCHED)

    async def read(self, job_id: str) -> Job | None:
        """Read one job from its node (None if it is gone); the cache is left as it is."""
        try:
            raw, stat = await self.zk.call(self.zk.c.get, f"/jobs/{job_id}")
        except zk_exc.NoNode:
            return None
        return self.decode(raw, stat)

    def decode(self, raw: bytes, stat: Any) -> Job:
        """A job from a node's data and stat, attached to the board."""
        job = decode_job(raw, stat)
        job.board = self.board
        return job

    def with_state(self, job: Job) -> Job:
        """A copy of `job` for a caller, CLAIMED or UNCLAIMED as the cache knows."""
        copy = Job.from_dict(job.to_dict(), order=job.order, version=job.version)
        copy.posted_at, copy.due_at = job.posted_at, job.due_at
        copy.board = self.board
        copy.state = JobState.CLAIMED if job.uuid in self.claimed else JobState.UNCLAIMED
        return copy

    async def refresh(self) -> None:
        """Re-read both listings (when the watches are not armed)."""
        async with self._refresh_lock:
            names = await self.zk.call(self.zk.c.get_children, "/jobs")
            claimed = await self.zk.call(self.zk.c.get_children, "/claims")
            wakes = await self.zk.call(self.zk.c.get_children, "/wakes")
            await self._apply_jobs(names)
            await self._apply_claims(claimed)
            await self._apply_wakes(wakes)

    async def _watch_children(
        self, path: str, apply: Callable[[list[str]], Awaitable[None]]
    ) -> None:
        """Keep a children watch on `path` armed, re-arming after every reconnect.

        Each event costs one listing, which also re-arms the watch.
        """
        changed = asyncio.Event()
        remove = self.zk.watch([EV.CHILDREN_CHANGED], path, lambda _p: changed.set())
        try:
            while True:
                generation = self.zk.generation
                changed.clear()
                try:
                    # List and apply under one lock, so an older listing (a
                    # concurrent refresh) can never be applied after a newer one.
                    async with self._refresh_lock:
                        names = await self.zk.call(self.zk.c.get_children, path, watch=True)
                        await apply(names)
                    self._armed[path] = generation
                    if path == "/claims":
                        await self._claims_listed()
                except BoardUnavailable as exc:
                    self._armed.pop(path, None)
                    logger.warning("board %s: watch on %s not armed: %s", self.url, path, exc)
                    self._notify()
                    # No watch is set to wake us, and the link may come back without
                    # another reconnect (a slow server): try again within a second.
                    await self.zk.event_or_reconnect(changed, generation, within=1.0)
                    continue
                self._notify()
                await self.zk.event_or_reconnect(changed, generation)
        finally:
            remove()

    async def _apply_jobs(self, names: list[str]) -> None:
        """Bring the job cache in line with a listing (call with _refresh_lock held)."""
        present = set(names)
        for gone in [u for u in self.jobs if u not in present]:
            del self.jobs[gone]
        new = [n for n in names if n not in self.jobs]
        if new:
            read = await asyncio.gather(*(self.read(n) for n in new))
            for job in read:
                if job is not None and job.uuid in present:
                    self.jobs.setdefault(job.uuid, job)

    async def _apply_wakes(self, names: list[str]) -> None:
        """Re-read the jobs named by wake markers not seen before (markers are
        `<epoch seconds>-<job id>-<sequence>`)."""
        new = [n for n in names if n not in self._wakes_seen]
        self._wakes_seen = set(names)
        woken = {n.split("-", 1)[1].rsplit("-", 1)[0] for n in new if n.count("-") >= 2}
        woken &= set(self.jobs)
        if woken:
            for job in await asyncio.gather(*(self.read(job_id) for job_id in woken)):
                if job is not None and job.uuid in self.jobs:
                    self.jobs[job.uuid] = job

    async def _apply_claims(self, names: list[str]) -> None:
        self.claimed = set(names)
