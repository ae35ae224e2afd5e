"""The storage contracts: what a Raft node needs from its disk, as ``typing.Protocol``\\ s.

Three stores, each with an in-memory implementation (:mod:`actors.storage.memory`, for
unit and simulation tests, able to model a crash) and durable ones
(:mod:`actors.storage.sqlite` or :mod:`actors.storage.filestore` for the log and
stable store, :mod:`actors.storage.snapshots`):

* :class:`LogStore`: the Raft log after the last compaction point;
* :class:`StableStore`: term, vote and commit (a :class:`HardState`) plus the latest
  :class:`Configuration`, always written together;
* :class:`SnapshotStore`: state machine snapshots, written and read in chunks.

Durability (the same for the log and the stable store)
------------------------------------------------------
A mutating call (``append``, ``truncate_suffix``, ``compact_prefix``, ``save``) takes
effect immediately for reads through the same object, but is only *written*, not
*durable*. ``sync()`` makes every write made before it durable. After a crash the store
holds every synced write, plus possibly a prefix (in call order) of the writes that were
not yet synced, never anything else. Both durable stores make ``sync()`` one fsync for
any number of writes (group commit): the SQLite store keeps unsynced writes in one open
transaction, so a crash loses all of them and ``sync()`` is one commit; the file store
appends one record per write to one file (:mod:`actors.storage.logfile`) and keeps
unsynced records in memory until ``sync()`` writes them all, so a crash loses them, or
keeps a prefix of them if it struck while they were written. A Raft node acknowledges
an entry or answers a vote only after the ``sync()`` that covered it returned.

Threading: a store object is used by one thread at a time (see :mod:`.writer`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from protocol.raft.log import Configuration, HardState, LogEntry, SnapshotMeta

from .errors import CorruptStorageError, InvalidOperationError

__all__ = [
    "LogBatch",
    "LogStore",
    "PersistedState",
    "RandomLike",
    "SnapshotInfo",
    "SnapshotReader",
    "SnapshotStore",
    "SnapshotWriter",
    "StableStore",
    "check_append",
    "check_hard_state",
    "load_state",
]


class RandomLike(Protocol):
    """The part of ``random.Random`` the in-memory stores use to model a crash."""

    def randint(self, a: int, b: int) -> int: ...


class LogStore(Protocol):
    """The Raft log: entries ``first_index() .. last_index()``, contiguous.

    Before the first entry lies the *compaction point* ``(first_index() - 1, term)``:
    the last entry covered by a snapshot (``(0, 0)`` for a log never compacted). An
    empty log has ``last_index() == first_index() - 1``. Terms never decrease along the
    log. See the module docstring for when writes become durable.
    """

    def first_index(self) -> int:
        """Index of the first stored entry (compaction point + 1)."""
        ...

    def last_index(self) -> int:
        """Index of the last stored entry, or the compaction point if there is none."""
        ...

    def last_term(self) -> int:
        """Term of the last stored entry, or of the compaction point if there is none."""
        ...

    def term_at(self, index: int) -> int | None:
        """Term of the entry at ``index``, also for the compaction point; else ``None``."""
        ...

    def entries(self, start: int, stop: int, max_bytes: int | None = None) -> list[LogEntry]:
        """Entries with ``start <= index < stop``, in order.

        Requires ``first_index() <= start <= stop <= last_index() + 1``
        (:class:`InvalidOperationError` otherwise). With ``max_bytes`` the result stops
        before the entry that would take the total ``data`` size past it, but holds at
        least one entry if the range is not empty.
        """
        ...

    def append(self, entries: Sequence[LogEntry]) -> None:
        """Append a batch after the last entry.

        The batch must be contiguous and start at ``last_index() + 1``, and its terms
        must not decrease nor be below ``last_term()``; otherwise
        :class:`InvalidOperationError` and nothing is written. (To replace a conflicting
        suffix, ``truncate_suffix`` first.) An empty batch is a no-op.
        """
        ...

    def truncate_suffix(self, index: int) -> None:
        """Delete every entry with index ``>= index``.

        Requires ``index >= first_index()`` (entries covered by a snapshot are committed
        and can never be truncated); ``index > last_index()`` is a no-op.
        """
        ...

    def compact_prefix(self, index: int, term: int) -> None:
        """Make ``(index, term)`` the compaction point, after a snapshot covering it.

        If the log holds an entry at ``index`` with term ``term``, entries up to and
        including it are deleted and the ones after it kept; otherwise (the snapshot is
        beyond the log, or conflicts with it: the receiver rules of InstallSnapshot, Raft §7) every
        entry is deleted and the log continues at ``index + 1``. A point at or before the
        current one is a no-op.
        """
        ...

    def sync(self) -> None:
        """Make every earlier write durable (one fsync for all of them)."""
        ...

    def close(self) -> None:
        """Release resources. Writes not synced are lost, as in a crash."""
        ...


class StableStore(Protocol):
    """Term, vote, commit index and the latest configuration, written atomically.

    A Raft node must persist its term and vote before answering any RPC that depends on
    them; ``save`` + ``sync`` does that. Durability as in the module docstring.
    """

    def hard_state(self) -> HardState:
        """The current hard state (``HardState()`` in a new store)."""
        ...

    def configuration(self) -> Configuration | None:
        """The latest saved configuration (``None`` in a new store)."""
        ...

    def save(self, hard_state: HardState, configuration: Configuration | None) -> None:
        """Replace hard state and configuration together; a crash never splits them.

        Refuses (:class:`InvalidOperationError`) a term lower than the current one, and
        within the same term a change of an existing vote: both would break Raft's
        safety, so they are treated as a bug in the caller.
        """
        ...

    def sync(self) -> None:
        """Make every earlier ``save`` durable."""
        ...

    def close(self) -> None:
        """Release resources. Saves not synced are lost, as in a crash."""
        ...


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """A finished snapshot: what it covers, its size and the checksum of its data."""

    meta: SnapshotMeta
    #: Number of data bytes.
    size: int
    #: Hex SHA-256 of the data bytes.
    checksum: str


class SnapshotWriter(Protocol):
    """A snapshot being written; not visible to readers until :meth:`finish`."""

    @property
    def meta(self) -> SnapshotMeta:
        """What the snapshot will cover."""
        ...

    def write(self, chunk: bytes) -> None:
        """Append data bytes."""
        ...

    def finish(self) -> SnapshotInfo:
        """Make the snapshot durable and the latest one, atomically, and return its info.

        A crash before this returns leaves the previous latest snapshot in place; after
        it, the new one is durable. Only the newest two snapshots are kept.
        """
        ...

    def abort(self) -> None:
        """Drop the partial snapshot. Safe to call after ``finish`` (then a no-op)."""
        ...


class SnapshotReader(Protocol):
    """The data of one finished snapshot, read in chunks."""

    @property
    def info(self) -> SnapshotInfo:
        """Which snapshot this is."""
        ...

    def read(self, max_bytes: int = 1 << 20) -> bytes:
        """Up to ``max_bytes`` more data bytes; ``b""`` at the end.

        Raises :class:`CorruptStorageError` at the end if the data read does not match
        the checksum.
        """
        ...

    def close(self) -> None:
        """Release the underlying file."""
        ...


class SnapshotStore(Protocol):
    """Snapshots of the state machine, newest first; partial ones never visible."""

    def begin(self, meta: SnapshotMeta) -> SnapshotWriter:
        """Start writing a snapshot covering ``meta``."""
        ...

    def latest(self) -> SnapshotInfo | None:
        """The newest intact snapshot (a corrupt one is skipped, loudly), or ``None``."""
        ...

    def open_latest(self) -> SnapshotReader | None:
        """A reader for :meth:`latest`, or ``None`` if there is no snapshot."""
        ...

    def close(self) -> None:
        """Release resources."""
        ...


@dataclass(frozen=True, slots=True)
class PersistedState:
    """What a restarting Raft node is handed: everything it persisted, made consistent.

    ``entries`` are the log entries after the snapshot (or the whole log without one);
    the snapshot's data is read through :meth:`SnapshotStore.open_latest`.
    """

    hard_state: HardState
    configuration: Configuration | None
    snapshot: SnapshotInfo | None
    entries: tuple[LogEntry, ...]

    @property
    def last_index(self) -> int:
        """Index of the last entry, or of the snapshot, or 0."""
        if self.entries:
            return self.entries[-1].index
        return self.snapshot.meta.index if self.snapshot else 0


def load_state(log: LogStore, stable: StableStore, snapshots: SnapshotStore) -> PersistedState:
    """Read everything back after a restart; works with any implementation.

    If the newest snapshot was finished but the log not yet compacted (a crash in
    between), entries the snapshot covers are left out, and a log that conflicts with
    the snapshot is dropped as Raft's InstallSnapshot rule says. If the log was
    compacted past the newest *intact* snapshot (it was corrupt), entries are missing
    for good: :class:`CorruptStorageError`, as the node must be restored from its peers.
    """
    snapshot = snapshots.latest()
    snap_index = snapshot.meta.index if snapshot else 0
    point = log.first_index() - 1
    if point > snap_index:
        raise CorruptStorageError(
            f"the log is compacted up to index {point} but the newest intact snapshot "
            f"covers only up to {snap_index}: entries {snap_index + 1}..{point} are lost; "
            "wipe this node's data directory and let it catch up from its peers"
        )
    last = log.last_index()
    if snapshot is not None and log.term_at(snap_index) not in (None, snapshot.meta.term):
        entries: list[LogEntry] = []  # the log conflicts with a committed snapshot
    elif snap_index >= last:
        entries = []
    else:
        entries = log.entries(max(snap_index + 1, log.first_index()), last + 1)
    return PersistedState(
        hard_state=stable.hard_state(),
        configuration=stable.configuration(),
        snapshot=snapshot,
        entries=tuple(entries),
    )


class LogBatch(tuple[LogEntry, ...]):
    """An immutable batch of log entries, checked once, when it is built.

    Building one enforces what :meth:`LogStore.append` demands of a batch on its own:
    every item a :class:`LogEntry` with ``bytes`` data, indexes contiguous, terms not
    decreasing (:class:`InvalidOperationError` otherwise). Only the join with the log
    (first index right after the last one, first term not below the last term) is left,
    which :func:`check_append` does in constant time for a ``LogBatch``. So a batch
    checked on the caller's thread (:meth:`StorageWriter.submit`) is not walked again
    on the writer thread, while a plain sequence handed to a store is checked in full.
    """

    __slots__ = ()

    def __new__(cls, entries: Iterable[LogEntry] = ()) -> LogBatch:
        batch = super().__new__(cls, entries)
        previous: LogEntry | None = None
        for entry in batch:
            if not isinstance(entry, LogEntry):
                raise InvalidOperationError(f"not a LogEntry: {type(entry).__name__}")
            if not isinstance(entry.data, bytes):
                raise InvalidOperationError(f"data of entry {entry.index} must be bytes")
            if previous is not None:
                if entry.index != previous.index + 1:
                    raise InvalidOperationError(
                        f"append must be contiguous: expected index {previous.index + 1}, "
                        f"got {entry.index}"
                    )
                if entry.term < previous.term:
                    raise InvalidOperationError(
                        f"term of entry {entry.index} goes backwards: "
                        f"{entry.term} < {previous.term}"
                    )
            previous = entry
        return batch


def check_append(entries: Sequence[LogEntry], last_index: int, last_term: int) -> LogBatch:
    """Enforce :meth:`LogStore.append`'s contract (shared by every implementation).

    Returns the entries as a :class:`LogBatch` (``entries`` itself if it is one: its
    own shape was checked when it was built, so only its join with the log is).
    """
    batch = entries if isinstance(entries, LogBatch) else LogBatch(entries)
    if batch:
        first = batch[0]
        if first.index != last_index + 1:
            raise InvalidOperationError(
                f"append must be contiguous: expected index {last_index + 1}, got {first.index}"
            )
        if first.term < last_term:
            raise InvalidOperationError(
                f"term of entry {first.index} goes backwards: {first.term} < {last_term}"
            )
    return batch


def check_hard_state(current: HardState, new: HardState) -> None:
    """Enforce :meth:`StableStore.save`'s contract (shared by every implementation)."""
    if not isinstance(new, HardState):
        raise InvalidOperationError(f"not a HardState: {type(new).__name__}")
    if new.term < current.term:
        raise InvalidOperationError(f"term goes backwards: {new.term} < {current.term}")
    if (
        new.term == current.term
        and current.voted_for is not None
        and new.voted_for != current.voted_for
    ):
        raise InvalidOperationError(
            f"vote in term {new.term} changes from {current.voted_for!r} to {new.voted_for!r}"
        )
