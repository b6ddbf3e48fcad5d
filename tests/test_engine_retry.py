"""Retry controllers: how many attempts, which values, and what each decision reverts."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from conftest import ALWAYS, Boom, Step

import zag_async as zag
from zag_async.retry import Decision, History

S = zag.AtomState


async def test_times_makes_n_attempts_in_total_then_reverts(calls: list[str]) -> None:
    flaky = Step("flaky", calls, fails=ALWAYS)
    engine = zag.Engine(zag.linear("f", flaky, retry=zag.retry.Times(3)))

    with pytest.raises(Boom, match=r"call 3"):
        await engine.run()

    assert flaky.count == 3
    assert calls == ["flaky", "revert flaky"] * 3
    assert engine.state is zag.FlowState.REVERTED
    assert engine.storage.get("flaky").state is S.REVERTED
    assert engine.storage.get("f.retry").state is S.REVERTED


async def test_times_succeeds_when_a_later_attempt_works(calls: list[str]) -> None:
    flaky = Step("flaky", calls, fails=2, provides="out")
    engine = zag.Engine(zag.linear("f", flaky, retry=zag.retry.Times(3, provides="attempt")))

    results = await engine.run()

    assert flaky.count == 3
    assert results == {"attempt": 3, "out": "flaky"}
    assert engine.state is zag.FlowState.SUCCESS
    assert len(engine.storage.get("f.retry").history) == 3


class Recording(zag.retry.Times):
    """Times that keeps a copy of every history it was asked about."""

    def __init__(self, attempts: int, **kwargs: Any) -> None:
        super().__init__(attempts, **kwargs)
        self.histories: list[History] = []

    def on_failure(self, history: History) -> Decision:
        self.histories.append(history)
        return super().on_failure(history)


async def test_history_holds_each_attempts_failures(calls: list[str]) -> None:
    controller = Recording(3, provides="attempt")
    flaky = Step("flaky", calls, fails=ALWAYS, requires=("attempt",))

    with pytest.raises(Boom):
        await zag.run(zag.linear("f", flaky, retry=controller))

    assert [len(h) for h in controller.histories] == [1, 2, 3]
    last = controller.histories[-1]
    assert last.values == [1, 2, 3]
    assert [a.failures["flaky"].message for a in last] == [
        "flaky failed (call 1)",
        "flaky failed (call 2)",
        "flaky failed (call 3)",
    ]
    assert last.failures["flaky"].check(Boom)


async def test_for_each_tries_values_in_order_then_reverts(calls: list[str]) -> None:
    tried: list[str] = []

    @zag.task
    async def connect(host: str) -> None:
        tried.append(host)
        raise ConnectionError(host)

    engine = zag.Engine(
        zag.linear("f", connect, retry=zag.retry.ForEach(["a", "b", "c"], provides="host"))
    )

    with pytest.raises(ConnectionError, match="c"):
        await engine.run()

    assert tried == ["a", "b", "c"]
    assert engine.state is zag.FlowState.REVERTED


async def test_for_each_stops_at_the_first_value_that_works() -> None:
    tried: list[str] = []

    @zag.task(provides="connected")
    async def connect(host: str) -> str:
        tried.append(host)
        if host != "b":
            raise ConnectionError(host)
        return host

    results = await zag.run(
        zag.linear("f", connect, retry=zag.retry.ForEach(["a", "b", "c"], provides="host"))
    )

    assert tried == ["a", "b"]
    assert results == {"host": "b", "connected": "b"}


async def test_empty_for_each_fails_with_a_clear_message(calls: list[str]) -> None:
    engine = zag.Engine(
        zag.linear("f", Step("a", calls), retry=zag.retry.ForEach([], provides="v"))
    )

    with pytest.raises(zag.errors.ExecutionError, match=r"'f\.retry'.*no values"):
        await engine.run()

    assert calls == []


async def test_parameterized_for_each_reads_values_from_the_store() -> None:
    tried: list[int] = []

    @zag.task
    async def use(port: int) -> None:
        tried.append(port)
        raise Boom(str(port))

    controller = zag.retry.ParameterizedForEach(rebind={"values": "ports"}, provides="port")

    with pytest.raises(Boom, match="8081"):
        await zag.run(zag.linear("f", use, retry=controller), store={"ports": [8080, 8081]})

    assert tried == [8080, 8081]


async def test_always_revert_without_an_enclosing_controller_reverts_the_whole_flow(
    calls: list[str],
) -> None:
    # TaskFlow reverted only the subflow and left "a" SUCCESS yet called the flow
    # REVERTED; here REVERTED means everything that ran was compensated.
    engine = zag.Engine(
        zag.linear(
            "outer",
            Step("a", calls),
            zag.linear(
                "sub",
                Step("b", calls),
                Step("c", calls, fails=ALWAYS),
                retry=zag.retry.AlwaysRevert(),
            ),
            Step("d", calls),
        )
    )

    with pytest.raises(Boom, match="c failed"):
        await engine.run()

    assert calls == ["a", "b", "c", "revert c", "revert b", "revert a"]
    assert engine.state is zag.FlowState.REVERTED
    assert engine.storage.get("a").state is S.REVERTED
    assert engine.storage.get("d").state is S.PENDING
    assert engine.storage.get("sub.retry").state is S.REVERTED


@pytest.mark.parametrize("value", [True, False])
async def test_defer_reverts_is_deprecated_and_the_whole_flow_reverts_either_way(
    calls: list[str], value: bool
) -> None:
    flow = zag.linear(
        "outer",
        Step("a", calls),
        zag.linear("sub", Step("b", calls, fails=ALWAYS), retry=zag.retry.AlwaysRevert()),
    )
    with pytest.warns(DeprecationWarning, match="defer_reverts"):
        engine = zag.Engine(flow, defer_reverts=value)

    with pytest.raises(Boom):
        await engine.run()

    assert calls == ["a", "b", "revert b", "revert a"]
    assert engine.state is zag.FlowState.REVERTED
    assert engine.storage.get("a").state is S.REVERTED


async def test_always_revert_all_reverts_the_whole_flow(calls: list[str]) -> None:
    engine = zag.Engine(
        zag.linear(
            "outer",
            Step("a", calls),
            zag.linear("sub", Step("b", calls, fails=ALWAYS), retry=zag.retry.AlwaysRevertAll()),
        )
    )

    with pytest.raises(Boom):
        await engine.run()

    assert calls == ["a", "b", "revert b", "revert a"]
    assert engine.state is zag.FlowState.REVERTED


async def test_exhausted_times_with_revert_all_reverts_the_whole_flow(calls: list[str]) -> None:
    inner = Step("b", calls, fails=ALWAYS)
    engine = zag.Engine(
        zag.linear(
            "outer",
            Step("a", calls),
            zag.linear("sub", inner, retry=zag.retry.Times(2, revert_all=True)),
        )
    )

    with pytest.raises(Boom):
        await engine.run()

    assert inner.count == 2
    assert calls[-2:] == ["revert b", "revert a"]
    assert engine.storage.get("a").state is S.REVERTED


async def test_custom_retry_decides_from_the_failure(calls: list[str]) -> None:
    class RetryTransient(zag.retry.Retry):
        def on_failure(self, history: History) -> Decision:
            if history.failures["job"].check(ConnectionError):
                return Decision.RETRY
            return Decision.REVERT_ALL

    errors = [ConnectionError("blip"), ConnectionError("blip"), PermissionError("denied")]

    @zag.task
    async def job() -> None:
        calls.append("job")
        raise errors.pop(0)

    engine = zag.Engine(
        zag.linear("outer", Step("a", calls), zag.linear("sub", job, retry=RetryTransient()))
    )

    with pytest.raises(PermissionError):
        await engine.run()

    assert calls == ["a", "job", "job", "job", "revert a"]
    assert engine.storage.get("a").state is S.REVERTED


async def test_custom_retry_execute_provides_values(calls: list[str]) -> None:
    class Doubling(zag.retry.Retry):
        def execute(self, history: History) -> int:
            return 2 ** len(history)

        def on_failure(self, history: History) -> Decision:
            return Decision.RETRY if len(history) < 3 else Decision.REVERT

    sizes: list[int] = []

    @zag.task(provides="done")
    async def grow(size: int) -> int:
        sizes.append(size)
        if size < 4:
            raise Boom("too small")
        return size

    results = await zag.run(zag.linear("f", grow, retry=Doubling(provides="size")))

    assert sizes == [1, 2, 4]
    assert results["done"] == 4


async def test_revert_defers_to_an_enclosing_controller_that_retries(calls: list[str]) -> None:
    inner_retry = Recording(2, provides="inner_attempt")
    seen: list[int] = []

    @zag.task(provides="done")
    async def work(inner_attempt: int) -> str:
        seen.append(inner_attempt)
        if len(seen) <= 3:
            raise Boom(f"work failed ({len(seen)})")
        return "ok"

    engine = zag.Engine(
        zag.linear(
            "outer",
            Step("a", calls),
            zag.linear("inner", work, retry=inner_retry),
            retry=zag.retry.Times(2, provides="outer_attempt"),
        )
    )

    results = await engine.run()

    # inner: attempts 1 and 2 fail -> REVERT -> outer RETRY; inner starts over at 1.
    assert seen == [1, 2, 1, 2]
    assert [len(h) for h in inner_retry.histories] == [1, 2, 1]
    assert calls == ["a", "revert a", "a"]
    assert results["outer_attempt"] == 2
    assert results["done"] == "ok"
    assert engine.state is zag.FlowState.SUCCESS


async def test_nested_revert_reaching_an_exhausted_outer_reverts_both(calls: list[str]) -> None:
    engine = zag.Engine(
        zag.linear(
            "top",
            Step("before", calls),
            zag.linear(
                "outer",
                Step("a", calls),
                zag.linear("inner", Step("b", calls, fails=ALWAYS), retry=zag.retry.AlwaysRevert()),
                retry=zag.retry.Times(2),
            ),
        )
    )

    with pytest.raises(Boom):
        await engine.run()

    assert calls == ["before"] + ["a", "b", "revert b", "revert a"] * 2 + ["revert before"]
    assert engine.state is zag.FlowState.REVERTED
    assert engine.storage.get("before").state is S.REVERTED


async def test_task_shorthand_retry_guards_the_atom_alone(calls: list[str]) -> None:
    attempts: list[int] = []

    @zag.task(provides="value", retry=zag.retry.Times(3))
    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise Boom("not yet")
        return "finally"

    engine = zag.Engine(zag.linear("f", Step("a", calls), flaky))

    results = await engine.run()

    assert len(attempts) == 3
    assert calls == ["a"]
    assert results["value"] == "finally"
    assert engine.storage.get("flaky.retry").state is S.SUCCESS
    assert len(engine.storage.get("flaky.retry").history) == 3


async def test_delay_and_backoff_are_honoured() -> None:
    stamps: list[float] = []

    @zag.task
    async def flaky() -> None:
        stamps.append(time.monotonic())
        if len(stamps) < 3:
            raise Boom("again")

    await zag.run(zag.linear("f", flaky, retry=zag.retry.Times(3, delay=0.02, backoff=2.0)))

    assert len(stamps) == 3
    first_gap, second_gap = stamps[1] - stamps[0], stamps[2] - stamps[1]
    assert first_gap >= 0.018
    assert second_gap >= 0.036


async def test_max_delay_caps_the_backoff() -> None:
    stamps: list[float] = []

    @zag.task
    async def flaky() -> None:
        stamps.append(time.monotonic())
        if len(stamps) < 4:
            raise Boom("again")

    started = time.monotonic()
    await zag.run(
        zag.linear("f", flaky, retry=zag.retry.Times(4, delay=0.02, backoff=100.0, max_delay=0.03))
    )

    # Without the cap the third wait alone would be 200 s.
    assert time.monotonic() - started < 5
    assert stamps[3] - stamps[2] >= 0.027


async def test_parallel_retry_never_overrides_revert_all() -> None:
    """TaskFlow bug 2043808: a sibling's RETRY must not undo a REVERT_ALL."""
    started = {"doomed": asyncio.Event(), "flaky": asyncio.Event()}
    runs: list[str] = []

    def failing(name: str, other: str) -> zag.Task:
        @zag.task(name=name)
        async def fail() -> None:
            runs.append(name)
            started[name].set()
            await asyncio.wait_for(started[other].wait(), timeout=5)
            raise Boom(name)

        return fail

    engine = zag.Engine(
        zag.unordered(
            "u",
            zag.linear("A", failing("doomed", "flaky"), retry=zag.retry.AlwaysRevertAll()),
            zag.linear("B", failing("flaky", "doomed"), retry=zag.retry.Times(5)),
        )
    )

    with pytest.raises((Boom, zag.WrappedFailure)):
        await engine.run()

    assert engine.state is zag.FlowState.REVERTED
    assert sorted(runs) == ["doomed", "flaky"]
    assert engine.storage.get("flaky").state in (S.REVERTED, S.PENDING)
    assert engine.storage.get("doomed").state is S.REVERTED


async def test_revert_all_during_a_sibling_retry_wins(calls: list[str]) -> None:
    """The RETRY is under way (its delay running) when the other branch says REVERT_ALL."""
    flaky_reverted = asyncio.Event()
    runs: list[str] = []

    @zag.task
    async def flaky() -> None:
        runs.append("flaky")
        raise Boom("flaky")

    @flaky.revert
    async def undo_flaky(**kwargs: Any) -> None:
        flaky_reverted.set()

    @zag.task
    async def doomed() -> None:
        runs.append("doomed")
        await asyncio.wait_for(flaky_reverted.wait(), timeout=5)
        raise Boom("doomed")

    engine = zag.Engine(
        zag.linear(
            "outer",
            Step("first", calls),
            zag.unordered(
                "u",
                zag.linear("A", doomed, retry=zag.retry.AlwaysRevertAll()),
                zag.linear("B", flaky, retry=zag.retry.Times(5, delay=0.2)),
            ),
        )
    )

    with pytest.raises(Boom, match="doomed"):
        await engine.run()

    assert runs.count("flaky") == 1
    assert engine.state is zag.FlowState.REVERTED
    assert engine.storage.get("first").state is S.REVERTED
    assert calls == ["first", "revert first"]
