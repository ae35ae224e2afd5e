"""Storage for a Raft node: log, hard state and snapshots that survive ``kill -9``.

* Contracts: :class:`LogStore`, :class:`StableStore`, :class:`SnapshotStore` (see
  :mod:`.interfaces` for when writes become durable).
* In memory, with a crash model: :class:`MemoryStorage` (and its three stores).
* Durable: :class:`DurableStorage` (one data directory: the log and stable state in
  SQLite, or in one append-only file of checksummed records; snapshot files, a lock, a
  format version).
* Off the hot thread: :class:`StorageWriter` (group commit, ``Persisted`` reports).
* Errors: :class:`StorageError` and its subclasses.

Restart: ``storage = DurableStorage.open(dir)``; ``state = storage.load()`` gives the hard
state, configuration, latest snapshot info (data via ``storage.snapshots.open_latest()``)
and the log entries after the snapshot.
"""

from .datadir import FORMATS, DurableLog, DurableStorage
from .errors import (
    CorruptStorageError,
    DirectoryLockedError,
    IncompatibleFormatError,
    InvalidOperationError,
    StorageClosedError,
    StorageError,
    StorageFailedError,
    StorageIOError,
)
from .filestore import FileLogStore, FileStableStore
from .interfaces import (
    LogStore,
    PersistedState,
    SnapshotInfo,
    SnapshotReader,
    SnapshotStore,
    SnapshotWriter,
    StableStore,
    load_state,
)
from .memory import MemoryLogStore, MemorySnapshotStore, MemoryStableStore, MemoryStorage
from .snapshots import FileSnapshotStore
from .sqlite import SqliteLogStore, SqliteStableStore
from .writer import Persisted, StorageWriter

__all__ = [
    "FORMATS",
    "CorruptStorageError",
    "DirectoryLockedError",
    "DurableLog",
    "DurableStorage",
    "FileLogStore",
    "FileSnapshotStore",
    "FileStableStore",
    "IncompatibleFormatError",
    "InvalidOperationError",
    "LogStore",
    "MemoryLogStore",
    "MemorySnapshotStore",
    "MemoryStableStore",
    "MemoryStorage",
    "Persisted",
    "PersistedState",
    "SnapshotInfo",
    "SnapshotReader",
    "SnapshotStore",
    "SnapshotWriter",
    "SqliteLogStore",
    "SqliteStableStore",
    "StableStore",
    "StorageClosedError",
    "StorageError",
    "StorageFailedError",
    "StorageIOError",
    "StorageWriter",
    "load_state",
]
