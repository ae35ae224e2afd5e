"""The core's in-memory view of its log: the entries since the last compaction point,
plus the bookkeeping of what the host has been handed, persisted and applied.

Indexes: ``offset`` is the index of the entry just before ``entries[0]`` (its term is
``offset_term``; it is the compaction point or a snapshot's index), so entry ``i`` is
``entries[i - offset - 1]``.
"""

from __future__ import annotations

from protocol.raft.log import LogEntry

__all__ = ["RaftLog"]


class RaftLog:
    """Entries in memory, and the indexes that describe their fate."""

    __slots__ = (
        "applied",
        "apply_handed",
        "commit",
        "entries",
        "offset",
        "offset_term",
        "persist_handed",
        "stable",
        "truncated_from",
    )

    def __init__(self, offset: int, offset_term: int, entries: list[LogEntry], commit: int) -> None:
        self.offset = offset
        self.offset_term = offset_term
        self.entries = entries
        #: Highest index known committed.
        self.commit = commit
        #: Highest index known durable in the host's storage.
        self.stable = offset + len(entries)
        #: Highest index handed to the host to persist.
        self.persist_handed = self.stable
        #: Lowest index overwritten since the last hand-over (None: nothing was).
        self.truncated_from: int | None = None
        #: Highest index handed to the host to apply, and applied (reported).
        self.apply_handed = offset
        self.applied = offset

    # ------------------------------------------------------------------ reading

    @property
    def last_index(self) -> int:
        return self.offset + len(self.entries)

    @property
    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.offset_term

    def term_at(self, index: int) -> int | None:
        """The term of entry ``index``; None if compacted away or beyond the end."""
        pos = index - self.offset
        if pos == 0:
            return self.offset_term
        if 0 < pos <= len(self.entries):
            return self.entries[pos - 1].term
        return None

    def entry(self, index: int) -> LogEntry:
        return self.entries[index - self.offset - 1]

    def slice(self, lo: int, hi: int) -> list[LogEntry]:
        """Entries ``lo..hi-1`` (the caller keeps them within the log)."""
        return self.entries[lo - self.offset - 1 : hi - self.offset - 1]

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """The election restriction (§3.6.1): is that log at least as up to date?"""
        mine = self.last_term
        return last_term > mine or (last_term == mine and last_index >= self.last_index)

    def first_index_of_term_at(self, index: int) -> int:
        """The first index (in memory) holding the same term as ``index``."""
        term = self.term_at(index)
        i = index
        while i - 1 > self.offset and self.entries[i - 2 - self.offset].term == term:
            i -= 1
        return i

    def last_index_of_term(self, term: int) -> int | None:
        """The last index (in memory) holding ``term``; None if none does."""
        entries = self.entries
        for pos in range(len(entries) - 1, -1, -1):
            t = entries[pos].term
            if t == term:
                return self.offset + pos + 1
            if t < term:
                return None
        return self.offset if self.offset_term == term else None

    # ------------------------------------------------------------------ writing

    def append(self, entries: list[LogEntry]) -> None:
        """Append after the last entry (the leader's own proposals)."""
        self.entries.extend(entries)

    def truncate_and_append(self, entries: list[LogEntry]) -> None:
        """Overwrite from ``entries[0].index`` on (a follower taking its leader's log)."""
        first = entries[0].index
        if first <= self.last_index:
            del self.entries[first - self.offset - 1 :]
            if first <= self.persist_handed:
                self.persist_handed = first - 1
                if self.truncated_from is None or first < self.truncated_from:
                    self.truncated_from = first
            if first <= self.stable:
                self.stable = first - 1
        self.entries.extend(entries)

    def compact(self, index: int) -> None:
        """Drop entries up to ``index`` (which must be in memory)."""
        if index <= self.offset:
            return
        term = self.term_at(index)
        assert term is not None
        del self.entries[: index - self.offset]
        self.offset = index
        self.offset_term = term

    def reset(self, index: int, term: int) -> None:
        """Restart the log at a snapshot ``(index, term)``: everything is replaced."""
        self.entries = []
        self.offset = index
        self.offset_term = term
        self.commit = index
        self.stable = index
        self.persist_handed = index
        self.apply_handed = index
        self.applied = index
        self.truncated_from = None
