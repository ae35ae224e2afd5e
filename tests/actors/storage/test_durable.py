"""The durable storage's own duties: locking, format versions, corruption, I/O failures
(of the default SQLite log; the file log's own are in ``test_durable_file.py``)."""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from actors.storage import (
    FORMATS,
    CorruptStorageError,
    DirectoryLockedError,
    DurableStorage,
    IncompatibleFormatError,
    StorageClosedError,
    StorageFailedError,
    StorageIOError,
    datadir,
)
from actors.storage.logfile import MAGIC
from protocol.raft.log import HardState

from .test_contract import CONF, entries, read_snapshot, write_snapshot

ROOT = Path(__file__).resolve().parents[3]


def test_layout_of_a_new_directory(tmp_path: Path) -> None:
    with DurableStorage.open(tmp_path / "n1") as storage:
        storage.log.append(entries(1, 3, 1))
        storage.sync()
    names = {p.name for p in (tmp_path / "n1").iterdir()}
    assert {"LOCK", "FORMAT", "raft.db", "snapshots"} <= names
    text = (tmp_path / "n1" / "FORMAT").read_text()
    assert text == f"raft-actors storage format {FORMATS['sqlite']}\n"


def test_second_open_in_the_same_process_is_refused(tmp_path: Path) -> None:
    with DurableStorage.open(tmp_path), pytest.raises(DirectoryLockedError, match="in use"):
        DurableStorage.open(tmp_path)
    DurableStorage.open(tmp_path).close()  # released on close


def test_second_process_is_refused_with_a_clear_error(
    tmp_path: Path, children: list[subprocess.Popen[Any]]
) -> None:
    code = (
        "import sys\n"
        "from actors.storage import DurableStorage, DirectoryLockedError\n"
        "try:\n"
        "    DurableStorage.open(sys.argv[1])\n"
        "except DirectoryLockedError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(3)\n"
    )
    with DurableStorage.open(tmp_path):
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        children.append(proc)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 3
    assert f"pid {os.getpid()}" in out and "only one process" in out


def test_incompatible_format_version_is_refused_naming_both(tmp_path: Path) -> None:
    DurableStorage.open(tmp_path).close()
    (tmp_path / "FORMAT").write_text("raft-actors storage format 7\n")
    with pytest.raises(IncompatibleFormatError) as info:
        DurableStorage.open(tmp_path)
    assert "version 7" in str(info.value)
    assert "format versions 1 (sqlite log) and 2 (file log)" in str(info.value)
    DurableStorage.open(tmp_path / "other").close()  # the lock was released


def test_foreign_format_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "FORMAT").write_text("something else entirely")
    with pytest.raises(IncompatibleFormatError, match="not a raft-actors data directory"):
        DurableStorage.open(tmp_path)


@pytest.mark.parametrize(("made", "asked"), [("sqlite", "file"), ("file", "sqlite")])
def test_a_directory_keeps_the_log_it_was_made_with(tmp_path: Path, made: Any, asked: Any) -> None:
    with DurableStorage.open(tmp_path, durable_log=made) as storage:
        storage.log.append(entries(1, 3, 1))
        storage.sync()
    with pytest.raises(IncompatibleFormatError) as info:
        DurableStorage.open(tmp_path, durable_log=asked)
    text = str(info.value)
    assert f"keeps the {made!r} log" in text and f"durable_log = {asked!r}" in text
    with DurableStorage.open(tmp_path, durable_log=made) as storage:  # lock released
        assert storage.log.last_index() == 2


@pytest.mark.parametrize(("first", "then"), [("sqlite", "file"), ("file", "sqlite")])
def test_a_first_open_that_failed_does_not_pin_the_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first: Any, then: Any
) -> None:
    def no_space(*args: Any) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(datadir, "_open_log", no_space)
        with pytest.raises(StorageIOError, match="No space left"):
            DurableStorage.open(tmp_path, durable_log=first)
    assert (tmp_path / "FORMAT").read_text().endswith(f"{FORMATS[first]}\n")
    with DurableStorage.open(tmp_path, durable_log=then) as storage:
        storage.log.append(entries(1, 2, 1))
        storage.sync()
    assert (tmp_path / "FORMAT").read_text().endswith(f"{FORMATS[then]}\n")
    with pytest.raises(IncompatibleFormatError):  # from now on it keeps that log
        DurableStorage.open(tmp_path, durable_log=first)


def test_an_unknown_durable_log_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="durable_log must be one of"):
        DurableStorage.open(tmp_path, durable_log="tape")  # type: ignore[arg-type]
    assert not tmp_path.joinpath("FORMAT").exists()


@pytest.mark.parametrize("name", ["raft.log", "raft.db"])
def test_a_log_without_format_file_is_refused(tmp_path: Path, name: str) -> None:
    DurableStorage.open(tmp_path, durable_log="file").close()
    (tmp_path / "FORMAT").unlink()
    if name != "raft.log":
        (tmp_path / "raft.log").rename(tmp_path / name)
    with pytest.raises(CorruptStorageError, match="no FORMAT"):
        DurableStorage.open(tmp_path)


def test_database_version_disagreeing_with_the_directory(tmp_path: Path) -> None:
    DurableStorage.open(tmp_path).close()
    with sqlite3.connect(tmp_path / "raft.db") as conn:
        conn.execute("PRAGMA user_version=9")
    conn.close()
    with pytest.raises(CorruptStorageError, match="format version 9"):
        DurableStorage.open(tmp_path)


def test_garbage_database_file_is_a_corrupt_storage_error(tmp_path: Path) -> None:
    DurableStorage.open(tmp_path).close()
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"raft.db{suffix}").unlink(missing_ok=True)
    (tmp_path / "raft.db").write_bytes(b"this is not an sqlite database" * 200)
    with pytest.raises(CorruptStorageError, match="corrupt database"):
        DurableStorage.open(tmp_path)
    with pytest.raises(CorruptStorageError):  # still refused, and the lock was released
        DurableStorage.open(tmp_path)


def _tamper(path: Path, sql: str) -> None:
    conn = sqlite3.connect(path / "raft.db")
    with conn:
        conn.execute(sql)
    conn.close()


@pytest.mark.parametrize(
    ("sql", "match"),
    [
        ("DELETE FROM log WHERE idx = 3", "not contiguous"),
        ("UPDATE log SET kind = 99 WHERE idx = 5", "unknown kind"),
        ("UPDATE log SET data = 'text' WHERE idx = 5", "malformed"),
        ("UPDATE state SET hard_state = x'c1c1'", "does not decode"),
        ("DELETE FROM state", "state row"),
    ],
)
def test_corrupt_rows_are_detected(tmp_path: Path, sql: str, match: str) -> None:
    with DurableStorage.open(tmp_path) as storage:
        storage.log.append(entries(1, 6, 1))
        storage.sync()
    _tamper(tmp_path, sql)
    with pytest.raises(CorruptStorageError, match=match):
        DurableStorage.open(tmp_path).load()


def _rot_a_row(path: Path) -> None:
    _tamper(path, "UPDATE log SET kind = 99 WHERE idx = 2")


def _rot_a_byte(path: Path) -> None:
    with open(path / "raft.log", "r+b") as f:
        f.seek(len(MAGIC) + 12)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x10]))


@pytest.mark.parametrize(
    ("durable_log", "rot", "match"),
    [("sqlite", _rot_a_row, "unknown kind"), ("file", _rot_a_byte, "checksum")],
)
def test_corruption_found_later_poisons_the_store(
    tmp_path: Path, durable_log: Any, rot: Callable[[Path], None], match: str
) -> None:
    with DurableStorage.open(tmp_path, durable_log=durable_log) as storage:
        storage.log.append(entries(1, 6, 1))
        storage.sync()
        rot(tmp_path)  # under the open store
        with pytest.raises(CorruptStorageError, match=match):
            storage.log.entries(1, 3)
        with pytest.raises(StorageFailedError, match=match):
            storage.log.append(entries(6, 7, 1))
        with pytest.raises(StorageFailedError):
            storage.stable.hard_state()
        assert isinstance(storage.failure, CorruptStorageError)


def test_disk_full_poisons_the_store_and_keeps_synced_data(tmp_path: Path) -> None:
    with DurableStorage.open(tmp_path) as storage:
        storage.log.append(entries(1, 4, 1))
        storage.sync()
        # cap the database's size: the next writes hit SQLITE_FULL, as on a full disk
        pages = storage.log._db._conn.execute("PRAGMA page_count").fetchone()[0]
        storage.log._db._conn.execute(f"PRAGMA max_page_count={pages}")
        with pytest.raises(StorageIOError, match="disk full"):
            for i in range(4, 200):
                storage.log.append(entries(i, i + 1, 1, size=4000))
        with pytest.raises(StorageFailedError, match="disk full"):
            storage.log.append(entries(200, 201, 1))
        with pytest.raises(StorageFailedError):
            storage.sync()
    with DurableStorage.open(tmp_path) as storage:
        assert storage.log.entries(1, storage.log.last_index() + 1) == entries(1, 4, 1)


def test_data_dir_that_is_a_file_is_an_io_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageIOError, match="cannot open data directory"):
        DurableStorage.open(tmp_path / "file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_directory_is_permission_denied(tmp_path: Path) -> None:
    DurableStorage.open(tmp_path / "ro").close()
    (tmp_path / "ro").chmod(0o500)
    (tmp_path / "ro" / "raft.db").chmod(0o400)
    try:
        with pytest.raises(StorageIOError):
            DurableStorage.open(tmp_path / "ro")
    finally:
        (tmp_path / "ro" / "raft.db").chmod(0o600)
        (tmp_path / "ro").chmod(0o700)


def test_closed_storage_refuses_calls(tmp_path: Path) -> None:
    storage = DurableStorage.open(tmp_path)
    storage.close()
    storage.close()
    with pytest.raises(StorageClosedError):
        storage.log.last_index()
    with pytest.raises(StorageClosedError):
        storage.snapshots.begin(_meta(1))


# --------------------------------------------------------------------- snapshot files


def _meta(index: int) -> Any:
    from protocol.raft.log import SnapshotMeta

    return SnapshotMeta(index, 1, CONF)


def _snap_files(path: Path) -> list[Path]:
    return sorted((path / "snapshots").glob("snap-*.snap"))


@pytest.mark.parametrize(
    "damage",
    ["flip-data", "flip-header", "truncate", "trailer", "empty", "rename"],
)
def test_corrupt_newest_snapshot_falls_back_to_the_previous_one_loudly(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    with DurableStorage.open(tmp_path) as storage:
        write_snapshot(storage, 5, 1, b"five" * 100)
        write_snapshot(storage, 9, 1, b"nine" * 100)
    newest = _snap_files(tmp_path)[-1]
    raw = bytearray(newest.read_bytes())
    if damage == "flip-data":
        raw[60] ^= 0x01
    elif damage == "flip-header":
        raw[14] ^= 0x40
    elif damage == "truncate":
        del raw[len(raw) // 2 :]
    elif damage == "trailer":
        raw[-1] ^= 0xFF
    elif damage == "empty":
        raw.clear()
    newest.write_bytes(bytes(raw))
    if damage == "rename":  # a file whose name does not match its header
        newest.rename(newest.with_name(f"snap-{12:020d}-{1:020d}.snap"))
    with caplog.at_level(logging.ERROR), DurableStorage.open(tmp_path) as storage:
        info = storage.snapshots.latest()
        assert info is not None and info.meta.index == 5
        assert read_snapshot(storage) == b"five" * 100
    assert any("CORRUPT SNAPSHOT" in r.message for r in caplog.records)
    assert len(list((tmp_path / "snapshots").glob("*.corrupt"))) == 1


def test_every_snapshot_corrupt_means_none(tmp_path: Path) -> None:
    with DurableStorage.open(tmp_path) as storage:
        write_snapshot(storage, 5, 1, b"five")
    _snap_files(tmp_path)[0].write_bytes(b"RASNAP01")
    with DurableStorage.open(tmp_path) as storage:
        assert storage.snapshots.latest() is None
        assert storage.snapshots.open_latest() is None


def test_partial_snapshots_are_removed_on_open(tmp_path: Path) -> None:
    with DurableStorage.open(tmp_path) as storage:
        write_snapshot(storage, 5, 1, b"five")
        writer = storage.snapshots.begin(_meta(8))
        writer.write(b"half of it")
    assert len(list((tmp_path / "snapshots").glob("*.partial"))) == 1
    with DurableStorage.open(tmp_path) as storage:
        assert list((tmp_path / "snapshots").glob("*.partial")) == []
        assert read_snapshot(storage) == b"five"


def test_reader_detects_data_changed_after_verification(tmp_path: Path) -> None:
    with DurableStorage.open(tmp_path) as storage:
        write_snapshot(storage, 5, 1, b"x" * 1000)
        path = _snap_files(tmp_path)[0]
        raw = bytearray(path.read_bytes())
        raw[100] ^= 1
        path.write_bytes(bytes(raw))
        reader = storage.snapshots.open_latest()  # verified when written: cached
        assert reader is not None
        with pytest.raises(CorruptStorageError, match="changed"):
            while reader.read(100):
                pass
        reader.close()


def test_snapshot_write_failure_is_an_io_error_and_leaves_no_partial(tmp_path: Path) -> None:
    with DurableStorage.open(tmp_path) as storage:
        writer = storage.snapshots.begin(_meta(3))
        real_file = writer._file

        class FullDisk:
            closed = False

            def write(self, data: bytes) -> int:
                raise OSError(errno.ENOSPC, "No space left on device")

            def close(self) -> None:
                real_file.close()

        writer._file = FullDisk()  # type: ignore[assignment]
        with pytest.raises(StorageIOError, match="No space left"):
            writer.write(b"data")
        assert list((tmp_path / "snapshots").iterdir()) == []
        write_snapshot(storage, 4, 1, b"ok")  # the store itself stays usable
        assert read_snapshot(storage) == b"ok"


def test_log_and_hard_state_commit_together(tmp_path: Path) -> None:
    with DurableStorage.open(tmp_path) as storage:
        storage.log.append(entries(1, 3, 2))
        storage.stable.save(HardState(2, None, 1), CONF)
        storage.log.sync()  # one commit covers both stores
        assert not storage.log._db.has_unsynced_writes
    with DurableStorage.open(tmp_path) as storage:
        assert storage.stable.hard_state() == HardState(2, None, 1)
        assert storage.log.last_index() == 2


def test_read_only_database_poisons_the_store(tmp_path: Path) -> None:
    """What root cannot get from chmod: SQLite refusing writes (SQLITE_READONLY)."""
    with DurableStorage.open(tmp_path) as storage:
        storage.log.append(entries(1, 3, 1))
        storage.sync()
        storage.log._db._conn.execute("PRAGMA query_only=1")
        with pytest.raises(StorageIOError, match="permission denied"):
            storage.log.append(entries(3, 4, 1))
        with pytest.raises(StorageFailedError, match="permission denied"):
            storage.stable.save(HardState(2), None)
    with DurableStorage.open(tmp_path) as storage:
        assert storage.log.last_index() == 2


def test_permission_error_while_opening_is_a_storage_io_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "mkdir", denied)
    with pytest.raises(StorageIOError, match="permission denied"):
        DurableStorage.open(tmp_path / "n")
