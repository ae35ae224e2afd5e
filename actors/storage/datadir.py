"""One node's data directory, opened as a whole: lock, format version, stores.

Layout::

    <dir>/LOCK          fcntl lock held while open; holds the owner's pid (informative)
    <dir>/FORMAT        "raft-actors storage format <N>": which log the directory keeps
    <dir>/raft.db       format 1 (``durable_log = "sqlite"``, the default): the log and
                        the stable state in SQLite (+ raft.db-wal, raft.db-shm)
    <dir>/raft.log      format 2 (``durable_log = "file"``): the log and the stable
                        state as checksummed records in one append-only file (see
                        :mod:`.logfile`, :mod:`.filestore`), zero-filled ahead
    <dir>/raft.log.tmp  only while that file is rewritten without its dead records
    <dir>/snapshots/    snapshot files (see :mod:`.snapshots`)

Beside them the node keeps ``MEMBERS`` (member addresses learned at run time, see
:mod:`actors.address_book`) and, once removed from the cluster, ``REMOVED``
(:mod:`actors.removal`).

A second process (or a second open in the same process) is refused with
:class:`DirectoryLockedError`; a directory of another format than the one asked for,
or of a format this build does not know, with :class:`IncompatibleFormatError` naming
both.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import Literal

from .errors import (
    CorruptStorageError,
    DirectoryLockedError,
    FailureLatch,
    IncompatibleFormatError,
    StorageError,
    StorageIOError,
)
from .filestore import FileLogStore, FileStableStore, open_state
from .fsutil import atomic_write, fsync_dir
from .interfaces import LogStore, PersistedState, StableStore, load_state
from .logfile import DEFAULT_CHUNK_BYTES, LogFile
from .snapshots import FileSnapshotStore
from .sqlite import Database, SqliteLogStore, SqliteStableStore

__all__ = ["FORMATS", "DurableLog", "DurableStorage"]

#: How the durable log and stable state are kept: ``"sqlite"`` (the default) or ``"file"``.
DurableLog = Literal["sqlite", "file"]
#: The on-disk formats this build reads and writes, by the log they keep. A directory
#: keeps the format it was created with. Add a number for any incompatible change.
FORMATS: dict[str, int] = {"sqlite": 1, "file": 2}
_FORMAT_PREFIX = "raft-actors storage format "
_LOG_FILES = ("raft.db", "raft.log")


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


def _check_format(path: Path, durable_log: DurableLog) -> None:
    marker = path / "FORMAT"
    wanted = FORMATS[durable_log]
    try:
        text = marker.read_text(encoding="utf-8", errors="replace").strip()
    except FileNotFoundError:
        if any((path / name).exists() for name in _LOG_FILES):
            raise CorruptStorageError(
                f"data directory {path} has a log but no FORMAT file; refusing to guess "
                "its format version"
            ) from None
        atomic_write(marker, f"{_FORMAT_PREFIX}{wanted}\n".encode())
        return
    version = text.removeprefix(_FORMAT_PREFIX)
    known = " and ".join(f"{n} ({log} log)" for log, n in FORMATS.items())
    if not text.startswith(_FORMAT_PREFIX) or not version.isdigit():
        raise IncompatibleFormatError(
            f"{marker} says {text[:80]!r}, not {_FORMAT_PREFIX!r}<N>: not a raft-actors data "
            f"directory this build (format versions {known}) can read"
        )
    found = int(version)
    if found == wanted:
        return
    kept = next((log for log, n in FORMATS.items() if n == found), None)
    if kept is not None and not any((path / name).exists() for name in _LOG_FILES):
        # Marked, but no log was ever made: a first open that failed after writing
        # FORMAT. The directory holds nothing of the other format: take it.
        atomic_write(marker, f"{_FORMAT_PREFIX}{wanted}\n".encode())
        return
    if kept is None:
        raise IncompatibleFormatError(
            f"data directory {path} was written with storage format version {found}, "
            f"but this build reads and writes format versions {known}; refusing to "
            "start (use a matching build, or migrate the directory)"
        )
    raise IncompatibleFormatError(
        f"data directory {path} keeps the {kept!r} log (storage format version {found}), "
        f"but durable_log = {durable_log!r} (format version {wanted}) was asked for; "
        f"set durable_log = {kept!r} for this directory, or give the member an empty "
        "directory and let it catch up from its peers"
    )


def _open_log(
    root: Path, durable_log: DurableLog, chunk_bytes: int
) -> tuple[LogStore, StableStore, FailureLatch]:
    """The log and stable store of ``root`` in the given format, and the database or
    file they share (whose latch says whether it failed)."""
    if durable_log == "sqlite":
        db = Database(root / "raft.db", FORMATS["sqlite"])
        try:
            return SqliteLogStore(db), SqliteStableStore(db), db
        except BaseException:
            db.close()
            raise
    state = open_state(LogFile(root / "raft.log", chunk_bytes))
    return FileLogStore(state), FileStableStore(state), state.file


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
        log: LogStore,
        stable: StableStore,
        latch: FailureLatch,
        snapshots: FileSnapshotStore,
    ) -> None:
        self.path = path
        self._lock_fd: int | None = lock_fd
        self.log = log
        self.stable = stable
        self._latch = latch
        self.snapshots = snapshots

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        durable_log: DurableLog = "sqlite",
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> DurableStorage:
        """Open (creating if needed) the data directory at ``path``.

        ``durable_log``: keep the log and stable state in SQLite (format 1) or in an
        append-only file of our own (format 2); a directory keeps the format it was
        created with, and opening it as the other one is refused.
        ``chunk_bytes``: how far ahead the log file is zero-filled (and the least dead
        space that triggers a rewrite); tests use tiny ones. Raises
        :class:`DirectoryLockedError`, :class:`IncompatibleFormatError`,
        :class:`CorruptStorageError` or :class:`StorageIOError` (permission denied, not a
        directory, disk full...).
        """
        if durable_log not in FORMATS:
            raise ValueError(f"durable_log must be one of {sorted(FORMATS)}, not {durable_log!r}")
        root = Path(path)
        lock_fd: int | None = None
        log: LogStore | None = None
        try:
            root.mkdir(parents=True, exist_ok=True)
            lock_fd = _lock(root)
            _check_format(root, durable_log)
            log, stable, latch = _open_log(root, durable_log, chunk_bytes)
            snapshots = FileSnapshotStore(root / "snapshots")
            fsync_dir(root)
            return cls(root, lock_fd, log, stable, latch, snapshots)
        except BaseException as exc:
            if log is not None:
                log.close()
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
        """Make every write to the log and the stable store durable (one fsync: both
        stores share one database or one file)."""
        self.log.sync()

    @property
    def failure(self) -> StorageError | None:
        """The error that poisoned the log and stable store, if any."""
        return self._latch.failure

    def close(self) -> None:
        """Close the log (unsynced writes are lost) and release the lock."""
        self.log.close()
        self.snapshots.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> DurableStorage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
