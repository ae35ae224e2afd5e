"""The storage writer: ordering, group commit, truncation, failure latching, shutdown."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from actors.storage import (
    InvalidOperationError,
    MemoryStorage,
    Persisted,
    StorageClosedError,
    StorageError,
    StorageFailedError,
    StorageIOError,
    StorageWriter,
)
from actors.storage.interfaces import LogBatch
from actors.storage.memory import MemoryLogStore
from protocol.ids import MemberId
from protocol.raft.log import Configuration, HardState, LogEntry

from .conftest import Backend
from .test_contract import CONF, entries, log_view

WAIT = 10.0


class Recorder:
    """Collects the writer's callbacks (from the writer thread)."""

    def __init__(self) -> None:
        self.reports: list[Persisted] = []
        self.failures: list[StorageError] = []
        self.failed = threading.Event()

    def persisted(self, report: Persisted) -> None:
        self.reports.append(report)

    def failure(self, error: StorageError) -> None:
        self.failures.append(error)
        self.failed.set()


Make = Callable[..., StorageWriter]


@pytest.fixture(params=["thread", "inline"])
def make(request: pytest.FixtureRequest) -> Make:
    """A writer of either kind: the behaviour tested with it holds for both."""
    return functools.partial(StorageWriter, inline=request.param == "inline")


@pytest.fixture
def writers() -> Iterator[list[StorageWriter]]:
    made: list[StorageWriter] = []
    yield made
    for writer in made:
        assert writer.stop(WAIT)


def test_batches_are_persisted_in_order_and_reported(
    backend: Backend, writers: list[StorageWriter], make: Make
) -> None:
    storage = backend.open()
    rec = Recorder()
    writer = make(storage.log, storage.stable, rec.persisted, rec.failure).start()
    writers.append(writer)
    seqs = [writer.submit(entries(i, i + 2, 1)) for i in range(1, 40, 2)]
    last = writer.submit(hard_state=HardState(1, MemberId("a"), 39), configuration=CONF)
    assert seqs == list(range(1, 21)) and last == 21
    assert writer.wait(last, WAIT)
    assert writer.stop(WAIT)
    assert rec.reports[-1] == Persisted(21, 40, 1, HardState(1, MemberId("a"), 39))
    assert writer.persisted == rec.reports[-1]
    assert [r.seq for r in rec.reports] == sorted({r.seq for r in rec.reports})
    storage = backend.restart(storage)
    assert log_view(storage) == (1, 40, 1, entries(1, 41, 1))
    assert storage.stable.configuration() == CONF


def test_an_overlapping_batch_replaces_the_suffix(
    backend: Backend, writers: list[StorageWriter], make: Make
) -> None:
    storage = backend.open()
    rec = Recorder()
    writer = make(storage.log, storage.stable, rec.persisted).start()
    writers.append(writer)
    writer.submit(entries(1, 6, 1))
    seq = writer.submit(entries(3, 5, 2), HardState(2))
    assert writer.wait(seq, WAIT)
    assert rec.reports[-1].index == 4 and rec.reports[-1].term == 2
    assert writer.stop(WAIT)
    assert log_view(storage)[3] == entries(1, 3, 1) + entries(3, 5, 2)


def test_compaction_through_the_writer(
    backend: Backend, writers: list[StorageWriter], make: Make
) -> None:
    storage = backend.open()
    writer = make(storage.log, storage.stable, lambda _: None).start()
    writers.append(writer)
    writer.submit(entries(1, 11, 1))
    assert writer.wait(writer.compact(6, 1), WAIT)
    assert writer.stop(WAIT)
    assert log_view(storage) == (7, 10, 1, entries(7, 11, 1))


class GatedLog(MemoryLogStore):
    """A log whose first sync blocks until released, and which counts syncs."""

    def __init__(self) -> None:
        super().__init__()
        self.syncs = 0
        self.in_sync = threading.Event()
        self.release = threading.Event()

    def sync(self) -> None:
        self.syncs += 1
        if self.syncs == 1:
            self.in_sync.set()
            assert self.release.wait(WAIT)
        super().sync()


def test_batches_queued_during_an_fsync_share_the_next_one(writers: list[StorageWriter]) -> None:
    log = GatedLog()
    rec = Recorder()
    writer = StorageWriter(log, MemoryStorage().stable, rec.persisted).start()
    writers.append(writer)
    writer.submit(entries(1, 2, 1))
    assert log.in_sync.wait(WAIT)  # the first "fsync" is in flight
    for i in range(2, 102):
        last = writer.submit(entries(i, i + 1, 1))
    log.release.set()
    assert writer.wait(last, WAIT)
    assert log.syncs == 2  # 101 batches, two fsyncs
    assert [(r.seq, r.index) for r in rec.reports] == [(1, 1), (101, 101)]


def test_submit_validates_the_batch_itself(make: Make) -> None:
    storage = MemoryStorage()
    writer = make(storage.log, storage.stable, lambda _: None)
    with pytest.raises(InvalidOperationError):
        writer.submit(entries(1, 2, 1) + entries(3, 4, 1))


class RecordingLog(MemoryLogStore):
    def __init__(self) -> None:
        super().__init__()
        self.appended: list[Sequence[LogEntry]] = []

    def append(self, entries: Sequence[LogEntry]) -> None:
        self.appended.append(entries)
        super().append(entries)


def test_the_store_gets_the_batch_submit_checked(writers: list[StorageWriter], make: Make) -> None:
    """Each entry is walked once: by ``submit``; the store checks only the batch's join."""
    log = RecordingLog()
    writer = make(log, MemoryStorage().stable, lambda _: None).start()
    writers.append(writer)
    assert writer.wait(writer.submit(entries(1, 4, 1)), WAIT)
    assert writer.wait(writer.submit(entries(4, 6, 2)), WAIT)
    assert [type(batch) for batch in log.appended] == [LogBatch, LogBatch]
    assert log.entries(1, 6) == entries(1, 4, 1) + entries(4, 6, 2)


class FailingLog(MemoryLogStore):
    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.syncs = 0

    def sync(self) -> None:
        self.syncs += 1
        if self.syncs == self.fail_at:
            raise StorageIOError("disk full while committing (fsync)")
        super().sync()


def test_a_failed_write_stops_the_writer_loudly(
    writers: list[StorageWriter], caplog: pytest.LogCaptureFixture, make: Make
) -> None:
    log = FailingLog(fail_at=2)
    rec = Recorder()
    writer = make(log, MemoryStorage().stable, rec.persisted, rec.failure).start()
    writers.append(writer)
    assert writer.wait(writer.submit(entries(1, 3, 1)), WAIT)
    seq = writer.submit(entries(3, 5, 1))
    assert rec.failed.wait(WAIT)
    with pytest.raises(StorageFailedError, match="disk full"):
        writer.wait(seq, WAIT)
    with pytest.raises(StorageFailedError, match="disk full"):
        writer.submit(entries(5, 6, 1))
    with pytest.raises(StorageFailedError):
        writer.compact(1, 1)
    assert isinstance(writer.failure, StorageIOError)
    assert [r.index for r in rec.reports] == [2]  # never reports past the failure
    assert "STORAGE WRITER STOPPED" in caplog.text


def test_a_gap_between_batches_is_a_failure_not_a_silent_hole(
    writers: list[StorageWriter], make: Make
) -> None:
    storage = MemoryStorage()
    rec = Recorder()
    writer = make(storage.log, storage.stable, rec.persisted, rec.failure).start()
    writers.append(writer)
    writer.submit(entries(1, 3, 1))
    writer.submit(entries(5, 6, 1))
    assert rec.failed.wait(WAIT)
    assert isinstance(rec.failures[0], InvalidOperationError)
    assert all(r.index <= 2 for r in rec.reports)


def test_unexpected_exceptions_and_callback_errors(
    writers: list[StorageWriter], make: Make
) -> None:
    storage = MemoryStorage()
    rec = Recorder()

    def bad_callback(report: Persisted) -> None:
        raise RuntimeError("callback bug")

    def bad_failure_callback(error: StorageError) -> None:
        rec.failure(error)
        raise RuntimeError("failure callback bug")

    writer = make(storage.log, storage.stable, bad_callback, bad_failure_callback)
    writers.append(writer.start())
    assert writer.wait(writer.submit(entries(1, 2, 1)), WAIT)  # callback error ignored
    writer.submit(hard_state="not a hard state")  # type: ignore[arg-type]
    assert rec.failed.wait(WAIT)


def test_stop_persists_what_is_queued_and_then_refuses(tmp_path: Path, make: Make) -> None:
    storage = MemoryStorage()
    rec = Recorder()
    writer = make(storage.log, storage.stable, rec.persisted).start()
    for i in range(1, 50):
        writer.submit(entries(i, i + 1, 1))
    assert writer.stop(WAIT)
    assert writer.stop(WAIT)
    assert storage.log.last_index() == 49 and storage.log.unsynced_writes() == 0
    with pytest.raises(StorageClosedError):
        writer.submit(entries(50, 51, 1))
    assert not writer.wait(10**6, 0.01)


def test_configuration_alone_keeps_the_hard_state(writers: list[StorageWriter], make: Make) -> None:
    storage = MemoryStorage()
    writer = make(storage.log, storage.stable, lambda _: None).start()
    writers.append(writer)
    writer.submit(hard_state=HardState(3, MemberId("b"), 0))
    conf = Configuration((MemberId("a"),))
    assert writer.wait(writer.submit(configuration=conf), WAIT)
    assert storage.stable.hard_state() == HardState(3, MemberId("b"), 0)
    assert storage.stable.configuration() == conf


def test_then_runs_once_durable_before_the_report_and_never_after_a_failure(
    writers: list[StorageWriter], make: Make
) -> None:
    log = FailingLog(fail_at=3)
    events: list[str] = []
    reported = threading.Semaphore(0)
    failed = threading.Event()

    def persisted(report: Persisted) -> None:
        events.append(f"persisted {report.index}")
        reported.release()

    def failure(error: StorageError) -> None:
        failed.set()

    def then(name: str) -> Callable[[], None]:
        def run() -> None:
            # Durable already: the log holds the batch when ``then`` runs.
            events.append(f"{name} at {log.last_index()}")

        return run

    def broken() -> None:
        raise RuntimeError("then bug")

    writer = make(log, MemoryStorage().stable, persisted, failure).start()
    writers.append(writer)
    writer.submit(entries(1, 3, 1), then=then("first"))
    assert reported.acquire(timeout=WAIT)
    assert events == ["first at 2", "persisted 2"]
    writer.submit(hard_state=HardState(2, None, 0), then=broken)  # its error is ignored
    assert reported.acquire(timeout=WAIT)
    writer.submit(entries(3, 5, 1), then=then("lost"))  # this append's sync fails
    assert failed.wait(WAIT)
    assert events == ["first at 2", "persisted 2", "persisted 2"]


def test_an_inline_writer_is_done_when_submit_returns() -> None:
    """``inline``: no thread; the write, its sync, ``then`` and the report all happen on
    the submitting thread before ``submit`` returns (the consensus actor's own thread
    in a node with ``storage_writes = "inline"``)."""
    storage = MemoryStorage()
    threads: list[str] = []
    me = threading.current_thread().name
    writer = StorageWriter(
        storage.log,
        storage.stable,
        lambda report: threads.append(
            f"persisted {report.index} on {threading.current_thread().name}"
        ),
        inline=True,
    ).start()
    seq = writer.submit(
        entries(1, 4, 1), then=lambda: threads.append(f"then on {threading.current_thread().name}")
    )
    assert threads == [f"then on {me}", f"persisted 3 on {me}"]
    assert storage.log.last_index() == 3 and storage.log.unsynced_writes() == 0
    assert writer.persisted == Persisted(seq, 3, 1, HardState())
    assert writer.wait(seq, 0) and writer.compact(2, 1) == seq + 1
    assert storage.log.first_index() == 3
    assert writer.stop(0)
    with pytest.raises(StorageClosedError):
        writer.submit(entries(4, 5, 1))
