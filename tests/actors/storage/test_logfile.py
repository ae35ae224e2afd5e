"""The log file and the stores on it, below ``DurableStorage``: format, recovery, failures.

The contract itself is checked by ``test_contract`` and ``test_stateful`` through
``DurableStorage``; here the file's own duties are: a torn tail is recovered to a prefix
of the writes and zeroed, a record that is intact but does not fit is corruption,
preallocation and rewrites keep everything, and every OS error poisons the store.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from actors.storage import (
    CorruptStorageError,
    InvalidOperationError,
    MemoryStorage,
    StorageClosedError,
    StorageFailedError,
    StorageIOError,
)
from actors.storage.filestore import (
    COMPACT,
    ENTRIES,
    STATE,
    TRUNCATE,
    FileLogStore,
    FileStableStore,
    LogState,
    open_state,
)
from actors.storage.logfile import HEADER, MAGIC, SECTOR, LogFile
from protocol.codec import encode
from protocol.ids import MemberId
from protocol.raft.log import Configuration, EntryKind, HardState, LogEntry

from .test_contract import CONF, entries

CHUNK = 256


class Opened:
    """A log file replayed into both stores, as ``DurableStorage`` opens it."""

    def __init__(self, path: Path, chunk: int = CHUNK) -> None:
        self.path = path
        self.file = LogFile(path, chunk)
        self.state: LogState = open_state(self.file)
        self.log = FileLogStore(self.state)
        self.stable = FileStableStore(self.state)

    def close(self) -> None:
        self.file.close()


View = tuple[int, int, tuple[LogEntry, ...], HardState, Configuration | None]


def view(s: Opened | MemoryStorage) -> View:
    log = s.log
    first, last = log.first_index(), log.last_index()
    point_term = log.term_at(first - 1)
    assert point_term is not None
    items = tuple(log.entries(first, last + 1))
    return first - 1, point_term, items, s.stable.hard_state(), s.stable.configuration()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "raft.log"


@pytest.fixture
def opened(path: Path) -> Iterator[Callable[..., Opened]]:
    made: list[Opened] = []

    def open_(chunk: int = CHUNK) -> Opened:
        made.append(Opened(path, chunk))
        return made[-1]

    yield open_
    for s in made:
        s.close()


def tail_is_zero(path: Path, start: int) -> bool:
    return path.read_bytes()[start:].count(0) == path.stat().st_size - start


# ------------------------------------------------------------------------ the format


def test_a_new_file_is_a_header_and_a_zeroed_chunk(opened: Callable[..., Opened]) -> None:
    s = opened()
    assert view(s) == (0, 0, (), HardState(), None)
    raw = s.path.read_bytes()
    assert raw[: len(MAGIC)] == MAGIC and len(raw) == CHUNK and tail_is_zero(s.path, len(MAGIC))
    assert not (s.path.parent / "raft.log.tmp").exists()


def test_one_record_per_batch_and_per_save(opened: Callable[..., Opened]) -> None:
    s = opened()
    s.log.append(entries(1, 4, 1))
    s.stable.save(HardState(1, MemberId("a"), 2), CONF)
    s.log.sync()
    raw = s.path.read_bytes()
    length, _, kind = HEADER.unpack_from(raw, len(MAGIC))
    assert kind == ENTRIES
    payload = raw[len(MAGIC) + HEADER.size : len(MAGIC) + HEADER.size + length]
    assert msgpack.unpackb(payload) == [1, [[1, 1, bytes([i]) * 3] for i in (1, 2, 3)]]
    second = len(MAGIC) + HEADER.size + length
    assert HEADER.unpack_from(raw, second)[2] == STATE
    assert s.file.end == s.file.written == second + HEADER.size + HEADER.unpack_from(raw, second)[0]


def test_everything_survives_a_reopen(opened: Callable[..., Opened]) -> None:
    s = opened()
    s.log.append(entries(1, 6, 1))
    s.log.append(entries(6, 9, 2))
    s.log.truncate_suffix(7)
    s.log.append(entries(7, 10, 3))
    s.log.compact_prefix(3, 1)
    s.stable.save(HardState(3, MemberId("b"), 5), CONF)
    s.stable.sync()
    before = view(s)
    assert before[:3] == (3, 1, tuple(entries(4, 6, 1) + entries(6, 7, 2) + entries(7, 10, 3)))
    s.close()
    again = opened()
    assert view(again) == before
    assert [again.log.term_at(i) for i in range(2, 11)] == [None, 1, 1, 1, 2, 3, 3, 3, None]


def test_a_second_sync_costs_nothing(
    opened: Callable[..., Opened], monkeypatch: pytest.MonkeyPatch
) -> None:
    s = opened()
    calls: list[int] = []
    real = os.fdatasync

    def counted(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counted)
    s.log.append(entries(1, 3, 1))
    s.stable.save(HardState(1), None)
    s.log.sync()
    s.stable.sync()
    s.log.sync()
    assert len(calls) == 1 and not s.file.has_unsynced_writes


def test_the_file_grows_in_whole_zeroed_chunks(opened: Callable[..., Opened]) -> None:
    s = opened(chunk=64)
    for i in range(1, 40):
        s.log.append(entries(i, i + 1, 1, size=20))
        s.log.sync()
        size = s.path.stat().st_size
        assert size % 64 == 0 and size >= s.file.end and tail_is_zero(s.path, s.file.end)
    s.close()
    assert view(opened(chunk=64))[2] == tuple(entries(1, 40, 1, size=20))


def test_a_big_batch_fits_in_one_step(opened: Callable[..., Opened]) -> None:
    s = opened(chunk=64)
    s.log.append(entries(1, 30, 1, size=100))
    s.log.sync()
    assert s.path.stat().st_size % 64 == 0
    s.close()
    assert view(opened())[2] == tuple(entries(1, 30, 1, size=100))


def test_entries_spanning_records_truncations_and_limits(opened: Callable[..., Opened]) -> None:
    s = opened()
    s.log.append(entries(1, 5, 1, size=10))
    s.log.append(entries(5, 9, 1, size=10))
    s.log.truncate_suffix(7)
    s.log.append(entries(7, 9, 2, size=10))
    expected = entries(1, 7, 1, size=10) + entries(7, 9, 2, size=10)
    assert s.log.entries(1, 9) == expected
    assert s.log.entries(3, 8) == expected[2:7]
    assert s.log.entries(4, 9, max_bytes=35) == expected[3:6]
    assert s.log.entries(8, 8) == []


# ---------------------------------------------------------------------- corruption


def test_a_garbage_file_is_corrupt(path: Path) -> None:
    path.write_bytes(b"this is not a log file" * 100)
    with pytest.raises(CorruptStorageError, match="not a raft-actors log file"):
        LogFile(path)
    path.write_bytes(b"RAL")
    with pytest.raises(CorruptStorageError, match="bad header"):
        LogFile(path)


def _record_file(path: Path, records: list[tuple[int, Any]]) -> None:
    """A file holding exactly ``records`` (payloads msgpack-packed), synced."""
    s = Opened(path)
    for kind, value in records:
        s.file.append(kind, value if isinstance(value, bytes) else msgpack.packb(value))
    s.file.sync()
    s.close()


def _entry(term: int, kind: Any = 1, data: Any = b"x") -> list[Any]:
    return [term, kind, data]


@pytest.mark.parametrize(
    ("records", "match"),
    [
        ([(ENTRIES, [2, [_entry(1)]])], "start at 2, not after the last index 0"),
        ([(ENTRIES, [1, [_entry(2), _entry(1)]])], "terms go backwards"),
        ([(ENTRIES, [1, [_entry(2)]]), (ENTRIES, [2, [_entry(1)]])], "terms go backwards"),
        ([(ENTRIES, [1, []])], "without entries"),
        ([(ENTRIES, [1, [_entry(1, kind=9)]])], "malformed entry"),
        ([(ENTRIES, [1, [_entry(1, data="text")]])], "malformed entry"),
        ([(ENTRIES, [1, [[1, 1]]])], "malformed entry"),
        ([(ENTRIES, "no list")], "malformed entries record"),
        ([(ENTRIES, b"\xc1")], "malformed entries record"),
        ([(ENTRIES, [1, [_entry(1)]]), (TRUNCATE, [3])], "type 2 does not fit"),
        ([(ENTRIES, [1, [_entry(1)]]), (TRUNCATE, [1, 2])], "type 2 does not fit"),
        ([(COMPACT, [2, 1]), (TRUNCATE, [2])], "type 2 does not fit"),
        ([(COMPACT, [2, 1]), (COMPACT, [2, 1])], "type 3 does not fit"),
        ([(COMPACT, [2, -1])], "type 3 does not fit"),
        ([(STATE, [b"\xc1", None])], "stable state does not decode"),
        ([(STATE, [encode(HardState()), b"\x90"])], "stable state does not decode"),
        ([(STATE, [encode(HardState())])], "type 4 does not fit"),
        ([(9, [1])], "type 9 does not fit"),
    ],
)
def test_an_intact_record_that_does_not_fit_is_corrupt(
    path: Path, records: list[tuple[int, Any]], match: str
) -> None:
    _record_file(path, records)
    with pytest.raises(CorruptStorageError, match=match) as info:
        Opened(path)
    assert f"corrupt log {path} at offset " in str(info.value)


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        ("flip", "checksum mismatch"),
        ("cut-payload", "checksum mismatch"),
        ("cut-header", "record header cut short"),
        ("replace", "record starts at 5, not 1"),
    ],
)
def test_a_record_damaged_after_opening_is_found_when_read(
    opened: Callable[..., Opened], damage: str, match: str
) -> None:
    s = opened()
    s.log.append(entries(1, 4, 1, size=20))
    s.log.sync()
    start = len(MAGIC)
    raw = bytearray(s.path.read_bytes())
    if damage == "flip":
        raw[start + HEADER.size + 10] ^= 1
    elif damage == "cut-payload":
        del raw[start + HEADER.size + 10 :]
    elif damage == "cut-header":
        del raw[start + 3 :]
    else:  # an intact record, but not the one that was written there
        other = LogFile(s.path.parent / "other.log")
        list(other.records())
        other.append(ENTRIES, msgpack.packb([5, [[1, 1, bytes([i]) * 20] for i in (1, 2, 3)]]))
        other.sync()
        record = (s.path.parent / "other.log").read_bytes()[start : s.file.end]
        other.close()
        raw[start : s.file.end] = record
    with open(s.path, "r+b") as f:  # in place: the open file sees it
        f.write(raw)
        f.truncate()
    assert s.log.term_at(2) == 1  # answered from memory
    with pytest.raises(CorruptStorageError, match=match):
        s.log.entries(1, 4)
    with pytest.raises(StorageFailedError, match=match):
        s.stable.hard_state()
    assert isinstance(s.file.failure, CorruptStorageError)


# -------------------------------------------------------------------- torn tails


def _synced_then_torn(path: Path) -> tuple[View, int, int]:
    """Sync a state, then write (not sync) one more record, a few sectors long; return
    the state and the record's start and end."""
    s = Opened(path)
    s.log.append(entries(1, 4, 1))
    s.stable.save(HardState(1, MemberId("a"), 0), CONF)
    s.log.sync()
    synced, start = view(s), s.file.end
    s.log.append(entries(4, 6, 2, size=700))
    s.file.flush()  # on disk now, but not durable: a crash may tear it
    end = s.file.written
    s.close()
    assert end - start > 2 * SECTOR
    return synced, start, end


def _sectors(start: int, end: int) -> list[int]:
    """``start`` and the sector boundaries after it, before ``end``."""
    return [start, *range((start // SECTOR + 1) * SECTOR, end, SECTOR)]


@pytest.mark.parametrize("damage", ["zero-from", "zero-sector", "cut-at"])
def test_a_torn_last_record_is_dropped_and_zeroed(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "raft.log"
    synced, start, end = _synced_then_torn(path)
    pristine = path.read_bytes()
    cuts = range(start, end) if damage == "cut-at" else _sectors(start, end)
    for offset in cuts:
        raw = bytearray(pristine)
        if damage == "zero-from":  # the sectors from here on never reached the disk
            raw[offset:end] = bytes(end - offset)
        elif damage == "zero-sector":  # this one did not, the later ones did
            stop = min(end, (offset // SECTOR + 1) * SECTOR)
            raw[offset:stop] = bytes(stop - offset)
        else:  # nor did the file's new size
            del raw[offset:]
        path.write_bytes(bytes(raw))
        s = Opened(path)
        assert view(s) == synced, f"{damage} at {offset}"
        assert s.file.end == start and tail_is_zero(path, start), f"{damage} at {offset}"
        s.close()


def test_a_damaged_record_is_corruption_not_a_torn_tail(tmp_path: Path) -> None:
    """A changed byte where every sector was written is damage: the store refuses to
    open rather than drop the record (and every synced one after it) as a torn write."""
    path = tmp_path / "raft.log"
    synced, start, end = _synced_then_torn(path)
    pristine = path.read_bytes()
    for offset in range(start, end):
        raw = bytearray(pristine)
        raw[offset] ^= 0x20
        path.write_bytes(bytes(raw))
        if offset < start + 4:  # the length: the record may now look cut short (torn)
            try:
                s = Opened(path)
            except CorruptStorageError:
                continue
            assert view(s) == synced, f"flip at {offset}"
            s.close()
            continue
        with pytest.raises(CorruptStorageError, match=f"offset {start}: .* none of it"):
            Opened(path)
    # damage in the middle of a synced log, records after it: refused, nothing dropped
    path.write_bytes(pristine)
    s = Opened(path)
    s.log.sync()
    s.log.append(entries(6, 9, 2))
    s.log.sync()
    s.close()
    raw = bytearray(path.read_bytes())
    raw[start + HEADER.size + 5] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptStorageError, match="the synced log is damaged"):
        Opened(path)


def test_a_stale_record_behind_a_torn_one_never_comes_back(tmp_path: Path) -> None:
    path = tmp_path / "raft.log"
    s = Opened(path)
    s.log.append(entries(1, 4, 1))
    s.log.sync()
    torn_at = s.file.end
    s.log.append(entries(4, 7, 1))  # X: to be torn
    y_at = s.file.end
    s.log.append(entries(7, 10, 1))  # Y: intact, right behind X
    s.file.flush()
    s.close()
    raw = bytearray(path.read_bytes())
    raw[torn_at:y_at] = bytes(y_at - torn_at)  # X never reached the disk, Y did
    path.write_bytes(bytes(raw))
    s = Opened(path)  # the log ends at X's zero header, and Y is zeroed
    assert s.log.last_index() == 3
    s.log.append(entries(4, 7, 2))  # X': exactly X's size, so Y would line up behind it
    s.log.sync()
    assert s.file.end == y_at
    s.close()
    s = Opened(path)
    assert view(s)[2] == tuple(entries(1, 4, 1) + entries(4, 7, 2))
    s.close()


def test_garbage_past_a_zero_header_is_zeroed(path: Path) -> None:
    s = Opened(path)
    s.log.append(entries(1, 3, 1))
    s.log.sync()
    end = s.file.end
    s.close()
    with open(path, "r+b") as f:  # a later page reached the disk, an earlier one did not
        f.seek(end + 40)
        f.write(b"\x07" * 30)
    s = Opened(path)
    assert s.log.last_index() == 2 and tail_is_zero(path, end)
    s.close()


def test_a_leftover_rewrite_file_is_removed(path: Path) -> None:
    Opened(path).close()
    (path.parent / "raft.log.tmp").write_bytes(b"half a rewrite")
    Opened(path).close()
    assert not (path.parent / "raft.log.tmp").exists()


# -------------------------------------------------------------------------- rewrite


def test_dead_records_are_rewritten_away(opened: Callable[..., Opened]) -> None:
    s = opened(chunk=64)
    term = 1
    for i in range(1, 200, 4):
        s.log.append(entries(i, i + 4, term, size=30))
        s.stable.save(HardState(term, None, i), CONF)
        s.log.compact_prefix(i + 1, term)  # keeps entries i+2 .. i+3
        s.log.sync()
        assert s.file.end < 4 * 1024, "dead records piled up"
    size = s.path.stat().st_size
    assert size < 4 * 1024 and size % 64 == 0 and tail_is_zero(s.path, s.file.end)
    before = view(s)
    assert before[:3] == (198, 1, tuple(entries(199, 201, 1, size=30)))
    s.close()
    assert view(opened(chunk=64)) == before


def test_a_rewrite_keeps_partly_dead_records_live_part(opened: Callable[..., Opened]) -> None:
    s = opened(chunk=32)
    s.log.append(entries(1, 30, 1, size=20))
    s.log.truncate_suffix(25)
    s.log.compact_prefix(5, 1)  # entries 6..24 remain of one record of 1..29
    s.log.append(entries(25, 27, 2, size=5))
    for commit in range(100):  # superseded states: dead bytes enough for a rewrite
        s.stable.save(HardState(2, None, commit), None)
    ends = s.file.end
    s.log.sync()
    assert s.file.end < ends  # rewritten rather than synced
    before = view(s)
    assert before[2] == tuple(entries(6, 25, 1, size=20) + entries(25, 27, 2, size=5))
    s.close()
    assert view(opened(chunk=32)) == before


def test_a_rewrite_of_a_big_log_streams(opened: Callable[..., Opened]) -> None:
    s = opened(chunk=4096)
    for i in range(1, 301, 10):  # 1.5 MB, which stays
        s.log.append(entries(i, i + 10, 1, size=5000))
    s.log.sync()
    for _ in range(2):  # 2 MB, dead at once
        s.log.append(entries(301, 501, 1, size=5000))
        s.log.truncate_suffix(301)
    ends = s.file.end
    s.log.sync()
    assert s.file.end < ends / 2
    assert s.log.entries(1, 301) == entries(1, 301, 1, size=5000)
    s.close()
    assert view(opened())[2] == tuple(entries(1, 301, 1, size=5000))


def test_a_failed_rewrite_poisons_and_keeps_the_old_file(
    opened: Callable[..., Opened], monkeypatch: pytest.MonkeyPatch
) -> None:
    s = opened(chunk=32)
    s.log.append(entries(1, 10, 1, size=20))
    s.log.sync()
    s.log.compact_prefix(9, 1)

    def refuse(*args: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(StorageIOError, match="I/O error while rewriting the log"):
        s.log.sync()
    with pytest.raises(StorageFailedError):
        s.log.last_index()
    monkeypatch.undo()
    s.close()
    allowed = [(0, 0, tuple(entries(1, 10, 1, size=20))), (9, 1, ())]  # synced, or + compact
    assert view(opened(chunk=32))[:3] in allowed
    assert not (s.path.parent / "raft.log.tmp").exists()


# ------------------------------------------------------------------------ failures


def _failing(errno_: int) -> Callable[..., int]:
    def fail(*args: object) -> int:
        raise OSError(errno_, os.strerror(errno_))

    return fail


@pytest.mark.parametrize(
    ("call", "code", "match"),
    [
        ("pwrite", errno.ENOSPC, "disk full while writing the log"),
        ("pwrite", errno.EDQUOT, "disk full"),
        ("pwrite", errno.EFBIG, "disk full"),
        ("pwrite", errno.EROFS, "permission denied while writing the log"),
        ("pwrite", errno.EACCES, "permission denied"),
        ("pwrite", errno.EIO, "I/O error while writing the log"),
        ("fdatasync", errno.EIO, r"I/O error while syncing the log \(fdatasync\)"),
        ("fsync", errno.ENOSPC, "disk full while writing the log"),
    ],
)
def test_an_os_error_poisons_and_synced_data_stays(
    opened: Callable[..., Opened],
    monkeypatch: pytest.MonkeyPatch,
    call: str,
    code: int,
    match: str,
) -> None:
    s = opened(chunk=64)
    s.log.append(entries(1, 3, 1))
    s.log.sync()
    monkeypatch.setattr(os, call, _failing(code))
    s.log.append(entries(3, 10, 1, size=20))  # past the chunk: needs room (fsync) first
    with pytest.raises(StorageIOError, match=match):
        s.log.sync()
    monkeypatch.undo()
    for later in (s.log.sync, lambda: s.log.append(entries(10, 11, 1)), s.stable.hard_state):
        with pytest.raises(StorageFailedError, match=match):
            later()
    s.close()
    synced = entries(1, 3, 1)
    assert view(opened(chunk=64))[2] in (tuple(synced), tuple(synced + entries(3, 10, 1, size=20)))


def test_a_failed_read_poisons(
    opened: Callable[..., Opened], monkeypatch: pytest.MonkeyPatch
) -> None:
    s = opened()
    s.log.append(entries(1, 3, 1))
    s.log.sync()
    monkeypatch.setattr(os, "pread", _failing(errno.EIO))
    with pytest.raises(StorageIOError, match="I/O error while reading the log"):
        s.log.entries(1, 3)
    monkeypatch.undo()
    with pytest.raises(StorageFailedError):
        s.log.entries(1, 3)


@pytest.mark.parametrize("call", ["pread", "fsync"])
def test_a_failure_while_recovering_is_an_io_error(
    path: Path, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    _, start, end = _synced_then_torn(path)
    raw = bytearray(path.read_bytes())
    cut = _sectors(start, end)[1]
    raw[cut:end] = bytes(end - cut)  # a torn tail to clean, which needs an fsync
    path.write_bytes(bytes(raw))
    real, fail = getattr(os, call), _failing(errno.EIO)
    # pread fails past the file header (while replaying), fsync always
    monkeypatch.setattr(os, call, lambda *a: fail() if a[-1] != 0 or call == "fsync" else real(*a))
    with pytest.raises(StorageIOError, match="I/O error while"):
        Opened(path)


def test_a_file_that_cannot_be_opened_is_an_io_error(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Opened(path).close()
    monkeypatch.setattr(os, "open", _failing(errno.EACCES))
    with pytest.raises(StorageIOError, match="permission denied while opening"):
        LogFile(path)
    monkeypatch.undo()
    monkeypatch.setattr(os, "pread", _failing(errno.EIO))
    with pytest.raises(StorageIOError, match="I/O error while opening"):
        LogFile(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_a_read_only_file_is_permission_denied(path: Path) -> None:
    Opened(path).close()
    path.chmod(0o400)
    try:
        with pytest.raises(StorageIOError, match="permission denied"):
            LogFile(path)
    finally:
        path.chmod(0o600)


def test_misuse(opened: Callable[..., Opened]) -> None:
    with pytest.raises(ValueError, match="chunk_bytes"):
        LogFile(Path("unused"), 0)
    s = opened()
    with pytest.raises(RuntimeError, match="only once"):
        list(s.file.records())
    with pytest.raises(InvalidOperationError):
        s.log.truncate_suffix(0)
    with pytest.raises(InvalidOperationError, match="not a Configuration"):
        s.stable.save(HardState(1), "conf")  # type: ignore[arg-type]
    s.close()
    s.close()
    with pytest.raises(StorageClosedError):
        s.log.append(entries(1, 2, 1))
    with pytest.raises(StorageClosedError):
        s.stable.sync()


# ----------------------------------------------- random histories, crashes, tears


class LogFileMachine(RuleBasedStateMachine):
    """Drives the file stores and ``MemoryStorage`` (the model) side by side.

    Tiny chunks make every sync grow the file or rewrite it. A crash closes the file
    without syncing, may zero a random run of sectors of what was written since the last
    sync (sectors that never reached the disk, torn records) and reopens: the result must be
    the synced state or one reached by a later write (a prefix of them), never anything
    else.
    """

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="logfile-machine-"))
        self.path = self.dir / "raft.log"
        self.model = MemoryStorage()
        self.since_sync: list[View] = [view(self.model)]
        self.synced_end = len(MAGIC)
        self.chunk = CHUNK
        self.s = Opened(self.path, self.chunk)

    @initialize(chunk=st.sampled_from([16, 64, 200, 4096]))
    def chunk_size(self, chunk: int) -> None:
        self.s.close()
        self.chunk = chunk
        self.s = Opened(self.path, chunk)

    def teardown(self) -> None:
        self.s.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _wrote(self) -> None:
        self.since_sync.append(view(self.model))

    @rule(n=st.integers(1, 6), bump=st.integers(0, 2), size=st.integers(0, 50))
    def append(self, n: int, bump: int, size: int) -> None:
        first, term = self.model.log.last_index() + 1, self.model.log.last_term() + bump
        batch = [
            LogEntry(first + k, term, EntryKind(k % 3), bytes([k % 256]) * size) for k in range(n)
        ]
        self.s.log.append(batch)
        self.model.log.append(batch)
        self._wrote()

    @precondition(lambda self: self.model.log.last_index() >= self.model.log.first_index())
    @rule(data=st.data())
    def truncate(self, data: st.DataObject) -> None:
        log = self.model.log
        index = data.draw(st.integers(log.first_index(), log.last_index() + 1))
        self.s.log.truncate_suffix(index)
        self.model.log.truncate_suffix(index)
        self._wrote()

    @rule(data=st.data(), conflict=st.booleans())
    def compact(self, data: st.DataObject, conflict: bool) -> None:
        log = self.model.log
        index = data.draw(st.integers(0, log.last_index() + 2))
        term = log.term_at(index)
        if term is None or conflict:
            term = log.last_term() + 1
        self.s.log.compact_prefix(index, term)
        self.model.log.compact_prefix(index, term)
        self._wrote()

    @rule(bump=st.integers(0, 1), commit=st.integers(0, 50), conf=st.booleans())
    def save(self, bump: int, commit: int, conf: bool) -> None:
        hs = self.model.stable.hard_state()
        new = HardState(hs.term + bump, hs.voted_for if not bump else MemberId("b"), commit)
        configuration = CONF if conf else None
        self.s.stable.save(new, configuration)
        self.model.stable.save(new, configuration)
        self._wrote()

    @rule()
    def sync(self) -> None:
        self.s.log.sync()
        self.s.stable.sync()
        self.model.sync()
        self.since_sync = [view(self.model)]
        self.synced_end = self.s.file.end
        assert view(self.s) == self.since_sync[0]

    @rule()
    def flush(self) -> None:
        """Unsynced records reach the file (as when the log is read)."""
        self.s.file.flush()

    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        written = self.s.file.written
        self.s.close()
        if written > self.synced_end:  # whole sectors that never reached the disk
            bounds = _sectors(self.synced_end, written)
            lo = data.draw(st.sampled_from(bounds), label="lost from")
            hi = data.draw(st.sampled_from([b for b in bounds if b > lo] + [written]))
            with open(self.path, "r+b") as f:
                f.seek(lo)
                f.write(bytes(hi - lo))
        self.s = Opened(self.path, self.chunk)
        seen = view(self.s)
        assert seen in self.since_sync, "state after a crash is no prefix of the writes"
        assert tail_is_zero(self.path, self.s.file.end)
        self.model = MemoryStorage()  # restart the model from what survived
        point, point_term, items, hard, conf = seen
        self.model.log.compact_prefix(point, point_term)
        self.model.log.append(items)
        self.model.stable.save(hard, conf)
        self.model.sync()
        self.since_sync = [seen]
        self.synced_end = self.s.file.end

    @invariant()
    def agrees_with_the_model(self) -> None:
        # Without reading entries: that would flush the buffer (see the flush rule), so
        # crashes would never lose buffered records. Entries are compared after syncs.
        s, model = self.s, self.model
        assert s.log.first_index() == model.log.first_index()
        assert (s.log.last_index(), s.log.last_term()) == (
            model.log.last_index(),
            model.log.last_term(),
        )
        for index in range(model.log.first_index() - 1, model.log.last_index() + 2):
            assert s.log.term_at(index) == model.log.term_at(index)
        assert s.stable.hard_state() == model.stable.hard_state()
        assert s.stable.configuration() == model.stable.configuration()


TestLogFileMachine = LogFileMachine.TestCase
TestLogFileMachine.settings = settings(
    max_examples=60 if settings().max_examples <= 100 else 600,
    stateful_step_count=40,
    deadline=None,
)
