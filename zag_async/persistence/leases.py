"""Flow leases: who may advance a stored flow now, and until when.

A version check alone lets a second engine load a flow that a live engine is
running and start its atoms again before the first engine's next write is
refused. A lease (owner and expiry, kept on the flow's row and renewed while
the flow runs) makes that second load fail at once with `FlowBusy` instead.
An owner that dies stops renewing, so its lease lapses and anyone may resume.

The default owner names this engine's host and process (`host:pid:node.token`)
so that a lease left by a process that is known to be gone (this process, once
the engine's run is over, or a dead process of this machine and PID namespace)
is free at once instead of after its expiry.
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

__all__ = ["DEFAULT_LEASE", "Holder", "Lease", "abandoned", "default_owner"]

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


def default_owner() -> str:
    """A new owner name for one engine: `host:pid:node.token`."""
    return f"{_HOST}:{os.getpid()}:{_NODE or 'x'}.{secrets.token_hex(4)}"


def abandoned(owner: str) -> bool:
    """True when `owner` is a default owner whose process is known to be gone,
    or one of this process whose engine is no longer running."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or not _NODE:
        return False
    host, pid_text, token = parts
    if host != _HOST or token.partition(".")[0] != _NODE or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return owner not in _LIVE
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
    """One engine's lease on its flow: the owner name, how long a term lasts,
    and whether it is held now.

    While held, the lease is registered as live in this process, so
    `abandoned()` does not hand it to another engine of this process early.
    """

    def __init__(self, owner: str | None = None, seconds: float = DEFAULT_LEASE) -> None:
        if not (isinstance(seconds, int | float) and seconds > 0):
            raise ConfigurationError(f"lease must be a number of seconds > 0, got {seconds!r}")
        self.owner = owner if owner is not None else default_owner()
        self.seconds = float(seconds)
        self.held = False

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
