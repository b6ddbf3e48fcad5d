"""The scheduler alone: every rule driven by hand, with no event loop and no atom called.

The engine's loop only calls what `pick()` returns and feeds back `Outcome`s;
these tests play that part, so each rule of the model is checked as a plain
state machine step.
"""

from __future__ import annotations

from typing import Any

import zag_async as zag
from zag_async.errors import AtomInterrupted
from zag_async.failure import Failure
from zag_async.scheduler import Outcome, Scheduler

S = zag.AtomState


@zag.task(provides="x")
def make() -> int:
    return 1


@zag.task(provides="y", idempotent=False)
def double(x: int) -> int:
    return 2 * x


@zag.task
def use(y: int) -> None:
    return None


def side(name: str) -> zag.Atom:
    def step() -> None:
        return None

    return zag.task(name=name)(step)


def scheduler_for(flow: zag.Flow, **options: Any) -> Scheduler:
    """A scheduler set up as an engine would set it up, never run (no event loop)."""
    scheduler = zag.Engine(flow, **options).scheduler
    scheduler.scan()
    return scheduler


def names(scheduler: Scheduler, picked: list[Any]) -> list[tuple[str, str]]:
    return [(kind, scheduler.nodes[i].name) for kind, i, _ in picked]


def run_ok(scheduler: Scheduler, values: dict[str, Any]) -> list[tuple[str, str]]:
    """Pick repeatedly, answering each call from `values` (a Failure fails it)."""
    trace: list[tuple[str, str]] = []
    while True:
        picked, decide = scheduler.pick()
        if not picked:
            return trace  # done, or stopped at a decider (the caller asks it)
        trace += names(scheduler, picked)
        for _, i, _ in picked:
            scheduler.started(i)
        outcomes: list[Outcome] = []
        for kind, i, _ in picked:
            name = scheduler.nodes[i].name
            value = values.get(name) if kind == "exec" else None
            outcomes.append((kind, i, not isinstance(value, Failure), value, 0.0))
        scheduler.finished(outcomes)
        if scheduler.retrying:
            scheduler.settle_retries()


def boom() -> Failure:
    return Failure.from_exception(RuntimeError("boom"))


def test_a_linear_flow_runs_in_order_with_arguments_from_providers() -> None:
    scheduler = scheduler_for(zag.linear("f", make, double, use))
    picked, _ = scheduler.pick()
    assert names(scheduler, picked) == [("exec", "make")]
    scheduler.started(picked[0][1])
    scheduler.finished([("exec", picked[0][1], True, 5, 0.0)])
    picked, _ = scheduler.pick()
    assert names(scheduler, picked) == [("exec", "double")]
    assert picked[0][2] == {"x": 5}
    assert scheduler.verdict() == (zag.FlowState.FAILURE, True)  # work left: not finished


def test_success_is_the_verdict_once_everything_ran() -> None:
    scheduler = scheduler_for(zag.linear("f", make, double, use))
    trace = run_ok(scheduler, {"make": 1, "double": 2})
    assert trace == [("exec", "make"), ("exec", "double"), ("exec", "use")]
    assert scheduler.verdict() == (zag.FlowState.SUCCESS, False)
    assert not scheduler.work_left()


def test_a_failure_reverts_itself_then_what_ran_before_it_in_reverse_order() -> None:
    scheduler = scheduler_for(zag.linear("f", make, double, use))
    trace = run_ok(scheduler, {"make": 1, "double": 2, "use": boom()})
    assert trace == [
        ("exec", "make"),
        ("exec", "double"),
        ("exec", "use"),
        ("revert", "use"),
        ("revert", "double"),
        ("revert", "make"),
    ]
    assert [d.state for d in scheduler.details] == [S.REVERTED] * 3
    assert scheduler.verdict() == (zag.FlowState.REVERTED, False)


def test_independent_atoms_are_picked_together_within_max_concurrency() -> None:
    flow = zag.unordered("u", side("a"), side("b"), side("c"))
    assert len(scheduler_for(flow).pick()[0]) == 3
    limited = scheduler_for(flow, max_concurrency=2)
    picked, _ = limited.pick()
    assert len(picked) == 2
    for _, i, _ in picked:
        limited.started(i)
    assert limited.pick() == ([], None)  # no room until one finishes


def test_a_retry_controller_reverts_its_scope_and_runs_it_again() -> None:
    flow = zag.linear("f", make, double, retry=zag.retry.Times(2))
    scheduler = scheduler_for(flow)
    failures = iter([boom()])

    trace: list[tuple[str, str]] = []
    while True:
        picked, _ = scheduler.pick()
        if not picked:
            break
        trace += names(scheduler, picked)
        for kind, i, _ in picked:
            scheduler.started(i)
            name = scheduler.nodes[i].name
            value: Any = next(failures, 4) if kind == "exec" and name == "double" else 1
            scheduler.finished([(kind, i, not isinstance(value, Failure), value, 0.0)])
        scheduler.settle_retries()
    controller = scheduler.nodes[0].name
    assert trace == [
        ("exec", controller),
        ("exec", "make"),
        ("exec", "double"),
        ("revert", "double"),
        ("revert", "make"),
        ("exec", controller),
        ("exec", "make"),
        ("exec", "double"),
    ]
    assert scheduler.verdict() == (zag.FlowState.SUCCESS, False)


def test_picking_stops_at_a_decider_and_a_rejection_skips_the_target() -> None:
    a, b = side("a"), side("b")
    flow = zag.graph("g", a, b).link(a, b, decider=lambda history: False)
    scheduler = scheduler_for(flow)
    run_ok(scheduler, {})  # runs a, then stops at b's decider
    picked, decide = scheduler.pick()
    assert picked == [] and decide is not None
    [(spec, history)] = scheduler.deciders(decide)
    assert history == {"a": None}
    scheduler.decided(decide, spec, None)
    assert scheduler.details[decide].state is S.IGNORE
    assert scheduler.pick() == ([], None)
    assert scheduler.verdict() == (zag.FlowState.SUCCESS, False)


def test_a_passing_decider_launches_its_target_in_place() -> None:
    a, b = side("a"), side("b")
    flow = zag.graph("g", a, b).link(a, b, decider=lambda history: True)
    scheduler = scheduler_for(flow)
    run_ok(scheduler, {})
    _, decide = scheduler.pick()
    assert decide is not None
    scheduler.decided(decide, None, None)
    picked, decide_again = scheduler.pick()
    assert names(scheduler, picked) == [("exec", "b")] and decide_again is None


def test_a_resumed_atom_left_running_fails_as_interrupted_unless_idempotent() -> None:
    engine = zag.Engine(zag.linear("f", make, double))
    engine.storage.get("make").state = S.SUCCESS
    engine.storage.get("make").result = 1
    engine.storage.get("double").state = S.RUNNING
    scheduler = engine.scheduler
    scheduler.scan()
    failure = engine.storage.get("double").failure
    assert failure is not None and failure.check(AtomInterrupted)
    picked, _ = scheduler.pick()
    assert names(scheduler, picked) == [("revert", "double")]
