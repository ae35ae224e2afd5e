"""Real node processes for the multi-process tests (``tests/integration/``,
``tests/faults/``): a :class:`ProcessCluster` that remembers every pid it started so a
fixture can reap them all, a bounded :func:`wait_for`, clients that give up on a silent
member quickly, and a closed-loop counter :class:`Workload` whose increments are checked
for exactly-once.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.client import ClientConfig, RaftClient, RequestTimeoutError, fetch_status
from actors.cluster import (
    ClusterManifest,
    alive,
    exit_status,
    spawn_member,
    tail,
    wait_for_leader,
)
from protocol.admin import NodeStatus

__all__ = ["PAD", "WAIT", "ProcessCluster", "Workload", "client_for", "ours", "wait_for"]

#: Bound for anything a healthy cluster does (elections, catch-up, a failover).
WAIT = 20.0
#: Padding that makes a command about 100 bytes; the counter ignores extra elements.
PAD = "x" * 90


def wait_for(
    predicate: Callable[[], Any],
    what: str,
    timeout: float = WAIT,
    explain: Callable[[], str] | None = None,
) -> Any:
    """Poll ``predicate`` until truthy (node status is only observable by polling);
    on timeout the error ends with ``explain()`` (e.g. :meth:`ProcessCluster.logs`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    why = f"\n{explain()}" if explain is not None else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{why}")


class ProcessCluster:
    """A local cluster of node processes made with :mod:`actors.cluster`'s helpers;
    remembers every pid it started so :meth:`kill_all` can reap them."""

    def __init__(self, directory: Path, manifest: ClusterManifest) -> None:
        self.directory = directory
        self.manifest = manifest
        self.started: list[int] = []
        self.stopped: set[int] = set()  # SIGSTOPped, so teardown can mention it
        #: When each pid was started (monotonic), to say how soon a dead node died.
        self.started_at: dict[int, float] = {}

    @property
    def addresses(self) -> list[str]:
        return self.manifest.client_addresses

    def members(self) -> list[str]:
        return [m.member_id for m in self.manifest.members]

    def start(self, member_id: str) -> int:
        pid = spawn_member(self.directory, self.manifest, member_id)
        self.started.append(pid)
        self.started_at[pid] = time.monotonic()
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

    def gone(self, member_ids: list[str]) -> list[str]:
        """Of the named members this cluster runs (started and not :meth:`kill9`-ed),
        those whose process ended, each with how and when it was noticed, and then (if
        any) the free space on the cluster's disk; empty if all of them run."""
        gone = []
        for member_id in member_ids:
            pid = self.manifest.member(member_id).pid
            if pid is None or alive(pid):
                continue
            how = exit_status(pid) or "ended (exit status unknown: not our child)"
            if how.startswith("killed by"):
                # kill9() forgets the pid, so no signal of ours killed a member still here.
                how += (
                    ", a signal this test did not send: another process (a broad pkill?) "
                    "or the kernel (the OOM killer: see dmesg)"
                )
            since = time.monotonic() - self.started_at.get(pid, time.monotonic())
            gone.append(f"{member_id} (pid {pid}) {how}; noticed {since:.1f}s after its start")
        if gone:  # a full disk kills a node without a line in its log (it cannot write one)
            free_mb = shutil.disk_usage(self.directory).free // 1_000_000
            gone.append(f"{free_mb} MB free on the cluster directory's disk")
        return gone

    def caught_up(self, member_ids: list[str]) -> dict[str, NodeStatus] | None:
        """The statuses if every named member applied the same, committed index.

        Raises ``AssertionError`` at once, saying how and with the log tails, if a
        named member's process ended: it would never catch up."""
        gone = self.gone(member_ids)
        if gone:
            raise AssertionError(f"node process gone: {'; '.join(gone)}\n{self.logs()}")
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
        """The tail of every member's log, and how each process this cluster started
        ended (a node that died without a word in its log was killed by a signal)."""
        ended = [f"pid {p}: {how}" for p in self.started if (how := exit_status(p)) is not None]
        return "\n".join(
            [
                f"--- {m.member_id}.log\n{tail(self.directory / m.log, 25)}"
                for m in self.manifest.members
            ]
            + [f"--- ended: {', '.join(ended) or 'none'}"]
        )

    def kill_all(self) -> None:
        """SIGKILL every process this cluster ever started (stopped ones too) that is
        still running. A pid whose process already ended (and was reaped) may belong to
        someone else by now -- another test run on this machine -- so only our own
        children are signalled (:func:`ours`)."""
        for pid in self.started:
            if ours(pid):
                for kill in (os.killpg, os.kill):
                    try:
                        kill(pid, signal.SIGKILL)
                        break
                    except ProcessLookupError:
                        break
                    except PermissionError:
                        continue
        deadline = time.monotonic() + 10
        while any(ours(p) for p in self.started) and time.monotonic() < deadline:
            time.sleep(0.02)
        survivors = [p for p in self.started if ours(p)]
        assert not survivors, f"node processes survived SIGKILL: {survivors}"


def ours(pid: int) -> bool:
    """Whether ``pid`` is a running child of this process. Pids are reused once a dead
    child is reaped, so "alive" alone could name a stranger's process."""
    if not alive(pid):
        return False
    if not Path("/proc/self/stat").exists():
        return True  # no /proc (not Linux): trust alive()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False  # gone meanwhile
    return int(fields[1]) == os.getpid()


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
                # Any other error fails the check anyway; going on would only spin (a
                # closed client fails every submit at once) and pile up errors: a failed
                # test once left such threads running, growing pytest to 11 GB.
                self.errors.append(error)
                self._stop.set()
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

    def halt(self) -> None:
        """Stop submitting (bounded, no checks): for a test's cleanup."""
        self._stop.set()
        self._thread.join(5)

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
