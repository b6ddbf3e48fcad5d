"""Remote workers: run a flow's tasks in other processes over RabbitMQ (`amqp://`).

    async with zag.Worker(url, topic="compute", tasks=[resize]) as worker:   # worker process
        await worker.serve()
    async with zag.RemoteExecutor(url, topics=["compute"]) as executor:      # engine process
        await zag.Engine(flow, executor=executor).run()

Workers on one topic may serve different task lists: a request delivered to
a worker without its task is handed back on the topic while another live
worker announces that task, and dead-lettered (zag.dead, with the reason)
only when none does. Whatever a request holds, it ends answered and acked,
or dead-lettered with its reason: decoding is bounded (`protocol.py`).

`LoopbackExecutor(tasks=[...])` runs the same protocol in one process, without
a broker (for tests). Worker and RemoteExecutor need `pip install
'zag-async[amqp]'`.
"""

from __future__ import annotations

from .loopback import LoopbackExecutor
from .protocol import PROTOCOL_VERSION, Request, Response, task_key

__all__ = [
    "PROTOCOL_VERSION",
    "LoopbackExecutor",
    "RemoteExecutor",
    "Request",
    "Response",
    "Worker",
    "task_key",
]


def __getattr__(name: str) -> object:
    if name in ("Worker", "RemoteExecutor", "DELAY_TIERS_MS"):
        try:
            from . import amqp
        except ImportError as exc:  # pragma: no cover - depends on installed extras
            from ..errors import ConfigurationError

            raise ConfigurationError(
                f"remote workers need: pip install 'zag-async[amqp]' ({exc})"
            ) from exc
        return getattr(amqp, name)
    raise AttributeError(name)
