"""Fault injection against a 3-node cluster of real node processes (ZeroMQ on 127.0.0.1).

Three pieces, driven by ``test_faults.py``:

* :class:`Nemesis` -- a thread that, on a schedule drawn from a seeded ``random.Random``,
  injects one fault at a time: ``kill -9`` of a node (the leader more often) followed by
  a restart from its data directory, SIGSTOP/SIGCONT of a node (a long GC pause, a
  frozen VM), or a partition isolating one node. Which node is the leader is only known
  at run time, so the schedule that actually ran is recorded (:class:`FaultEvent`)
  with monotonic timestamps.
* :class:`KvClients` -- N threads, each with its own :class:`RaftClient`, doing random
  ``get`` (a linearizable query), ``set`` and ``cas`` on a few keys and recording every
  operation for :func:`tests.checker.linearizability.check_history`: a timeout or a lost
  session means "may or may not have happened" (output ``UNKNOWN``).
* :func:`save_failure` -- a failing run's history, schedule and node log tails as JSON.

* partitions -- with :func:`enable_partitions`, each node's peer transport is wrapped
  by the test-only :class:`actors.transport.FaultControlledPeerTransport` (config option
  ``fault_control``), and the nemesis cuts a node (the leader more often) off from the
  others by writing drop rules to the nodes' control files.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import tempfile
import threading
import time
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from actors.client import (
    ClientClosedError,
    ClientConfig,
    RaftClient,
    RequestFailedError,
    RequestTimeoutError,
    ResponseEvictedError,
    SessionExpiredError,
)
from examples.kvstore import KvCas, KvGet, KvSet
from tests.checker.linearizability import UNKNOWN, Operation
from tests.integration.test_multiprocess import ProcessCluster, wait_for

__all__ = [
    "ARTIFACTS_ENV",
    "ClientLog",
    "FaultEvent",
    "KvClients",
    "Nemesis",
    "client_config",
    "enable_partitions",
    "events_to_json",
    "fault_file",
    "heal",
    "operation_to_json",
    "save_failure",
    "set_partition",
]

#: Environment variable naming where failing runs are saved (default: a directory
#: under the system temporary directory).
ARTIFACTS_ENV = "RAFT_FAULTS_DIR"
#: Bound for a client to open a session (the cluster may be mid-failover).
CONNECT_S = 15.0


def client_config(addresses: Sequence[str]) -> ClientConfig:
    """Client knobs that give up on a silent (killed or stopped) member quickly."""
    return ClientConfig(
        tuple(addresses),
        server_timeout_ms=1_500,
        handshake_timeout_ms=1_000,
        resend_interval_ms=1_000,
        keep_alive_interval_ms=300,
    )


# ---------------------------------------------------------------- the nemesis


@dataclass(frozen=True)
class FaultEvent:
    """One thing the nemesis did: ``kill``, ``restart``, ``pause``, ``resume``."""

    at: float  # time.monotonic()
    action: str
    member: str
    was_leader: bool = False


class Nemesis:
    """Injects one fault at a time, on a seeded schedule, until stopped.

    Each round: wait ``gap_s`` (uniform), pick a fault (``kill`` or ``pause``) and a
    target (the current leader with probability ``leader_bias``, else any member), hold
    it ``hold_s`` (uniform), then undo it (restart / SIGCONT). The waits are the faults'
    durations, not synchronisation: they are interrupted at once by :meth:`stop`.
    """

    def __init__(
        self,
        cluster: ProcessCluster,
        rng: random.Random,
        *,
        gap_s: tuple[float, float] = (0.5, 1.5),
        hold_s: tuple[float, float] = (0.3, 2.0),
        leader_bias: float = 0.6,
        weights: dict[str, float] | None = None,
    ) -> None:
        self.cluster = cluster
        self.rng = rng
        self.gap_s = gap_s
        self.hold_s = hold_s
        self.leader_bias = leader_bias
        #: Relative odds of each fault; ``partition`` needs nodes started with
        #: ``fault_control`` files (see :func:`enable_partitions`).
        self.weights = weights or {"kill": 1.0, "pause": 1.0}
        self.events: list[FaultEvent] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nemesis", daemon=True)

    def start(self) -> Nemesis:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop injecting and undo the fault in progress (bounded)."""
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "the nemesis did not stop"

    def _leader(self) -> str | None:
        """The member that says it leads, with the highest term (None if none answers)."""
        best: tuple[int, str] | None = None
        for member in self.cluster.members():
            if self.cluster.manifest.member(member).pid is None:
                continue
            st = self.cluster.status(member, timeout=0.5)
            if (
                st is not None
                and st.role.lower() == "leader"
                and (best is None or st.term > best[0])
            ):
                best = (st.term, member)
        return None if best is None else best[1]

    def _record(self, action: str, member: str, was_leader: bool = False) -> None:
        self.events.append(FaultEvent(time.monotonic(), action, member, was_leader))

    def _run(self) -> None:
        try:
            kinds = sorted(self.weights)
            while not self._stop.wait(self.rng.uniform(*self.gap_s)):
                kind = self.rng.choices(kinds, [self.weights[k] for k in kinds])[0]
                on_leader = self.rng.random() < self.leader_bias
                hold = self.rng.uniform(*self.hold_s)
                fallback = self.rng.choice(self.cluster.members())
                leader = self._leader() if on_leader else None
                target = leader if leader is not None else fallback
                getattr(self, f"_{kind}")(target, target == leader, hold)
        except BaseException as exc:  # reported by the test, never swallowed
            self.errors.append(exc)

    def _kill(self, target: str, was_leader: bool, hold: float) -> None:
        self._record("kill", target, was_leader)
        self.cluster.kill9(target)
        self._stop.wait(hold)
        self.cluster.start(target)
        self._record("restart", target)

    def _pause(self, target: str, was_leader: bool, hold: float) -> None:
        pid = self.cluster.pid(target)
        self._record("pause", target, was_leader)
        os.kill(pid, signal.SIGSTOP)
        self.cluster.stopped.add(pid)
        try:
            self._stop.wait(hold)
        finally:
            os.kill(pid, signal.SIGCONT)
            self.cluster.stopped.discard(pid)
            self._record("resume", target)

    def _partition(self, target: str, was_leader: bool, hold: float) -> None:
        """Cut ``target`` off from every other member (a leader alone in a minority of
        one: clients can still reach it, its peers cannot)."""
        others = [m for m in self.cluster.members() if m != target]
        self._record("partition", target, was_leader)
        set_partition(self.cluster, {target: others, **{m: [target] for m in others}})
        try:
            self._stop.wait(hold)
        finally:
            set_partition(self.cluster, {})
            self._record("heal", target)


def fault_file(cluster: ProcessCluster, member: str) -> Path:
    """The member's ``fault_control`` file (see :func:`enable_partitions`)."""
    return cluster.directory / "faults" / f"{member}.json"


def enable_partitions(cluster: ProcessCluster) -> None:
    """Before the nodes start: point every node's config at its own ``fault_control``
    file, so :func:`set_partition` can cut links (a top-level TOML key, hence first)."""
    (cluster.directory / "faults").mkdir(exist_ok=True)
    for m in cluster.manifest.members:
        config = cluster.directory / m.config
        line = f'fault_control = "faults/{m.member_id}.json"\n'
        config.write_text(line + config.read_text())


def set_partition(cluster: ProcessCluster, drops: dict[str, list[str]]) -> None:
    """Each member drops frames to and from the members listed for it (none if absent);
    written atomically, picked up by the nodes within their poll interval."""
    for member in cluster.members():
        path = fault_file(cluster, member)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"drop": drops.get(member, [])}))
        os.replace(tmp, path)


# ---------------------------------------------------------------- the clients


#: Errors after which a write may or may not have been applied.
_INDETERMINATE = (RequestTimeoutError, SessionExpiredError, ResponseEvictedError, ClientClosedError)


@dataclass
class ClientLog:
    """One client thread's operations (``Operation``s for the checker) and the
    definite failures, which the checker leaves out."""

    ops: list[Operation] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    reconnects: int = 0


class KvClients:
    """``n`` client threads doing random kv operations on ``keys`` until stopped.

    Each thread has its own seeded ``random.Random`` and its own session. Written values
    are unique strings (``"c<client>-<seq>"``), so a stale read or a lost write cannot
    hide behind an equal value. A ``cas`` expects the value this client last saw for the
    key (so some succeed and some do not).
    """

    def __init__(
        self,
        addresses: Sequence[str],
        n: int,
        keys: Sequence[str],
        seed: int,
        *,
        op_timeout: float = 4.0,
    ) -> None:
        self.addresses = list(addresses)
        self.keys = list(keys)
        self.op_timeout = op_timeout
        self.logs = [ClientLog() for _ in range(n)]
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(
                target=self._run,
                args=(i, random.Random(f"{seed}/{i}")),
                name=f"kv-{i}",
                daemon=True,
            )
            for i in range(n)
        ]

    def start(self) -> KvClients:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        """Stop issuing; wait (bounded) for the operation each thread has in flight."""
        self._stop.set()
        for t in self._threads:
            t.join(self.op_timeout + CONNECT_S + 10)
        alive = [t.name for t in self._threads if t.is_alive()]
        assert not alive, f"client threads did not stop: {alive}"

    def history(self) -> list[Operation]:
        return [op for log in self.logs for op in log.ops]

    def counts(self) -> dict[str, int]:
        """How many operations ended ok / unknown / failed, per kind."""
        result: dict[str, int] = {}
        for op in self.history():
            state = "unknown" if op.output is UNKNOWN else "ok"
            result[f"{op.kind}_{state}"] = result.get(f"{op.kind}_{state}", 0) + 1
        result["failed"] = sum(len(log.failed) for log in self.logs)
        result["reconnects"] = sum(log.reconnects for log in self.logs)
        return result

    def _connect(self) -> RaftClient | None:
        """A new session, or None once stopped (retries while the cluster has none)."""
        while not self._stop.is_set():
            client = RaftClient(self.addresses, config=client_config(self.addresses), tick_ms=10)
            try:
                return client.connect(CONNECT_S)
            except TimeoutError:
                continue
        return None

    def _run(self, me: int, rng: random.Random) -> None:
        log = self.logs[me]
        seen: dict[str, object] = {}
        seq = 0
        client = self._connect()
        try:
            while client is not None and not self._stop.is_set():
                key = rng.choice(self.keys)
                kind = rng.choice(("get", "get", "set", "cas", "cas"))
                seq += 1
                value = f"c{me}-{seq}"
                expected = seen.get(key)
                call = time.monotonic()
                try:
                    output: object
                    if kind == "get":
                        got = KvGet(key).parse_result(
                            client.query(KvGet(key).to_native(), self.op_timeout)
                        )
                        output = got.value
                        seen[key] = got.value
                    elif kind == "set":
                        KvSet(key, value).parse_result(
                            client.call(KvSet(key, value).to_native(), self.op_timeout)
                        )
                        output = True
                        seen[key] = value
                    else:
                        request = KvCas(key, expected, value)
                        result = request.parse_result(
                            client.call(request.to_native(), self.op_timeout)
                        )
                        output = result.swapped
                        seen[key] = None if result.entry is None else result.entry.value
                except _INDETERMINATE as exc:
                    if kind != "get":  # a read that never answered constrains nothing
                        log.ops.append(
                            Operation(me, kind, key, call, math.inf, UNKNOWN, value, expected)
                        )
                    if not isinstance(exc, RequestTimeoutError):
                        client.close(2.0)
                        log.reconnects += 1
                        client = self._connect()
                    continue
                except RequestFailedError as exc:  # answered: definitely not applied
                    log.failed.append({"client": me, "kind": kind, "key": key, "error": repr(exc)})
                    continue
                log.ops.append(
                    Operation(me, kind, key, call, time.monotonic(), output, value, expected)
                )
        except BaseException as exc:  # reported by the test, never swallowed
            self.errors.append(exc)
        finally:
            if client is not None:
                client.close(2.0)


# ---------------------------------------------------------------- failing runs


def operation_to_json(op: Operation) -> dict[str, Any]:
    """An operation as JSON (``UNKNOWN`` as the string ``"UNKNOWN"``, ``inf`` as null)."""
    return {
        "client": op.client,
        "kind": op.kind,
        "key": _json_key(op.key),
        "call": op.call,
        "ret": None if math.isinf(op.ret) else op.ret,
        "output": "UNKNOWN" if op.output is UNKNOWN else op.output,
        "value": op.value,
        "expected": op.expected,
    }


def _json_key(key: Hashable) -> Any:
    return key if isinstance(key, (str, int)) else repr(key)


def save_failure(name: str, report: dict[str, Any], cluster: ProcessCluster) -> Path:
    """Write a failing run (``report``: seed, history, schedule, ...) plus the tails of
    the node logs to ``$RAFT_FAULTS_DIR/<name>-<time>.json``; print and return the path."""
    root = Path(os.environ.get(ARTIFACTS_ENV) or Path(tempfile.gettempdir()) / "raft-actors-faults")
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.json"
    logs = {}
    for m in cluster.manifest.members:
        try:
            logs[m.member_id] = (cluster.directory / m.log).read_text(errors="replace")[-20_000:]
        except OSError:
            logs[m.member_id] = ""
    path.write_text(json.dumps({**report, "node_logs": logs}, indent=1, default=repr))
    print(f"fault run failed; history and schedule saved to {path}")
    return path


def events_to_json(events: Sequence[FaultEvent]) -> list[dict[str, Any]]:
    return [asdict(e) for e in events]


def heal(cluster: ProcessCluster) -> None:
    """Every member running, not stopped, not cut off; wait (bounded) for an agreed
    leader and for every member to catch up."""
    if (cluster.directory / "faults").is_dir():
        set_partition(cluster, {})
    for pid in list(cluster.stopped):
        os.kill(pid, signal.SIGCONT)
        cluster.stopped.discard(pid)
    for member in cluster.members():
        if cluster.manifest.member(member).pid is None:
            cluster.start(member)
    cluster.leader()
    wait_for(lambda: cluster.caught_up(cluster.members()), "all members catching up after healing")
