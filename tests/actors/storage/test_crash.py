"""kill -9 tests with real processes: nothing acknowledged is ever lost or damaged.

A child process (:mod:`.crash_child`) writes through the real durable storage and
reports each acknowledged write on a pipe; the parent kills it with SIGKILL at a random
(seeded) moment, reads what it acknowledged up to its death, reopens the directory and
checks every acknowledged entry, hard state and snapshot, then lets the next child
continue on the same directory (so the reopened store must be usable).
"""

from __future__ import annotations

import os
import random
import select
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from actors.storage import DurableLog, DurableStorage
from protocol.raft.log import EntryKind

from .crash_child import entry_data, snapshot_data

ROOT = Path(__file__).resolve().parents[3]
LONG = os.environ.get("RAFT_ACTORS_LONG") == "1"
SEED = 20240611
ITERATION_DEADLINE = 30.0  # seconds a single child may take before the test fails


#: Both durable logs go through the log tests.
LOGS = pytest.mark.parametrize("durable_log", ["sqlite", "file"])


def spawn(
    children: list[subprocess.Popen[Any]],
    mode: str,
    path: Path,
    seed: int,
    log: Path,
    durable_log: DurableLog = "sqlite",
) -> subprocess.Popen[bytes]:
    child = "tests.actors.storage.crash_child"
    with open(log, "ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", child, mode, str(path), str(seed), durable_log],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=err,
            bufsize=0,
        )
    children.append(proc)
    return proc


def read_until_killed(
    proc: subprocess.Popen[bytes], kill_after_lines: int | None, delay: float, stderr: Path
) -> list[str]:
    """Collect the child's lines; SIGKILL it ``delay`` s after ``kill_after_lines`` lines.

    ``kill_after_lines=None`` waits for the child to exit by itself. Lines still in the
    pipe when the child dies were acknowledged too, so they are drained and returned.
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + ITERATION_DEADLINE
    kill_at = time.monotonic() + delay if kill_after_lines == 0 else None
    while True:
        now = time.monotonic()
        if kill_at is not None and now >= kill_at:
            proc.kill()
            break
        if now >= deadline:
            proc.kill()
            raise AssertionError(f"child made no progress: {stderr.read_text()[-2000:]}")
        wait = min(deadline, kill_at if kill_at is not None else deadline) - now
        ready, _, _ = select.select([fd], [], [], wait)
        if not ready:
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:  # the child exited by itself
            if kill_after_lines is not None:
                raise AssertionError(f"child died on its own: {stderr.read_text()[-2000:]}")
            break
        buf += chunk
        started = kill_after_lines is not None and buf.count(b"\n") >= kill_after_lines
        if kill_at is None and started:
            kill_at = time.monotonic() + delay
    proc.wait(timeout=10)
    buf += proc.stdout.read()
    return buf.decode().splitlines()[: buf.count(b"\n")]


def random_kill(rng: random.Random) -> tuple[int, float]:
    """When to kill: after 0..40 acknowledgements, then 0..20 ms later."""
    lines = 0 if rng.random() < 0.1 else rng.randint(1, 40)
    return lines, rng.uniform(0.0, 0.02)


@dataclass
class LogAcks:
    entries: dict[int, int] = field(default_factory=dict)  # index -> term acknowledged
    hard_term: int = 0
    vote: str | None = None

    def add(self, lines: list[str]) -> None:
        for line in lines:
            kind, *rest = line.split()
            if kind != "P":
                continue
            index, term, hard_term = int(rest[0]), int(rest[1]), int(rest[2])
            self.entries[index] = term
            if hard_term > self.hard_term:
                self.hard_term, self.vote = hard_term, rest[3]


def verify_log(
    path: Path,
    acks: LogAcks,
    last_hard_term: int,
    where: str,
    durable_log: DurableLog,
    from_index: int = 1,
) -> tuple[int, int]:
    """Reopen and check entries from ``from_index`` on (and every acknowledged one).

    Returns the persisted hard-state term and the last index.
    """
    with DurableStorage.open(path, durable_log=durable_log) as storage:
        log = storage.log
        assert log.first_index() == 1, where
        last = log.last_index()
        start = min(max(1, from_index), last + 1)
        term = log.term_at(start - 1) or 0
        for entry in log.entries(start, last + 1):
            assert entry.term >= term, f"{where}: terms go backwards at {entry.index}"
            term = entry.term
            if entry.kind == EntryKind.COMMAND:
                assert entry.data == entry_data(entry.index, entry.term), f"{where}: damaged"
        for index, acked_term in acks.entries.items():
            assert index <= last, f"{where}: acknowledged entry {index} lost (last {last})"
            assert log.term_at(index) == acked_term, f"{where}: entry {index} changed term"
        hard = storage.stable.hard_state()
        assert hard.term >= acks.hard_term, f"{where}: acknowledged term {acks.hard_term} lost"
        assert hard.term >= last_hard_term, f"{where}: term went backwards"
        if hard.term == acks.hard_term and acks.vote not in (None, "-"):
            assert hard.voted_for == acks.vote, f"{where}: acknowledged vote lost"
        return hard.term, last


def run_log_kills(
    tmp_path: Path, children: list[subprocess.Popen[Any]], kills: int, durable_log: DurableLog
) -> None:
    rng = random.Random(SEED)
    path = tmp_path / "node"
    acks = LogAcks()
    hard_term = last = 0
    for n in range(kills):
        where = f"{durable_log} log kill {n} (seed {SEED})"
        seed = rng.randrange(2**32)
        proc = spawn(children, "log", path, seed, tmp_path / "child.err", durable_log)
        after, delay = random_kill(rng)
        acks.add(read_until_killed(proc, after, delay, tmp_path / "child.err"))
        # the content of older entries is re-read in full every 25th time and at the end
        full = n % 25 == 24 or n == kills - 1
        start = 1 if full else last + 1
        hard_term, last = verify_log(path, acks, hard_term, where, durable_log, start)
    assert len(acks.entries) > kills, "the children acknowledged almost nothing"


@LOGS
def test_kill_9_never_loses_an_acknowledged_entry_or_vote(
    tmp_path: Path, children: list[subprocess.Popen[Any]], durable_log: DurableLog
) -> None:
    run_log_kills(tmp_path, children, kills=50, durable_log=durable_log)


@pytest.mark.long
@pytest.mark.timeout(1200)
@LOGS
def test_kill_9_log_many_times(
    tmp_path: Path, children: list[subprocess.Popen[Any]], durable_log: DurableLog
) -> None:
    run_log_kills(tmp_path, children, kills=400, durable_log=durable_log)


def verify_snapshots(path: Path, acked: int, where: str) -> None:
    with DurableStorage.open(path) as storage:
        directory = storage.snapshots.directory
        assert list(directory.glob("*.partial")) == [], f"{where}: partial files left"
        assert list(directory.glob("*.corrupt")) == [], f"{where}: a kill corrupted a file"
        assert len(list(directory.glob("snap-*.snap"))) <= 2, f"{where}: more than two kept"
        info = storage.snapshots.latest()
        if acked == 0 and info is None:
            return
        assert info is not None and info.meta.index >= acked, f"{where}: snapshot {acked} lost"
        reader = storage.snapshots.open_latest()
        assert reader is not None
        data = b"".join(iter(lambda: reader.read(1 << 16), b""))
        reader.close()
        assert data == snapshot_data(info.meta.index), f"{where}: snapshot damaged"
        assert info.size == len(data)


def run_snapshot_kills(tmp_path: Path, children: list[subprocess.Popen[Any]], kills: int) -> None:
    rng = random.Random(SEED + 1)
    path = tmp_path / "node"
    acked = 0
    for n in range(kills):
        where = f"snapshot kill {n} (seed {SEED + 1})"
        proc = spawn(children, "snap", path, rng.randrange(2**32), tmp_path / "child.err")
        after = 0 if rng.random() < 0.1 else rng.randint(1, 6)
        lines = read_until_killed(proc, after, rng.uniform(0.0, 0.03), tmp_path / "child.err")
        acked = max([acked] + [int(line.split()[1]) for line in lines if line.startswith("S")])
        verify_snapshots(path, acked, where)
    assert acked > kills // 2, "the children finished almost no snapshot"


def test_kill_9_during_snapshot_writes_keeps_the_last_finished_one(
    tmp_path: Path, children: list[subprocess.Popen[Any]]
) -> None:
    run_snapshot_kills(tmp_path, children, kills=20)


@pytest.mark.long
@pytest.mark.timeout(1200)
def test_kill_9_snapshots_many_times(tmp_path: Path, children: list[subprocess.Popen[Any]]) -> None:
    run_snapshot_kills(tmp_path, children, kills=150)


@LOGS
def test_full_disk_stops_the_writer_and_keeps_what_was_acknowledged(
    tmp_path: Path, children: list[subprocess.Popen[Any]], durable_log: DurableLog
) -> None:
    path = tmp_path / "node"
    err = tmp_path / "child.err"
    proc = spawn(children, "full", path, 7, err, durable_log)
    lines = read_until_killed(proc, None, 0.0, err)
    assert proc.returncode == 0, err.read_text()[-2000:]
    failures = [line for line in lines if line.startswith("F ")]
    refusals = [line for line in lines if line.startswith("R ")]
    assert failures and "disk full" in failures[0], lines[-5:]
    assert refusals and "refuses writes" in refusals[0] and "disk full" in refusals[0]
    assert lines.index(failures[0]) < lines.index(refusals[0])
    acks = LogAcks()
    acks.add(lines)
    assert acks.entries, "nothing was acknowledged before the disk filled up"
    verify_log(path, acks, 0, "after a full disk", durable_log)
    assert "STORAGE" in err.read_text()  # logged loudly
