"""The flow-state backend is `backend=` everywhere (issue 14 item 8); the old
spelling `persistence=` still works, with a DeprecationWarning."""

from __future__ import annotations

import pytest

import zag_async as zag
from zag_async.errors import ConfigurationError
from zag_async.jobs import MemoryBoard


async def test_backend_is_one_name_for_boards_and_conductors() -> None:
    backend = zag.persistence.MemoryBackend()
    async with zag.jobs.connect("memory://", backend=backend) as board:
        assert board.backend is backend
        conductor = zag.Conductor(board, backend=backend)
        assert conductor.backend is backend


async def test_persistence_still_works_with_a_deprecation_warning() -> None:
    backend = zag.persistence.MemoryBackend()
    with pytest.warns(DeprecationWarning, match=r"jobs\.connect\(persistence=\.\.\.\)") as seen:
        board = zag.jobs.connect("memory://", persistence=backend)
    assert seen[0].filename == __file__
    assert board.backend is backend
    with pytest.warns(DeprecationWarning, match=r"MemoryBoard\(persistence=") as seen:
        assert MemoryBoard(persistence=backend).backend is backend
    assert seen[0].filename == __file__  # the warning points at the caller's line
    with pytest.warns(DeprecationWarning, match=r"Conductor\(persistence=") as seen:
        conductor = zag.Conductor(board, persistence=backend)
    assert seen[0].filename == __file__
    assert conductor.backend is backend
    with pytest.warns(DeprecationWarning, match=r"\.backend"):
        assert board.persistence is backend
    with pytest.warns(DeprecationWarning, match=r"\.backend"):
        assert conductor.persistence is backend


def test_both_names_or_neither_is_a_configuration_error() -> None:
    backend = zag.persistence.MemoryBackend()
    with pytest.raises(ConfigurationError, match="backend= only"):
        zag.jobs.connect("memory://", backend=backend, persistence=backend)
    with pytest.raises(ConfigurationError, match="needs backend="):
        zag.jobs.connect("memory://")
    with pytest.raises(ConfigurationError, match="needs backend="):
        zag.Conductor(MemoryBoard(backend=backend))
