"""The REMOTE benchmark's what-if patches still fit the workers' internals.

`benchmarks/remote.py` measures variants of zag's message pattern by
monkeypatching the topology; when `declare_topology` began returning
(exchange, queues) the "classic" patch bound a tuple and three what-if cases
crashed. These tests keep the patch in step with the real function.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import aio_pika
import pytest

from zag_async.workers import topology

from .conftest import channel

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def remote() -> Iterator[ModuleType]:
    """benchmarks/remote.py, imported as the benchmark runner imports it."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import remote as module

        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_zag_as_is_is_not_patched(remote: ModuleType) -> None:
    assert remote.whatif_patches(()) == []


async def test_the_classic_what_if_declares_a_classic_topic_queue_in_the_real_shape(
    remote: ModuleType, amqp_url: str, topic: str
) -> None:
    real = topology.declare_topology
    with remote.patched(remote.whatif_patches(("classic",))):
        async with channel(amqp_url) as ch:
            work, queues = await topology.declare_topology(ch, [topic], 5)
    assert topology.declare_topology is real  # the patch is undone on leaving
    assert work.name == topology.WORK
    assert list(queues) == [topic]
    assert queues[topic].name == topology.topic_queue(topic)
    # Classic, not quorum: the broker refuses to re-declare it as a quorum queue.
    async with channel(amqp_url) as ch:
        with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
            await ch.declare_queue(
                topology.topic_queue(topic), durable=True, arguments={"x-queue-type": "quorum"}
            )
