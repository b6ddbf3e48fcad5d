"""Where a flow or a job stands, decided in one place for every reader.

The service's status objects, the command line's `jobs show` and failure
lines, the conductor's job outcomes and the inspection tables all describe
the same records; each used to summarise a failure in its own way. Here a
flow's error, its failure lines, a job's place on its board and a finished
job's outcome are worked out once (the "Type: message" text itself comes
from `failure.error_text`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .codec import plain_json
from .compensation import unreverted_of
from .control import cancellation
from .engine import Engine
from .errors import JobNotFound, ZagError
from .factory import FactoryRef
from .failure import error_text
from .inspection import AtomReport, describe_flow
from .jobs.base import Job, JobBoard, JobOutcome, JobState
from .models import FlowDetail
from .persistence.base import Backend
from .states import ENDED, AtomState, FlowState
from .storage import Storage
from .waiting import WaitingFor

__all__ = [
    "FlowStatus",
    "JobOnBoard",
    "JobStatus",
    "failure_lines",
    "find_job",
    "flow_error",
    "iso_utc",
    "job_outcome",
    "read_flow_status",
    "read_job_status",
    "waits_of",
]

# The name the service logged these under before this module existed.
logger = logging.getLogger("zag_async.service")

_ENDED = ENDED
#: Ended by a failure (what ended it is the status's `error`).
_FAILED = tuple(s for s in ENDED if s is not FlowState.SUCCESS)


# -- flows -------------------------------------------------------------------------------


def flow_error(detail: FlowDetail) -> str | None:
    """ "Type: message" of what ended the flow (a failed revert first), if anything did."""
    if detail.state not in _FAILED:
        return None
    for atom in detail.atoms.values():
        if atom.revert_failure is not None:
            return error_text(atom.revert_failure)
    failed = [(name, a.failure) for name, a in detail.atoms.items() if a.failure is not None]
    if len(failed) == 1:
        return error_text(failed[0][1])
    if failed:
        return "; ".join(f"{name}: {error_text(f)}" for name, f in failed)
    return _cancelled(detail)


def _cancelled(detail: FlowDetail) -> str | None:
    """ "FlowCancelled: ..." when the flow was cancelled on request, else None."""
    cancelled = cancellation(detail.name, detail.meta)
    return None if cancelled is None else error_text(cancelled)


def waits_of(detail: FlowDetail) -> tuple[WaitingFor, ...]:
    """The waits a WAITING flow is stopped at, in the order its atoms were recorded.

    A wait is recorded as reached (`meta["wait"]`) while its atom is RUNNING;
    the record is replaced when it ends. Empty unless the flow is WAITING: a
    running flow's reached waits may end at any moment, so only a stopped
    flow's are worth showing.
    """
    if detail.state is not FlowState.WAITING:
        return ()
    out = []
    for atom in detail.atoms.values():
        armed = (atom.meta or {}).get("wait")
        if armed is not None and atom.state is AtomState.RUNNING:
            out.append(WaitingFor(atom.name, armed.get("event"), armed.get("deadline")))
    return tuple(out)


def iso_utc(epoch: float | None) -> str | None:
    """Epoch seconds as ISO 8601 in UTC (None stays None)."""
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()


def failure_lines(detail: FlowDetail) -> list[str]:
    """One line per failed execute or revert, in the order the atoms were recorded."""
    lines = []
    for atom in detail.atoms.values():
        if atom.failure is not None:
            lines.append(f"{atom.name} failed: {error_text(atom.failure)}")
        if atom.revert_failure is not None:
            lines.append(f"reverting {atom.name} failed: {error_text(atom.revert_failure)}")
    cancelled = _cancelled(detail)
    if cancelled is not None:
        lines.insert(0, cancelled)
    return lines


@dataclass(frozen=True)
class FlowStatus:
    """Where one flow stands, as its record says (what a status URL shows).

    `results` (every provided value, store included) is set once the flow
    ended SUCCESS; `error` ("Type: message") once it ended any other way;
    `waiting_for` lists the waits it is stopped at while WAITING.
    `unreverted` names the atoms that ran and were not reverted when the flow
    ended UNCOMPENSATED or STUCK_PAST_PIVOT (a person has to see to them).
    """

    flow_id: str
    name: str
    state: FlowState
    results: Mapping[str, Any] | None = None
    error: str | None = None
    atoms: Sequence[AtomReport] = ()
    waiting_for: tuple[WaitingFor, ...] = ()
    unreverted: tuple[str, ...] = ()

    @property
    def done(self) -> bool:
        """True once the flow ended (SUCCESS, REVERTED, FAILURE, UNCOMPENSATED or
        STUCK_PAST_PIVOT)."""
        return self.state in _ENDED

    @property
    def ok(self) -> bool:
        return self.state is FlowState.SUCCESS

    @classmethod
    def of(cls, detail: FlowDetail, results: Mapping[str, Any] | None = None) -> FlowStatus:
        """The status of a flow record (`results` as computed by its engine, if known)."""
        return cls(
            flow_id=detail.uuid,
            name=detail.name,
            state=detail.state,
            results=dict(results) if results is not None else None,
            error=flow_error(detail),
            atoms=tuple(describe_flow(detail)),
            waiting_for=waits_of(detail),
            unreverted=unreverted_of(detail),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (values JSON cannot hold are given as their repr)."""
        return {
            "flow_id": self.flow_id,
            "name": self.name,
            "state": str(self.state),
            "results": plain_json(self.results),
            "error": self.error,
            "atoms": [
                {"name": a.name, "state": a.state, "attempts": a.attempts} for a in self.atoms
            ],
            "waiting_for": [
                {"atom": w.atom, "event": w.event, "deadline": iso_utc(w.deadline)}
                for w in self.waiting_for
            ],
            "unreverted": list(self.unreverted),
        }


async def read_flow_status(backend: Backend, flow_id: str) -> FlowStatus:
    """The status of a stored flow (`NotFound` if there is none with this id)."""
    detail = await backend.load_flow(flow_id)
    results = _stored_results(detail) if detail.state is FlowState.SUCCESS else None
    return FlowStatus.of(detail, results)


def _stored_results(detail: FlowDetail) -> dict[str, Any] | None:
    """What a finished flow provided, read back through the flow its factory builds."""
    saved = detail.meta.get("factory")
    if saved is None:
        return None
    try:
        flow = FactoryRef.from_dict(saved).build()
        engine = Engine(flow, storage=Storage(detail))  # in memory: reads only
    except (ZagError, ImportError, TypeError) as exc:
        logger.warning("flow %s: cannot rebuild it to read its results: %s", detail.uuid, exc)
        return None
    return engine.storage.fetch_all()


# -- jobs --------------------------------------------------------------------------------


def job_outcome(
    job: Job,
    state: FlowState,
    results: Mapping[str, Any] | None,
    error: BaseException | None,
) -> JobOutcome:
    """What a finished job records: its flow's results, or what ended the flow."""
    if state is FlowState.SUCCESS:
        return JobOutcome(job.uuid, job.flow_id, "SUCCESS", plain_json(results))
    return JobOutcome(
        job.uuid, job.flow_id, str(state), error=None if error is None else error_text(error)
    )


@dataclass(frozen=True)
class JobOnBoard:
    """What the board says of one job: the job while it is there, its outcome once it ended."""

    job_id: str
    job: Job | None = None
    owner: str | None = None
    outcome: JobOutcome | None = None

    @property
    def state(self) -> JobState:
        """COMPLETE or TRASHED once ended; else CLAIMED when it has an owner, or UNCLAIMED."""
        if self.outcome is not None:
            return JobState.TRASHED if self.outcome.state == "TRASHED" else JobState.COMPLETE
        return JobState.CLAIMED if self.owner is not None else JobState.UNCLAIMED

    @property
    def flow_id(self) -> str:
        """The id of the job's flow record."""
        if self.outcome is not None:
            return self.outcome.flow_id
        assert self.job is not None
        return self.job.flow_id


async def find_job(board: JobBoard, job_id: str) -> JobOnBoard:
    """Where a job is: on the board, or ended (`JobNotFound`, the board's, if neither)."""
    missing: JobNotFound | None = None
    for _ in range(2):
        outcome = await board.outcome(job_id)
        if outcome is not None:
            return JobOnBoard(job_id, outcome=outcome)
        try:
            job = await board.get(job_id)
            owner = await board.find_owner(job_id)
        except JobNotFound as exc:
            missing = exc  # or it finished between the two reads: its outcome is there now
            continue
        return JobOnBoard(job_id, job=job, owner=owner)
    assert missing is not None
    raise missing


@dataclass(frozen=True)
class JobStatus:
    """Where one posted job stands: its board state and its flow's status.

    `state` is the job's `JobState`: UNCLAIMED, CLAIMED (by `owner`),
    COMPLETE (its flow ended SUCCESS or REVERTED) or TRASHED (`error` says why).
    """

    job_id: str
    state: JobState
    flow: FlowStatus
    owner: str | None = None
    error: str | None = None
    outcome: JobOutcome | None = field(default=None, repr=False)

    @property
    def done(self) -> bool:
        """True once the job was consumed or trashed."""
        return self.state in (JobState.COMPLETE, JobState.TRASHED)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {
            "job_id": self.job_id,
            "state": str(self.state),
            "owner": self.owner,
            "error": self.error,
            "flow": self.flow.to_dict(),
        }


async def read_job_status(board: JobBoard, backend: Backend, job_id: str) -> JobStatus:
    """The status of a posted job (`JobNotFound` if the board never had it)."""
    try:
        found = await find_job(board, job_id)
    except JobNotFound:
        raise JobNotFound(f"no job {job_id!r} on {board.url}") from None
    flow = await read_flow_status(backend, found.flow_id)
    state = found.state
    error = None
    if found.outcome is not None and state is JobState.TRASHED:
        error = found.outcome.error
    return JobStatus(job_id, state, flow, owner=found.owner, error=error, outcome=found.outcome)
