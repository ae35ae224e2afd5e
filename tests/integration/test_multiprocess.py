"""Three real node processes over ZeroMQ on 127.0.0.1 (counter app, durable storage).

What only real processes can show: a leader ``kill -9``-ed with requests in flight, a
follower frozen with SIGSTOP, nodes restarted from their data directory that catch up
from the log or, once the others have compacted past them, through InstallSnapshot.
Every process a test starts is SIGKILLed by the ``cluster`` fixture, whatever happens.

Exactly-once is checked through the counter: every command is ``["inc", 1, padding]``
from one session, so the final value must equal the number of increments that
succeeded, plus at most the number whose outcome stayed unknown (timed out). Each
successful increment's response is the counter's value right after it, so those values
must also be pairwise distinct.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from actors.client import ClientConfig, RaftClient, RequestTimeoutError, fetch_status
from actors.cluster import (
    ClusterManifest,
    alive,
    create_cluster,
    spawn_member,
    tail,
    wait_for_leader,
)
from protocol.admin import NodeStatus

pytestmark = pytest.mark.integration

#: Bound for anything a healthy cluster does (elections, catch-up, a failover).
WAIT = 20.0
#: Padding that makes a command about 100 bytes; the counter ignores extra elements.
PAD = "x" * 90
#: How long a follower stays SIGSTOPped: several election timeouts (300 ms).
FREEZE_S = 1.5


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """Poll ``predicate`` until truthy (node status is only observable by polling)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class ProcessCluster:
    """A local cluster of node processes made with :mod:`actors.cluster`'s helpers;
    remembers every pid it started so :meth:`kill_all` can reap them."""

    def __init__(self, directory: Path, manifest: ClusterManifest) -> None:
        self.directory = directory
        self.manifest = manifest
        self.started: list[int] = []
        self.stopped: set[int] = set()  # SIGSTOPped, so teardown can mention it

    @property
    def addresses(self) -> list[str]:
        return self.manifest.client_addresses

    def members(self) -> list[str]:
        return [m.member_id for m in self.manifest.members]

    def start(self, member_id: str) -> int:
        pid = spawn_member(self.directory, self.manifest, member_id)
        self.started.append(pid)
        self.manifest = self.manifest.with_pid(member_id, pid)
        return pid

    def pid(self, member_id: str) -> int:
        pid = self.manifest.member(member_id).pid
        assert pid is not None, f"{member_id} was never started"
        return pid

    def kill9(self, member_id: str) -> None:
        pid = self.pid(member_id)
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not alive(pid), f"{member_id} (pid {pid}) to die", timeout=10)
        self.manifest = self.manifest.with_pid(member_id, None)

    def status(self, member_id: str, timeout: float = 1.0) -> NodeStatus | None:
        try:
            st: NodeStatus = fetch_status(self.manifest.member(member_id).client, timeout=timeout)
        except TimeoutError:
            return None
        return st

    def leader(self, expect: list[str] | None = None, not_leader: str | None = None) -> str:
        result = wait_for_leader(
            self.directory,
            self.manifest,
            lambda address: fetch_status(address, timeout=1.0),
            timeout=WAIT,
            expect=expect,
            not_leader=not_leader,
        )
        assert result.leader is not None, f"no agreed leader: {result}\n{self.logs()}"
        return result.leader

    def caught_up(self, member_ids: list[str]) -> dict[str, NodeStatus] | None:
        """The statuses if every named member applied the same, committed index."""
        statuses = {m: self.status(m) for m in member_ids}
        if any(s is None for s in statuses.values()):
            return None
        done = {m: s for m, s in statuses.items() if s is not None}
        applied = {s.applied_index for s in done.values()}
        commits = {s.commit_index for s in done.values()}
        if len(applied) == 1 and applied == commits:
            return done
        return None

    def logs(self) -> str:
        return "\n".join(
            f"--- {m.member_id}.log\n{tail(self.directory / m.log, 25)}"
            for m in self.manifest.members
        )

    def kill_all(self) -> None:
        """SIGKILL every process this cluster ever started (stopped ones too)."""
        for pid in self.started:
            if alive(pid):
                for kill in (os.killpg, os.kill):
                    try:
                        kill(pid, signal.SIGKILL)
                        break
                    except ProcessLookupError:
                        break
                    except PermissionError:
                        continue
        deadline = time.monotonic() + 10
        while any(alive(p) for p in self.started) and time.monotonic() < deadline:
            time.sleep(0.02)
        survivors = [p for p in self.started if alive(p)]
        assert not survivors, f"node processes survived SIGKILL: {survivors}"


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., ProcessCluster]]:
    """Builds started 3-node counter clusters in ``tmp_path``; kills them all after."""
    made: list[ProcessCluster] = []

    def make(**settings: int) -> ProcessCluster:
        directory, manifest = create_cluster(
            tmp_path / f"cluster{len(made)}",
            nodes=3,
            app="counter",
            storage="durable",
            settings=settings,
        )
        cluster = ProcessCluster(directory, manifest)
        made.append(cluster)
        for member in cluster.members():
            cluster.start(member)
        cluster.leader()
        return cluster

    try:
        yield make
    finally:
        for cluster in made:
            cluster.kill_all()


def client_for(cluster: ProcessCluster, **kwargs: Any) -> RaftClient:
    """A client that gives up on a silent member quickly (a killed leader)."""
    config = ClientConfig(
        tuple(cluster.addresses),
        server_timeout_ms=1_500,
        handshake_timeout_ms=1_000,
        resend_interval_ms=1_000,
        keep_alive_interval_ms=300,
    )
    return RaftClient(cluster.addresses, config=config, tick_ms=10, **kwargs).connect(WAIT)


@dataclass
class Workload:
    """Keeps ``window`` increments in flight from one client until stopped."""

    client: RaftClient
    window: int = 8
    timeout: float = 15.0
    ok_values: list[int] = field(default_factory=list)
    timeouts: int = 0
    errors: list[BaseException] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._room = threading.Semaphore(self.window)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="workload", daemon=True)

    @property
    def ok(self) -> int:
        with self._lock:
            return len(self.ok_values)

    def start(self) -> Workload:
        self._thread.start()
        return self

    def _done(self, future: Future[Any]) -> None:
        with self._lock:
            error = future.exception()
            if error is None:
                self.ok_values.append(future.result())
            elif isinstance(error, RequestTimeoutError):
                self.timeouts += 1
            else:
                self.errors.append(error)
        self._room.release()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._room.acquire(timeout=0.1):
                continue
            future = self.client.submit(["inc", 1, PAD], timeout=self.timeout)
            future.add_done_callback(self._done)

    def wait_ok(self, n: int, what: str) -> None:
        """Wait until at least ``n`` increments succeeded in all."""
        wait_for(lambda: self.ok >= n, f"{n} successful increments ({what})")

    def stop(self) -> None:
        """Stop submitting and wait for every outstanding increment's outcome."""
        self._stop.set()
        self._thread.join(5)
        assert not self._thread.is_alive()
        for _ in range(self.window):
            assert self._room.acquire(timeout=self.timeout + 5), "an increment never finished"

    def check_exactly_once(self, final: int) -> None:
        assert not self.errors, self.errors
        assert len(set(self.ok_values)) == len(self.ok_values), "two increments saw one value"
        assert self.ok <= final <= self.ok + self.timeouts, (self.ok, self.timeouts, final)


def test_failover_freeze_and_restart(make_cluster: Callable[..., ProcessCluster]) -> None:
    """Sessions and requests; SIGSTOP/SIGCONT of a follower leaves the workload
    untouched; ``kill -9`` of the leader mid-workload: the client goes on with its
    session at the new leader and every increment is applied exactly once; the killed
    node, restarted, catches up from its log."""
    cluster = make_cluster()
    crossings: list[Any] = []
    delivered = threading.Event()

    def on_server_request(payload: Any) -> None:
        crossings.append(payload)
        if len(crossings) >= 2:
            delivered.set()

    with (
        client_for(cluster) as client,
        client_for(cluster, on_server_request=on_server_request) as watcher,
    ):
        # Sessions and requests: responses are the counter's value; a second session
        # gets a server request every time the value crosses a multiple of 10.
        assert [client.call(["inc", 1], timeout=WAIT) for _ in range(20)] == list(range(1, 21))
        assert client.query(["get"], timeout=WAIT) == 20
        assert delivered.wait(WAIT), crossings
        assert crossings[:2] == [["crossed", 10], ["crossed", 20]]
        assert watcher.session_id != client.session_id
        watcher.close()
        session = client.session_id
        base = 20

        leader = cluster.leader()
        follower = next(m for m in cluster.members() if m != leader)

        # Freeze a follower for a few election timeouts: the two others keep a quorum,
        # no increment fails or times out, and when it thaws it catches up (PreVote
        # keeps it from forcing an election with its stale log).
        work = Workload(client).start()
        work.wait_ok(100, "before SIGSTOP")
        os.kill(cluster.pid(follower), signal.SIGSTOP)
        try:
            done = work.ok
            frozen_until = time.monotonic() + FREEZE_S
            work.wait_ok(done + 200, "while a follower is stopped")
            # The freeze is the fault itself (not a synchronization): several
            # election timeouts long, so the follower's timers run out.
            time.sleep(max(0.0, frozen_until - time.monotonic()))
            assert cluster.status(follower, timeout=0.2) is None, "the follower still answers"
        finally:
            os.kill(cluster.pid(follower), signal.SIGCONT)
        work.wait_ok(work.ok + 100, "after SIGCONT")
        work.stop()
        assert work.timeouts == 0 and not work.errors, (work.timeouts, work.errors)
        work.check_exactly_once(client.query(["get"], timeout=WAIT) - base)
        # (Whether the leader stays is not asserted: on a starved machine the leader can
        # lose its quorum of one while a follower is frozen; the client must not care.)
        wait_for(lambda: cluster.caught_up(cluster.members()), "the thawed follower catching up")
        base += work.ok

        # kill -9 the leader while increments are in flight.
        leader = cluster.leader()
        work = Workload(client, window=8).start()
        work.wait_ok(150, "before the leader dies")
        cluster.kill9(leader)
        survivors = [m for m in cluster.members() if m != leader]
        cluster.leader(expect=survivors, not_leader=leader)
        work.wait_ok(work.ok + 150, "after the failover")
        work.stop()
        final = client.query(["get"], timeout=WAIT)
        work.check_exactly_once(final - base)
        assert client.session_id == session, "the client had to open a new session"
        assert client.stats().connects >= 2

        # The killed node comes back from its data directory and catches up from the
        # log (the threshold keeps snapshots out of this test).
        cluster.start(leader)
        statuses = wait_for(
            lambda: cluster.caught_up(cluster.members()), "the restarted node catching up"
        )
        assert statuses[leader].snapshot_index == 0
        assert client.call(["inc", 1], timeout=WAIT) == final + 1


def test_restarted_node_catches_up_through_install_snapshot(
    make_cluster: Callable[..., ProcessCluster],
) -> None:
    """A follower down while the others snapshot (and compact their logs) past its
    last entry is brought back by the leader's InstallSnapshot."""
    cluster = make_cluster(snapshot_threshold_bytes=4_096, snapshot_trailing_entries=5)
    leader = cluster.leader()
    follower = next(m for m in cluster.members() if m != leader)
    with client_for(cluster) as client:
        assert client.call(["inc", 1], timeout=WAIT) == 1
        wait_for(lambda: cluster.caught_up(cluster.members()), "the first increment everywhere")
        cluster.kill9(follower)
        down = cluster.members()
        down.remove(follower)

        work = Workload(client, window=16).start()
        work.wait_ok(600, "while a follower is down")
        work.stop()
        final = client.query(["get"], timeout=WAIT)
        work.check_exactly_once(final - 1)

        # The others snapshotted (many times) and compacted past the follower's log.
        statuses = wait_for(lambda: cluster.caught_up(down), "the live nodes agreeing")
        leader_status = statuses[leader]
        assert leader_status.snapshot_index > 0

        cluster.start(follower)
        statuses = wait_for(
            lambda: cluster.caught_up(cluster.members()), "the restarted follower catching up"
        )
        assert statuses[follower].snapshot_index > 0
        assert statuses[follower].applied_index == statuses[leader].applied_index
        log = (cluster.directory / cluster.manifest.member(follower).log).read_text()
        assert "installed a snapshot" in log, cluster.logs()
        assert client.query(["get"], timeout=WAIT) == final
