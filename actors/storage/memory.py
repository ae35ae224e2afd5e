"""In-memory stores for unit and simulation tests, with a faithful crash model.

Each store keeps two states: the *current* one (what reads see) and the *synced* one
(what a disk would hold after power loss), plus the list of writes made since the last
``sync()``. :meth:`crash` throws the current state away and keeps the synced one plus,
if given a random source, a random prefix of the unsynced writes: exactly what the
contract in :mod:`.interfaces` allows a real store to lose. ``close()`` is a crash that
loses every unsynced write; the object stays usable as the "restarted" store, so a
simulation can keep one storage object per node across restarts.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence

from protocol.raft.log import Configuration, HardState, LogEntry, SnapshotMeta

from .errors import CorruptStorageError, InvalidOperationError, StorageClosedError
from .interfaces import (
    PersistedState,
    RandomLike,
    SnapshotInfo,
    check_append,
    check_hard_state,
    load_state,
)

__all__ = [
    "MemoryLogStore",
    "MemorySnapshotReader",
    "MemorySnapshotStore",
    "MemorySnapshotWriter",
    "MemoryStableStore",
    "MemoryStorage",
]


class _Log:
    """A plain log: a compaction point and the entries after it."""

    __slots__ = ("items", "point_index", "point_term")

    def __init__(self, point_index: int = 0, point_term: int = 0) -> None:
        self.point_index = point_index
        self.point_term = point_term
        self.items: list[LogEntry] = []

    def copy(self) -> _Log:
        other = _Log(self.point_index, self.point_term)
        other.items = list(self.items)
        return other

    @property
    def last_index(self) -> int:
        return self.point_index + len(self.items)

    @property
    def last_term(self) -> int:
        return self.items[-1].term if self.items else self.point_term

    def term_at(self, index: int) -> int | None:
        if index == self.point_index:
            return self.point_term
        if self.point_index < index <= self.last_index:
            return self.items[index - self.point_index - 1].term
        return None

    def append(self, entries: Sequence[LogEntry]) -> None:
        self.items.extend(entries)

    def truncate(self, index: int) -> None:
        del self.items[max(0, index - self.point_index - 1) :]

    def compact(self, index: int, term: int) -> None:
        if index <= self.point_index:
            return
        if self.term_at(index) == term:
            del self.items[: index - self.point_index]
        else:
            self.items = []
        self.point_index, self.point_term = index, term


def _keep(pending: int, rng: RandomLike | None) -> int:
    """How many of ``pending`` unsynced writes survive a crash."""
    return rng.randint(0, pending) if rng is not None and pending else 0


class MemoryLogStore:
    """A :class:`~.interfaces.LogStore` in memory, with :meth:`crash`."""

    def __init__(self) -> None:
        self._current = _Log()
        self._synced = _Log()
        self._pending: list[Callable[[_Log], None]] = []

    def first_index(self) -> int:
        return self._current.point_index + 1

    def last_index(self) -> int:
        return self._current.last_index

    def last_term(self) -> int:
        return self._current.last_term

    def term_at(self, index: int) -> int | None:
        return self._current.term_at(index)

    def entries(self, start: int, stop: int, max_bytes: int | None = None) -> list[LogEntry]:
        log = self._current
        if not (log.point_index + 1 <= start <= stop <= log.last_index + 1):
            raise InvalidOperationError(
                f"range [{start}, {stop}) outside the log [{log.point_index + 1}, "
                f"{log.last_index + 1})"
            )
        out = log.items[start - log.point_index - 1 : stop - log.point_index - 1]
        if max_bytes is None:
            return out
        total = 0
        for n, entry in enumerate(out):
            total += len(entry.data)
            if total > max_bytes and n > 0:
                return out[:n]
        return out

    def append(self, entries: Sequence[LogEntry]) -> None:
        batch = check_append(entries, self.last_index(), self.last_term())
        if batch:
            self._write(lambda log: log.append(batch))

    def truncate_suffix(self, index: int) -> None:
        if index < self.first_index():
            raise InvalidOperationError(
                f"cannot truncate from {index}: entries before {self.first_index()} are "
                "compacted (committed)"
            )
        if index <= self.last_index():
            self._write(lambda log: log.truncate(index))

    def compact_prefix(self, index: int, term: int) -> None:
        if index > self._current.point_index:
            self._write(lambda log: log.compact(index, term))

    def sync(self) -> None:
        for op in self._pending:
            op(self._synced)
        self._pending.clear()

    def crash(self, rng: RandomLike | None = None) -> None:
        """Lose what a power cut could: every unsynced write but a random prefix."""
        for op in self._pending[: _keep(len(self._pending), rng)]:
            op(self._synced)
        self._pending.clear()
        self._current = self._synced.copy()

    def close(self) -> None:
        self.crash()

    def unsynced_writes(self) -> int:
        """How many writes a crash now could lose (for tests)."""
        return len(self._pending)

    def _write(self, op: Callable[[_Log], None]) -> None:
        op(self._current)
        self._pending.append(op)


class MemoryStableStore:
    """A :class:`~.interfaces.StableStore` in memory, with :meth:`crash`."""

    def __init__(self) -> None:
        self._current: tuple[HardState, Configuration | None] = (HardState(), None)
        self._synced: tuple[HardState, Configuration | None] = self._current
        self._pending: list[tuple[HardState, Configuration | None]] = []

    def hard_state(self) -> HardState:
        return self._current[0]

    def configuration(self) -> Configuration | None:
        return self._current[1]

    def save(self, hard_state: HardState, configuration: Configuration | None) -> None:
        check_hard_state(self._current[0], hard_state)
        if configuration is not None and not isinstance(configuration, Configuration):
            raise InvalidOperationError(f"not a Configuration: {type(configuration).__name__}")
        self._current = (hard_state, configuration)
        self._pending.append(self._current)

    def sync(self) -> None:
        self._synced = self._current
        self._pending.clear()

    def crash(self, rng: RandomLike | None = None) -> None:
        """Lose what a power cut could: every unsynced save but a random prefix."""
        keep = _keep(len(self._pending), rng)
        if keep:
            self._synced = self._pending[keep - 1]
        self._pending.clear()
        self._current = self._synced

    def close(self) -> None:
        self.crash()


def _info(meta: SnapshotMeta, data: bytes) -> SnapshotInfo:
    return SnapshotInfo(meta=meta, size=len(data), checksum=hashlib.sha256(data).hexdigest())


class MemorySnapshotWriter:
    """A snapshot being written into memory; dies with a crash of its store."""

    def __init__(self, store: MemorySnapshotStore, meta: SnapshotMeta, epoch: int) -> None:
        self._store = store
        self._meta = meta
        self._epoch = epoch
        self._chunks: list[bytes] = []
        self._done = False

    @property
    def meta(self) -> SnapshotMeta:
        return self._meta

    def write(self, chunk: bytes) -> None:
        self._check()
        self._chunks.append(bytes(chunk))

    def finish(self) -> SnapshotInfo:
        self._check()
        self._done = True
        return self._store._publish(self._meta, b"".join(self._chunks))

    def abort(self) -> None:
        self._done = True
        self._chunks = []

    def _check(self) -> None:
        if self._done:
            raise StorageClosedError("snapshot writer already finished or aborted")
        if self._epoch != self._store._epoch:
            raise StorageClosedError("the store crashed while this snapshot was written")


class MemorySnapshotReader:
    """Reads a finished in-memory snapshot in chunks."""

    def __init__(self, info: SnapshotInfo, data: bytes) -> None:
        self._info = info
        self._data = data
        self._pos = 0

    @property
    def info(self) -> SnapshotInfo:
        return self._info

    def read(self, max_bytes: int = 1 << 20) -> bytes:
        if max_bytes <= 0:
            raise InvalidOperationError("max_bytes must be positive")
        chunk = self._data[self._pos : self._pos + max_bytes]
        self._pos += len(chunk)
        return chunk

    def close(self) -> None:
        self._pos = len(self._data)


class MemorySnapshotStore:
    """A :class:`~.interfaces.SnapshotStore` in memory; ``finish`` is durable at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._epoch = 0
        self._finished: list[tuple[SnapshotInfo, bytes]] = []  # oldest first, at most 2

    def begin(self, meta: SnapshotMeta) -> MemorySnapshotWriter:
        if not isinstance(meta, SnapshotMeta):
            raise InvalidOperationError(f"not a SnapshotMeta: {type(meta).__name__}")
        return MemorySnapshotWriter(self, meta, self._epoch)

    def latest(self) -> SnapshotInfo | None:
        with self._lock:
            return self._finished[-1][0] if self._finished else None

    def open_latest(self) -> MemorySnapshotReader | None:
        with self._lock:
            if not self._finished:
                return None
            info, data = self._finished[-1]
        if _info(info.meta, data) != info:  # pragma: no cover - memory does not rot
            raise CorruptStorageError("in-memory snapshot changed")
        return MemorySnapshotReader(info, data)

    def crash(self, rng: RandomLike | None = None) -> None:
        """Snapshots being written are lost; finished ones stay."""
        self._epoch += 1

    def close(self) -> None:
        self.crash()

    def count(self) -> int:
        """How many finished snapshots are kept (for tests)."""
        return len(self._finished)

    def _publish(self, meta: SnapshotMeta, data: bytes) -> SnapshotInfo:
        info = _info(meta, data)
        with self._lock:
            key = (meta.index, meta.term)
            rest = [f for f in self._finished if (f[0].meta.index, f[0].meta.term) != key]
            rest.append((info, data))
            rest.sort(key=lambda f: (f[0].meta.index, f[0].meta.term))
            self._finished = rest[-2:]
        return info


class MemoryStorage:
    """One node's in-memory disk: a log, a stable store and a snapshot store."""

    def __init__(self) -> None:
        self.log = MemoryLogStore()
        self.stable = MemoryStableStore()
        self.snapshots = MemorySnapshotStore()

    def load(self) -> PersistedState:
        """Everything persisted, as a restarting node needs it (see ``load_state``)."""
        return load_state(self.log, self.stable, self.snapshots)

    def sync(self) -> None:
        """Sync the log and the stable store."""
        self.log.sync()
        self.stable.sync()

    def crash(self, rng: RandomLike | None = None) -> None:
        """Simulate power loss: each store loses its unsynced writes but a random prefix."""
        self.log.crash(rng)
        self.stable.crash(rng)
        self.snapshots.crash(rng)

    def close(self) -> None:
        """Close every store (unsynced writes are lost; the object stays usable)."""
        self.crash()
