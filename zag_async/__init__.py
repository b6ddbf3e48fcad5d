"""zag-async: reliable multi-step workflows for asyncio.

Declare steps as coroutines, compose them into flows, and run them
concurrently with revert on failure and retries by policy::

    import zag_async as zag

    @zag.task(provides="total")
    async def charge(price: float, qty: int = 1) -> float:
        return price * qty

    results = await zag.run(zag.linear("order", charge), store={"price": 9.5})

Public names are imported on first use, so `import zag_async` costs a few
milliseconds and a program pays only for the parts it touches: running a flow
loads neither the job boards, nor the workers, nor the service.
"""

from __future__ import annotations

import importlib

# Not `from typing import TYPE_CHECKING`: importing typing would be most of the
# cost of `import zag_async`. Type checkers treat any `TYPE_CHECKING` as true.
TYPE_CHECKING = False
if TYPE_CHECKING:  # the same names, resolved at run time by __getattr__
    from . import errors, inspection, jobs, persistence, retry, workers
    from .atom import Atom, FunctionTask, Task, task
    from .control import cancel_flow, suspend_flow
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
    from .workers.amqp import RemoteExecutor, Worker

__version__ = "0.1.0"

#: public name -> the submodule that defines it ("" when the name is that submodule)
_LAZY: dict[str, str] = {
    **dict.fromkeys(["errors", "inspection", "jobs", "persistence", "retry", "workers"], ""),
    **dict.fromkeys(["Atom", "FunctionTask", "Task", "task"], "atom"),
    **dict.fromkeys(["cancel_flow", "suspend_flow"], "control"),
    **dict.fromkeys(["Engine", "resume", "run"], "engine"),
    **dict.fromkeys(["WrappedFailure", "ZagError"], "errors"),
    **dict.fromkeys(
        ["Event", "LoggingListener", "PrintingListener", "TimingListener", "progress"], "events"
    ),
    "FactoryRef": "factory",
    "Failure": "failure",
    **dict.fromkeys(
        ["Depth", "Flow", "GraphFlow", "LinearFlow", "UnorderedFlow", "graph", "linear"], "flow"
    ),
    "unordered": "flow",
    **dict.fromkeys(["Conductor", "ConductorEvent"], "jobs.conductor"),
    **dict.fromkeys(["AtomDetail", "FlowDetail", "FlowSummary", "History", "LogBook"], "models"),
    "connect": "persistence",
    **dict.fromkeys(["Decision", "Retry"], "retry"),
    **dict.fromkeys(["FlowStatus", "JobStatus", "ZagService"], "service"),
    **dict.fromkeys(["AtomState", "FlowState", "Intention"], "states"),
    **dict.fromkeys(["Storage", "WritePolicy"], "storage"),
    **dict.fromkeys(["Wait", "WaitingFor", "reject", "signal", "sleep", "wait_for"], "waiting"),
    # Remote workers need aio-pika (the amqp extra); `workers` says so when it is missing.
    **dict.fromkeys(["RemoteExecutor", "Worker"], "workers"),
}

#: Submodules that `import zag_async` loaded eagerly before it turned lazy: code that
#: reached them as attributes (`zag.status.read_flow_status`) keeps working.
_SUBMODULES = frozenset(
    {
        "atom",
        "backoff",
        "bus",
        "calls",
        "codec",
        "compensation",
        "compiler",
        "engine",
        "events",
        "execution",
        "factory",
        "failure",
        "flow",
        "models",
        "resolver",
        "scheduler",
        "service",
        "service_config",
        "states",
        "status",
        "storage",
        "waiting",
    }
)


# PEP 562: tests/test_startup_imports.py pins what `import zag_async` and a first flow load.
def __getattr__(name: str) -> object:
    """Import the submodule behind a public name on first use, then cache the name here."""
    where = _LAZY.get(name)
    if where:
        value = getattr(importlib.import_module(f"{__name__}.{where}"), name)
    elif where == "" or name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module 'zag_async' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


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
    "Wait",
    "WaitingFor",
    "Worker",
    "WrappedFailure",
    "WritePolicy",
    "ZagError",
    "ZagService",
    "__version__",
    "cancel_flow",
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
    "suspend_flow",
    "task",
    "unordered",
    "wait_for",
    "workers",
]
