"""The persistent vocabulary of Raft: log entries, hard state, configuration, snapshots.

These are what the storage layer stores and the core reads back on restart, so their
encoding (through :mod:`protocol.codec`) is a disk format as well as a wire format.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from protocol.codec import message
from protocol.ids import MemberId

__all__ = ["Configuration", "EntryKind", "HardState", "LogEntry", "SnapshotMeta"]


class EntryKind(enum.IntEnum):
    """What a log entry's ``data`` holds."""

    #: Appended by a new leader to commit entries of earlier terms (§3.6.2); empty data.
    NOOP = 0
    #: An application command (for raft-actors, an encoded ``SessionCommand``).
    COMMAND = 1
    #: An encoded :class:`Configuration`, effective as soon as it is appended (§4.1).
    CONFIGURATION = 2


@message(tag=100)
@dataclass(frozen=True, slots=True)
class LogEntry:
    index: int
    term: int
    kind: EntryKind
    data: bytes


@message(tag=101)
@dataclass(frozen=True, slots=True)
class Configuration:
    """Cluster membership: voters decide, learners only receive the log."""

    voters: tuple[MemberId, ...]
    learners: tuple[MemberId, ...] = ()

    def __post_init__(self) -> None:
        if set(self.voters) & set(self.learners):
            raise ValueError("a member cannot be both voter and learner")

    @property
    def members(self) -> tuple[MemberId, ...]:
        return self.voters + self.learners


@message(tag=102)
@dataclass(frozen=True, slots=True)
class HardState:
    """What must be on disk before a node answers a vote or an append (§3.8)."""

    term: int = 0
    voted_for: MemberId | None = None
    commit: int = 0


@message(tag=103)
@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """Describes a snapshot: the last entry it covers and the configuration then."""

    index: int
    term: int
    configuration: Configuration
