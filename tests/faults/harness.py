"""Fault injection against a 3- or 5-node cluster of real node processes (ZeroMQ on 127.0.0.1).

Three pieces, driven by ``test_faults.py``:

* :class:`Nemesis` -- a thread that, on a schedule drawn from a seeded ``random.Random``,
  injects faults, several at a time if asked: ``kill -9`` of a node followed by a
  restart from its data directory, SIGSTOP/SIGCONT of a node (a long GC pause, a frozen
  VM), and partitions (see :data:`KINDS`): one node cut off, the leader with a minority
  cut off from the majority, one-sided cuts, single links. The leader is targeted more
  often. Faults normally leave a majority; a schedule may also break it for a while.
  Which node is the leader is only known at run time, so the schedule that actually ran
  is recorded (:class:`FaultEvent`) with monotonic timestamps.
* :class:`KvClients` -- N threads, each with its own :class:`RaftClient`, doing random
  ``get`` (a linearizable query), ``set`` and ``cas`` on a few keys and recording every
  operation for :func:`tests.checker.linearizability.check_history`: a timeout or a lost
  session means "may or may not have happened" (output ``UNKNOWN``).
* :func:`save_failure` -- a failing run's history, schedule and node log tails as JSON.

Partitions: with :func:`enable_partitions`, each node's peer transport is wrapped by the
test-only :class:`actors.transport.FaultControlledPeerTransport` (config option
``fault_control``); :func:`set_cuts` writes every node's drop rules (``drop_out`` /
``drop_in``) for a set of directed links, so symmetric, one-sided and pairwise cuts are
all the same thing: the union of the cuts of the partitions in force.
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
from tests.cluster_procs import ProcessCluster, wait_for

__all__ = [
    "ARTIFACTS_ENV",
    "KINDS",
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
    "set_cuts",
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

#: The faults the nemesis knows. ``kill``: ``kill -9``, restart from the data directory.
#: ``pause``: SIGSTOP, SIGCONT. ``partition``: one member cut off from all others, both
#: ways. ``leader_minority``: the leader and a minority (in 5 nodes: leader + 1) cut
#: off from the majority, both ways. ``one_way``: one member's outgoing *or* incoming
#: frames to/from every other member lost (an asymmetric partition). ``link``: the link
#: between two members (the leader and a follower when the leader is targeted) cut both
#: ways, everyone else connected. Partitions need :func:`enable_partitions`.
KINDS = ("kill", "pause", "partition", "leader_minority", "one_way", "link")
#: What undoing each fault is recorded as.
_UNDO = {"kill": "restart", "pause": "resume"}


@dataclass(frozen=True)
class FaultEvent:
    """One thing the nemesis did: ``kill``/``restart``, ``pause``/``resume``, or a
    partition (``partition``, ``leader_minority``, ``one_way``, ``link``) and its
    ``heal``. ``member`` is the target (for a partition: the members on the cut-off
    side, comma-separated); ``detail`` says more (the lost direction of a one-way cut,
    the other end of a link, ``majority lost`` when the faults in force left no
    majority)."""

    at: float  # time.monotonic()
    action: str
    member: str
    was_leader: bool = False
    detail: str = ""


#: A directed link whose frames are lost: (sender, receiver).
Cut = tuple[str, str]


@dataclass
class _Fault:
    """A fault in force: whom it takes out of the majority, when it ends, and (for a
    partition) the directed links it cuts."""

    kind: str
    impaired: frozenset[str]
    until: float
    label: str
    cuts: frozenset[Cut] = frozenset()


class Nemesis:
    """Injects faults, on a seeded schedule, until stopped; several may overlap.

    Every ``gap_s`` (uniform) it draws the next fault kind from a shuffled deck (each
    kind of ``weights`` appears ``weight`` times per deck, so every kind comes up early
    in a run) and a target: the current leader with probability ``leader_bias``
    (``leader_minority`` always aims at the leader), else a random member not already
    under a fault. The fault holds ``hold_s`` (uniform), then is undone (restart,
    SIGCONT, heal), independently of the others.

    At most ``max_faults`` faults are in force at once, and they take at most a
    minority of members out (killed, paused, or on the cut-off side of a partition),
    so a majority stays able to make progress -- except for a ``majority_loss``
    fraction of each deck (at least one fault per deck if it is above 0): such a fault
    ignores ``max_faults`` and, if it does not take the majority away by itself, comes
    with extra kills or pauses of free members until more than a minority is out (never
    all). The cluster then has no majority for a while: the workload stalls, and nothing
    it did may be lost or seen out of order. A fault that does not fit is tried again
    next round.
    The waits are the faults' durations, not synchronisation: :meth:`stop` interrupts
    them at once and undoes every fault in force.
    """

    def __init__(
        self,
        cluster: ProcessCluster,
        rng: random.Random,
        *,
        gap_s: tuple[float, float] = (0.5, 1.5),
        hold_s: tuple[float, float] = (0.3, 2.0),
        leader_bias: float = 0.6,
        weights: dict[str, int] | None = None,
        max_faults: int = 1,
        majority_loss: float = 0.0,
    ) -> None:
        self.cluster = cluster
        self.rng = rng
        self.gap_s = gap_s
        self.hold_s = hold_s
        self.leader_bias = leader_bias
        #: Copies of each fault kind per deck; partitions need nodes started with
        #: ``fault_control`` files (see :func:`enable_partitions`).
        self.weights = weights or {"kill": 1, "pause": 1}
        unknown = set(self.weights) - set(KINDS)
        assert not unknown, f"unknown fault kinds {unknown}"
        self.max_faults = max_faults
        self.majority_loss = majority_loss
        self.events: list[FaultEvent] = []
        self.errors: list[BaseException] = []
        #: The most faults ever in force at once, and how often a fault left no majority.
        self.max_overlap = 0
        self.majority_losses = 0
        #: The most members ever taken out at once (killed, paused, cut off).
        self.peak_impaired = 0
        self._active: list[_Fault] = []
        self._deck: list[tuple[str, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nemesis", daemon=True)

    def start(self) -> Nemesis:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop injecting and undo every fault in force (bounded)."""
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "the nemesis did not stop"

    def kinds_injected(self) -> set[str]:
        """The fault kinds that actually happened in this run."""
        return {e.action for e in self.events if e.action in KINDS}

    # ------------------------------------------------------------ choosing

    def _members(self) -> list[str]:
        return self.cluster.members()

    def _minority(self) -> int:
        return (len(self._members()) - 1) // 2

    def _impaired(self) -> set[str]:
        return {m for f in self._active for m in f.impaired}

    def _leader(self) -> str | None:
        """The running, unpaused member that says it leads, with the highest term."""
        best: tuple[int, str] | None = None
        for member in self._members():
            pid = self.cluster.manifest.member(member).pid
            if pid is None or pid in self.cluster.stopped:
                continue
            st = self.cluster.status(member, timeout=0.5)
            if (
                st is not None
                and st.role.lower() == "leader"
                and (best is None or st.term > best[0])
            ):
                best = (st.term, member)
        return None if best is None else best[1]

    def _draw(self) -> tuple[str, bool]:
        """The next fault kind, and whether it is to take the majority away."""
        if not self._deck:
            kinds = [k for k in sorted(self.weights) for _ in range(self.weights[k])]
            self.rng.shuffle(kinds)
            breaks = max(1, round(len(kinds) * self.majority_loss)) if self.majority_loss else 0
            self._deck = [(k, i < breaks) for i, k in enumerate(kinds)]
            self.rng.shuffle(self._deck)
        return self._deck[-1]

    def _record(self, action: str, member: str, was_leader: bool = False, detail: str = "") -> None:
        self.events.append(FaultEvent(time.monotonic(), action, member, was_leader, detail))

    # ------------------------------------------------------------ the loop

    def _run(self) -> None:
        try:
            next_start = time.monotonic() + self.rng.uniform(*self.gap_s)
            while not self._stop.is_set():
                now = time.monotonic()
                for fault in [f for f in self._active if f.until <= now]:
                    self._end(fault)
                if now >= next_start:
                    self._begin()
                    next_start = time.monotonic() + self.rng.uniform(*self.gap_s)
                wake = min([next_start] + [f.until for f in self._active])
                self._stop.wait(max(0.0, wake - time.monotonic()))
        except BaseException as exc:  # reported by the test, never swallowed
            self.errors.append(exc)
        finally:
            for fault in reversed(list(self._active)):
                try:
                    self._end(fault)
                except BaseException as exc:
                    self.errors.append(exc)

    def _begin(self) -> None:
        """Start the next fault of the deck, if it fits now."""
        kind, breaks = self._draw()
        if len(self._active) >= self.max_faults and not breaks:
            return
        members = self._members()
        impaired = self._impaired()
        budget = (len(members) - 1 if breaks else self._minority()) - len(impaired)
        need = self._minority() if kind == "leader_minority" else 1
        free = [m for m in members if m not in impaired]
        if need > budget or need > len(free):
            return
        aim = kind == "leader_minority" or self.rng.random() < self.leader_bias
        leader = self._leader() if aim else None
        target = leader if leader in free else self.rng.choice(free)
        was_leader = target == leader
        hold = self.rng.uniform(*self.hold_s)
        self._deck.pop()
        fault = getattr(self, f"_start_{kind}")(target, was_leader, free)
        fault.until = time.monotonic() + hold
        self._active.append(fault)
        while breaks and len(self._impaired()) <= self._minority():
            free = [m for m in members if m not in self._impaired()]
            extra = self.rng.choice(free)
            how = self.rng.choice(("kill", "pause"))
            more = getattr(self, f"_start_{how}")(extra, extra == leader, free)
            more.until = time.monotonic() + self.rng.uniform(*self.hold_s)
            self._active.append(more)
        self.max_overlap = max(self.max_overlap, len(self._active))
        self.peak_impaired = max(self.peak_impaired, len(self._impaired()))
        if len(self._impaired()) > self._minority():
            self.majority_losses += 1
            self._record("no_majority", ",".join(sorted(self._impaired())))

    def _end(self, fault: _Fault) -> None:
        self._active.remove(fault)
        if fault.kind == "kill":
            self.cluster.start(fault.label)
        elif fault.kind == "pause":
            pid = self.cluster.pid(fault.label)
            os.kill(pid, signal.SIGCONT)
            self.cluster.stopped.discard(pid)
        else:
            self._write_cuts()
        self._record(_UNDO.get(fault.kind, "heal"), fault.label)

    def _write_cuts(self) -> None:
        set_cuts(self.cluster, {c for f in self._active for c in f.cuts})

    def _partition(self, kind: str, side: set[str], cuts: set[Cut], detail: str = "") -> _Fault:
        label = ",".join(sorted(side))
        fault = _Fault(kind, frozenset(side), math.inf, label, frozenset(cuts))
        self._active.append(fault)  # so the cuts written include it
        try:
            self._write_cuts()
        finally:
            self._active.remove(fault)
        return fault

    # ------------------------------------------------------------ the faults

    def _start_kill(self, target: str, was_leader: bool, free: list[str]) -> _Fault:
        self._record("kill", target, was_leader)
        self.cluster.kill9(target)
        return _Fault("kill", frozenset({target}), math.inf, target)

    def _start_pause(self, target: str, was_leader: bool, free: list[str]) -> _Fault:
        pid = self.cluster.pid(target)
        self._record("pause", target, was_leader)
        os.kill(pid, signal.SIGSTOP)
        self.cluster.stopped.add(pid)
        return _Fault("pause", frozenset({target}), math.inf, target)

    def _start_partition(self, target: str, was_leader: bool, free: list[str]) -> _Fault:
        """``target`` alone on one side (a leader alone keeps its clients, not its peers)."""
        rest = set(self._members()) - {target}
        self._record("partition", target, was_leader)
        return self._partition("partition", {target}, _both_ways({target}, rest))

    def _start_leader_minority(self, target: str, was_leader: bool, free: list[str]) -> _Fault:
        """``target`` (the leader, when one answered) plus a minority of the free members
        cut off from the rest."""
        others = [m for m in free if m != target]
        side = {target, *self.rng.sample(others, self._minority() - 1)}
        rest = set(self._members()) - side
        self._record("leader_minority", ",".join(sorted(side)), was_leader)
        return self._partition("leader_minority", side, _both_ways(side, rest))

    def _start_one_way(self, target: str, was_leader: bool, free: list[str]) -> _Fault:
        """Only ``target``'s outgoing (or only its incoming) frames are lost: it hears
        the others but they do not hear it (or the reverse)."""
        rest = set(self._members()) - {target}
        outgoing = self.rng.random() < 0.5
        cuts = {(target, m) if outgoing else (m, target) for m in rest}
        detail = "outgoing" if outgoing else "incoming"
        self._record("one_way", target, was_leader, detail)
        return self._partition("one_way", {target}, cuts)

    def _start_link(self, target: str, was_leader: bool, free: list[str]) -> _Fault:
        """Cut the link between ``target`` and one other member; everyone else connected.
        The other end counts as the impaired one when ``target`` leads."""
        other = self.rng.choice([m for m in self._members() if m != target])
        self._record("link", target, was_leader, other)
        impaired = other if was_leader and other in free else target
        fault = self._partition("link", {impaired}, _both_ways({target}, {other}))
        fault.label = f"{target},{other}"
        return fault


def _both_ways(side: set[str], rest: set[str]) -> set[Cut]:
    return {(a, b) for a in side for b in rest} | {(b, a) for a in side for b in rest}


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


def _write_rules(cluster: ProcessCluster, member: str, rules: dict[str, list[str]]) -> None:
    path = fault_file(cluster, member)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rules))
    os.replace(tmp, path)


def set_partition(cluster: ProcessCluster, drops: dict[str, list[str]]) -> None:
    """Each member drops frames to and from the members listed for it (none if absent);
    written atomically, picked up by the nodes within their poll interval."""
    for member in cluster.members():
        _write_rules(cluster, member, {"drop": drops.get(member, [])})


def set_cuts(cluster: ProcessCluster, cuts: set[Cut]) -> None:
    """Exactly the directed links in ``cuts`` lose their frames, every other link works:
    for a cut ``(a, b)`` member ``a`` drops what it sends to ``b`` (``drop_out``) and
    ``b`` drops what it receives from ``a`` (``drop_in``)."""
    for member in cluster.members():
        out = sorted(b for a, b in cuts if a == member)
        into = sorted(a for a, b in cuts if b == member)
        _write_rules(cluster, member, {"drop_out": out, "drop_in": into})


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
    leader and for every member to apply what that leader had committed by then."""
    if (cluster.directory / "faults").is_dir():
        set_partition(cluster, {})
    for pid in list(cluster.stopped):
        os.kill(pid, signal.SIGCONT)
        cluster.stopped.discard(pid)
    for member in cluster.members():
        if cluster.manifest.member(member).pid is None:
            cluster.start(member)
    leader = cluster.leader()
    # Workloads may still be writing: "caught up" is every member having applied what
    # the leader had committed when healing was done (all members showing the very same
    # index at one instant is luck under a stream of writes, and rarer the faster the
    # cluster commits).
    st = cluster.status(leader)
    assert st is not None, f"the leader {leader} stopped answering right after healing"
    target = st.commit_index

    def applied_everywhere() -> bool:
        for member in cluster.members():
            s = cluster.status(member)
            if s is None or s.applied_index < target:
                return False
        return True

    wait_for(applied_everywhere, f"all members applying up to {target} after healing")
