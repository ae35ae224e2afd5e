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

from actors.consensus import ConsensusActor
from actors.messages import PeerFrame, Tick
from actors.storage import Persisted
from protocol.codec import decode, encode
from protocol.ids import MemberId
from protocol.raft import (
    AppendEntries,
    AppendEntriesResponse,
)
from protocol.raft.messages import RAFT_MESSAGE_TYPES, RaftMessage
from tests.actors.consensus_harness import WAIT, A, B, C, hand_driven_leader


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
    peers = FakePeers()
    with hand_driven_leader(peers, peers.sent, Inbox(), lazy_commit_notices=True) as (
        actor,
        persisted,
    ):
        # Acknowledge the no-op so that the commit index is at the no-op.
        noop = [m for m in peers.sent if isinstance(m, AppendEntries) and m.entries]
        for m in noop:
            ack = AppendEntriesResponse(m.term, m.receiver, A, True, m.entries[-1].index)
            actor.handle(PeerFrame(m.receiver, encode(ack)))
        actor.settle()  # type: ignore[attr-defined]
        actor.handle(Tick(0))  # let any held notice go
        yield actor, peers, persisted


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
