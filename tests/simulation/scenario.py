"""Randomized fault schedules for the simulated cluster, and their replay.

A :class:`Scenario` is everything a run depends on: a seed (network randomness, the
cores' election timeouts, background proposals), the cluster size, the fault rates and
a list of scheduled operations. Hypothesis generates (and shrinks) scenarios; a failing
one is printed as ``run_scenario(Scenario(...))``, which replays it exactly.

A run has a chaos phase (faults and scheduled operations), then heals everything,
restarts every crashed member and checks liveness: within ``LIVENESS_TICKS`` a leader
commits a marker entry and every member of its configuration applies it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from protocol.ids import MemberId
from protocol.raft import ChangeKind, Proposed, RaftOptions
from tests.simulation.cluster import Cluster, Faults

__all__ = ["KINDS", "LIVENESS_TICKS", "SIM_OPTIONS", "Scenario", "run_scenario"]

#: Small limits, so that batching, flow control, compaction, chunked snapshots and
#: "too busy" refusals all happen in short runs.
SIM_OPTIONS = RaftOptions(
    election_ticks=10,
    heartbeat_ticks=2,
    max_append_bytes=48,
    max_inflight_msgs=3,
    max_inflight_bytes=96,
    max_entries_per_msg=6,
    max_uncommitted_bytes=400,
    snapshot_chunk_bytes=16,
    compaction_tail=3,
    snapshot_entries=30,
    max_pending_reads=8,
)

KINDS = (
    "propose",
    "crash",
    "restart",
    "partition",
    "block",
    "heal",
    "snapshot",
    "add",
    "promote",
    "remove",
    "transfer",
    "read",
)

LIVENESS_TICKS = 400


@dataclass(frozen=True)
class Scenario:
    seed: int
    voters: int = 3
    drop: float = 0.0
    duplicate: float = 0.0
    max_delay: int = 0
    sync: float = 1.0
    ops: tuple[tuple[int, str, int, int], ...] = ()
    chaos_ticks: int = 100
    propose_rate: float = 0.3
    #: Run the cores with ``RaftOptions.lazy_commit_notices`` (as nodes do).
    lazy_commit_notices: bool = False


def _apply(c: Cluster, tick: int, kind: str, a: int, b: int) -> None:
    members = c.members
    ma = members[a % len(members)]
    mb = members[b % len(members)]
    leader = c.leader()
    if kind == "propose" and leader is not None:
        c.propose(leader, [f"op{tick}-{k}".encode() for k in range(a % 4 + 1)])
    elif kind == "crash":
        c.crash(ma)
    elif kind == "restart":
        c.restart(ma)
    elif kind == "partition":
        side = [m for i, m in enumerate(members) if (a >> i) & 1]
        c.partition(side, [m for m in members if m not in side])
    elif kind == "block":
        if ma != mb:
            c.block(ma, mb)
    elif kind == "heal":
        c.heal()
    elif kind == "snapshot":
        if c.nodes[ma].core is not None:
            c.take_snapshot(ma)
    elif kind == "read":
        if c.nodes[ma].core is not None:
            c.read(ma, f"read{tick}-{a}".encode())
    elif leader is not None:
        # pick among the members the change makes sense for (when there are any)
        config = c.core(leader).config
        if kind == "add":
            outside = [m for m in members if m not in config.members] or members
            c.change(leader, ChangeKind.ADD_LEARNER, outside[a % len(outside)])
        elif kind == "promote":
            learners = list(config.learners) or members
            c.change(leader, ChangeKind.PROMOTE, learners[a % len(learners)])
        elif kind == "remove":
            inside = list(config.members) or members
            c.change(leader, ChangeKind.REMOVE, inside[a % len(inside)])
        elif kind == "transfer":
            c.transfer(leader, ma)


def run_scenario(s: Scenario) -> Cluster:
    """Run ``s``; raises ``SafetyViolation`` or ``AssertionError`` (liveness)."""
    c = Cluster(
        s.voters,
        options=replace(SIM_OPTIONS, lazy_commit_notices=s.lazy_commit_notices),
        seed=s.seed,
        faults=Faults(s.drop, s.duplicate, s.max_delay, s.sync),
        spares=1,
        snapshot_filler=40,
    )
    rng = random.Random(s.seed ^ 0x5EED)
    by_tick: dict[int, list[tuple[int, str, int, int]]] = {}
    for op in s.ops:
        by_tick.setdefault(op[0], []).append(op)
    for t in range(s.chaos_ticks):
        for _, kind, a, b in by_tick.get(t, ()):
            _apply(c, t, kind, a, b)
        leader = c.leader()
        if leader is not None and rng.random() < s.propose_rate:
            c.propose(leader, [f"bg{t}-{k}".encode() for k in range(rng.randrange(1, 4))])
        if leader is not None and c.core(leader).config.learners and rng.random() < 0.1:
            _apply(c, t, "promote", rng.randrange(8), 0)  # learners get promoted, eventually
        c.tick()
    check_liveness(c)
    return c


def check_liveness(c: Cluster) -> None:
    """Heal, restart everyone, and require a committed marker applied everywhere."""
    c.heal()
    c.faults = Faults(max_delay=min(c.faults.max_delay, 1), sync=max(c.faults.sync, 0.5))
    for m in c.members:
        c.restart(m)
    proposed: Proposed | None = None
    for _ in range(LIVENESS_TICKS):
        leader = c.leader()
        if leader is not None and (proposed is None or _lost(c, leader, proposed)):
            result = c.propose(leader, [b"marker"])
            if isinstance(result, Proposed):
                proposed = result
        c.tick()
        if proposed is not None and _applied_everywhere(c, proposed):
            return
    states = {
        n.id: (n.core.role.name, n.core.term, n.core.commit_index, n.sm.index, n.core.config)
        for n in c.live()
        if n.core is not None
    }
    raise AssertionError(f"liveness: no marker applied everywhere; {proposed}; {states}")


def _lost(c: Cluster, leader: MemberId, p: Proposed) -> bool:
    """Proposals are lost when leadership changes before they commit; the current
    leader's log (append-only while it leads) tells."""
    return c.core(leader).log.term_at(p.last_index) != p.term


def _applied_everywhere(c: Cluster, p: Proposed) -> bool:
    chosen = c.chosen_terms
    if len(chosen) < p.last_index or chosen[p.last_index - 1] != p.term:
        return False
    leader = c.leader()
    if leader is None:
        return False
    config = c.core(leader).config
    return all(c.nodes[MemberId(m)].sm.index >= p.last_index for m in config.members)
