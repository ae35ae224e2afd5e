"""The storage writer: persists log batches and hard state off the consensus thread.

Threading model
---------------
A :class:`StorageWriter` owns one thread, the only thread that touches its
:class:`LogStore` and :class:`StableStore` while it runs (the durable stores do not
lock: they are used by one thread at a time; the stores are opened and
:func:`load_state`-ed on the caller's thread *before* :meth:`StorageWriter.start`, and
may be used again by the caller after :meth:`StorageWriter.stop` returned). Any thread
may call :meth:`submit`, :meth:`compact`, :meth:`wait` and :meth:`stop`.

The consensus actor ``submit``\\ s each batch of new entries (with the hard state that
must be durable alongside) and carries on: replicating to followers overlaps with the
local fsync. The writer thread takes *everything* queued, applies it in submission order
in one transaction and syncs once (group commit: batches that queue while an fsync runs
share the next one), then calls ``on_persisted(Persisted(...))`` from its own thread;
the callback should just forward it, e.g. ``actor_ref.tell``.

``inline=True`` runs the same write, sync, ``then`` and report on the thread that calls
:meth:`submit` or :meth:`compact`, before the call returns (``on_persisted`` is still
called, so the caller's code is the same either way), with no thread of its own: no
hand-off to the writer and back, but no group commit either, and the caller waits out
the fsync. All calls must then come from one thread (the consensus actor's).

A batch whose first index is at or below the current last index replaces the log from
that index (the follower's "conflicting suffix" case), as in etcd's ``Ready`` handling.
So ``Persisted.index`` may drop after a truncation: compare ``(index, term)`` with the
in-memory log before trusting it.

Failures: if any write or sync fails, the writer logs at CRITICAL, calls ``on_failure``
once, stops its thread and refuses every later call with :class:`StorageFailedError`
naming the cause. Nothing after the failure point is ever reported as persisted: the
node must stop acting on a log it could not persist.

Why a plain thread rather than a pykka actor: coalescing needs to take everything
queued at once, which a pykka mailbox does not offer; the consensus actor only sees a
callback, so it can turn it into an actor message.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from protocol.raft.log import Configuration, HardState, LogEntry

from .errors import StorageClosedError, StorageError, StorageFailedError
from .interfaces import LogBatch, LogStore, StableStore

__all__ = ["Persisted", "StorageWriter"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Persisted:
    """Everything submitted up to ``seq`` is durable; the log ends at ``(index, term)``."""

    seq: int
    index: int
    term: int
    hard_state: HardState


@dataclass(frozen=True, slots=True)
class _Append:
    seq: int
    entries: LogBatch
    hard_state: HardState | None
    configuration: Configuration | None
    then: Callable[[], None] | None = None


@dataclass(frozen=True, slots=True)
class _Compact:
    seq: int
    index: int
    term: int


_STOP = object()
_Op = _Append | _Compact


class StorageWriter:
    """Persists batches on a dedicated thread with group commit; see the module docstring."""

    def __init__(
        self,
        log: LogStore,
        stable: StableStore,
        on_persisted: Callable[[Persisted], None],
        on_failure: Callable[[StorageError], None] | None = None,
        *,
        name: str = "storage-writer",
        max_group: int = 10_000,
        on_sync: Callable[[float, int], None] | None = None,
        inline: bool = False,
    ) -> None:
        self._log = log
        self._stable = stable
        self._on_persisted = on_persisted
        self._on_failure = on_failure
        self._max_group = max_group
        #: Told (seconds, log entries) after every sync: metrics.
        self._on_sync = on_sync
        self._queue: queue.SimpleQueue[_Op | object] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._seq = 0
        self._durable_seq = 0
        self._persisted: Persisted | None = None
        self._failure: StorageError | None = None
        self._stopping = False
        #: Writes on the submitting thread (see :meth:`submit`), no thread of its own.
        self.inline = inline
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # ----------------------------------------------------------------- caller's side

    def start(self) -> StorageWriter:
        """Start the thread; from now on only it uses the stores (inline: only the one
        thread that submits). Returns ``self``."""
        if not self.inline:
            self._thread.start()
        return self

    def submit(
        self,
        entries: Sequence[LogEntry] = (),
        hard_state: HardState | None = None,
        configuration: Configuration | None = None,
        *,
        then: Callable[[], None] | None = None,
    ) -> int:
        """Queue entries (contiguous, terms not decreasing) and/or a new hard state.

        The batch is checked here (:class:`InvalidOperationError` to the caller) and
        handed to the log as that :class:`LogBatch`, so the writer thread's
        ``append`` checks only where it joins the log (a gap between batches is a
        storage failure: see the module docstring).

        ``configuration`` (if given) is saved with the hard state, atomically. Returns
        the submission's sequence number, reported back in :attr:`Persisted.seq`.
        ``then`` (if given) runs on the writer thread (inline: the caller's) as soon as
        this submission is durable, before ``on_persisted`` is called: what may only
        happen after the write (e.g. sending an acknowledgement) does not wait for
        another thread. It must be quick and thread-safe; an exception from it is
        logged and ignored.
        """
        batch = LogBatch(entries)  # checked here, on the caller's thread, once
        return self._take(lambda seq: _Append(seq, batch, hard_state, configuration, then))

    def compact(self, index: int, term: int) -> int:
        """Queue :meth:`LogStore.compact_prefix` (after the snapshot is finished)."""
        return self._take(lambda seq: _Compact(seq, index, term))

    def _take(self, make: Callable[[int], _Op]) -> int:
        """Number the operation ``make`` builds and queue it for the thread, or (inline)
        carry it out now; its sequence number."""
        with self._lock:
            self._check()
            self._seq += 1
            op = make(self._seq)
            if not self.inline:
                self._queue.put(op)
                return op.seq
        self._write([op])
        return op.seq

    def wait(self, seq: int, timeout: float) -> bool:
        """Block until submission ``seq`` is durable (True) or ``timeout`` passes (False).

        Raises :class:`StorageFailedError` if the writer failed first.
        """
        with self._changed:
            self._changed.wait_for(
                lambda: self._durable_seq >= seq or self._failure is not None, timeout
            )
            if self._durable_seq >= seq:
                return True
            if self._failure is not None:
                raise self._failed()
            return False

    def stop(self, timeout: float = 10.0) -> bool:
        """Persist what is queued, then end the thread. True if it ended in time."""
        with self._lock:
            if not self._stopping:
                self._stopping = True
                self._queue.put(_STOP)
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def persisted(self) -> Persisted | None:
        """The latest report (``None`` before the first sync)."""
        with self._lock:
            return self._persisted

    @property
    def failure(self) -> StorageError | None:
        """Why the writer stopped accepting writes, if it did."""
        with self._lock:
            return self._failure

    def _check(self) -> None:
        if self._failure is not None:
            raise self._failed()
        if self._stopping:
            raise StorageClosedError("the storage writer is stopped")

    def _failed(self) -> StorageFailedError:
        return StorageFailedError(f"storage writer refuses writes: {self._failure}")

    # ---------------------------------------------------------------- writer thread

    def _run(self) -> None:
        while True:
            ops = [self._queue.get()]
            while len(ops) < self._max_group:
                try:
                    ops.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            work = [op for op in ops if isinstance(op, _Append | _Compact)]
            if work and not self._write(work):
                return
            if len(work) < len(ops):  # _STOP was taken: nothing can be queued after it
                return

    def _write(self, work: list[_Op]) -> bool:
        """Apply ``work`` in order, sync once, report. False if the storage failed."""
        try:
            for op in work:
                self._apply(op)
            started = time.perf_counter()
            self._log.sync()
            self._stable.sync()
            synced_s = time.perf_counter() - started
            report = Persisted(
                work[-1].seq,
                self._log.last_index(),
                self._log.last_term(),
                self._stable.hard_state(),
            )
        except Exception as exc:
            self._fail(exc)
            return False
        if self._on_sync is not None:
            try:  # metrics: never a reason to fail the storage
                entries = sum(len(op.entries) for op in work if isinstance(op, _Append))
                self._on_sync(synced_s, entries)
            except Exception:
                log.exception("an 'on_sync' callback raised (ignored)")
        for op in work:
            if isinstance(op, _Append) and op.then is not None:
                try:
                    op.then()
                except Exception:
                    log.exception("a 'then' callback raised (ignored)")
        with self._changed:
            self._durable_seq = report.seq
            self._persisted = report
            self._changed.notify_all()
        try:
            self._on_persisted(report)
        except Exception:
            log.exception("on_persisted callback raised (ignored)")
        return True

    def _apply(self, op: _Append | _Compact) -> None:
        if isinstance(op, _Compact):
            self._log.compact_prefix(op.index, op.term)
            return
        if op.entries:
            first = op.entries[0].index
            if first <= self._log.last_index():
                self._log.truncate_suffix(first)
            self._log.append(op.entries)
        if op.hard_state is not None or op.configuration is not None:
            self._stable.save(
                op.hard_state if op.hard_state is not None else self._stable.hard_state(),
                op.configuration if op.configuration is not None else self._stable.configuration(),
            )

    def _fail(self, exc: Exception) -> None:
        error = exc if isinstance(exc, StorageError) else StorageError(f"unexpected {exc!r}")
        log.critical("STORAGE WRITER STOPPED, no further writes accepted: %s", error)
        with self._changed:
            self._failure = error
            self._changed.notify_all()
        if self._on_failure is not None:
            try:
                self._on_failure(error)
            except Exception:
                log.exception("on_failure callback raised (ignored)")
