"""Flow leases: who may advance a stored flow now, and until when.

A version check alone lets a second engine load a flow that a live engine is
running and start its atoms again before the first engine's next write is
refused. A lease (owner and expiry, kept on the flow's row and renewed while
the flow runs) makes that second load fail at once with `FlowBusy` instead.
An owner that dies stops renewing, so its lease lapses and anyone may resume.

A lease is held in the name of one engine: `host:pid:node.token` (its host and
process), prefixed with `owner@` when the engine was given a stable owner (a
service's name, a job board claim). So a lease is free at once, instead of
after its expiry, to the same stable owner (a restarted service taking its own
flows back) and whenever its process is known to be gone (this process once the
engine's run is over, or a dead process of this machine and PID namespace).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import socket
import weakref
from dataclasses import dataclass

from ..errors import ConfigurationError

__all__ = ["DEFAULT_LEASE", "Holder", "Lease", "abandoned", "engine_name"]

#: Seconds a lease lasts unless renewed (renewed every third of that while running).
DEFAULT_LEASE = 30.0


def _node() -> str:
    """This machine and PID namespace, or "" where that cannot be told."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as boot:
            boot_id = boot.read().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return ""
    seed = f"{socket.gethostname()}|{boot_id}|{namespace}"
    return hashlib.sha256(seed.encode()).hexdigest()[:8]


_HOST = socket.gethostname()
_NODE = _node()
#: Leases taken by engines of this process that may still run, by owner.
_LIVE: weakref.WeakValueDictionary[str, Lease] = weakref.WeakValueDictionary()


def engine_name() -> str:
    """A new name for one engine: `host:pid:node.token`."""
    return f"{_HOST}:{os.getpid()}:{_NODE or 'x'}.{secrets.token_hex(4)}"


def abandoned(holder: str) -> bool:
    """True when the engine named by lease holder `holder` is known to be gone:
    its process is a dead one of this machine, or this one and its run is over."""
    parts = holder.rpartition("@")[2].rsplit(":", 2)
    if len(parts) != 3 or not _NODE:
        return False
    host, pid_text, token = parts
    if host != _HOST or token.partition(".")[0] != _NODE or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return holder not in _LIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, not ours to signal
        return False
    return False


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a flow's lease, read when taking it failed."""

    owner: str
    expires_at: float  #: epoch seconds, by the database's clock
    now: float  #: the database's clock when read


class Lease:
    """One engine's lease on its flow: whose it is, how long a term lasts, and
    whether it is held now.

    Attributes:
        stable_owner: the owner the engine was given (None: just this engine).
        owner: the name the lease is held in (`stable_owner@` + the engine's name).

    While held, the lease is registered as live in this process, so
    `abandoned()` does not hand it to another engine of this process early.
    """

    def __init__(self, owner: str | None = None, seconds: float = DEFAULT_LEASE) -> None:
        if not (isinstance(seconds, int | float) and seconds > 0):
            raise ConfigurationError(f"lease must be a number of seconds > 0, got {seconds!r}")
        self.stable_owner = owner
        self.owner = engine_name() if owner is None else f"{owner}@{engine_name()}"
        self.seconds = float(seconds)
        self.held = False

    def may_take_from(self, holder: str) -> bool:
        """Whether this lease may replace `holder`'s live one at once: it has the
        same stable owner (an earlier incarnation: not an engine of this process
        that is still running), or is known to be gone."""
        if (
            self.stable_owner is not None
            and holder.rpartition("@")[0] == self.stable_owner
            and holder not in _LIVE
        ):
            return True
        return abandoned(holder)

    @property
    def renew_every(self) -> float:
        """How often a running engine renews the lease."""
        return self.seconds / 3

    def taken(self) -> None:
        """The stored row now names this lease."""
        self.held = True
        _LIVE[self.owner] = self

    def released(self) -> None:
        """The stored row no longer names this lease (or this engine stopped running)."""
        self.held = False
        self.idle()

    def idle(self) -> None:
        """This engine's run is over: what it left behind is free to this process."""
        with contextlib.suppress(KeyError):
            if _LIVE.get(self.owner) is self:
                del _LIVE[self.owner]

    def __repr__(self) -> str:
        return f"Lease({self.owner!r}, {self.seconds}, held={self.held})"
