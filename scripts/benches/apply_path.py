"""``scripts/bench apply-path``: CPU per command of the replicated apply path, in one process.

Three ``RaftCore``\\ s on an instant network, but every peer message goes through the
codec (``encode`` on the sender, ``decode`` on the receiver), every committed entry is
decoded and applied to a ``SessionStateMachine`` running the counter on each of the
three nodes, and the leader turns each result into server actions, as the node's actors
do. The leader builds each command as the consensus actor does (``to_session_command``
+ ``encode``) and hands the command objects it proposed to its own apply, as
``ApplyEntries.commands`` does (``--leader-decodes``: decode them like a follower).

What is left out: threads, sockets, disks (writes are durable at once). So this is the
Python cost per command of the codec, Raft and the session layer on all three nodes
together, without the noise of a shared machine's scheduling: CPU seconds of this
process (``time.process_time``), best of ``--repeat`` runs.

    scripts/bench apply-path [--batches 4,32] [--commands 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import random
import time
from collections import deque

import msgpack

from examples.counter import CounterStateMachine
from protocol.actions import ClientRequestAction
from protocol.bridge import to_server_actions, to_session_command
from protocol.codec import decode, encode
from protocol.ids import MemberId, RequestId, SessionId
from protocol.raft import (
    Configuration,
    Proposed,
    RaftCore,
    RaftMessage,
    RaftOptions,
    RestoredState,
)
from protocol.raft.log import EntryKind, LogEntry
from protocol.raft.messages import RAFT_MESSAGE_TYPES
from protocol.session import (
    CreateSession,
    SessionCommand,
    SessionStateMachine,
    decode_session_command,
    decodes_to_itself,
)

SESSIONS = 64


class Pipeline:
    """Three members, their session state machines and the frames between them."""

    def __init__(self, *, leader_decodes: bool) -> None:
        ids = [MemberId(f"n{i + 1}") for i in range(3)]
        boot = RestoredState.bootstrap(Configuration(tuple(ids)))
        options = RaftOptions(
            max_uncommitted_bytes=1 << 30, max_inflight_msgs=256, max_entries_per_msg=4096
        )
        self.cores = {m: RaftCore(m, options, random.Random(i), boot) for i, m in enumerate(ids)}
        self.machines = {m: SessionStateMachine(CounterStateMachine()) for m in ids}
        self.frames: deque[bytes] = deque()
        self.proposed: dict[bytes, SessionCommand] = {}
        self.leader_decodes = leader_decodes
        self.leader = self._elect()

    def propose(self, commands: list[SessionCommand]) -> None:
        payloads = []
        for cmd in commands:
            payload = encode(cmd)
            payloads.append(payload)
            if not self.leader_decodes and decodes_to_itself(cmd):
                self.proposed[payload] = cmd
        assert isinstance(self.leader.propose(payloads), Proposed)
        self._settle()

    def _process(self, core: RaftCore) -> None:
        while core.has_ready():
            rd = core.ready()
            self.frames.extend(encode(m) for m in rd.messages)
            self.frames.extend(encode(m) for m in rd.persisted_messages)
            if rd.entries:
                core.on_persisted(rd.entries[-1].index, rd.entries[-1].term)
            if rd.committed_entries:
                self._apply(core, rd.committed_entries)
                core.on_applied(rd.committed_entries[-1].index)

    def _apply(self, core: RaftCore, entries: list[LogEntry]) -> None:
        machine = self.machines[core.id]
        leading = core.is_leader
        proposed = self.proposed if leading else {}
        for e in entries:
            if e.kind != EntryKind.COMMAND:
                continue
            cmd = proposed.pop(e.data, None)
            if cmd is None:
                cmd = decode_session_command(e.data)
            result = machine.apply(e.index, cmd)
            if leading:
                to_server_actions(result)

    def _settle(self) -> None:
        for core in self.cores.values():
            self._process(core)
        while self.frames:
            msg: RaftMessage = decode(self.frames.popleft(), RAFT_MESSAGE_TYPES)
            core = self.cores[msg.receiver]
            core.step(msg)
            self._process(core)

    def _elect(self) -> RaftCore:
        for _ in range(1000):
            for core in self.cores.values():
                core.tick()
            self._settle()
            leaders = [c for c in self.cores.values() if c.is_leader]
            if leaders and leaders[0].commit_index >= 1:
                return leaders[0]
        raise RuntimeError("no leader")


def cpu_us_per_command(batch: int, commands: int, *, leader_decodes: bool) -> float:
    """Open the sessions, then run ``commands`` client requests in batches of ``batch``."""
    pipeline = Pipeline(leader_decodes=leader_decodes)
    sids = [SessionId(f"{i:032x}") for i in range(SESSIONS)]
    pipeline.propose([CreateSession(s, {}, 1) for s in sids])
    payload = msgpack.packb(["inc", 0, "x" * 90])  # the cluster bench's 100-byte inc0
    next_rid = [1] * SESSIONS
    rounds = max(1, commands // batch)
    k = 0
    started = time.process_time()
    for _ in range(rounds):
        cmds: list[SessionCommand] = []
        for _ in range(batch):
            s = k % SESSIONS
            rid = RequestId(next_rid[s])
            next_rid[s] += 1
            k += 1
            action = ClientRequestAction(sids[s], rid, rid, payload)
            cmd = to_session_command(action, 1_700_000_000_000 + k)
            assert cmd is not None
            cmds.append(cmd)
        pipeline.propose(cmds)
    return (time.process_time() - started) / (rounds * batch) * 1e6


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench apply-path", description=__doc__)
    parser.add_argument("--batches", default="4,32", help="commands per proposal batch")
    parser.add_argument("--commands", type=int, default=20_000, help="per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs; the best counts")
    parser.add_argument(
        "--leader-decodes", action="store_true", help="the leader decodes its own entries"
    )
    args = parser.parse_args(argv)
    print("3 members in one process, codec on every frame, counter on every node\n")
    print("| batch | CPU µs per command (all 3 nodes) |")
    print("|------:|---------------------------------:|")
    for batch in (int(b) for b in args.batches.split(",")):
        best = min(
            cpu_us_per_command(batch, args.commands, leader_decodes=args.leader_decodes)
            for _ in range(args.repeat)
        )
        print(f"| {batch} | {best:.2f} |")
    return 0
