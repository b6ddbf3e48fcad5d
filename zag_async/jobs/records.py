"""The records a job board hands out: jobs, claims and outcomes.

They are plain data, shared by every board backend and by the conductor, so
they live apart from the board ABC that stores them: reading a job's fields
should not mean reading how boards post, claim or schedule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from ..factory import FactoryRef

if TYPE_CHECKING:
    from .base import JobBoard

__all__ = ["Claim", "FinishedJob", "Holder", "Job", "JobOutcome", "JobState"]


class JobState(StrEnum):
    UNCLAIMED = "UNCLAIMED"
    CLAIMED = "CLAIMED"
    COMPLETE = "COMPLETE"
    TRASHED = "TRASHED"


@dataclass(eq=False)
class Job:
    """A posted job, as last read from its board."""

    uuid: str
    name: str
    flow_id: str
    factory: FactoryRef
    priority: int = 0
    due_at: float = 0.0  #: board-clock seconds; 0 means at once
    posted_at: float = 0.0  #: board-clock seconds
    idempotency_key: str | None = None
    schedule: str | None = None
    build_failures: int = 0
    order: int = 0  #: the board's posting order (ties between equal priorities)
    state: JobState = JobState.UNCLAIMED
    version: int = 0  #: the stored record's version (for conditional updates)
    board: JobBoard | None = field(default=None, repr=False)

    async def wait(self) -> JobOutcome:
        """Wait until the job is consumed or trashed; returns its outcome.

        Bound the wait with `asyncio.timeout(...)` around it if needed.
        """
        if self.board is None:
            raise ConfigurationError(f"job {self.uuid} is not attached to a board")
        return await self.board.wait(self.uuid)

    def to_dict(self) -> dict[str, Any]:
        return {
            "uuid": self.uuid,
            "name": self.name,
            "flow_id": self.flow_id,
            "factory": self.factory.to_dict(),
            "priority": self.priority,
            "due_at": self.due_at,
            "posted_at": self.posted_at,
            "idempotency_key": self.idempotency_key,
            "schedule": self.schedule,
            "build_failures": self.build_failures,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], **extra: Any) -> Job:
        return cls(
            uuid=data["uuid"],
            name=data["name"],
            flow_id=data["flow_id"],
            factory=FactoryRef.from_dict(data["factory"]),
            priority=data.get("priority", 0),
            due_at=data.get("due_at", 0.0),
            posted_at=data.get("posted_at", 0.0),
            idempotency_key=data.get("idempotency_key"),
            schedule=data.get("schedule"),
            build_failures=data.get("build_failures", 0),
            **extra,
        )


@dataclass(frozen=True)
class Claim:
    """Proof of ownership of a job; `token` is the fencing token."""

    job: Job
    owner: str
    token: int

    @property
    def fence(self) -> str:
        """The owner string storage records (owner and token together)."""
        return f"{self.owner}#{self.token}"


@dataclass(frozen=True)
class JobOutcome:
    """How a job ended: the flow's final state (or TRASHED) and its results."""

    job_id: str
    flow_id: str
    state: str  #: "SUCCESS", "REVERTED", "FAILURE" or "TRASHED"
    results: dict[str, Any] | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.state == "SUCCESS"

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "flow_id": self.flow_id,
            "state": self.state,
            "results": self.results,
            "error": self.error,
        }

    @classmethod
    def trashed(cls, job: Job, reason: str) -> JobOutcome:
        """The outcome of a job moved to the trash for `reason`."""
        return cls(job.uuid, job.flow_id, "TRASHED", error=reason)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobOutcome:
        return cls(
            data["job_id"], data["flow_id"], data["state"], data.get("results"), data.get("error")
        )


@dataclass(frozen=True)
class FinishedJob:
    """A job that left the board (consumed or trashed), as an operator lists it:
    the job as it was last claimed, how it ended and when (board clock)."""

    job: Job
    outcome: JobOutcome
    finished_at: float


@dataclass(frozen=True)
class Holder:
    """Who holds a claimed job, and what keeps the claim alive: a lease until
    `lease_until` (SQL boards, board clock) or the ZooKeeper `session` (hex id)."""

    owner: str
    lease_until: float | None = None
    session: str | None = None
