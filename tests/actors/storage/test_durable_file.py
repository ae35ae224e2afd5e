"""The file log's own duties (``durable_log = "file"``): layout, torn and damaged
records, I/O failures. What both formats share is in ``test_durable.py``."""

from __future__ import annotations

import errno
import functools
import os
import subprocess
from pathlib import Path
from typing import Any

import msgpack
import pytest

from actors.storage import (
    FORMATS,
    CorruptStorageError,
    DurableStorage,
    StorageFailedError,
    StorageIOError,
)
from actors.storage.filestore import ENTRIES, STATE, TRUNCATE
from actors.storage.logfile import MAGIC, LogFile
from protocol.raft.log import HardState

from .test_contract import CONF, entries

open_file = functools.partial(DurableStorage.open, durable_log="file")


def test_layout_of_a_new_directory(tmp_path: Path) -> None:
    with open_file(tmp_path / "n1") as storage:
        storage.log.append(entries(1, 3, 1))
        storage.sync()
    names = {p.name for p in (tmp_path / "n1").iterdir()}
    assert names == {"LOCK", "FORMAT", "raft.log", "snapshots"}
    text = (tmp_path / "n1" / "FORMAT").read_text()
    assert text == f"raft-actors storage format {FORMATS['file']}\n"
    assert (tmp_path / "n1" / "raft.log").read_bytes().startswith(MAGIC)


def test_garbage_log_file_is_a_corrupt_storage_error(tmp_path: Path) -> None:
    open_file(tmp_path).close()
    (tmp_path / "raft.log").write_bytes(b"this is not a log file" * 200)
    with pytest.raises(CorruptStorageError, match="not a raft-actors log file"):
        open_file(tmp_path)
    with pytest.raises(CorruptStorageError):  # still refused, and the lock was released
        open_file(tmp_path)


def _add_record(path: Path, kind: int, value: Any) -> None:
    """Append an intact (checksummed) record to the directory's log, as a bug would."""
    file = LogFile(path / "raft.log")
    list(file.records())
    file.append(kind, msgpack.packb(value))
    file.sync()
    file.close()


@pytest.mark.parametrize(
    ("kind", "value", "match"),
    [
        (ENTRIES, [7, [[1, 1, b"x"]]], "not after the last index 5"),
        (ENTRIES, [6, [[1, 99, b"x"]]], "malformed entry"),
        (ENTRIES, [6, [[1, 1, "text"]]], "malformed entry"),
        (TRUNCATE, [9], "does not fit the log"),
        (STATE, [b"\xc1\xc1", None], "does not decode"),
    ],
)
def test_intact_records_that_do_not_fit_are_detected(
    tmp_path: Path, kind: int, value: Any, match: str
) -> None:
    with open_file(tmp_path) as storage:
        storage.log.append(entries(1, 6, 1))
        storage.sync()
    _add_record(tmp_path, kind, value)
    with pytest.raises(CorruptStorageError, match=match) as info:
        open_file(tmp_path)
    assert "raft.log at offset" in str(info.value)
    with pytest.raises(CorruptStorageError):  # refused again: the lock was released
        open_file(tmp_path)


class FullDisk:
    """``os.pwrite`` on a disk with ``free`` bytes left: short writes, then ENOSPC.

    As on a real file system, a short write ends at a block boundary (the space runs
    out a block at a time), so a record cut short leaves a whole sector unwritten.
    """

    BLOCK = 4096

    def __init__(self, free: int) -> None:
        self.free = free
        self.real = os.pwrite

    def __call__(self, fd: int, data: Any, offset: int) -> int:
        stop = offset + min(len(data), self.free)
        if stop < offset + len(data):  # out of space within this write: a whole block
            stop = stop // self.BLOCK * self.BLOCK
        if stop <= offset:
            raise OSError(errno.ENOSPC, "No space left on device")
        done = self.real(fd, memoryview(data)[: stop - offset], offset)
        self.free -= done
        return done


def test_disk_full_poisons_the_store_and_keeps_synced_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_file(tmp_path, chunk_bytes=4096) as storage:
        storage.log.append(entries(1, 4, 1))
        storage.sync()
        monkeypatch.setattr(os, "pwrite", FullDisk(20_000))
        synced = 3
        with pytest.raises(StorageIOError, match="disk full"):
            for i in range(4, 200):
                storage.log.append(entries(i, i + 1, 1, size=400))
                storage.sync()
                synced = i
        assert synced > 4  # it filled up along the way, not at once
        with pytest.raises(StorageFailedError, match="disk full"):
            storage.log.append(entries(200, 201, 1))
        with pytest.raises(StorageFailedError):
            storage.sync()
    monkeypatch.undo()
    with open_file(tmp_path) as storage:
        expected = entries(1, 4, 1) + [
            e for i in range(4, synced + 1) for e in entries(i, i + 1, 1, size=400)
        ]
        assert storage.log.entries(1, synced + 1) == expected
        assert storage.log.last_index() in (synced, synced + 1)  # + the one that failed, maybe


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_directory_is_permission_denied(tmp_path: Path) -> None:
    open_file(tmp_path / "ro").close()
    (tmp_path / "ro").chmod(0o500)
    (tmp_path / "ro" / "raft.log").chmod(0o400)
    try:
        with pytest.raises(StorageIOError, match="permission denied"):
            open_file(tmp_path / "ro")
    finally:
        (tmp_path / "ro" / "raft.log").chmod(0o600)
        (tmp_path / "ro").chmod(0o700)


def _chattr(flag: str, path: Path) -> bool:
    try:
        done = subprocess.run(["chattr", flag, str(path)], capture_output=True, timeout=30)
    except OSError:
        return False
    return done.returncode == 0


def test_an_immutable_log_file_is_permission_denied(tmp_path: Path) -> None:
    """What even root cannot write: a file with the immutable attribute (chattr +i)."""
    open_file(tmp_path).close()
    log = tmp_path / "raft.log"
    if not _chattr("+i", log):
        pytest.skip("chattr +i is not available here (needs CAP_LINUX_IMMUTABLE, ext4...)")
    try:
        with pytest.raises(StorageIOError, match="permission denied while opening"):
            open_file(tmp_path)
    finally:
        _chattr("-i", log)
    open_file(tmp_path).close()  # the lock was released


def test_log_and_hard_state_commit_together(tmp_path: Path) -> None:
    with open_file(tmp_path) as storage:
        storage.log.append(entries(1, 3, 2))
        storage.stable.save(HardState(2, None, 1), CONF)
        storage.log.sync()  # one fdatasync covers both stores
        assert not storage.log._file.has_unsynced_writes
    with open_file(tmp_path) as storage:
        assert storage.stable.hard_state() == HardState(2, None, 1)
        assert storage.log.last_index() == 2


def test_a_read_only_file_system_poisons_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system remounted read-only under a running node: writes fail with EROFS."""
    with open_file(tmp_path) as storage:
        storage.log.append(entries(1, 3, 1))
        storage.sync()

        def read_only(*args: object) -> int:
            raise OSError(errno.EROFS, "Read-only file system")

        monkeypatch.setattr(os, "pwrite", read_only)
        storage.log.append(entries(3, 4, 1))
        with pytest.raises(StorageIOError, match="permission denied"):
            storage.sync()
        with pytest.raises(StorageFailedError, match="permission denied"):
            storage.stable.save(HardState(2), None)
        monkeypatch.undo()
    with open_file(tmp_path) as storage:
        assert storage.log.last_index() == 2
