"""Waits as atoms (`zag.wait_for`, `zag.sleep`, `zag.reject`) and the README's approval example.

The behaviour on each backend (signals, deadlines, resumes) is in
tests/persistence/test_waiting.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

import zag_async as zag
from zag_async.errors import ExecutionError, InvalidAtom
from zag_async.waiting import REJECT_KEY

ROOT = Path(__file__).resolve().parent.parent


def test_wait_for_is_an_atom_that_provides_the_payload() -> None:
    wait = zag.wait_for("approve", event="approval", timeout=5, provides="decision")
    assert isinstance(wait, zag.Atom)
    assert wait.is_wait
    assert not zag.Task.is_wait
    assert wait.name == "approve"
    assert wait.requires == frozenset()
    assert set(wait.provided) == {"decision"}
    assert wait.deadline_from(100.0) == 105.0
    assert zag.wait_for("w", event="e").deadline_from(100.0) is None


def test_sleep_takes_a_delay_or_an_absolute_time() -> None:
    assert zag.sleep("nap", delay=3).deadline_from(10.0) == 13.0
    at = datetime(2030, 1, 1, tzinfo=UTC)
    assert zag.sleep("nap", until=at).deadline_from(10.0) == at.timestamp()
    assert zag.sleep("nap", until=50.0).deadline_from(10.0) == 50.0
    assert zag.sleep("nap", delay=1).event is None


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: zag.sleep("nap"), "exactly one"),
        (lambda: zag.sleep("nap", delay=1, until=5.0), "exactly one"),
        (lambda: zag.sleep("nap", until=datetime(2030, 1, 1)), "timezone-aware"),
        (lambda: zag.wait_for("w", event=""), "event"),
        (lambda: zag.wait_for("w", event="e", timeout=-1), "timeout"),
        (lambda: zag.wait_for("", event="e"), "name"),
    ],
)
def test_bad_waits_are_refused_when_declared(make: object, message: str) -> None:
    with pytest.raises(InvalidAtom, match=message):
        make()  # type: ignore[operator]


def test_reject_makes_a_storable_payload() -> None:
    assert zag.reject("over budget") == {REJECT_KEY: "over budget"}


async def test_a_wait_is_never_called() -> None:
    with pytest.raises(ExecutionError, match="completed by the engine"):
        await zag.wait_for("w", event="e").execute()


def test_waits_compile_into_flows_like_any_atom() -> None:
    @zag.task
    async def after(got: int) -> None:
        return None

    flow = zag.linear("f", zag.wait_for("w", event="e", provides="got"), after)
    engine = zag.Engine(flow, backend=zag.persistence.connect("memory://"))
    assert [n.name for n in engine.compiled.nodes] == ["w", "after"]
    assert engine.storage.flow.meta["events"] == ["e"]
    assert engine.waiting_for == ()


def test_the_readme_approval_example_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Waiting for people and time", 1)[1].split("\n## ", 1)[0]
    [code] = [b for b in re.findall(r"```python\n(.*?)```", section, re.S) if "expense_flow()" in b]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "WAITING ['approval']\npaid E-1 approved by ann\n"


def test_pictures_draw_waits_distinctly() -> None:
    from zag_async.pictures import to_dot, to_mermaid

    @zag.task
    async def step() -> None:
        return None

    flow = zag.linear("f", step, zag.wait_for("approve", event="approval"))
    assert 'n1(["approve"])' in to_mermaid(flow)
    assert 'n0["step"]' in to_mermaid(flow)
    assert 'n1 [label="approve", shape=oval];' in to_dot(flow)
