"""``scripts/bench raft-core``: committed entries/s of a 3-node cluster of RaftCores.

The network is instant and storage is free (writes are "durable" as soon as they are
handed out), so this measures the pure CPU cost of consensus per entry: the leader
proposing, replicating and committing, and every node handing entries out to apply.
One core (one thread) runs all three members.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import deque

from protocol.ids import MemberId
from protocol.raft import Configuration, Proposed, RaftCore, RaftMessage, RaftOptions, RestoredState


class InstantCluster:
    def __init__(self, size: int, options: RaftOptions) -> None:
        ids = [MemberId(f"n{i + 1}") for i in range(size)]
        boot = RestoredState.bootstrap(Configuration(tuple(ids)))
        self.cores = {m: RaftCore(m, options, random.Random(i), boot) for i, m in enumerate(ids)}
        self.queue: deque[RaftMessage] = deque()
        self.applied = dict.fromkeys(ids, 0)

    def process(self, core: RaftCore) -> None:
        queue = self.queue
        while core.has_ready():
            rd = core.ready()
            queue.extend(rd.messages)
            queue.extend(rd.persisted_messages)
            if rd.entries:
                last = rd.entries[-1]
                core.on_persisted(last.index, last.term)
            if rd.committed_entries:
                index = rd.committed_entries[-1].index
                self.applied[core.id] = index
                core.on_applied(index)

    def settle(self) -> None:
        cores = self.cores
        queue = self.queue
        for core in cores.values():
            self.process(core)
        while queue:
            msg = queue.popleft()
            core = cores[msg.receiver]
            core.step(msg)
            self.process(core)

    def elect(self) -> RaftCore:
        for _ in range(1000):
            for core in self.cores.values():
                core.tick()
            self.settle()
            leaders = [c for c in self.cores.values() if c.is_leader]
            if leaders and leaders[0].commit_index >= 1:
                return leaders[0]
        raise RuntimeError("no leader")


def measure(batch: int, total: int, payload: bytes) -> float:
    options = RaftOptions(
        max_uncommitted_bytes=1 << 30, max_inflight_msgs=256, max_entries_per_msg=4096
    )
    cluster = InstantCluster(3, options)
    leader = cluster.elect()
    payloads = [payload] * batch
    rounds = max(1, total // batch)
    start_index = leader.last_index
    t0 = time.perf_counter()
    for _ in range(rounds):
        result = leader.propose(payloads)
        assert isinstance(result, Proposed)
        cluster.settle()
    elapsed = time.perf_counter() - t0
    target = start_index + rounds * batch
    assert all(a >= target for a in cluster.applied.values()), cluster.applied
    return rounds * batch / elapsed


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench raft-core", description=__doc__)
    parser.add_argument("--entries", type=int, default=100_000, help="entries per batch size")
    parser.add_argument("--size", type=int, default=100, help="payload bytes")
    parser.add_argument("--batches", default="1,64,512", help="comma-separated batch sizes")
    args = parser.parse_args(argv)
    payload = b"x" * args.size
    print(f"RaftCore, 3 members, instant network, {args.size}-byte payloads\n")
    print("| batch | committed entries/s |")
    print("|------:|--------------------:|")
    for batch in (int(b) for b in args.batches.split(",")):
        total = min(args.entries, 5_000 * batch)
        rate = measure(batch, total, payload)
        print(f"| {batch} | {rate:,.0f} |")
    return 0
