"""zag-async: reliable multi-step workflows for asyncio.

Declare steps as coroutines, compose them into flows, and run them
concurrently with revert on failure and retries by policy::

    import zag_async as zag

    @zag.task(provides="total")
    async def charge(price: float, qty: int = 1) -> float:
        return price * qty

    results = await zag.run(zag.linear("order", charge), store={"price": 9.5})
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import errors, inspection, jobs, persistence, retry, workers
from .atom import Atom, FunctionTask, Task, task
from .engine import Engine, resume, run
from .errors import WrappedFailure, ZagError
from .events import Event, LoggingListener, PrintingListener, TimingListener, progress
from .factory import FactoryRef
from .failure import Failure
from .flow import Depth, Flow, GraphFlow, LinearFlow, UnorderedFlow, graph, linear, unordered
from .jobs.conductor import Conductor, ConductorEvent
from .models import AtomDetail, FlowDetail, FlowSummary, History, LogBook
from .persistence import connect
from .retry import Decision, Retry
from .service import FlowStatus, JobStatus, ZagService
from .states import AtomState, FlowState, Intention
from .storage import Storage, WritePolicy
from .waiting import Wait, WaitingFor, reject, signal, sleep, wait_for

if TYPE_CHECKING:  # imported lazily at run time (they need the amqp extra)
    from .workers.amqp import RemoteExecutor, Worker

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # Remote workers need aio-pika (the amqp extra): import them on first use.
    if name in ("Worker", "RemoteExecutor"):
        from . import workers

        return getattr(workers, name)
    raise AttributeError(f"module 'zag_async' has no attribute {name!r}")


__all__ = [
    "Atom",
    "AtomDetail",
    "AtomState",
    "Conductor",
    "ConductorEvent",
    "Decision",
    "Depth",
    "Engine",
    "Event",
    "FactoryRef",
    "Failure",
    "Flow",
    "FlowDetail",
    "FlowState",
    "FlowStatus",
    "FlowSummary",
    "FunctionTask",
    "GraphFlow",
    "History",
    "Intention",
    "JobStatus",
    "LinearFlow",
    "LogBook",
    "LoggingListener",
    "PrintingListener",
    "RemoteExecutor",
    "Retry",
    "Storage",
    "Task",
    "TimingListener",
    "UnorderedFlow",
    "Worker",
    "WrappedFailure",
    "Wait",
    "WaitingFor",
    "WritePolicy",
    "ZagError",
    "ZagService",
    "__version__",
    "connect",
    "errors",
    "graph",
    "inspection",
    "jobs",
    "linear",
    "persistence",
    "progress",
    "reject",
    "resume",
    "retry",
    "run",
    "signal",
    "sleep",
    "task",
    "unordered",
    "wait_for",
    "workers",
]
