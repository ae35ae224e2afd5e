"""The durable snapshot store: one file per snapshot, checksummed, published atomically.

A snapshot is written to ``tmp-*.partial``, fsynced, renamed to
``snap-<index>-<term>.snap`` and the directory fsynced: after a crash the file is either
absent or complete. Partial files left by a crash are deleted when the store opens.
Only the newest two snapshots are kept, so one bad file still leaves a good one.

File layout (integers big-endian)::

    "RASNAP01" | u32 meta length | SnapshotMeta (protocol.codec) | u32 CRC-32 of the above
    data bytes
    u64 data length | SHA-256 of the data (32 bytes) | "RASNAPE1"

A file whose header, length or checksum does not verify is corrupt: it is renamed to
``*.corrupt`` (kept for inspection), logged at ERROR, and the previous snapshot is used.
Verification reads the whole file once per process; readers check the hash again.

Threading: the store may be used from several threads (each writer owns its file;
publishing and listing take a lock). A failed snapshot write raises
:class:`StorageIOError` but does not poison the store: the previous snapshot stays valid
and the log is not compacted, so the node can carry on and retry later.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import re
import struct
import threading
import zlib
from pathlib import Path
from typing import BinaryIO

from protocol.codec import ProtocolError, decode, encode
from protocol.raft.log import SnapshotMeta

from .errors import (
    CorruptStorageError,
    InvalidOperationError,
    StorageClosedError,
    StorageError,
    StorageIOError,
)
from .fsutil import fsync_dir
from .interfaces import SnapshotInfo

__all__ = ["FileSnapshotReader", "FileSnapshotStore", "FileSnapshotWriter"]

log = logging.getLogger(__name__)

MAGIC = b"RASNAP01"
END = b"RASNAPE1"
_TRAILER = struct.Struct(">Q32s8s")
_U32 = struct.Struct(">I")
_NAME = re.compile(r"^snap-(\d{20})-(\d{20})\.snap$")
_MAX_META = 16 * 1024 * 1024
_KEEP = 2
_counter = itertools.count()


def _header(meta: SnapshotMeta) -> bytes:
    body = MAGIC + _U32.pack(len(raw := encode(meta))) + raw
    return body + _U32.pack(zlib.crc32(body))


def _io_error(exc: OSError, doing: str) -> StorageIOError:
    return StorageIOError(f"{doing}: {exc}")


class FileSnapshotWriter:
    """Writes one snapshot file; see the module docstring for the protocol."""

    def __init__(self, store: FileSnapshotStore, meta: SnapshotMeta) -> None:
        self._store = store
        self._meta = meta
        self._hash = hashlib.sha256()
        self._size = 0
        self._done = False
        name = f"tmp-{meta.index}-{meta.term}-{os.getpid()}-{next(_counter)}.partial"
        self._tmp = store.directory / name
        try:
            self._file: BinaryIO = open(self._tmp, "xb")  # noqa: SIM115 - closed in finish/abort
            self._file.write(_header(meta))
        except OSError as exc:
            self.abort()
            raise _io_error(exc, f"starting snapshot {self._tmp}") from exc

    @property
    def meta(self) -> SnapshotMeta:
        return self._meta

    def write(self, chunk: bytes) -> None:
        self._check()
        try:
            self._file.write(chunk)
        except OSError as exc:
            self.abort()
            raise _io_error(exc, f"writing snapshot {self._tmp}") from exc
        self._hash.update(chunk)
        self._size += len(chunk)

    def finish(self) -> SnapshotInfo:
        self._check()
        info = SnapshotInfo(self._meta, self._size, self._hash.hexdigest())
        try:
            self._file.write(_TRAILER.pack(self._size, self._hash.digest(), END))
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._done = True
            self._store._publish(self._tmp, info)
        except OSError as exc:
            self.abort()
            raise _io_error(exc, f"finishing snapshot {self._tmp}") from exc
        return info

    def abort(self) -> None:
        self._done = True
        if hasattr(self, "_file"):
            with contextlib.suppress(OSError):
                self._file.close()
        try:
            self._tmp.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not remove partial snapshot %s: %s", self._tmp, exc)

    def _check(self) -> None:
        if self._done:
            raise StorageClosedError("snapshot writer already finished or aborted")
        if self._store.closed:
            self.abort()
            raise StorageClosedError(f"snapshot store {self._store.directory} is closed")

    def __enter__(self) -> FileSnapshotWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._done:
            self.abort()


class FileSnapshotReader:
    """Reads the data of one snapshot file, checking its SHA-256 at the end."""

    def __init__(self, info: SnapshotInfo, file: BinaryIO, path: Path) -> None:
        self._info = info
        self._file = file
        self._path = path
        self._left = info.size
        self._hash = hashlib.sha256()
        self._checked = False

    @property
    def info(self) -> SnapshotInfo:
        return self._info

    def read(self, max_bytes: int = 1 << 20) -> bytes:
        if max_bytes <= 0:
            raise InvalidOperationError("max_bytes must be positive")
        if self._file.closed:
            raise StorageClosedError(f"snapshot reader for {self._path} is closed")
        try:
            chunk = self._file.read(min(max_bytes, self._left))
        except OSError as exc:
            raise _io_error(exc, f"reading snapshot {self._path}") from exc
        if len(chunk) < min(max_bytes, self._left):
            raise CorruptStorageError(f"snapshot {self._path} is shorter than its header says")
        self._left -= len(chunk)
        self._hash.update(chunk)
        if self._left == 0 and not self._checked:
            self._checked = True
            if self._hash.hexdigest() != self._info.checksum:
                raise CorruptStorageError(f"snapshot {self._path} changed since it was verified")
        return chunk

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> FileSnapshotReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _verify(path: Path) -> tuple[SnapshotInfo, int]:
    """Check a snapshot file completely; return its info and where its data starts."""
    with open(path, "rb") as f:
        head = f.read(len(MAGIC) + _U32.size)
        if len(head) != len(MAGIC) + _U32.size or head[: len(MAGIC)] != MAGIC:
            raise CorruptStorageError(f"{path}: bad magic")
        (meta_len,) = _U32.unpack(head[len(MAGIC) :])
        if meta_len > _MAX_META:
            raise CorruptStorageError(f"{path}: implausible header length {meta_len}")
        raw = f.read(meta_len)
        crc = f.read(_U32.size)
        if len(raw) != meta_len or len(crc) != _U32.size:
            raise CorruptStorageError(f"{path}: truncated header")
        if _U32.unpack(crc)[0] != zlib.crc32(head + raw):
            raise CorruptStorageError(f"{path}: header checksum mismatch")
        try:
            meta = decode(raw, SnapshotMeta)
        except ProtocolError as exc:
            raise CorruptStorageError(f"{path}: header does not decode: {exc}") from None
        offset = len(head) + meta_len + _U32.size
        total = os.fstat(f.fileno()).st_size
        size = total - offset - _TRAILER.size
        if size < 0:
            raise CorruptStorageError(f"{path}: truncated (no trailer)")
        digest = hashlib.sha256()
        left = size
        while left:
            chunk = f.read(min(left, 1 << 20))
            if not chunk:
                raise CorruptStorageError(f"{path}: truncated data")
            digest.update(chunk)
            left -= len(chunk)
        stated_size, stated_hash, end = _TRAILER.unpack(f.read(_TRAILER.size))
    if end != END or stated_size != size:
        raise CorruptStorageError(f"{path}: bad trailer (torn or truncated file)")
    if stated_hash != digest.digest():
        raise CorruptStorageError(f"{path}: data checksum mismatch")
    match = _NAME.match(path.name)
    if match is None or (int(match[1]), int(match[2])) != (meta.index, meta.term):
        raise CorruptStorageError(f"{path}: name does not match its header {meta}")
    return SnapshotInfo(meta, size, digest.hexdigest()), offset


class FileSnapshotStore:
    """The durable :class:`~.interfaces.SnapshotStore` in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._verified: dict[str, tuple[SnapshotInfo, int]] = {}
        self.closed = False
        try:
            directory.mkdir(parents=True, exist_ok=True)
            for partial in directory.glob("tmp-*.partial"):
                log.warning("removing partial snapshot %s left by a crash", partial)
                partial.unlink()
            self._cleanup()
        except OSError as exc:
            raise _io_error(exc, f"opening snapshot directory {directory}") from exc

    def begin(self, meta: SnapshotMeta) -> FileSnapshotWriter:
        if self.closed:
            raise StorageClosedError(f"snapshot store {self.directory} is closed")
        if not isinstance(meta, SnapshotMeta):
            raise InvalidOperationError(f"not a SnapshotMeta: {type(meta).__name__}")
        return FileSnapshotWriter(self, meta)

    def latest(self) -> SnapshotInfo | None:
        found = self._latest()
        return found[0] if found else None

    def open_latest(self) -> FileSnapshotReader | None:
        for _ in range(3):  # a newer snapshot may replace the one found meanwhile
            found = self._latest()
            if found is None:
                return None
            info, offset, path = found
            try:
                file: BinaryIO = open(path, "rb")  # noqa: SIM115 - the reader closes it
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise _io_error(exc, f"opening snapshot {path}") from exc
            file.seek(offset)
            return FileSnapshotReader(info, file, path)
        raise StorageIOError(f"snapshots in {self.directory} keep changing under the reader")

    def close(self) -> None:
        """Refuse further use; unfinished writers can no longer finish (as in a crash)."""
        self.closed = True

    def _names(self) -> list[tuple[int, int, Path]]:
        out = []
        for path in self.directory.iterdir():
            match = _NAME.match(path.name)
            if match:
                out.append((int(match[1]), int(match[2]), path))
        out.sort(reverse=True)
        return out

    def _latest(self) -> tuple[SnapshotInfo, int, Path] | None:
        with self._lock:
            try:
                for _, _, path in self._names():
                    cached = self._verified.get(path.name)
                    if cached is None:
                        try:
                            cached = _verify(path)
                        except CorruptStorageError as exc:
                            self._quarantine(path, exc)
                            continue
                        except FileNotFoundError:
                            continue
                        self._verified[path.name] = cached
                    return cached[0], cached[1], path
            except OSError as exc:
                raise _io_error(exc, f"reading snapshots in {self.directory}") from exc
        return None

    def _quarantine(self, path: Path, exc: StorageError) -> None:
        log.error("CORRUPT SNAPSHOT %s ignored, falling back to the previous one: %s", path, exc)
        try:
            path.rename(path.with_name(path.name + ".corrupt"))
        except OSError as rename_exc:
            log.error("could not move corrupt snapshot %s aside: %s", path, rename_exc)

    def _publish(self, tmp: Path, info: SnapshotInfo) -> None:
        """Rename a finished temp file into place, fsync the directory, drop old ones."""
        meta = info.meta
        final = self.directory / f"snap-{meta.index:020d}-{meta.term:020d}.snap"
        with self._lock:
            os.replace(tmp, final)
            fsync_dir(self.directory)
            self._verified[final.name] = (info, len(_header(meta)))
            self._cleanup()

    def _cleanup(self) -> None:
        for _, _, path in self._names()[_KEEP:]:
            self._verified.pop(path.name, None)
            path.unlink(missing_ok=True)
