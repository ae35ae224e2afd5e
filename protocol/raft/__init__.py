"""The Raft consensus core and its messages."""

from protocol.raft.log import Configuration, EntryKind, HardState, LogEntry, SnapshotMeta

__all__ = ["Configuration", "EntryKind", "HardState", "LogEntry", "SnapshotMeta"]
