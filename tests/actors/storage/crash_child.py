"""Child process for the kill -9 tests: writes forever, reporting what is durable.

``python -m tests.actors.storage.crash_child MODE DIR SEED``

* ``log``: appends random batches (and now and then a new term + vote) through a
  :class:`StorageWriter`; for every ``Persisted`` report prints
  ``P <index> <term> <hard-state term> <vote or ->`` to stdout.
* ``snap``: writes snapshots of random size in chunks, printing ``S <index>`` after
  each ``finish()``.
* ``full``: like ``log``, but with the log capped a little above its size, as on a
  full disk (SQLite: ``max_page_count``; the file log: the process's file size limit,
  ``RLIMIT_FSIZE``, a few preallocation chunks past the file's size): prints
  ``F <error>`` when the writer fails, then ``R <error>`` when the next submit is
  refused, and exits 0.

``python -m tests.actors.storage.crash_child MODE DIR SEED [sqlite|file]``: the last
argument is the durable log (default ``sqlite``). The log file is preallocated in tiny
chunks (:data:`CHUNK_BYTES`), so the kills also land while it grows.

Every line is flushed before the next write starts, so whatever the parent read was
acknowledged. Entry and snapshot contents are a pure function of their position, so the
parent can check them byte for byte.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import resource
import signal
import sys
import threading

from actors.storage import DurableLog, DurableStorage, Persisted, StorageError, StorageWriter
from protocol.ids import MemberId
from protocol.raft.log import Configuration, EntryKind, HardState, LogEntry, SnapshotMeta

CONF = Configuration((MemberId("a"), MemberId("b"), MemberId("c")))
#: Preallocation step of the children's log files: small, so that the file grows often.
CHUNK_BYTES = 16 * 1024


def entry_data(index: int, term: int) -> bytes:
    """The data of entry ``index`` written in ``term``: 0..300 bytes, position-dependent."""
    seed = hashlib.sha256(f"{index}/{term}".encode()).digest()
    return (seed * 10)[: seed[0] + seed[1] % 45]


def snapshot_data(index: int) -> bytes:
    """The data of snapshot ``index``: up to ~300 KB, position-dependent."""
    seed = hashlib.sha256(f"snap{index}".encode()).digest()
    return seed * (seed[0] * 40 + seed[1])


def _emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _cap(storage: DurableStorage, path: str, durable_log: DurableLog) -> None:
    """Let the log grow only a little more, as on a disk that is about to fill up."""
    if durable_log == "sqlite":
        conn = storage.log._db._conn  # type: ignore[attr-defined]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count={pages + 3}")
        return
    # writes past the limit fail with EFBIG (instead of killing the process with
    # SIGXFSZ), which the storage reports as "disk full", like ENOSPC
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limit = os.path.getsize(os.path.join(path, "raft.log")) + 3 * CHUNK_BYTES
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))


def run_log(path: str, seed: int, cap_size: bool, durable_log: DurableLog) -> None:
    rng = random.Random(seed)
    storage = DurableStorage.open(path, durable_log=durable_log, chunk_bytes=CHUNK_BYTES)
    if cap_size:
        _cap(storage, path, durable_log)
    failed = threading.Event()

    def persisted(p: Persisted) -> None:
        vote = p.hard_state.voted_for or "-"
        _emit(f"P {p.index} {p.term} {p.hard_state.term} {vote}")

    def failure(error: StorageError) -> None:
        _emit(f"F {error}")
        failed.set()

    writer = StorageWriter(storage.log, storage.stable, persisted, failure).start()
    index, term = storage.log.last_index(), max(storage.log.last_term(), 1)
    hard = storage.stable.hard_state()
    in_flight: list[int] = []
    while not failed.is_set():
        new_hard = None
        if rng.random() < 0.05 or hard.term < term:
            term = max(term, hard.term) + 1  # a vote is only ever cast in a new term
            hard = HardState(term, MemberId(f"n{rng.randint(1, 3)}"), index)
            new_hard = hard
        batch = [
            LogEntry(i, term, EntryKind.COMMAND, entry_data(i, term))
            for i in range(index + 1, index + 1 + rng.randint(1, 10))
        ]
        index = batch[-1].index
        try:
            in_flight.append(writer.submit(batch, new_hard))
        except StorageError as exc:
            failed.wait(30)  # let the writer report why first
            _emit(f"R {exc}")
            return
        if len(in_flight) > 8:  # bounded pipeline, like a leader with a full window
            with contextlib.suppress(StorageError):
                writer.wait(in_flight.pop(0), 30)
    try:
        writer.submit([LogEntry(index + 1, term, EntryKind.NOOP, b"")])
    except StorageError as exc:
        _emit(f"R {exc}")


def run_snap(path: str, seed: int) -> None:
    rng = random.Random(seed)
    storage = DurableStorage.open(path)
    latest = storage.snapshots.latest()
    index = latest.meta.index if latest else 0
    while True:
        index += 1
        data = snapshot_data(index)
        writer = storage.snapshots.begin(SnapshotMeta(index, index, CONF))
        pos = 0
        while pos < len(data):
            step = rng.randint(1, 64 * 1024)
            writer.write(data[pos : pos + step])
            pos += step
        writer.finish()
        _emit(f"S {index}")


def main(argv: list[str]) -> None:
    mode, path, seed = argv[0], argv[1], int(argv[2])
    durable_log: DurableLog = "file" if argv[3:] == ["file"] else "sqlite"
    if mode == "snap":
        run_snap(path, seed)
    else:
        run_log(path, seed, cap_size=mode == "full", durable_log=durable_log)


if __name__ == "__main__":
    main(sys.argv[1:])
