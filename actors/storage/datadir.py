"""One node's data directory, opened as a whole: lock, format version, stores.

Layout::

    <dir>/LOCK          fcntl lock held while open; holds the owner's pid (informative)
    <dir>/FORMAT        "raft-actors storage format <N>"
    <dir>/raft.db       SQLite: the log and the stable state (+ raft.db-wal, raft.db-shm)
    <dir>/snapshots/    snapshot files (see :mod:`.snapshots`)

A second process (or a second open in the same process) is refused with
:class:`DirectoryLockedError`; a directory written by another format version with
:class:`IncompatibleFormatError` naming both versions.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from .errors import (
    CorruptStorageError,
    DirectoryLockedError,
    IncompatibleFormatError,
    StorageError,
    StorageIOError,
)
from .fsutil import atomic_write, fsync_dir
from .interfaces import PersistedState, load_state
from .snapshots import FileSnapshotStore
from .sqlite import Database, SqliteLogStore, SqliteStableStore

__all__ = ["FORMAT_VERSION", "DurableStorage"]

#: The on-disk format this build reads and writes. Bump on any incompatible change.
FORMAT_VERSION = 1
_FORMAT_PREFIX = "raft-actors storage format "


def _lock(path: Path) -> int:
    fd = os.open(path / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise DirectoryLockedError(
                f"data directory {path} is already in use (locked by pid {holder}); "
                "one directory holds one node and only one process may open it"
            ) from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _check_format(path: Path) -> None:
    marker = path / "FORMAT"
    try:
        text = marker.read_text(encoding="utf-8", errors="replace").strip()
    except FileNotFoundError:
        if (path / "raft.db").exists():
            raise CorruptStorageError(
                f"data directory {path} has a database but no FORMAT file; refusing to guess "
                "its format version"
            ) from None
        atomic_write(marker, f"{_FORMAT_PREFIX}{FORMAT_VERSION}\n".encode())
        return
    version = text.removeprefix(_FORMAT_PREFIX)
    if not text.startswith(_FORMAT_PREFIX) or not version.isdigit():
        raise IncompatibleFormatError(
            f"{marker} says {text[:80]!r}, not {_FORMAT_PREFIX!r}<N>: not a raft-actors data "
            f"directory this build (format version {FORMAT_VERSION}) can read"
        )
    if int(version) != FORMAT_VERSION:
        raise IncompatibleFormatError(
            f"data directory {path} was written with storage format version {int(version)}, "
            f"but this build reads and writes format version {FORMAT_VERSION}; refusing to "
            "start (use a matching build, or migrate the directory)"
        )


class DurableStorage:
    """A node's durable storage: :attr:`log`, :attr:`stable` and :attr:`snapshots`.

    Open with :meth:`open`; read everything back with :meth:`load`; hand :attr:`log`
    and :attr:`stable` to a :class:`~actors.storage.writer.StorageWriter`; :meth:`close`
    when done (releases the lock; unsynced writes are lost, as in a crash).
    """

    def __init__(
        self,
        path: Path,
        lock_fd: int,
        db: Database,
        snapshots: FileSnapshotStore,
    ) -> None:
        self.path = path
        self._lock_fd: int | None = lock_fd
        self._db = db
        self.log = SqliteLogStore(db)
        self.stable = SqliteStableStore(db)
        self.snapshots = snapshots

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> DurableStorage:
        """Open (creating if needed) the data directory at ``path``.

        Raises :class:`DirectoryLockedError`, :class:`IncompatibleFormatError`,
        :class:`CorruptStorageError` or :class:`StorageIOError` (permission denied, not a
        directory, disk full...).
        """
        root = Path(path)
        lock_fd: int | None = None
        db: Database | None = None
        try:
            root.mkdir(parents=True, exist_ok=True)
            lock_fd = _lock(root)
            _check_format(root)
            db = Database(root / "raft.db", FORMAT_VERSION)
            snapshots = FileSnapshotStore(root / "snapshots")
            fsync_dir(root)
            return cls(root, lock_fd, db, snapshots)
        except BaseException as exc:
            if db is not None:
                db.close()
            if lock_fd is not None:
                os.close(lock_fd)
            if isinstance(exc, StorageError):
                raise
            if isinstance(exc, PermissionError):
                raise StorageIOError(f"permission denied opening {root}: {exc}") from exc
            if isinstance(exc, OSError):
                raise StorageIOError(f"cannot open data directory {root}: {exc}") from exc
            raise

    def load(self) -> PersistedState:
        """Everything persisted, as a restarting node needs it (see ``load_state``)."""
        return load_state(self.log, self.stable, self.snapshots)

    def sync(self) -> None:
        """Commit every write to the log and the stable store (one fsync)."""
        self._db.commit()

    @property
    def failure(self) -> StorageError | None:
        """The error that poisoned the database, if any."""
        return self._db.failure

    def close(self) -> None:
        """Close the database (unsynced writes are lost) and release the lock."""
        self._db.close()
        self.snapshots.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> DurableStorage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
