"""Cron schedules: the stored definition of a recurring job and when it fires next.

A board stores `Schedule` records and posts one run at a time; the only clock
arithmetic they need (the next fire time after a board-clock instant) is here,
so croniter stays an optional extra imported in one place.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigurationError
from ..factory import FactoryRef

__all__ = ["Schedule", "check_cron", "next_fire"]


@dataclass(frozen=True)
class Schedule:
    """A job re-posted on a cron schedule; every run starts from the same store."""

    name: str
    cron: str
    factory: FactoryRef
    store: Mapping[str, Any] = field(default_factory=dict)
    priority: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "cron": self.cron,
            "factory": self.factory.to_dict(),
            "store": dict(self.store),
            "priority": self.priority,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Schedule:
        return cls(
            data["name"],
            data["cron"],
            FactoryRef.from_dict(data["factory"]),
            dict(data.get("store", {})),
            data.get("priority", 0),
        )


def next_fire(cron: str, after: float) -> float:
    """The first time strictly after `after` (epoch seconds, UTC) that `cron` fires."""
    try:
        from croniter import croniter
    except ImportError as exc:  # pragma: no cover - depends on installed extras
        raise ConfigurationError("cron schedules need: pip install 'zag-async[cron]'") from exc
    try:
        return float(croniter(cron, after).get_next(float))
    except (ValueError, KeyError) as exc:
        raise ConfigurationError(f"bad cron expression {cron!r}: {exc}") from exc


def check_cron(cron: str) -> None:
    """Raise ConfigurationError if `cron` is not a valid cron expression."""
    next_fire(cron, time.time())
