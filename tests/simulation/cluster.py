"""A deterministic simulated cluster of ``RaftCore``\\ s, checking Raft's safety
properties after every step.

The harness plays every host's part exactly as ``RaftCore``'s docstring prescribes:
it sends ``messages`` at once, queues the writes of each ``Ready`` (and the
``persisted_messages`` that depend on them) until the node "fsyncs", applies committed
entries to a fake state machine (which keeps a running digest of what it applied) and
takes snapshots of it. A crash throws away the core, its queued writes and its state
machine; a restart rebuilds them from what was durable.

The network delivers messages after seeded random delays, and may drop, duplicate and
reorder them, or cut links (symmetric and asymmetric partitions).

Checked after every step (``SafetyViolation`` otherwise):

* Election Safety: at most one leader per term;
* Log Matching: an (index, term) pair always names the same entry with the same
  predecessor term, in every log, forever (by induction: equal prefixes);
* Leader Completeness: a leader of term T holds every entry committed by leaders of
  earlier terms;
* State Machine Safety: every state machine applies the same entry at each index
  (digests agree, also across snapshots);
* commit indexes never decrease (per incarnation) and never exceed the log;
* ReadIndex: a read's index covers every entry committed before it was requested.
"""

from __future__ import annotations

import random
import zlib
from collections import deque
from dataclasses import dataclass, field

from protocol.ids import MemberId
from protocol.raft import (
    ChangeKind,
    Configuration,
    EntryKind,
    HardState,
    LogEntry,
    MembershipChange,
    Proposed,
    RaftCore,
    RaftMessage,
    RaftOptions,
    Ready,
    ReceivedSnapshot,
    Refused,
    RestoredState,
    Role,
    SnapshotMeta,
)

__all__ = ["Cluster", "Faults", "SafetyViolation"]


class SafetyViolation(AssertionError):
    """A Raft safety property does not hold."""


@dataclass
class Faults:
    """Network misbehaviour, as probabilities per message and delays in ticks."""

    drop: float = 0.0
    duplicate: float = 0.0
    max_delay: int = 0
    #: Probability that a node completes its queued writes at a given step
    #: (1.0: writes are durable as soon as they are handed out).
    sync: float = 1.0


@dataclass
class Durable:
    """What a node's storage holds."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: SnapshotMeta | None = None
    snapshot_data: bytes = b""
    entries: list[LogEntry] = field(default_factory=list)

    def write(self, rd: Write) -> None:
        if rd.snapshot is not None:
            self.snapshot = rd.snapshot.meta
            self.snapshot_data = rd.snapshot.data
            self.entries = []
        if rd.entries:
            first = rd.entries[0].index
            if rd.truncate_from is not None and rd.truncate_from != first:
                raise SafetyViolation(f"truncate_from {rd.truncate_from} != first {first}")
            if self.entries:
                base = self.entries[0].index
                if first > base + len(self.entries):
                    raise SafetyViolation(f"hole in the stored log before {first}")
                del self.entries[max(0, first - base) :]
            elif first > (self.snapshot.index if self.snapshot else 0) + 1:
                raise SafetyViolation(f"hole in the stored log before {first}")
            self.entries.extend(rd.entries)
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state

    def restored(self) -> RestoredState:
        return RestoredState(
            self.hard_state, self.snapshot, self.snapshot_data, tuple(self.entries)
        )


@dataclass
class Write:
    snapshot: ReceivedSnapshot | None
    truncate_from: int | None
    entries: list[LogEntry]
    hard_state: HardState | None
    after: list[RaftMessage]


def _digest_step(digest: int, entry: LogEntry) -> int:
    if entry.kind != EntryKind.COMMAND:
        return digest
    return zlib.crc32(entry.data, zlib.crc32(entry.index.to_bytes(8, "big"), digest))


class StateMachine:
    """Records what it applied as (index, digest)."""

    def __init__(self, index: int = 0, digest: int = 0) -> None:
        self.index = index
        self.digest = digest
        self.values: list[bytes] = []  # command payloads applied (this incarnation)

    def snapshot(self, filler: int) -> bytes:
        return f"{self.index}:{self.digest}:".encode() + b"s" * filler

    @staticmethod
    def from_snapshot(data: bytes) -> StateMachine:
        index, digest, _ = data.split(b":", 2)
        return StateMachine(int(index), int(digest))


class Node:
    def __init__(self, member: MemberId) -> None:
        self.id = member
        self.core: RaftCore | None = None
        self.durable = Durable()
        self.pending: deque[Write] = deque()
        self.sm = StateMachine()
        self.commit = 0
        self.leader_term = 0
        self.leader_commit = 0


@dataclass(order=True)
class _Envelope:
    at: int
    seq: int
    msg: RaftMessage = field(compare=False)


class Cluster:
    """N simulated members (voters from the start) plus ``spares`` that may join."""

    def __init__(
        self,
        voters: int | list[str],
        *,
        options: RaftOptions | None = None,
        seed: int = 0,
        faults: Faults | None = None,
        spares: int = 0,
        snapshot_filler: int = 40,
        check: bool = True,
    ) -> None:
        names = [f"n{i + 1}" for i in range(voters)] if isinstance(voters, int) else voters
        self.voters = [MemberId(n) for n in names]
        self.spares = [MemberId(f"s{i + 1}") for i in range(spares)]
        self.options = options or RaftOptions(election_ticks=10, heartbeat_ticks=2)
        self.rng = random.Random(seed)
        self.faults = faults or Faults()
        self.snapshot_filler = snapshot_filler
        self.check = check
        self._registry: dict[tuple[int, int], tuple[EntryKind, bytes, int]] = {}
        self.now = 0
        self._seq = 0
        self.network: list[_Envelope] = []
        self.blocked: set[tuple[MemberId, MemberId]] = set()
        self.nodes: dict[MemberId, Node] = {}
        config = Configuration(tuple(self.voters))
        for m in self.voters:
            node = Node(m)
            node.durable.snapshot = SnapshotMeta(0, 0, config)
            self.nodes[m] = node
        for m in self.spares:
            self.nodes[m] = Node(m)
        for m in self.nodes:
            self.restart(m)
        # global records for the invariants
        self.leaders: dict[int, MemberId] = {}
        self.leader_logs: dict[int, tuple[int, list[int]]] = {}
        self.commit_by_term: dict[int, int] = {}
        self.chosen_terms: list[int] = []  # term of committed entry i at [i - 1]
        self.digests: list[int] = []  # state machine digest after applying entry i
        self.reads: dict[bytes, int] = {}
        self.read_results: dict[bytes, int] = {}
        self.failed_reads: set[bytes] = set()
        self.sent = 0
        self.delivered = 0

    # ------------------------------------------------------------------ membership

    @property
    def members(self) -> list[MemberId]:
        return list(self.nodes)

    def core(self, m: str) -> RaftCore:
        core = self.nodes[MemberId(m)].core
        assert core is not None, f"{m} is down"
        return core

    def live(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.core is not None]

    def leader(self) -> MemberId | None:
        """The live leader with the highest term, if any."""
        best: RaftCore | None = None
        for n in self.live():
            assert n.core is not None
            if n.core.role == Role.LEADER and (best is None or n.core.term > best.term):
                best = n.core
        return best.id if best is not None else None

    # ------------------------------------------------------------------ faults

    def crash(self, m: str) -> None:
        node = self.nodes[MemberId(m)]
        node.core = None
        node.pending.clear()

    def restart(self, m: str) -> None:
        node = self.nodes[MemberId(m)]
        if node.core is not None:
            return
        d = node.durable
        node.core = RaftCore(node.id, self.options, random.Random(self.rng.random()), d.restored())
        node.sm = StateMachine.from_snapshot(d.snapshot_data) if d.snapshot_data else StateMachine()
        node.commit = node.core.commit_index
        node.leader_term = 0
        node.leader_commit = 0

    def partition(self, *groups: list[str]) -> None:
        """Cut every link between different groups (members not named: own group)."""
        where = {MemberId(m): i for i, g in enumerate(groups) for m in g}
        self.blocked = {
            (a, b)
            for a in self.nodes
            for b in self.nodes
            if a != b and where.get(a, -1 - hash(a)) != where.get(b, -1 - hash(b))
        }

    def isolate(self, m: str) -> None:
        mid = MemberId(m)
        for other in self.nodes:
            if other != mid:
                self.blocked.add((mid, other))
                self.blocked.add((other, mid))

    def block(self, src: str, dst: str) -> None:
        """Asymmetric: messages from ``src`` to ``dst`` are lost."""
        self.blocked.add((MemberId(src), MemberId(dst)))

    def heal(self) -> None:
        self.blocked.clear()

    # ------------------------------------------------------------------ requests

    def propose(self, m: str, payloads: list[bytes]) -> Proposed | Refused:
        result = self.core(m).propose(payloads)
        self.process(m)
        return result

    def change(self, m: str, kind: ChangeKind, member: str) -> Proposed | Refused:
        result = self.core(m).change_membership(MembershipChange(kind, MemberId(member)))
        self.process(m)
        return result

    def transfer(self, m: str, target: str) -> Refused | None:
        result = self.core(m).transfer_leader(MemberId(target))
        self.process(m)
        return result

    def read(self, m: str, context: bytes) -> Refused | None:
        self.reads[context] = len(self.chosen_terms)
        result = self.core(m).read_index(context)
        self.process(m)
        return result

    def take_snapshot(self, m: str) -> SnapshotMeta | None:
        node = self.nodes[MemberId(m)]
        core = node.core
        if core is None or core.log.applied <= core.snapshot.index:
            return None
        if node.sm.index != core.log.applied:
            raise SafetyViolation(f"{m}: applied {core.log.applied} != sm {node.sm.index}")
        meta = core.snapshot_meta_for(core.log.applied)
        data = node.sm.snapshot(self.snapshot_filler)
        node.durable.snapshot = meta
        node.durable.snapshot_data = data
        core.on_snapshot_taken(meta, data)
        self.process(m)
        return meta

    # ------------------------------------------------------------------ running

    def tick(self, members: list[str] | None = None) -> None:
        """Advance time by one tick: every live node ticks once, then messages due
        are delivered (and their consequences, for up to a bounded number of rounds)."""
        self.now += 1
        nodes = [self.nodes[MemberId(m)] for m in members] if members else self.live()
        for node in nodes:
            if node.core is not None:
                node.core.tick()
                self.process(node.id)
        self.deliver()

    def run(self, ticks: int) -> None:
        for _ in range(ticks):
            self.tick()

    def deliver(self, rounds: int = 20) -> None:
        """Deliver what is due now, including messages sent while delivering."""
        for _ in range(rounds):
            self.maybe_sync()
            due = [e for e in self.network if e.at <= self.now]
            if not due:
                return
            self.network = [e for e in self.network if e.at > self.now]
            if self.faults.max_delay or self.faults.duplicate:
                self.rng.shuffle(due)
            for env in due:
                self._deliver(env.msg)
        self.maybe_sync()

    def stabilize(self, max_rounds: int = 1000) -> None:
        """Deliver until nothing is in flight or pending (instant networks)."""
        for _ in range(max_rounds):
            self.sync_all()
            if not self.network:
                return
            self.deliver(1)
        raise AssertionError("the cluster did not quiesce")

    def _deliver(self, msg: RaftMessage) -> None:
        node = self.nodes.get(msg.receiver)
        if node is None or node.core is None or (msg.sender, msg.receiver) in self.blocked:
            return
        self.delivered += 1
        node.core.step(msg)
        self.process(node.id)

    def send(self, msgs: list[RaftMessage]) -> None:
        f = self.faults
        rng = self.rng
        for msg in msgs:
            self.sent += 1
            copies = 1
            if f.drop and rng.random() < f.drop:
                copies = 0
            elif f.duplicate and rng.random() < f.duplicate:
                copies = 2
            for _ in range(copies):
                delay = rng.randrange(0, f.max_delay + 1) if f.max_delay else 0
                self._seq += 1
                self.network.append(_Envelope(self.now + delay, self._seq, msg))

    def maybe_sync(self) -> None:
        p = self.faults.sync
        for node in self.live():
            if node.pending and (p >= 1.0 or self.rng.random() < p):
                self.sync(node.id)

    def sync_all(self) -> None:
        for node in self.live():
            if node.pending:
                self.sync(node.id)

    def sync(self, m: str) -> None:
        """The node's queued writes become durable."""
        node = self.nodes[MemberId(m)]
        while node.pending and node.core is not None:
            w = node.pending.popleft()
            node.durable.write(w)
            self.send(w.after)
            if w.entries:
                node.core.on_persisted(w.entries[-1].index, w.entries[-1].term)
            self.process(m)

    # ------------------------------------------------------------------ the host

    def process(self, m: str) -> None:
        """Handle every Ready of ``m`` as a host must."""
        node = self.nodes[MemberId(m)]
        core = node.core
        while core is not None and core.has_ready():
            rd = core.ready()
            self._handle(node, core, rd)
            if self.faults.sync >= 1.0:
                self.sync(m)
            core = node.core

    def _handle(self, node: Node, core: RaftCore, rd: Ready) -> None:
        check = self.check
        if rd.snapshot is not None:
            sm = StateMachine.from_snapshot(rd.snapshot.data)
            if sm.index != rd.snapshot.meta.index:
                raise SafetyViolation("snapshot data and meta disagree")
            if check:
                self._check_digest(node.id, sm.index, sm.digest)
            node.sm = sm
        if rd.soft_state is not None and rd.soft_state.role == Role.LEADER and check:
            self._on_new_leader(core)
        if check and rd.entries:
            self._check_entries(node.id, core, rd.entries)
        self.send(rd.messages)
        node.pending.append(
            Write(rd.snapshot, rd.truncate_from, rd.entries, rd.hard_state, rd.persisted_messages)
        )
        sm = node.sm
        for e in rd.committed_entries:
            if e.index != sm.index + 1:
                raise SafetyViolation(f"{node.id}: applies {e.index} after {sm.index}")
            sm.digest = _digest_step(sm.digest, e)
            sm.index = e.index
            if e.kind == EntryKind.COMMAND:
                sm.values.append(e.data)
            if check:
                self._check_digest(node.id, e.index, sm.digest)
                self._check_chosen(node.id, e.index, e.term)
        if rd.committed_entries:
            core.on_applied(sm.index)
        for rs in rd.read_states:
            bound = self.reads.get(rs.context)
            if check and bound is not None and rs.index < bound:
                raise SafetyViolation(
                    f"{node.id}: read {rs.context!r} at {rs.index} misses commit {bound}"
                )
            self.read_results[rs.context] = rs.index
        self.failed_reads.update(rd.failed_reads)
        if check:
            self._check_commit(node, core)
        if rd.take_snapshot is not None:
            self.take_snapshot(node.id)

    # ------------------------------------------------------------------ invariants

    def _on_new_leader(self, core: RaftCore) -> None:
        term = core.term
        other = self.leaders.setdefault(term, core.id)
        if other != core.id:
            raise SafetyViolation(f"Election Safety: {other} and {core.id} lead term {term}")
        log = core.log
        terms = [e.term for e in log.entries]
        self.leader_logs[term] = (log.offset, terms)
        bound = max((c for t, c in self.commit_by_term.items() if t < term), default=0)
        self._check_contains(core.id, term, log.offset, terms, bound)

    def _check_contains(
        self, who: MemberId, term: int, offset: int, terms: list[int], upto: int
    ) -> None:
        for i in range(offset + 1, upto + 1):
            if i - offset > len(terms) or terms[i - offset - 1] != self.chosen_terms[i - 1]:
                raise SafetyViolation(
                    f"Leader Completeness: leader {who} of term {term} lacks committed {i}"
                )

    def _check_entries(self, who: MemberId, core: RaftCore, entries: list[LogEntry]) -> None:
        prev = core.log.term_at(entries[0].index - 1)
        if prev is None:
            raise SafetyViolation(f"{who}: entries at {entries[0].index} follow nothing")
        registry = self._registry
        for e in entries:
            key = (e.index, e.term)
            value = (e.kind, e.data, prev)
            known = registry.setdefault(key, value)
            if known != value:
                raise SafetyViolation(f"Log Matching: {who} holds a different {key}")
            prev = e.term

    def _check_chosen(self, who: MemberId, index: int, term: int) -> None:
        chosen = self.chosen_terms
        if index <= len(chosen):
            if chosen[index - 1] != term:
                raise SafetyViolation(
                    f"State Machine Safety: {who} commits ({index}, {term}), "
                    f"others ({index}, {chosen[index - 1]})"
                )
        elif index == len(chosen) + 1:
            chosen.append(term)
        else:
            raise SafetyViolation(f"{who}: commits {index} beyond anything known committed")

    def _check_digest(self, who: MemberId, index: int, digest: int) -> None:
        if index == 0:
            return
        d = self.digests
        if index <= len(d):
            if d[index - 1] != digest:
                raise SafetyViolation(f"State Machine Safety: {who} state differs at {index}")
        elif index == len(d) + 1:
            d.append(digest)
        else:
            raise SafetyViolation(f"{who}: state at {index} beyond anything applied")

    def _check_commit(self, node: Node, core: RaftCore) -> None:
        log = core.log
        c = log.commit
        if c < node.commit:
            raise SafetyViolation(f"{node.id}: commit went back from {node.commit} to {c}")
        if c > log.last_index:
            raise SafetyViolation(f"{node.id}: commit {c} beyond last {log.last_index}")
        if c > node.commit:
            for i in range(max(node.commit, log.offset) + 1, c + 1):
                term = log.term_at(i)
                assert term is not None
                self._check_chosen(node.id, i, term)
            node.commit = c
        if core.role == Role.LEADER and c > self.commit_by_term.get(core.term, 0):
            term = core.term
            self.commit_by_term[term] = c
            for t, (offset, terms) in self.leader_logs.items():
                if t > term:
                    self._check_contains(MemberId(self.leaders[t]), t, offset, terms, c)
