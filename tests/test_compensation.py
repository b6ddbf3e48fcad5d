"""Issue 13: REVERTED means compensated, revert retries, pivots.

The scheduler is driven by hand first (no event loop: each rule is one state
machine step), then the same rules through the engine, and how the outcome is
shown (status, inspection, metrics).
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import ALWAYS, Boom, Step

import zag_async as zag
from zag_async.compensation import revert_tries
from zag_async.errors import InvalidAtom, NotFound
from zag_async.failure import Failure
from zag_async.inspection import format_flow
from zag_async.retry import RevertRetry
from zag_async.scheduler import Outcome, Scheduler
from zag_async.status import FlowStatus

S = zag.AtomState
F = zag.FlowState
ONCE = RevertRetry(attempts=1)


def scheduler_for(flow: zag.Flow) -> Scheduler:
    """A scheduler set up as an engine would set it up, never run (no event loop)."""
    scheduler = zag.Engine(flow).scheduler
    scheduler.scan()
    return scheduler


def drive(scheduler: Scheduler, answer: dict[str, list[Any]]) -> list[tuple[str, str]]:
    """Pick until nothing is left, answering calls from `answer`.

    `answer["name"]` (or `answer["revert name"]`) is a list of values consumed
    one per call (a `Failure` fails the call); a missing or empty list succeeds.
    """
    trace: list[tuple[str, str]] = []
    while True:
        if scheduler.retrying:
            scheduler.settle_retries()
        picked, _ = scheduler.pick()
        if not picked:
            return trace
        outcomes: list[Outcome] = []
        for kind, i, _ in picked:
            name = scheduler.nodes[i].name
            trace.append((kind, name))
            scheduler.started(i)
            queue = answer.get(name if kind == "exec" else f"revert {name}") or [None]
            value = queue.pop(0) if len(queue) > 1 else queue[0]
            outcomes.append((kind, i, not isinstance(value, Failure), value, 0.0))
        scheduler.finished(outcomes)


def boom(text: str = "boom") -> Failure:
    return Failure.from_exception(Boom(text))


def step(name: str, **options: Any) -> zag.Atom:
    """A task with a revert (a no-op), named `name`."""

    @zag.task(name=name, **options)
    def run() -> None:
        return None

    @run.revert
    def undo() -> None:
        return None

    return run


def pivot(name: str) -> zag.Atom:
    @zag.task(name=name, irreversible=True)
    def run() -> None:
        return None

    return run


def state_of(scheduler: Scheduler) -> dict[str, zag.AtomState]:
    return {n.name: scheduler.details[n.index].state for n in scheduler.nodes}


# -- item 1: REVERTED means compensated ------------------------------------------------------


def test_a_controller_giving_up_with_no_parent_reverts_the_whole_flow() -> None:
    flow = zag.linear(
        "order", step("charge"), zag.linear("sub", step("ship"), retry=zag.retry.Times(2))
    )
    scheduler = scheduler_for(flow)
    trace = drive(scheduler, {"ship": [boom(), boom()]})
    assert trace[-3:] == [("revert", "ship"), ("revert", "sub.retry"), ("revert", "charge")]
    assert scheduler.verdict() == (F.REVERTED, False)
    assert "unreverted" not in scheduler.storage.flow.meta


def test_a_revert_that_fails_for_good_ends_uncompensated_naming_what_is_left() -> None:
    flow = zag.linear("f", step("a"), step("b", revert_retry=ONCE), step("c"))
    scheduler = scheduler_for(flow)
    trace = drive(scheduler, {"c": [boom()], "revert b": [boom("no undo")]})
    assert trace[-2:] == [("revert", "c"), ("revert", "b")]  # a is held back behind b
    assert scheduler.halted
    assert scheduler.verdict() == (F.UNCOMPENSATED, False)
    assert scheduler.storage.flow.meta["unreverted"] == ["a", "b"]
    assert state_of(scheduler) == {"a": S.SUCCESS, "b": S.REVERT_FAILURE, "c": S.REVERTED}


# -- item 2: revert retries ------------------------------------------------------------------


def test_a_failed_revert_is_tried_again_and_counted_in_the_atom_record() -> None:
    flow = zag.linear("f", step("a", revert_retry=RevertRetry(attempts=3)), step("b"))
    scheduler = scheduler_for(flow)
    trace = drive(scheduler, {"b": [boom()], "revert a": [boom(), boom(), None]})
    assert trace.count(("revert", "a")) == 3
    a = scheduler.details[0]
    assert a.state is S.REVERTED and revert_tries(a) == 3
    assert scheduler.verdict() == (F.REVERTED, False)


def test_revert_retries_run_out_into_uncompensated() -> None:
    flow = zag.linear("f", step("a", revert_retry=RevertRetry(attempts=2)), step("b"))
    scheduler = scheduler_for(flow)
    trace = drive(scheduler, {"b": [boom()], "revert a": [boom("1"), boom("2"), None]})
    assert trace.count(("revert", "a")) == 2
    a = scheduler.details[0]
    assert a.state is S.REVERT_FAILURE and a.revert_failure is not None
    assert str(a.revert_failure.exception) == "2"  # the last try's error is kept
    assert scheduler.verdict() == (F.UNCOMPENSATED, False)
    assert scheduler.storage.flow.meta["unreverted"] == ["a"]


def test_a_revert_whose_arguments_cannot_be_found_is_not_tried_again() -> None:
    flow = zag.linear("f", step("a", revert_retry=RevertRetry(attempts=5)), step("b"))
    scheduler = scheduler_for(flow)
    missing = Failure.from_exception(NotFound("no such value"))
    trace = drive(scheduler, {"b": [boom()], "revert a": [missing, None]})
    assert trace.count(("revert", "a")) == 1
    assert scheduler.verdict()[0] is F.UNCOMPENSATED


def test_a_resumed_scheduler_continues_the_revert_count() -> None:
    flow = zag.linear("f", step("a", revert_retry=RevertRetry(attempts=3)), step("b"))
    scheduler = scheduler_for(flow)
    drive(scheduler, {"b": [boom()], "revert a": [boom(), boom(), boom()]})
    # Pretend the process died during the second try: the record says REVERTING, 2 tries.
    a = scheduler.details[0]
    a.state, a.revert_failure, a.meta = S.REVERTING, None, {"revert_tries": 2}
    scheduler.revert_failed = False
    scheduler.scan()
    trace = drive(scheduler, {"revert a": [boom()]})
    assert trace == [("revert", "a")]  # the third and last try, not three more
    assert a.state is S.REVERT_FAILURE and revert_tries(a) == 3


def test_a_retried_scope_starts_its_revert_count_afresh() -> None:
    inner = step("a", revert_retry=RevertRetry(attempts=2))
    flow = zag.linear("f", zag.linear("sub", inner, step("b"), retry=zag.retry.Times(2)))
    scheduler = scheduler_for(flow)
    drive(scheduler, {"b": [boom(), None], "revert a": [boom(), None]})
    assert scheduler.verdict() == (F.SUCCESS, False)
    assert revert_tries(scheduler.details[1]) == 0


# -- item 3: pivots --------------------------------------------------------------------------


def order(attempts: int) -> zag.Flow:
    return zag.linear(
        "order",
        step("reserve"),
        step("charge"),
        pivot("ship"),
        step("notify", retry=zag.retry.Times(attempts)),
    )


def test_past_a_pivot_a_failure_retries_forward_and_reverts_nothing() -> None:
    scheduler = scheduler_for(order(3))
    trace = drive(scheduler, {"notify": [boom(), boom(), None]})
    assert [k for k, _ in trace] == ["exec"] * len(trace)  # no revert at all
    assert [n for _, n in trace].count("notify") == 3
    assert [n for _, n in trace].count("notify.retry") == 1  # run once, not reverted
    assert scheduler.verdict() == (F.SUCCESS, False)
    assert scheduler.storage.failures == {}


def test_past_a_pivot_giving_up_ends_stuck_with_the_failure() -> None:
    scheduler = scheduler_for(order(2))
    trace = drive(scheduler, {"notify": [boom("smtp down")]})
    assert [n for _, n in trace].count("notify") == 2
    assert all(kind == "exec" for kind, _ in trace)
    assert scheduler.halted
    assert scheduler.verdict() == (F.STUCK_PAST_PIVOT, False)
    assert scheduler.storage.flow.meta["unreverted"] == ["reserve", "charge", "ship", "notify"]
    assert str(scheduler.storage.failures["notify"].exception) == "smtp down"
    history = scheduler.details[3].history
    assert history is not None and len(history) == 2


def test_past_a_pivot_with_no_controller_stops_at_the_first_failure() -> None:
    flow = zag.linear("f", step("a"), pivot("p"), step("b"), step("c"))
    scheduler = scheduler_for(flow)
    trace = drive(scheduler, {"b": [boom()]})
    assert trace == [("exec", "a"), ("exec", "p"), ("exec", "b")]
    assert scheduler.verdict() == (F.STUCK_PAST_PIVOT, False)
    assert state_of(scheduler)["c"] is S.PENDING


def test_a_failure_before_the_pivot_ran_reverts_as_usual() -> None:
    flow = zag.linear("f", step("a"), step("b"), pivot("p"))
    scheduler = scheduler_for(flow)
    trace = drive(scheduler, {"b": [boom()]})
    assert trace[-2:] == [("revert", "b"), ("revert", "a")]
    assert scheduler.verdict() == (F.REVERTED, False)


def test_a_pivot_that_fails_is_reverted_like_any_atom() -> None:
    flow = zag.linear("f", step("a"), pivot("p"))
    scheduler = scheduler_for(flow)
    drive(scheduler, {"p": [boom()]})
    assert scheduler.verdict() == (F.REVERTED, False)
    assert state_of(scheduler) == {"a": S.REVERTED, "p": S.REVERTED}


def test_a_pivot_finishing_during_a_revert_is_never_undone() -> None:
    # p runs beside b; b fails first, so the flow reverts; then p succeeds.
    flow = zag.linear("f", step("a"), zag.unordered("par", pivot("p"), step("b")))
    scheduler = scheduler_for(flow)
    picked, _ = scheduler.pick()
    ((_, ia, _),) = picked
    scheduler.started(ia)
    scheduler.finished([("exec", ia, True, None, 0.0)])
    picked, _ = scheduler.pick()
    index = {scheduler.nodes[i].name: i for _, i, _ in picked}
    for i in index.values():
        scheduler.started(i)
    scheduler.finished([("exec", index["b"], False, boom(), 0.0)])
    scheduler.finished([("exec", index["p"], True, None, 0.0)])
    drive(scheduler, {})
    assert state_of(scheduler) == {"a": S.SUCCESS, "p": S.SUCCESS, "b": S.REVERTED}
    assert scheduler.verdict() == (F.STUCK_PAST_PIVOT, False)
    assert scheduler.storage.flow.meta["unreverted"] == ["a", "p"]


# -- validation ------------------------------------------------------------------------------


def test_a_pivot_with_a_revert_is_refused() -> None:
    @zag.task(irreversible=True)
    def wire() -> None:
        return None

    with pytest.raises(InvalidAtom, match="'wire' is irreversible .* has a revert"):

        @wire.revert
        def unwire() -> None:
            return None


def test_a_task_with_a_revert_cannot_be_bound_irreversible() -> None:
    with pytest.raises(InvalidAtom, match="'charge' is irreversible"):
        step("charge").bind(irreversible=True)


def test_a_pivot_with_a_revert_retry_is_refused() -> None:
    with pytest.raises(InvalidAtom, match="'wire' is irreversible .* revert_retry"):
        zag.task(name="wire", irreversible=True, revert_retry=ONCE)(lambda: None)


def test_a_class_pivot_with_a_revert_method_is_refused() -> None:
    class Wire(zag.Task):
        irreversible = True

        async def execute(self) -> None:
            return None

        async def revert(self, **kwargs: Any) -> None:
            return None

    with pytest.raises(InvalidAtom, match="'Wire' is irreversible"):
        Wire()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"revert_retry": 3}, "'t': revert_retry= takes a policy"),
        ({"irreversible": "yes"}, "'t': irreversible must be True or False"),
    ],
)
def test_bad_compensation_options_name_the_atom(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidAtom, match=message):
        zag.task(name="t", **options)(lambda: None)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"attempts": 0}, "attempts must be a whole number >= 1"),
        ({"attempts": 1.5}, "attempts must be a whole number >= 1"),
        ({"delay": -1}, "delay must be a number of seconds >= 0"),
        ({"backoff": 0.5}, "backoff must be >= 1"),
        ({"max_delay": -1}, "max_delay must be a number of seconds >= 0"),
    ],
)
def test_revert_retry_settings_are_checked(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidAtom, match=f"RevertRetry: {message}"):
        RevertRetry(**options)


def test_revert_retry_pauses_grow_up_to_the_cap() -> None:
    policy = RevertRetry(attempts=5, delay=1.0, backoff=3.0, max_delay=5.0)
    assert [policy.delay_before(n) for n in range(5)] == [0.0, 1.0, 3.0, 5.0, 5.0]


def test_the_default_revert_retry_is_a_few_quick_tries() -> None:
    atom = step("a")
    assert atom.revert_policy == RevertRetry()
    assert atom.revert_policy.attempts == 3
    assert atom.bind(name="b").revert_policy == RevertRetry()
    five = RevertRetry(attempts=5)
    assert step("c", revert_retry=five).bind(name="d").revert_policy is five


# -- through the engine ----------------------------------------------------------------------


async def test_a_flaky_refund_is_tried_again_and_the_flow_ends_reverted(
    calls: list[str],
) -> None:
    tries: list[int] = []

    @zag.task(provides="payment", revert_retry=RevertRetry(attempts=3, delay=0.01))
    async def charge() -> str:
        calls.append("charge")
        return "P-1"

    @charge.revert
    async def refund(*, result: Any) -> None:
        tries.append(1)
        if len(tries) < 3:
            raise ConnectionError("payment API timed out")
        calls.append(f"refund {result}")

    engine = zag.Engine(zag.linear("order", charge, Step("ship", calls, fails=ALWAYS)))
    with pytest.raises(Boom):
        await engine.run()
    assert calls == ["charge", "ship", "revert ship", "refund P-1"]
    assert engine.state is F.REVERTED
    assert revert_tries(engine.storage.get("charge")) == 3


async def test_an_uncompensated_flow_raises_the_revert_error_and_runs_no_more(
    calls: list[str],
) -> None:
    @zag.task(revert_retry=RevertRetry(attempts=2, delay=0))
    async def charge() -> None:
        calls.append("charge")

    @charge.revert
    async def refund() -> None:
        calls.append("refund")
        raise ConnectionError("payment API down")

    engine = zag.Engine(zag.linear("order", charge, Step("ship", calls, fails=ALWAYS)))
    with pytest.raises(ConnectionError, match="payment API down") as caught:
        await engine.run()
    assert isinstance(caught.value.__context__, Boom)  # the original failure rides along
    assert calls == ["charge", "ship", "revert ship", "refund", "refund"]
    assert engine.state is F.UNCOMPENSATED
    status = FlowStatus.of(engine.storage.flow)
    assert status.done and not status.ok
    assert status.unreverted == ("charge",)
    assert status.error == "ConnectionError: payment API down"
    assert status.to_dict()["unreverted"] == ["charge"]
    assert "not reverted: charge" in format_flow(engine.storage.flow)
    with pytest.raises(ConnectionError):
        await engine.run()  # ended: re-raises, calls nothing
    assert calls.count("refund") == 2


async def test_the_end_event_names_the_unreverted_atoms(calls: list[str]) -> None:
    events: list[zag.Event] = []

    class Stuck(Step):
        async def revert(self, **kwargs: Any) -> None:
            raise RuntimeError("stuck")

    flow = zag.linear("f", Stuck("a", calls, revert_retry=ONCE), Step("b", calls, fails=ALWAYS))
    with pytest.raises(RuntimeError):
        await zag.Engine(flow, listeners=[events.append]).run()
    end = [e for e in events if e.kind == "flow"][-1]
    assert end.state == "UNCOMPENSATED"
    assert end.details == {"unreverted": ["a"]}


async def test_a_pivot_order_retries_notify_forward_then_stops_past_the_pivot(
    calls: list[str],
) -> None:
    @zag.task(irreversible=True)
    async def ship() -> None:
        calls.append("ship")

    flow = zag.linear(
        "order",
        Step("reserve", calls),
        Step("charge", calls),
        ship,
        Step("notify", calls, fails=ALWAYS, retry=zag.retry.Times(3)),
    )
    engine = zag.Engine(flow)
    with pytest.raises(Boom, match="notify failed"):
        await engine.run()
    assert calls == ["reserve", "charge", "ship", "notify", "notify", "notify"]
    assert engine.state is F.STUCK_PAST_PIVOT
    status = FlowStatus.of(engine.storage.flow)
    assert status.done and status.error is not None and "notify failed" in status.error
    assert status.unreverted == ("reserve", "charge", "ship", "notify")


async def test_a_forward_retry_waits_out_the_controller_delay(calls: list[str]) -> None:
    import time

    @zag.task(irreversible=True)
    async def ship() -> None:
        calls.append("ship")

    notify = Step("notify", calls, fails=1, retry=zag.retry.Times(2, delay=0.2))
    started = time.monotonic()
    await zag.run(zag.linear("order", ship, notify))
    assert time.monotonic() - started >= 0.2
    assert calls == ["ship", "notify", "notify"]


def test_metrics_count_unreverted_atoms_and_the_new_end_states() -> None:
    from zag_async.metrics import Metrics

    metrics = Metrics()
    metrics(zag.Event("flow", "order", "UNCOMPENSATED", details={"unreverted": ["charge"]}))
    metrics(zag.Event("flow", "order", "STUCK_PAST_PIVOT", details={"unreverted": ["ship"]}))
    read = metrics.registry.get_sample_value
    assert read("zag_flows_total", {"flow": "order", "state": "UNCOMPENSATED"}) == 1
    assert read("zag_flows_total", {"flow": "order", "state": "STUCK_PAST_PIVOT"}) == 1
    assert read("zag_atoms_unreverted_total", {"flow": "order", "atom": "charge"}) == 1
    assert read("zag_atoms_unreverted_total", {"flow": "order", "atom": "ship"}) == 1


def test_pictures_draw_a_pivot_with_a_double_border() -> None:
    from zag_async.pictures import to_dot, to_mermaid

    flow = zag.linear("order", step("charge"), pivot("ship"))
    mermaid = to_mermaid(flow)
    assert '[["ship"]]' in mermaid and '["charge"]' in mermaid
    dot = to_dot(flow)
    assert [line for line in dot.splitlines() if "peripheries=2" in line] == [
        '        n1 [label="ship", peripheries=2];'
    ]
