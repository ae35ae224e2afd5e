"""The nemesis' bookkeeping without node processes: a stand-in cluster of ``sleep``
processes (so SIGSTOP, SIGCONT and ``kill -9`` are real) and real ``fault_control``
files, read back with :func:`actors.transport.read_rules`.

What must hold: every kind asked for happens; faults overlap up to ``max_faults``; they
never take out more than a minority unless ``majority_loss`` allows it; every fault is
undone (processes running and not stopped, no cut left in any file) once stopped; and
the cuts written are exactly the directed links asked for.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from actors.transport import DropRules, read_rules
from tests.faults.harness import KINDS, Nemesis, fault_file, set_cuts

pytestmark = pytest.mark.timeout(60)


@dataclass
class Member:
    member_id: str
    pid: int | None


class FakeCluster:
    """What the nemesis uses of :class:`tests.cluster_procs.ProcessCluster`; each member
    is a ``sleep`` process; the first member claims to lead."""

    def __init__(self, directory: Path, n: int) -> None:
        self.directory = directory
        (directory / "faults").mkdir(parents=True)
        self._members = {f"n{i + 1}": Member(f"n{i + 1}", None) for i in range(n)}
        self.manifest = SimpleNamespace(member=self._members.__getitem__)
        self.stopped: set[int] = set()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.kills = 0
        for m in self._members:
            self.start(m)

    def members(self) -> list[str]:
        return list(self._members)

    def start(self, member: str) -> int:
        proc = subprocess.Popen(["sleep", "120"])
        self.procs.append(proc)
        self._members[member].pid = proc.pid
        return proc.pid

    def pid(self, member: str) -> int:
        pid = self._members[member].pid
        assert pid is not None
        return pid

    def kill9(self, member: str) -> None:
        pid = self.pid(member)
        os.kill(pid, signal.SIGKILL)
        next(p for p in self.procs if p.pid == pid).wait(10)
        self._members[member].pid = None
        self.kills += 1

    def status(self, member: str, timeout: float = 1.0) -> SimpleNamespace:
        return SimpleNamespace(role="leader" if member == "n1" else "follower", term=1)

    def reap(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)


MakeFake = Callable[[int], FakeCluster]


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[MakeFake]:
    clusters: list[FakeCluster] = []

    def make(n: int) -> FakeCluster:
        clusters.append(FakeCluster(tmp_path / f"c{len(clusters)}", n))
        return clusters[-1]

    try:
        yield make
    finally:
        for c in clusters:
            for pid in c.stopped:
                os.kill(pid, signal.SIGCONT)
            c.reap()


def state(pid: int) -> str:
    """The process state letter from /proc (``T`` = stopped)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def run(cluster: FakeCluster, seed: int, **kwargs: object) -> Nemesis:
    nemesis = Nemesis(
        cluster,  # type: ignore[arg-type]
        random.Random(seed),
        gap_s=(0.01, 0.04),
        hold_s=(0.05, 0.2),
        weights=dict.fromkeys(KINDS, 1),
        **kwargs,  # type: ignore[arg-type]
    )
    nemesis.start()
    tick = threading.Event()  # never set: bounded polling of the nemesis' progress
    for _ in range(100):
        if nemesis.kinds_injected() == set(KINDS) and len(nemesis.events) >= 40:
            break
        tick.wait(0.1)
    nemesis.stop()
    assert not nemesis.errors, nemesis.errors
    return nemesis


def assert_all_undone(cluster: FakeCluster, nemesis: Nemesis) -> None:
    for m in cluster.members():
        pid = cluster.pid(m)  # restarted if it was killed
        assert state(pid) != "T" and pid not in cluster.stopped
        assert read_rules(fault_file(cluster, m)) == DropRules()
    starts = [e for e in nemesis.events if e.action in KINDS]
    undos = [e for e in nemesis.events if e.action in ("restart", "resume", "heal")]
    assert len(starts) == len(undos) and len(starts) >= 10


@pytest.mark.parametrize("n", [3, 5])
def test_overlapping_faults_keep_a_majority(fake: MakeFake, n: int) -> None:
    cluster = fake(n)
    nemesis = run(cluster, seed=n, max_faults=3)
    assert nemesis.kinds_injected() == set(KINDS)
    assert nemesis.max_overlap >= 2 if n == 5 else nemesis.max_overlap == 1
    assert nemesis.peak_impaired == (n - 1) // 2 and nemesis.majority_losses == 0
    leader_faults = [e for e in nemesis.events if e.action in KINDS and e.was_leader]
    assert len(leader_faults) > len([e for e in nemesis.events if e.action in KINDS]) / 3
    assert_all_undone(cluster, nemesis)


def test_a_schedule_may_break_the_majority(fake: MakeFake) -> None:
    cluster = fake(3)
    nemesis = run(cluster, seed=7, max_faults=2, majority_loss=1.0)
    assert nemesis.max_overlap == 2 and nemesis.peak_impaired == 2
    assert nemesis.majority_losses > 0
    assert any(e.action == "no_majority" for e in nemesis.events)
    assert_all_undone(cluster, nemesis)


def test_cuts_are_written_as_directed_links(tmp_path: Path) -> None:
    cluster = FakeCluster.__new__(FakeCluster)
    cluster.directory = tmp_path
    (tmp_path / "faults").mkdir()
    cluster._members = {m: Member(m, None) for m in ("n1", "n2", "n3")}
    set_cuts(cluster, {("n1", "n2"), ("n1", "n3"), ("n3", "n1")})  # type: ignore[arg-type]
    rules = {m: read_rules(fault_file(cluster, m)) for m in cluster.members()}  # type: ignore[arg-type]
    assert rules == {
        "n1": DropRules(frozenset({"n2", "n3"}), frozenset({"n3"})),
        "n2": DropRules(frozenset(), frozenset({"n1"})),
        "n3": DropRules(frozenset({"n1"}), frozenset({"n1"})),
    }
    set_cuts(cluster, set())  # type: ignore[arg-type]
    assert all(read_rules(fault_file(cluster, m)) == DropRules() for m in cluster.members())  # type: ignore[arg-type]
