"""Typed storage errors: every failure of the storage layer is one of these.

Two families matter to a caller:

* :class:`InvalidOperationError` is a broken contract (a gap in appended indices, a
  term that goes backwards). Nothing was written; the store stays usable. It is a bug
  in the caller, raised before any I/O.
* Every other :class:`StorageError` means the disk (or what is on it) cannot be
  trusted: it *poisons* the store. From then on every call raises
  :class:`StorageFailedError` naming the original cause, because a Raft node must never
  keep running on a log it could not persist.
"""

from __future__ import annotations

import logging
from pathlib import Path

__all__ = [
    "CorruptStorageError",
    "DirectoryLockedError",
    "FailureLatch",
    "IncompatibleFormatError",
    "InvalidOperationError",
    "StorageClosedError",
    "StorageError",
    "StorageFailedError",
    "StorageIOError",
]


class StorageError(Exception):
    """Base class of every error raised by :mod:`actors.storage`."""


class StorageIOError(StorageError):
    """The operating system refused or failed a read, write or fsync.

    Disk full, permission denied, an I/O error: the store is poisoned afterwards.
    """


class CorruptStorageError(StorageError):
    """What is on disk is not what this layer wrote (bad checksum, malformed rows)."""


class DirectoryLockedError(StorageError):
    """Another process (or another open store in this one) holds the data directory."""


class IncompatibleFormatError(StorageError):
    """The data directory was written by a different, incompatible format version."""


class StorageFailedError(StorageError):
    """An earlier failure poisoned this store; the message names that failure."""


class StorageClosedError(StorageError):
    """The store (or writer) was closed or stopped and takes no more calls."""


class InvalidOperationError(StorageError, ValueError):
    """The call breaks the store's contract; nothing was written, the store is intact."""


class FailureLatch:
    """What a durable store keeps of its failure: once poisoned (or closed), every call
    is refused. The store sets ``path`` and hands its first error to :meth:`_latch`."""

    path: Path
    _failure: StorageError | None = None
    _closed: bool = False

    def check(self) -> None:
        """Raise if the store is closed or poisoned."""
        if self._failure is not None:
            raise StorageFailedError(
                f"storage at {self.path} failed earlier and takes no more calls: {self._failure}"
            ) from self._failure
        if self._closed:
            raise StorageClosedError(f"storage at {self.path} is closed")

    @property
    def failure(self) -> StorageError | None:
        """The error that poisoned this store, if any."""
        return self._failure

    def _latch(self, error: StorageError) -> bool:
        """Poison the store with ``error``, loudly; False if it already was."""
        if self._failure is not None:
            return False
        self._failure = error
        logging.getLogger(type(self).__module__).critical(
            "STORAGE FAILED at %s, refusing further writes: %s", self.path, error
        )
        return True
