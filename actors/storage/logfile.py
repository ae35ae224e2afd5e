"""One append-only file of checksummed records, with group commit: :class:`LogFile`.

Layout: an 8-byte header (:data:`MAGIC`), then records, then zeros::

    [u32 payload length][u32 crc32 of type byte + payload][u8 type][payload]

Records are only ever appended. Writes go into an in-process buffer and :meth:`sync`
writes the buffer with one ``os.pwrite`` and makes it durable with one
``os.fdatasync``: any number of records since the last sync cost one fsync (group
commit). A crash loses the buffer, and may tear the last write, keeping a prefix of its
records: the contract in :mod:`.interfaces` allows both.

The file is kept zero-filled ahead of the write position in chunks of ``chunk_bytes``
(real zeros, fsynced once per chunk), so a hot-path ``fdatasync`` overwrites blocks
that are already allocated and written, and need not journal a change of file size.
On ext4 that makes it ~30 % cheaper than appending past the end of the file.

Recovery (:meth:`LogFile.records`) reads the records from the start: a zero length is
the end of the log; a record that runs past the end of the file, or fails its checksum
while a sector of it still reads as zeros, is a torn, unsynced tail. (Past the last
synced record the file holds only zeros, and a write that a crash cut short leaves
whole sectors unwritten, as etcd's WAL assumes too.) Everything from there to the last
non-zero byte of the file is zeroed (and fsynced) before new records are written, so a
later crash can never bring back a stale record that happens to line up after new ones.
A record that fails its checksum with every sector written is damage, not a torn
write: :class:`CorruptStorageError`, rather than silently dropping it and every synced
record after it. (Damage to a length field can still pass for a torn tail.)

:meth:`LogFile.rewrite` replaces the file by a new one holding only the given records
(temporary file, fsync, rename, directory fsync), which also makes every earlier write
durable: that is how dead records (truncated, compacted, superseded) are dropped.

Any ``OSError`` poisons the file (:meth:`LogFile.fail`): every later call raises
:class:`StorageFailedError` naming the first failure. A failed ``fdatasync`` poisons
too, because whether the data reached the disk is then unknown.

Threading: one thread at a time (the writer, :mod:`.writer`, while it runs); no locks.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import (
    CorruptStorageError,
    FailureLatch,
    StorageError,
    StorageIOError,
)
from .fsutil import fsync_dir

__all__ = ["DEFAULT_CHUNK_BYTES", "HEADER", "MAGIC", "SECTOR", "LogFile", "translate"]

log = logging.getLogger(__name__)

#: The first bytes of every log file; the last byte is the record format's version.
MAGIC = b"RALOG\x00\x00\x01"
#: A record's header: payload length, crc32 of type byte + payload, type.
HEADER = struct.Struct("<IIB")
#: The unit a crash can leave unwritten: a record that fails its checksum is a torn
#: write only if a whole sector of it (as far as it overlaps the record) is zeros.
SECTOR = 512
#: How far ahead of the write position the file is zero-filled, by default.
DEFAULT_CHUNK_BYTES = 4 << 20
_ZEROS = bytes(1 << 20)
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)


def translate(exc: OSError, doing: str) -> StorageIOError:
    """Map an ``OSError`` to a :class:`StorageIOError` saying what kind it is."""
    if exc.errno in _NO_ROOM:  # a full disk, a quota or a file size limit: no room
        return StorageIOError(f"disk full while {doing}: {exc}")
    if exc.errno in _DENIED or isinstance(exc, PermissionError):
        return StorageIOError(f"permission denied while {doing}: {exc}")
    return StorageIOError(f"I/O error while {doing}: {exc}")


def _record(kind: int, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(bytes((kind,))))
    return HEADER.pack(len(payload), crc, kind) + payload


def _has_unwritten_sector(data: bytes, offset: int) -> bool:
    """Whether ``data``, read at file ``offset``, has a sector-aligned piece of zeros."""
    start = 0
    while start < len(data):
        end = min(len(data), ((offset + start) // SECTOR + 1) * SECTOR - offset)
        if data.count(0, start, end) == end - start:
            return True
        start = end
    return False


def _write_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


def _zero(fd: int, start: int, stop: int) -> None:
    while start < stop:
        n = min(stop - start, len(_ZEROS))
        _write_all(fd, memoryview(_ZEROS)[:n], start)
        start += n


class LogFile(FailureLatch):
    """The records of one file: append (buffered), read back, sync, rewrite.

    Open it, replay :meth:`records` once (it finds the end and cleans a torn tail),
    then append. ``chunk_bytes`` is the preallocation step (tests use tiny ones).
    """

    def __init__(self, path: Path, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        if chunk_bytes < 1:
            raise ValueError("chunk_bytes must be positive")
        self.path = path
        self.chunk_bytes = chunk_bytes
        # Records not yet written (a list, not a bytearray: a memoryview of one, kept
        # alive by a traceback, would forbid clearing it)
        self._buffer: list[bytes] = []
        self._buffered = 0  # their total size
        self._written = len(MAGIC)  # end of the records written to the file
        self._unsynced = False  # written to the file but not yet fdatasync'ed
        self._replayed = False
        self._tmp = path.with_name(path.name + ".tmp")
        try:
            self._tmp.unlink(missing_ok=True)  # a rewrite that crashed
            if not path.exists():
                self._create(path, [])
            self._fd = os.open(path, os.O_RDWR)
        except OSError as exc:
            raise translate(exc, f"opening {path}") from exc
        try:
            self._allocated = os.fstat(self._fd).st_size
            if os.pread(self._fd, len(MAGIC), 0) != MAGIC:
                raise CorruptStorageError(f"{path} is not a raft-actors log file (bad header)")
        except BaseException as exc:
            os.close(self._fd)
            if isinstance(exc, OSError):
                raise translate(exc, f"opening {path}") from exc
            raise

    # ------------------------------------------------------------------ guarded access

    def fail(self, exc: OSError | StorageError, doing: str) -> StorageError:
        """Poison the file with ``exc`` (translated); return the error to raise."""
        error = exc if isinstance(exc, StorageError) else translate(exc, doing)
        if self._latch(error):
            self._clear()
        return error

    def corrupt(self, offset: int, what: str) -> StorageError:
        """Poison the file with a :class:`CorruptStorageError` about the record at ``offset``."""
        error = CorruptStorageError(f"corrupt log {self.path} at offset {offset}: {what}")
        return self.fail(error, what)

    # ------------------------------------------------------------------------ records

    @property
    def written(self) -> int:
        """Where the records written to the file end (buffered ones not included)."""
        return self._written

    @property
    def end(self) -> int:
        """Where the next appended record starts (buffered records included)."""
        return self._written + self._buffered

    def append(self, kind: int, payload: bytes) -> int:
        """Buffer one record; return its offset. Durable after the next :meth:`sync`."""
        self.check()
        offset = self.end
        record = _record(kind, payload)
        self._buffer.append(record)
        self._buffered += len(record)
        return offset

    def read(self, offset: int) -> tuple[int, bytes]:
        """The ``(type, payload)`` of the record at ``offset``, checksum verified."""
        self.check()
        if offset >= self._written:
            self.flush()
        try:
            head = os.pread(self._fd, HEADER.size, offset)
            length, crc, kind = HEADER.unpack(head)
            payload = os.pread(self._fd, length, offset + HEADER.size)
        except OSError as exc:
            raise self.fail(exc, "reading the log") from exc
        except struct.error:
            raise self.corrupt(offset, "record header cut short") from None
        if len(payload) != length or zlib.crc32(payload, zlib.crc32(bytes((kind,)))) != crc:
            raise self.corrupt(offset, "record changed on disk (checksum mismatch)")
        return kind, payload

    def records(self) -> Iterator[tuple[int, int, bytes]]:
        """Replay: ``(offset, type, payload)`` of every intact record, once, in order.

        Stops at the end of the log or at a torn tail, which it then zeroes (with an
        fsync) so that no stale record beyond it can come back.
        """
        if self._replayed:
            raise RuntimeError("records() replays a log file only once, right after opening")
        self._replayed = True
        size, pos = self._allocated, len(MAGIC)
        torn = ""
        while pos + HEADER.size <= size:
            try:
                head = os.pread(self._fd, HEADER.size, pos)
                length, crc, kind = HEADER.unpack(head)
                if length == 0:
                    break
                if pos + HEADER.size + length > size:
                    torn = "runs past the end of the file"
                    break
                payload = os.pread(self._fd, length, pos + HEADER.size)
            except OSError as exc:
                raise self.fail(exc, "reading the log") from exc
            if zlib.crc32(payload, zlib.crc32(bytes((kind,)))) != crc:
                if not _has_unwritten_sector(head + payload, pos):
                    raise self.corrupt(
                        pos,
                        "a record fails its checksum although none of it is unwritten: "
                        "the synced log is damaged (wipe this node's data directory and "
                        "let it catch up from its peers)",
                    )
                torn = "fails its checksum"
                break
            yield pos, kind, payload
            pos += HEADER.size + length
        self._written = pos
        self._clean_tail(torn)

    def _clean_tail(self, torn: str) -> None:
        """Zero from the end of the log to the last non-zero byte, then fsync."""
        start = stop = self._written
        try:
            for pos in range(start, self._allocated, len(_ZEROS)):
                block = os.pread(self._fd, len(_ZEROS), pos)
                if block.count(0) != len(block):
                    stop = pos + len(block.rstrip(b"\0"))
            if stop > start:
                log.warning(
                    "log %s: discarding %d bytes of an unsynced tail at offset %d%s",
                    self.path,
                    stop - start,
                    start,
                    f" (the record there {torn})" if torn else "",
                )
                _zero(self._fd, start, stop)
                os.fsync(self._fd)
        except OSError as exc:
            raise self.fail(exc, "cleaning the torn tail of the log") from exc

    # ---------------------------------------------------------------------- durability

    def flush(self) -> None:
        """Write the buffered records to the file (not yet durable)."""
        self.check()
        if not self._buffer:
            return
        try:
            self._make_room(self._buffered)
            _write_all(self._fd, b"".join(self._buffer), self._written)
        except OSError as exc:
            raise self.fail(exc, "writing the log") from exc
        self._written += self._buffered
        self._clear()
        self._unsynced = True

    def _clear(self) -> None:
        self._buffer.clear()
        self._buffered = 0

    def _make_room(self, n: int) -> None:
        """Zero-fill whole chunks past the allocated end until ``n`` more bytes fit."""
        if self._written + n <= self._allocated:
            return
        new = ((self._written + n) // self.chunk_bytes + 1) * self.chunk_bytes
        _zero(self._fd, self._allocated, new)
        os.fsync(self._fd)  # the new size is durable: later fdatasyncs need not journal it
        self._allocated = new

    def sync(self) -> None:
        """Make every appended record durable: one write, one ``fdatasync``; else no-op."""
        self.check()
        self.flush()
        if not self._unsynced:
            return
        try:
            os.fdatasync(self._fd)
        except OSError as exc:  # the data may or may not be on disk: never trust it again
            raise self.fail(exc, "syncing the log (fdatasync)") from exc
        self._unsynced = False

    @property
    def has_unsynced_writes(self) -> bool:
        """True while records exist that a crash could lose."""
        return bool(self._buffer) or self._unsynced

    def rewrite(self, records: Iterable[tuple[int, bytes]]) -> list[int]:
        """Replace the file by one holding just ``records``; return their offsets.

        Everything before is durable afterwards (a crash keeps the old or the new file).
        """
        self.check()
        try:
            offsets = self._create(self.path, records)
            fd = os.open(self.path, os.O_RDWR)
            os.close(self._fd)
            self._fd = fd
            self._allocated = os.fstat(fd).st_size
        except (OSError, StorageError) as exc:
            raise self.fail(exc, "rewriting the log") from exc
        self._clear()
        self._written = offsets.pop()
        self._unsynced = False
        return offsets

    def _create(self, path: Path, records: Iterable[tuple[int, bytes]]) -> list[int]:
        """Write ``records`` into a new file at ``path``, atomically and durably.

        Returns the records' offsets, then the end of the last one.
        """
        fd = os.open(self._tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            data, written, offsets = bytearray(MAGIC), 0, []
            for kind, payload in records:
                offsets.append(written + len(data))
                data += _record(kind, payload)
                if len(data) >= len(_ZEROS):  # stream: never the whole log in memory
                    _write_all(fd, data, written)
                    written += len(data)
                    data.clear()
            _write_all(fd, data, written)
            end = written + len(data)
            offsets.append(end)
            _zero(fd, end, (end // self.chunk_bytes + 1) * self.chunk_bytes)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self._tmp, path)
        fsync_dir(path.parent)
        return offsets

    def close(self) -> None:
        """Close the file; buffered records are lost, as in a crash."""
        if self._closed:
            return
        self._closed = True
        self._clear()
        try:
            os.close(self._fd)
        except OSError as exc:  # pragma: no cover - close does not fail in practice
            log.error("closing %s: %s", self.path, exc)
