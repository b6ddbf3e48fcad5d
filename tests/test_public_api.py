"""The public surface: `zag_async.__all__` and the `zag.errors` tree are a contract."""

from __future__ import annotations

import inspect

import pytest

import zag_async as zag
from zag_async import errors

# Changing this list is an API change: update it on purpose, never to make a test pass.
EXPECTED_ALL = [
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

# (class, its direct parent in the tree drawn in the brief and in errors.py)
ERROR_TREE = [
    (errors.FlowDefinitionError, errors.ZagError),
    (errors.InvalidAtom, errors.FlowDefinitionError),
    (errors.DuplicateAtomName, errors.FlowDefinitionError),
    (errors.MissingRequirements, errors.FlowDefinitionError),
    (errors.AmbiguousProvider, errors.FlowDefinitionError),
    (errors.DependencyCycle, errors.FlowDefinitionError),
    (errors.ExecutionError, errors.ZagError),
    (errors.AtomTimeout, errors.ExecutionError),
    (errors.ResultMismatch, errors.ExecutionError),
    (errors.RemoteFailure, errors.ExecutionError),
    (errors.WrappedFailure, errors.ExecutionError),
    (errors.NotFound, errors.ExecutionError),
    (errors.ConfigurationError, errors.ZagError),
    (errors.InvalidTransition, errors.ZagError),
    (errors.StorageError, errors.ZagError),
    (errors.ConcurrentUpdate, errors.StorageError),
    (errors.FlowBusy, errors.StorageError),
    (errors.StorageUnavailable, errors.StorageError),
    (errors.SerializationError, errors.StorageError),
    (errors.FlowChanged, errors.FlowDefinitionError),
    (errors.AtomInterrupted, errors.ExecutionError),
    (errors.JobError, errors.ZagError),
    (errors.JobNotFound, errors.JobError),
    (errors.NotClaimable, errors.JobError),
    (errors.AlreadyClaimed, errors.NotClaimable),
    (errors.NotYetDue, errors.NotClaimable),
    (errors.ClaimLost, errors.JobError),
    (errors.LockLost, errors.JobError),
    (errors.BoardUnavailable, errors.JobError),
    (errors.NoWorkers, errors.ExecutionError),
    (errors.WorkerLost, errors.ExecutionError),
    (errors.WaitTimeout, errors.ExecutionError),
    (errors.WaitRejected, errors.ExecutionError),
    (errors.SignalRefused, errors.ExecutionError),
    (errors.ControlRefused, errors.ExecutionError),
    (errors.FlowCancelled, errors.ExecutionError),
    (errors.BrokerUnavailable, errors.ExecutionError),
]


def _exception_classes() -> list[type[BaseException]]:
    return [
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, BaseException) and obj.__module__ == errors.__name__
    ]


def test_all_is_pinned() -> None:
    assert sorted(zag.__all__) == EXPECTED_ALL
    assert len(set(zag.__all__)) == len(zag.__all__), "__all__ lists a name twice"


@pytest.mark.parametrize("name", EXPECTED_ALL)
def test_every_public_name_is_importable(name: str) -> None:
    assert getattr(zag, name) is not None
    namespace: dict[str, object] = {}
    exec(f"from zag_async import {name}", namespace)
    assert namespace[name] is getattr(zag, name)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from zag_async import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == EXPECTED_ALL


def test_top_level_aliases_are_the_errors_classes() -> None:
    assert zag.ZagError is errors.ZagError
    assert zag.WrappedFailure is errors.WrappedFailure


def test_errors_all_lists_every_exception_class() -> None:
    defined = {cls.__name__ for cls in _exception_classes()}
    assert set(errors.__all__) == defined
    for name in errors.__all__:
        assert getattr(errors, name).__name__ == name


@pytest.mark.parametrize("cls", _exception_classes(), ids=lambda c: c.__name__)
def test_every_error_is_a_zag_error(cls: type[BaseException]) -> None:
    assert issubclass(cls, errors.ZagError)


def test_error_tree_covers_every_class() -> None:
    in_tree = {child for child, _ in ERROR_TREE} | {errors.ZagError}
    assert in_tree == set(_exception_classes())


@pytest.mark.parametrize(("child", "parent"), ERROR_TREE, ids=lambda c: c.__name__)
def test_error_tree(child: type[BaseException], parent: type[BaseException]) -> None:
    assert issubclass(child, parent)
    # The parent is the nearest zag ancestor: no zag class sits between them.
    zag_bases = [b for b in child.__mro__[1:] if issubclass(b, errors.ZagError)]
    assert zag_bases[0] is parent


def test_atom_timeout_is_also_a_timeout_error() -> None:
    assert issubclass(errors.AtomTimeout, TimeoutError)
    assert isinstance(errors.AtomTimeout("slow", 0.5), TimeoutError)


def test_definition_and_execution_errors_are_separate_branches() -> None:
    assert not issubclass(errors.FlowDefinitionError, errors.ExecutionError)
    assert not issubclass(errors.ExecutionError, errors.FlowDefinitionError)
    assert not issubclass(
        errors.InvalidTransition, (errors.ExecutionError, errors.FlowDefinitionError)
    )


def test_moved_names_keep_their_import_paths() -> None:
    from zag_async import jobs, models, retry, service, status

    assert retry.History is models.History is zag.History
    assert retry.Attempt is models.Attempt
    assert service.FlowStatus is status.FlowStatus is zag.FlowStatus
    assert service.JobStatus is status.JobStatus is zag.JobStatus
    assert jobs.conductor.Conductor is zag.Conductor
    assert jobs.conductor.ConductorEvent is zag.ConductorEvent
