"""Fixtures for the CLI tests: a private state dir, stand-in nodes, and a reaper that
SIGKILLs every node process a test leaves behind."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import actors.cli_cluster
import actors.cluster
from actors.cluster import ClusterManifest, live_pid, load_manifest
from protocol.admin import NodeStatus
from protocol.ids import MemberId

FAKE_NODE = Path(__file__).with_name("fake_node.py")


@pytest.fixture(autouse=True)
def private_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Never read or write the user's remembered cluster; no inherited cluster dir."""
    home = tmp_path / "state"
    monkeypatch.setenv("RAFT_ACTORS_HOME", str(home))
    monkeypatch.delenv("RAFT_ACTORS_DIR", raising=False)
    return home


def _kill_group(pid: int) -> None:
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
            return
        except ProcessLookupError:
            return
        except PermissionError:
            continue


class Reaper:
    """Remembers cluster directories and kills whatever their nodes left running."""

    def __init__(self) -> None:
        self.dirs: list[Path] = []

    def watch(self, directory: Path) -> Path:
        self.dirs.append(directory)
        return directory

    def reap(self) -> None:
        pids = {p for p, c in actors.cluster._CHILDREN.items() if c.poll() is None}
        for directory in self.dirs:
            try:
                manifest = load_manifest(directory)
            except actors.cluster.ClusterError:
                continue
            pids |= {p for m in manifest.members if (p := live_pid(directory, m)) is not None}
        for pid in pids:
            _kill_group(pid)
        deadline = time.monotonic() + 10
        while any(actors.cluster.alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not any(actors.cluster.alive(p) for p in pids), "a node survived SIGKILL"


@pytest.fixture
def reaper() -> Iterator[Reaper]:
    r = Reaper()
    try:
        yield r
    finally:
        r.reap()


def wait_ready(config: Path, timeout: float = 10.0) -> None:
    """Wait (bounded) until a stand-in node has installed its signal handler."""
    marker = Path(str(config) + ".ready")
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert time.monotonic() < deadline, f"{config} stand-in never became ready"
        time.sleep(0.01)


class FakeCluster:
    """Stand-in nodes plus a status function that plays an elected cluster: the first
    running member (in manifest order) leads, in a term that rises on every change."""

    def __init__(self, stubborn: bool = False) -> None:
        self.stubborn = stubborn
        self.directory: Path | None = None
        self._leaders: list[str] = []

    def command(self, config: Path, app: str) -> list[str]:
        self.directory = config.parent
        argv = [sys.executable, str(FAKE_NODE), "--config", str(config), "--app", app]
        return [*argv, "--stubborn"] if self.stubborn else argv

    def status(self, address: str) -> NodeStatus:
        assert self.directory is not None
        manifest: ClusterManifest = load_manifest(self.directory)
        running = [m for m in manifest.members if live_pid(self.directory, m) is not None]
        me = next((m for m in running if m.client == address), None)
        if me is None:
            raise TimeoutError(f"{address} does not answer")
        leader = running[0].member_id if 2 * len(running) > len(manifest.members) else None
        if leader is not None and (not self._leaders or self._leaders[-1] != leader):
            self._leaders.append(leader)
        return NodeStatus(
            member_id=MemberId(me.member_id), role="leader" if me.member_id == leader else
            "follower", term=len(self._leaders), leader=MemberId(leader) if leader else None,
            commit_index=5, applied_index=4, last_log_index=5, snapshot_index=0,
            voters=tuple(MemberId(m.member_id) for m in manifest.members), learners=(),
            sessions=1, pending_server_requests=0, client_address=me.client,
            peer_address=me.peer, pid=me.pid or 0, uptime_ms=10,
        )  # fmt: skip


@pytest.fixture
def fake_cluster(monkeypatch: pytest.MonkeyPatch, reaper: Reaper) -> FakeCluster:
    """``cluster ...`` commands run stand-in nodes and see :class:`FakeCluster` status."""
    fake = FakeCluster()
    monkeypatch.setattr(actors.cluster, "node_command", fake.command)
    monkeypatch.setattr(actors.cli_cluster, "status_fn", lambda timeout, curve=None: fake.status)
    return fake
