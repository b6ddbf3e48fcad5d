"""Every atom option is checked when the atom is defined, with an error from
`zag_async.errors` that names the atom and the option (hostile input included)."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import zag_async as zag
from zag_async.errors import FlowDefinitionError, InvalidAtom, ZagError


async def work(x: int = 1) -> int:
    return x


@pytest.mark.parametrize("timeout", [math.nan, math.inf, -1, 0, True, "5"])
def test_timeout_must_be_positive_and_finite(timeout: Any) -> None:
    with pytest.raises(InvalidAtom, match=r"atom 'work': timeout must be a positive, finite"):
        zag.task(work, timeout=timeout)


@pytest.mark.parametrize("inject", [["ab"], 3, "xy", [("x", 1)]])
def test_inject_must_be_a_mapping(inject: Any) -> None:
    with pytest.raises(InvalidAtom, match=r"atom 'work': inject must be a dict"):
        zag.task(work, inject=inject)


@pytest.mark.parametrize(
    ("provides", "what"),
    [
        (["a", ["b"]], "a provided name"),
        ({"a": 0, 3: 1}, "a provided name"),
        ("", "the provided name"),
        (("a", "a\x00"), "a provided name"),
        (7, "provides must be"),
    ],
)
def test_malformed_provides_name_the_atom(provides: Any, what: str) -> None:
    with pytest.raises(InvalidAtom, match=f"atom 'work': {what}"):
        zag.task(work, provides=provides)


@pytest.mark.parametrize("name", ["a\x00b", "\ud800", "", "x" * 256, 5])
def test_names_every_backend_can_store(name: Any) -> None:
    with pytest.raises(InvalidAtom, match="an atom's name"):
        zag.task(work, name=name)
    with pytest.raises(FlowDefinitionError, match="a flow's name"):
        zag.linear(name)
    with pytest.raises(InvalidAtom, match="a wait's name"):
        zag.wait_for(name, event="e")


def test_rebind_and_idempotent_are_checked() -> None:
    with pytest.raises(InvalidAtom, match=r"atom 'work': rebind of 'x'"):
        zag.task(work, rebind={"x": 3})
    with pytest.raises(InvalidAtom, match=r"atom 'work': idempotent must be True or False"):
        zag.task(work, idempotent="no")
    with pytest.raises(InvalidAtom, match=r"wait 'w': timeout must be a finite"):
        zag.wait_for("w", event="e", timeout=math.nan)


@given(
    name=st.one_of(st.text(max_size=300), st.integers(), st.none()),
    timeout=st.one_of(st.none(), st.floats(allow_nan=True), st.integers(), st.text(max_size=3)),
    provides=st.one_of(
        st.none(),
        st.text(max_size=5),
        st.lists(st.one_of(st.text(max_size=3), st.integers()), max_size=3),
        st.integers(),
    ),
    inject=st.one_of(
        st.none(),
        st.integers(),
        st.text(max_size=3),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    ),
)
def test_any_options_give_an_atom_or_a_zag_error(
    name: Any, timeout: Any, provides: Any, inject: Any
) -> None:
    with contextlib.suppress(ZagError):
        zag.task(work, name=name, timeout=timeout, provides=provides, inject=inject)
