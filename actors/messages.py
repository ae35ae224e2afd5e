"""Messages between the actors of one node (never on the wire, so plain dataclasses).

The ``RaftAction``/``ServerAction`` types of :mod:`protocol.actions` travel between the
registry and consensus/session as they are; these are the node's internal plumbing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from protocol.actions import QueryAction
from protocol.ids import MemberId
from protocol.raft import LogEntry, SnapshotMeta
from protocol.raft.types import ReadState
from protocol.session import SessionCommand

__all__ = [
    "Applied",
    "ApplyEntries",
    "InstallSnapshot",
    "PeerFrame",
    "ProposeRetry",
    "Reannounce",
    "RetryCheck",
    "RetryHint",
    "RunQueries",
    "SnapshotTaken",
    "Tick",
]


@dataclass(frozen=True, slots=True)
class Tick:
    """A timer tick; ``now_ms`` is the wall clock in integer milliseconds.

    ``handled``, if set (by a :class:`actors.clock.TickGate`), is called once the
    receiving actor has handled the tick (:meth:`actors.base.NodeActor.on_receive` does
    that, whatever the handler did), so the gate may queue the next one.
    """

    now_ms: int
    handled: Callable[[], None] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class PeerFrame:
    sender: MemberId
    frame: bytes


@dataclass(frozen=True, slots=True)
class ApplyEntries:
    """Committed entries, in log order (consensus -> session).

    ``commands``, if given, runs parallel to ``entries``: the session command a leader
    already holds decoded for an entry it proposed itself (what decoding the entry's
    data gives), or ``None`` where the entry must be decoded.
    """

    entries: list[LogEntry]
    commands: list[SessionCommand | None] | None = None


@dataclass(frozen=True, slots=True)
class Applied:
    """Everything up to ``index`` is applied (session -> consensus)."""

    index: int


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """A snapshot received from the leader and already stored (consensus -> session)."""

    meta: SnapshotMeta
    data: bytes


@dataclass(frozen=True, slots=True)
class SnapshotTaken:
    """The session actor stored a snapshot of its state (session -> consensus)."""

    meta: SnapshotMeta
    data: bytes


@dataclass(frozen=True, slots=True)
class RunQueries:
    """Linearizable reads confirmed by a quorum: run each once ``index`` is applied."""

    reads: list[tuple[ReadState, QueryAction]]


@dataclass(frozen=True, slots=True)
class RetryCheck:
    """Dirty read (retry -> session): any pending server request last sent before T?"""

    before_ms: int


@dataclass(frozen=True, slots=True)
class RetryHint:
    """The dirty read's answer (session -> retry)."""

    before_ms: int
    pending: bool


@dataclass(frozen=True, slots=True)
class ProposeRetry:
    """Propose ``GetRequestsForRetry(before_ms)`` (retry -> consensus)."""

    before_ms: int


@dataclass(frozen=True, slots=True)
class Reannounce:
    """Repeat the leadership notice (and, on a leader, the sessions) to a registry in
    another process, which may have missed them while its link was down."""
