"""The consensus actor sends what its core says, and with ``lazy_commit_notices`` on (as
nodes run) that means no commit-only appends between ticks (``actors.consensus``; the
option itself is tested at the core level in ``tests/protocol/raft``).

The actor is driven by hand on the test's thread (``handle`` directly, no actor thread),
with a fake peer transport and a storage writer over in-memory storage, so what it
sends, and when, is visible message by message.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from actors.base import Wiring
from actors.consensus import ConsensusActor
from actors.messages import PeerFrame, Tick
from actors.status import StatusBoard
from actors.storage import MemoryStorage, Persisted, StorageWriter
from protocol.codec import decode, encode
from protocol.ids import MemberId
from protocol.raft import (
    AppendEntries,
    AppendEntriesResponse,
    Configuration,
    RaftCore,
    RaftOptions,
    RequestVote,
    RequestVoteResponse,
    RestoredState,
    Role,
)
from protocol.raft.messages import RAFT_MESSAGE_TYPES, RaftMessage

A, B, C = MemberId("n1"), MemberId("n2"), MemberId("n3")
WAIT = 10.0


class FakePeers:
    """Records every frame sent (from any thread)."""

    def __init__(self) -> None:
        self.sent: list[RaftMessage] = []
        self.changed = threading.Condition()

    def send(self, to: MemberId, frame: bytes) -> bool:
        with self.changed:
            self.sent.append(decode(frame, RAFT_MESSAGE_TYPES))
            self.changed.notify_all()
        return True

    def wait_for(self, n: int) -> list[RaftMessage]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.sent) >= n, WAIT)
            return list(self.sent)

    def add_peer(self, member: MemberId, address: str) -> None:
        pass


class Inbox:
    def __init__(self) -> None:
        self.told: list[Any] = []

    def tell(self, message: Any) -> None:
        self.told.append(message)


@pytest.fixture
def leader() -> Iterator[tuple[ConsensusActor, FakePeers, list[Persisted]]]:
    storage = MemoryStorage()
    persisted: list[Persisted] = []
    done = threading.Semaphore(0)

    def on_persisted(p: Persisted) -> None:
        persisted.append(p)
        done.release()

    writer = StorageWriter(storage.log, storage.stable, on_persisted).start()
    core = RaftCore(
        A,
        RaftOptions(
            election_ticks=20, heartbeat_ticks=19, pre_vote=False, lazy_commit_notices=True
        ),
        _Rng(),
        RestoredState.bootstrap(Configuration((A, B, C))),
    )
    peers = FakePeers()
    inbox = Inbox()
    wiring = Wiring(consensus=inbox, session=inbox, registry=inbox, retry=inbox)
    actor = ConsensusActor(
        core,
        writer,
        storage.snapshots,
        peers,  # type: ignore[arg-type]
        {},
        wiring,
        StatusBoard(),
        max_frame_bytes=1 << 20,
    )

    def settle() -> None:
        """Hand the actor the writer's reports until it has nothing left to write."""
        while writer.persisted is None or writer.persisted.index < core.last_index:
            assert done.acquire(timeout=WAIT)
            actor.handle(persisted[-1])
        while done.acquire(blocking=False):
            actor.handle(persisted[-1])

    actor.settle = settle  # type: ignore[attr-defined]
    try:
        # Campaign: ticks until the vote requests go out, then grant them.
        for _ in range(30):
            actor.handle(Tick(0))
            if core.role != Role.FOLLOWER:
                break
        votes = [m for m in peers.wait_for(2) if isinstance(m, RequestVote)]  # once durable
        settle()
        for v in votes:
            reply = RequestVoteResponse(v.term, v.receiver, A, True, False)
            actor.handle(PeerFrame(v.receiver, encode(reply)))
        settle()
        assert core.is_leader
        # Acknowledge the no-op so that the commit index is at the no-op.
        noop = [m for m in peers.sent if isinstance(m, AppendEntries) and m.entries]
        for m in noop:
            ack = AppendEntriesResponse(m.term, m.receiver, A, True, m.entries[-1].index)
            actor.handle(PeerFrame(m.receiver, encode(ack)))
        settle()
        actor.handle(Tick(0))  # let any held notice go
        yield actor, peers, persisted
    finally:
        writer.stop(WAIT)


class _Rng:
    def randrange(self, start: int, stop: int) -> int:
        return start

    def random(self) -> float:
        return 0.0


def test_a_commit_only_append_waits_for_the_tick_and_a_newer_append_replaces_it(
    leader: tuple[ConsensusActor, FakePeers, list[Persisted]],
) -> None:
    actor, peers, _ = leader
    core = actor.core
    actor._proposals.append((None, b"cmd-1"))
    actor._flush()
    actor.settle()  # type: ignore[attr-defined]
    start = len(peers.sent)
    appends = [m for m in peers.sent if isinstance(m, AppendEntries) and m.entries]
    last = appends[-1].entries[-1].index
    # n2 acknowledges: the entry commits; the core wants n2 and n3 told (no entries).
    ack = AppendEntriesResponse(core.term, B, A, True, last)
    actor.handle(PeerFrame(B, encode(ack)))
    assert core.commit_index == last
    assert peers.sent[start:] == []  # held, not sent
    # A new command's append carries the commit index and replaces the held notice.
    actor._proposals.append((None, b"cmd-2"))
    actor._flush()
    fresh = [m for m in peers.sent[start:] if isinstance(m, AppendEntries)]
    assert {m.receiver for m in fresh} == {B, C}
    assert all(m.entries and m.commit == last for m in fresh)
    actor.handle(Tick(0))
    assert not [m for m in peers.sent[start + len(fresh) :] if isinstance(m, AppendEntries)]


def test_held_notices_go_out_at_the_next_tick(
    leader: tuple[ConsensusActor, FakePeers, list[Persisted]],
) -> None:
    actor, peers, _ = leader
    core = actor.core
    actor._proposals.append((None, b"cmd"))
    actor._flush()
    actor.settle()  # type: ignore[attr-defined]
    last = core.last_index
    actor.handle(PeerFrame(B, encode(AppendEntriesResponse(core.term, B, A, True, last))))
    actor.handle(PeerFrame(C, encode(AppendEntriesResponse(core.term, C, A, True, last))))
    start = len(peers.sent)
    actor.handle(Tick(0))
    notices = [m for m in peers.sent[start:] if isinstance(m, AppendEntries)]
    assert {m.receiver for m in notices} == {B, C}
    assert all(not m.entries and m.commit == last for m in notices)
