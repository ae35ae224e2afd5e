"""A node's status board: actors post what they know, readers take a consistent copy.

Reading status must never wait on an actor's mailbox (a busy or stuck actor would hide
exactly what an operator wants to see), so actors write their fields here as they go.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields
from typing import Any

from actors.metrics import NodeMetrics
from protocol.ids import MemberId

__all__ = ["StatusBoard", "StatusFields"]


@dataclass(frozen=True, slots=True)
class StatusFields:
    role: str = "follower"
    term: int = 0
    leader: MemberId | None = None
    commit_index: int = 0
    applied_index: int = 0
    last_log_index: int = 0
    snapshot_index: int = 0
    voters: tuple[MemberId, ...] = ()
    learners: tuple[MemberId, ...] = ()
    sessions: int = 0
    pending_server_requests: int = 0
    storage_failure: str | None = None
    #: Peer frames the consensus actor dropped (undecodable or misaddressed).
    peer_frames_dropped: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class StatusBoard:
    """Thread-safe holder of :class:`StatusFields`.

    Actors post after every batch they handle, readers are rare (an operator, a test),
    so an update only merges the changes into a dict and :meth:`read` builds the
    frozen copy: a ``dataclasses.replace`` per batch cost the leader ~3% of its time.
    """

    _NAMES = frozenset(f.name for f in fields(StatusFields))

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, Any] = {}
        #: Counters and histograms the actors bump (see :mod:`actors.metrics`).
        self.metrics = NodeMetrics()

    def update(self, **changes: Any) -> None:
        """Set the named fields (``TypeError`` for a name ``StatusFields`` lacks)."""
        if not changes.keys() <= self._NAMES:
            unknown = ", ".join(sorted(changes.keys() - self._NAMES))
            raise TypeError(f"StatusFields has no field(s) {unknown}")
        with self._lock:
            self._values.update(changes)

    def read(self) -> StatusFields:
        """A consistent copy of every field."""
        with self._lock:
            values = dict(self._values)
        return StatusFields(**values)
