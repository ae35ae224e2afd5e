"""The storage contract, run against the in-memory and the durable implementation alike."""

from __future__ import annotations

import hashlib

import pytest

from actors.storage import (
    CorruptStorageError,
    InvalidOperationError,
    StorageClosedError,
)
from actors.storage.interfaces import LogBatch, check_append
from protocol.ids import MemberId
from protocol.raft.log import Configuration, EntryKind, HardState, LogEntry, SnapshotMeta

from .conftest import Backend, Storage

A, B, C = MemberId("a"), MemberId("b"), MemberId("c")
CONF = Configuration((A, B, C))


def entries(start: int, stop: int, term: int, size: int = 3) -> list[LogEntry]:
    return [
        LogEntry(i, term, EntryKind.COMMAND, bytes([i % 256]) * size) for i in range(start, stop)
    ]


def log_view(storage: Storage) -> tuple[int, int, int, list[LogEntry]]:
    log = storage.log
    return (
        log.first_index(),
        log.last_index(),
        log.last_term(),
        log.entries(log.first_index(), log.last_index() + 1),
    )


def write_snapshot(storage: Storage, index: int, term: int, data: bytes, chunk: int = 7) -> None:
    writer = storage.snapshots.begin(SnapshotMeta(index, term, CONF))
    for i in range(0, len(data), chunk):
        writer.write(data[i : i + chunk])
    writer.finish()


def read_snapshot(storage: Storage, chunk: int = 5) -> bytes:
    reader = storage.snapshots.open_latest()
    assert reader is not None
    out = []
    while part := reader.read(chunk):
        out.append(part)
    reader.close()
    return b"".join(out)


# ------------------------------------------------------------------------------- log


def test_new_store_is_empty(backend: Backend) -> None:
    storage = backend.open()
    assert log_view(storage) == (1, 0, 0, [])
    assert storage.log.term_at(0) == 0
    assert storage.log.term_at(1) is None
    assert storage.stable.hard_state() == HardState()
    assert storage.stable.configuration() is None
    assert storage.snapshots.latest() is None
    assert storage.snapshots.open_latest() is None
    state = storage.load()
    assert (state.hard_state, state.snapshot, state.entries, state.last_index) == (
        HardState(),
        None,
        (),
        0,
    )


def test_append_and_read_back(backend: Backend) -> None:
    storage = backend.open()
    storage.log.append(entries(1, 4, 1))
    storage.log.append(entries(4, 6, 2))
    storage.log.append([])
    assert log_view(storage) == (1, 5, 2, entries(1, 4, 1) + entries(4, 6, 2))
    assert [storage.log.term_at(i) for i in range(7)] == [0, 1, 1, 1, 2, 2, None]
    assert storage.log.entries(2, 4) == entries(2, 4, 1)
    assert storage.log.entries(3, 3) == []


def test_entries_max_bytes(backend: Backend) -> None:
    storage = backend.open()
    storage.log.append(entries(1, 6, 1, size=10))
    assert storage.log.entries(1, 6, max_bytes=25) == entries(1, 3, 1, size=10)
    assert storage.log.entries(1, 6, max_bytes=30) == entries(1, 4, 1, size=10)
    # always at least one entry, so a huge entry can still be sent
    assert storage.log.entries(2, 6, max_bytes=1) == entries(2, 3, 1, size=10)


@pytest.mark.parametrize(
    "batch",
    [
        entries(5, 6, 1),  # gap
        entries(3, 4, 1),  # overlap
        entries(4, 5, 1) + entries(6, 7, 1),  # gap inside the batch
        [LogEntry(4, 1, EntryKind.NOOP, b""), LogEntry(5, 0, EntryKind.NOOP, b"")],
    ],
    ids=["gap", "overlap", "inner-gap", "term-back-in-batch"],
)
def test_append_contract_violations_write_nothing(backend: Backend, batch: list[LogEntry]) -> None:
    storage = backend.open()
    storage.log.append(entries(1, 4, 1))
    storage.log.sync()
    with pytest.raises(InvalidOperationError):
        storage.log.append(batch)
    assert log_view(storage) == (1, 3, 1, entries(1, 4, 1))
    storage.log.append(entries(4, 5, 1))  # still usable
    assert storage.log.last_index() == 4


def test_append_refuses_lower_term_than_last(backend: Backend) -> None:
    storage = backend.open()
    storage.log.append(entries(1, 3, 5))
    with pytest.raises(InvalidOperationError, match="backwards"):
        storage.log.append(entries(3, 4, 4))


@pytest.mark.parametrize(
    "batch",
    [[object()], [LogEntry(4, 1, EntryKind.COMMAND, "text")]],  # type: ignore[arg-type]
    ids=["not-an-entry", "str-data"],
)
def test_append_refuses_what_is_not_an_entry_of_bytes(
    backend: Backend, batch: list[LogEntry]
) -> None:
    storage = backend.open()
    storage.log.append(entries(1, 4, 1))
    with pytest.raises(InvalidOperationError, match=r"LogEntry|bytes"):
        storage.log.append(batch)
    assert log_view(storage) == (1, 3, 1, entries(1, 4, 1))


@pytest.mark.parametrize(
    "batch",
    [entries(5, 6, 1), entries(3, 4, 1), entries(4, 5, 0)],
    ids=["gap", "overlap", "term-below-last"],
)
def test_a_checked_batch_still_has_its_join_with_the_log_checked(
    backend: Backend, batch: list[LogEntry]
) -> None:
    storage = backend.open()
    storage.log.append(entries(1, 4, 1))
    with pytest.raises(InvalidOperationError):
        storage.log.append(LogBatch(batch))
    assert log_view(storage) == (1, 3, 1, entries(1, 4, 1))
    storage.log.append(LogBatch(entries(4, 6, 2)))
    assert log_view(storage) == (1, 5, 2, entries(1, 4, 1) + entries(4, 6, 2))


@pytest.mark.parametrize(
    ("batch", "match"),
    [
        ([object()], "not a LogEntry"),
        ([LogEntry(1, 1, EntryKind.COMMAND, bytearray(b"x"))], "must be bytes"),  # type: ignore[arg-type]
        (entries(1, 2, 1) + entries(3, 4, 1), "contiguous"),
        (entries(1, 2, 2) + entries(2, 3, 1), "backwards"),
    ],
    ids=["not-an-entry", "bytearray-data", "inner-gap", "term-back"],
)
def test_a_log_batch_cannot_be_built_from_a_bad_batch(batch: list[LogEntry], match: str) -> None:
    with pytest.raises(InvalidOperationError, match=match):
        LogBatch(batch)


def test_check_append_walks_a_log_batch_no_more() -> None:
    """A ``LogBatch`` was checked when built: ``check_append`` checks only the join.

    Built here around its constructor (nothing else can make an unchecked one), so the
    inner gap could only be found by a second walk; there is none.
    """
    unchecked = tuple.__new__(LogBatch, entries(4, 5, 1) + entries(9, 10, 1))
    assert check_append(unchecked, 3, 1) is unchecked
    plain = entries(4, 5, 1) + entries(9, 10, 1)
    with pytest.raises(InvalidOperationError, match="contiguous"):
        check_append(plain, 3, 1)


def test_entries_outside_the_log_is_an_invalid_operation(backend: Backend) -> None:
    storage = backend.open()
    storage.log.append(entries(1, 4, 1))
    for start, stop in [(0, 2), (2, 6), (3, 2)]:
        with pytest.raises(InvalidOperationError):
            storage.log.entries(start, stop)


def test_truncate_suffix(backend: Backend) -> None:
    storage = backend.open()
    storage.log.append(entries(1, 6, 1) + entries(6, 8, 2))
    storage.log.truncate_suffix(9)  # beyond the end: nothing to do
    assert storage.log.last_index() == 7
    storage.log.truncate_suffix(6)
    assert log_view(storage) == (1, 5, 1, entries(1, 6, 1))
    storage.log.append(entries(6, 7, 3))
    assert storage.log.last_term() == 3
    storage.log.truncate_suffix(1)
    assert log_view(storage) == (1, 0, 0, [])


def test_truncate_into_compacted_part_is_refused(backend: Backend) -> None:
    storage = backend.open()
    storage.log.append(entries(1, 6, 1))
    storage.log.compact_prefix(3, 1)
    with pytest.raises(InvalidOperationError, match="compacted"):
        storage.log.truncate_suffix(3)
    storage.log.truncate_suffix(4)
    assert log_view(storage) == (4, 3, 1, [])


def test_compact_prefix_keeps_the_suffix_when_terms_match(backend: Backend) -> None:
    storage = backend.open()
    storage.log.append(entries(1, 4, 1) + entries(4, 8, 2))
    storage.log.compact_prefix(4, 2)
    assert log_view(storage) == (5, 7, 2, entries(5, 8, 2))
    assert storage.log.term_at(4) == 2
    assert storage.log.term_at(3) is None
    storage.log.compact_prefix(2, 1)  # older point: no-op
    assert storage.log.first_index() == 5
    with pytest.raises(InvalidOperationError):
        storage.log.entries(4, 6)


def test_compact_prefix_drops_a_conflicting_or_short_log(backend: Backend) -> None:
    storage = backend.open()
    storage.log.append(entries(1, 6, 1))
    storage.log.compact_prefix(3, 2)  # the snapshot says term 2 at index 3: conflict
    assert log_view(storage) == (4, 3, 2, [])
    storage.log.compact_prefix(10, 4)  # beyond the end
    assert log_view(storage) == (11, 10, 4, [])
    storage.log.append(entries(11, 13, 4))
    assert log_view(storage) == (11, 12, 4, entries(11, 13, 4))


def test_synced_writes_survive_a_restart_unsynced_do_not(backend: Backend) -> None:
    storage = backend.open()
    storage.log.append(entries(1, 4, 1))
    storage.log.compact_prefix(1, 1)
    storage.stable.save(HardState(1, A, 2), CONF)
    storage.log.sync()
    storage.stable.sync()
    storage.log.append(entries(4, 6, 1))
    storage.log.truncate_suffix(3)
    storage.stable.save(HardState(2, B, 3), None)
    storage = backend.restart(storage)
    assert log_view(storage) == (2, 3, 1, entries(2, 4, 1))
    assert storage.stable.hard_state() == HardState(1, A, 2)
    assert storage.stable.configuration() == CONF
    storage.log.append(entries(4, 5, 1))  # usable after the restart
    storage.log.sync()
    storage = backend.restart(storage)
    assert storage.log.last_index() == 4


# ---------------------------------------------------------------------------- stable


def test_stable_state_round_trip(backend: Backend) -> None:
    storage = backend.open()
    storage.stable.save(HardState(3, None, 0), None)
    storage.stable.save(HardState(3, C, 4), CONF)
    storage.stable.save(HardState(3, C, 5), Configuration((A,), (B,)))
    storage.stable.sync()
    storage = backend.restart(storage)
    assert storage.stable.hard_state() == HardState(3, C, 5)
    assert storage.stable.configuration() == Configuration((A,), (B,))


@pytest.mark.parametrize(
    "bad", [HardState(4, A, 9), HardState(5, B, 9), HardState(5, None, 9)], ids=str
)
def test_stable_refuses_term_going_back_or_vote_changing(backend: Backend, bad: HardState) -> None:
    storage = backend.open()
    storage.stable.save(HardState(5, A, 1), None)
    with pytest.raises(InvalidOperationError):
        storage.stable.save(bad, None)
    assert storage.stable.hard_state() == HardState(5, A, 1)
    storage.stable.save(HardState(6, None, 1), None)  # a new term clears the vote
    assert storage.stable.hard_state().voted_for is None


def test_stable_refuses_wrong_types(backend: Backend) -> None:
    storage = backend.open()
    with pytest.raises(InvalidOperationError):
        storage.stable.save("term 3", None)  # type: ignore[arg-type]
    with pytest.raises(InvalidOperationError):
        storage.stable.save(HardState(1), ["a"])  # type: ignore[arg-type]


# ------------------------------------------------------------------------- snapshots


def test_snapshot_round_trip_in_chunks(backend: Backend) -> None:
    storage = backend.open()
    data = bytes(range(256)) * 40
    write_snapshot(storage, 10, 2, data)
    info = storage.snapshots.latest()
    assert info is not None
    assert info.meta == SnapshotMeta(10, 2, CONF)
    assert info.size == len(data)
    assert info.checksum == hashlib.sha256(data).hexdigest()
    assert read_snapshot(storage) == data
    storage = backend.restart(storage)
    assert storage.snapshots.latest() == info
    assert read_snapshot(storage, chunk=1000) == data


def test_empty_snapshot(backend: Backend) -> None:
    storage = backend.open()
    write_snapshot(storage, 1, 1, b"")
    assert read_snapshot(storage) == b""


def test_newest_snapshot_wins_and_two_are_kept(backend: Backend) -> None:
    storage = backend.open()
    for i in (3, 9, 6, 12):
        write_snapshot(storage, i, 1, b"s%d" % i)
    info = storage.snapshots.latest()
    assert info is not None and info.meta.index == 12
    assert read_snapshot(storage) == b"s12"
    assert _snapshot_count(storage) == 2


def test_same_point_snapshot_replaces_the_old_one(backend: Backend) -> None:
    storage = backend.open()
    write_snapshot(storage, 5, 1, b"old")
    write_snapshot(storage, 5, 1, b"new")
    assert read_snapshot(storage) == b"new"


def test_unfinished_or_aborted_snapshot_is_never_visible(backend: Backend) -> None:
    storage = backend.open()
    write_snapshot(storage, 4, 1, b"good")
    aborted = storage.snapshots.begin(SnapshotMeta(8, 2, CONF))
    aborted.write(b"half")
    aborted.abort()
    aborted.abort()
    with pytest.raises(StorageClosedError):
        aborted.write(b"more")
    pending = storage.snapshots.begin(SnapshotMeta(9, 2, CONF))
    pending.write(b"half")
    info = storage.snapshots.latest()
    assert info is not None and info.meta.index == 4
    storage = backend.restart(storage)  # the writer's process "died"
    with pytest.raises(StorageClosedError):
        pending.finish()
    assert read_snapshot(storage) == b"good"


def test_finish_twice_is_refused(backend: Backend) -> None:
    storage = backend.open()
    writer = storage.snapshots.begin(SnapshotMeta(1, 1, CONF))
    writer.finish()
    with pytest.raises(StorageClosedError):
        writer.finish()
    writer.abort()  # no-op after finish
    assert storage.snapshots.latest() is not None


def test_reader_refuses_a_nonpositive_chunk(backend: Backend) -> None:
    storage = backend.open()
    write_snapshot(storage, 1, 1, b"x")
    reader = storage.snapshots.open_latest()
    assert reader is not None
    with pytest.raises(InvalidOperationError):
        reader.read(0)
    reader.close()


def test_begin_refuses_a_wrong_meta(backend: Backend) -> None:
    storage = backend.open()
    with pytest.raises(InvalidOperationError):
        storage.snapshots.begin((1, 1))  # type: ignore[arg-type]


def _snapshot_count(storage: Storage) -> int:
    from actors.storage import MemoryStorage

    if isinstance(storage, MemoryStorage):
        return storage.snapshots.count()
    return len(list(storage.snapshots.directory.glob("snap-*.snap")))


# ------------------------------------------------------------------------------ load


def test_load_hands_back_entries_after_the_snapshot(backend: Backend) -> None:
    storage = backend.open()
    storage.log.append(entries(1, 11, 1))
    storage.stable.save(HardState(1, A, 10), CONF)
    storage.log.sync()
    storage.stable.sync()
    write_snapshot(storage, 6, 1, b"state@6")
    # crashed before compacting: load still skips what the snapshot covers
    storage = backend.restart(storage)
    state = storage.load()
    assert state.hard_state == HardState(1, A, 10)
    assert state.configuration == CONF
    assert state.snapshot is not None and state.snapshot.meta.index == 6
    assert state.entries == tuple(entries(7, 11, 1))
    assert state.last_index == 10
    storage.log.compact_prefix(6, 1)
    assert storage.load().entries == tuple(entries(7, 11, 1))


def test_load_with_snapshot_beyond_the_log(backend: Backend) -> None:
    storage = backend.open()
    storage.log.append(entries(1, 4, 1))
    write_snapshot(storage, 20, 3, b"state@20")
    state = storage.load()
    assert (state.entries, state.last_index) == ((), 20)


def test_load_drops_a_log_conflicting_with_the_snapshot(backend: Backend) -> None:
    storage = backend.open()
    storage.log.append(entries(1, 8, 1))
    write_snapshot(storage, 5, 2, b"state@5 from a leader of term 2")
    assert storage.load().entries == ()


def test_load_refuses_a_log_compacted_past_every_snapshot(backend: Backend) -> None:
    storage = backend.open()
    storage.log.append(entries(1, 8, 1))
    write_snapshot(storage, 3, 1, b"old")
    storage.log.compact_prefix(5, 1)
    with pytest.raises(CorruptStorageError, match="lost"):
        storage.load()
