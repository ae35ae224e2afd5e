"""``scripts/bench storage``: durable log appends against the machine's raw fsync rate.

For each batch size (default 1, 16, 256 entries of 100 bytes) it measures, for
``--seconds`` each and in the same run:

* raw: a loop of ``os.write`` + ``os.fsync`` of the batch's bytes to a plain file,
  the most a durable append can do on this disk (alternating with the next loop in
  half-second slices, so both see the same disk load);
* storage: ``log.append(batch)`` + ``log.sync()`` on :class:`DurableStorage` (SQLite:
  one transaction, one fsync, per batch; the log file: one record, one ``pwrite`` and
  one ``fdatasync`` into space zero-filled ahead), timing only those two calls
  (building the ``LogEntry`` objects is the caller's work);
* writer: the same batches submitted to a :class:`StorageWriter` with up to 64 in
  flight, so batches that queue during an fsync share the next one (group commit).

for each durable log (``--logs``, default ``sqlite,file``), and prints a Markdown table
with entries/s, batches/s and fsyncs/s beside the raw rate. Goals: storage batches/s
within 2x of raw fsyncs/s; entries/s at batch 256 at least 100x batch 1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import cast

from actors.storage import FORMATS, DurableLog, DurableStorage, Persisted, StorageWriter
from protocol.raft.log import EntryKind, LogEntry

ENTRY_BYTES = 100


class Result:
    """Counts over one measurement (a plain class: the bench loader does not register
    its module in ``sys.modules``, which ``@dataclass`` needs)."""

    def __init__(self, entries: int, batches: int, fsyncs: int, seconds: float) -> None:
        self.entries, self.batches, self.fsyncs, self.seconds = entries, batches, fsyncs, seconds

    def rate(self, n: int) -> float:
        return n / self.seconds


def _batch(first: int, size: int, data: bytes) -> list[LogEntry]:
    return [LogEntry(first + k, 1, EntryKind.COMMAND, data) for k in range(size)]


def raw_and_storage(
    base: Path, size: int, seconds: float, durable_log: DurableLog
) -> tuple[Result, Result]:
    """Raw fsync loop and storage appends, in alternating slices of <= 0.5 s.

    Alternating keeps both under the same disk conditions (a shared disk drifts).
    """
    payload = os.urandom(size * ENTRY_BYTES)
    data = os.urandom(ENTRY_BYTES)
    raw_path = base / "raw.bin"
    fd = os.open(raw_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    storage = DurableStorage.open(base / f"direct-{size}", durable_log=durable_log)
    log = storage.log
    raw_n = store_n = 0
    raw_t = store_t = 0.0
    slices = max(2, round(seconds / 0.5))
    try:
        for _ in range(slices):
            t0 = time.perf_counter()
            end = t0 + seconds / slices
            while time.perf_counter() < end:
                os.write(fd, payload)
                os.fsync(fd)
                raw_n += 1
            t1 = time.perf_counter()
            raw_t += t1 - t0
            end = t1 + seconds / slices
            now = t1
            while now < end:
                batch = _batch(log.last_index() + 1, size, data)  # the caller's work, untimed
                before = time.perf_counter()
                log.append(batch)
                log.sync()
                now = time.perf_counter()
                store_t += now - before
                store_n += 1
    finally:
        os.close(fd)
        raw_path.unlink()
        storage.close()
        shutil.rmtree(base / f"direct-{size}")
    return Result(raw_n, raw_n, raw_n, raw_t), Result(store_n * size, store_n, store_n, store_t)


def writer_appends(
    path: Path, size: int, seconds: float, durable_log: DurableLog, window: int = 64
) -> Result:
    data = os.urandom(ENTRY_BYTES)
    groups = 0
    done = threading.Condition()
    durable = 0

    def persisted(p: Persisted) -> None:
        nonlocal groups, durable
        with done:
            groups += 1
            durable = p.seq
            done.notify_all()

    with DurableStorage.open(path, durable_log=durable_log) as storage:
        writer = StorageWriter(storage.log, storage.stable, persisted).start()
        index, seq = 1, 0
        start = time.perf_counter()
        end = start + seconds
        while time.perf_counter() < end:
            limit = seq - window
            with done:
                done.wait_for(lambda: durable > limit, timeout=5)  # noqa: B023 - read now
            seq = writer.submit(_batch(index, size, data))
            index += size
        writer.wait(seq, 30)
        elapsed = time.perf_counter() - start
        writer.stop()
    shutil.rmtree(path)
    return Result(seq * size, seq, groups, elapsed)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench storage", description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--batches", default="1,16,256", help="comma-separated batch sizes")
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    parser.add_argument("--logs", default="sqlite,file", help="durable logs to measure")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.batches.split(",")]
    logs: list[DurableLog] = []
    for name in args.logs.split(","):
        if name not in FORMATS:
            parser.error(f"--logs: {name!r} is not one of {sorted(FORMATS)}")
        logs.append(cast(DurableLog, name))
    base = Path(tempfile.mkdtemp(prefix="bench-storage-", dir=args.dir))
    rows = []
    notes = []
    try:
        for log in logs:
            per_entry: dict[int, float] = {}
            raw_entries: dict[int, float] = {}
            worst = float("inf")
            for size in sizes:
                raw, direct = raw_and_storage(base, size, args.seconds, log)
                piped = writer_appends(base / f"writer-{size}", size, args.seconds, log)
                raw_rate = raw.rate(raw.fsyncs)
                raw_entries[size] = raw_rate * size
                per_entry[size] = direct.rate(direct.entries)
                worst = min(worst, direct.rate(direct.batches) / raw_rate)
                for name, r in (("storage", direct), ("writer", piped)):
                    ratio = f"{r.rate(r.batches) / raw_rate:.2f}" if r is direct else "-"
                    rows.append(
                        f"| {log} | {name} | {size} | {r.rate(r.entries):,.0f} "
                        f"| {r.rate(r.batches):,.0f} | {r.rate(r.fsyncs):,.0f} "
                        f"| {raw_rate:,.0f} | {ratio} |"
                    )
            notes.append(
                f"- {log}: storage batches/s vs raw fsync: worst ratio {worst:.2f} (goal >= 0.5)"
            )
            if 1 in per_entry and 256 in per_entry:
                gain = per_entry[256] / per_entry[1]
                bound = raw_entries[256] / raw_entries[1]
                notes.append(
                    f"- {log}: entries/s at batch 256 = {gain:,.0f}x batch 1 (goal >= 100x); the "
                    f"raw loop's own gain on this disk, the upper bound, is {bound:,.0f}x"
                )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"Durable log appends, {ENTRY_BYTES}-byte entries, {args.seconds:g} s each\n")
    print(
        "| log | path | batch | entries/s | batches/s | fsyncs/s | raw fsyncs/s | batches ÷ raw |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    print()
    print("\n".join(notes))
    print(
        "- storage: append + sync per batch (SQLite: one transaction, one fsync; file: one "
        "pwrite, one fdatasync). writer: batches submitted to the StorageWriter with up to 64 "
        "in flight; those that queue during an fsync share the next one, so its batches/s "
        "exceed its fsyncs/s. The raw loop appends to a growing file and fsyncs: the file "
        "log, writing into preallocated space, can beat it"
    )
    return 0
