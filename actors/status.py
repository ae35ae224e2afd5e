"""A node's status board: actors post what they know, readers take a consistent copy.

Reading status must never wait on an actor's mailbox (a busy or stuck actor would hide
exactly what an operator wants to see), so actors write their fields here as they go.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Any

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
    extra: dict[str, Any] = field(default_factory=dict)


class StatusBoard:
    """Thread-safe holder of :class:`StatusFields`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fields = StatusFields()

    def update(self, **changes: Any) -> None:
        with self._lock:
            self._fields = replace(self._fields, **changes)

    def read(self) -> StatusFields:
        with self._lock:
            return self._fields
