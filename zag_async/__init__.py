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

from . import errors, retry
from .atom import Atom, FunctionTask, Task, task
from .engine import Engine, run
from .errors import WrappedFailure, ZagError
from .events import Event, LoggingListener, PrintingListener, TimingListener, progress
from .failure import Failure
from .flow import Depth, Flow, GraphFlow, LinearFlow, UnorderedFlow, graph, linear, unordered
from .retry import Decision, History, Retry
from .states import AtomState, FlowState, Intention
from .storage import AtomDetail, FlowDetail, Storage

__version__ = "0.1.0"

__all__ = [
    "Atom",
    "AtomDetail",
    "AtomState",
    "Decision",
    "Depth",
    "Engine",
    "Event",
    "Failure",
    "Flow",
    "FlowDetail",
    "FlowState",
    "FunctionTask",
    "GraphFlow",
    "History",
    "Intention",
    "LinearFlow",
    "LoggingListener",
    "PrintingListener",
    "Retry",
    "Storage",
    "Task",
    "TimingListener",
    "UnorderedFlow",
    "WrappedFailure",
    "ZagError",
    "__version__",
    "errors",
    "graph",
    "linear",
    "progress",
    "retry",
    "run",
    "task",
    "unordered",
]
