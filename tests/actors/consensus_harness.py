"""A ConsensusActor driven by hand on the test's thread, made leader of a 3-member
cluster (n1 of n1, n2, n3): the shared fixture body of the consensus actor tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from actors.base import Mailbox, Wiring
from actors.consensus import ConsensusActor
from actors.messages import PeerFrame, Tick
from actors.status import StatusBoard
from actors.storage import MemoryStorage, StorageWriter
from protocol.codec import decode, encode
from protocol.ids import MemberId
from protocol.raft import (
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


class FirstChoice:
    """A random source that always picks the shortest election timeout."""

    def randrange(self, start: int, stop: int) -> int:
        return start

    def random(self) -> float:
        return 0.0


class Recorder:
    """Stands in for the peers and for the other actors: records what it is given."""

    def __init__(self) -> None:
        self.sent: list[RaftMessage] = []
        self.told: list[Any] = []

    def send(self, to: MemberId, frame: bytes) -> bool:
        self.sent.append(decode(frame, RAFT_MESSAGE_TYPES))
        return True

    def add_peer(self, member: MemberId, address: str) -> None:
        pass

    def tell(self, message: Any) -> None:
        self.told.append(message)


@contextmanager
def hand_driven_leader(
    peers: Any, sent: list[RaftMessage], others: Mailbox, *, lazy_commit_notices: bool = False
) -> Iterator[tuple[ConsensusActor, list[Any]]]:
    """The leader actor and the writer reports it was handed. ``peers`` is its peer
    transport, recording decoded frames in ``sent``; ``others`` stands in for the other
    actors. ``actor.settle()`` hands it the writer's reports until nothing is left to
    write (the writer runs on its own thread; the actor only on the test's)."""
    storage = MemoryStorage()
    persisted: list[Any] = []
    done = threading.Semaphore(0)

    def on_persisted(p: Any) -> None:
        persisted.append(p)
        done.release()

    writer = StorageWriter(storage.log, storage.stable, on_persisted).start()
    core = RaftCore(
        A,
        RaftOptions(
            election_ticks=20,
            heartbeat_ticks=19,
            pre_vote=False,
            lazy_commit_notices=lazy_commit_notices,
        ),
        FirstChoice(),
        RestoredState.bootstrap(Configuration((A, B, C))),
    )
    wiring = Wiring(consensus=others, session=others, registry=others, retry=others)
    actor = ConsensusActor(
        core, writer, storage.snapshots, peers, {}, wiring, StatusBoard(), max_frame_bytes=1 << 20
    )

    def settle() -> None:
        while writer.persisted is None or writer.persisted.index < core.last_index:
            assert done.acquire(timeout=WAIT)
            actor.handle(persisted[-1])
        while done.acquire(blocking=False):
            actor.handle(persisted[-1])

    actor.settle = settle  # type: ignore[attr-defined]
    try:
        for _ in range(30):  # campaign: ticks until the vote requests go out
            actor.handle(Tick(0))
            if core.role != Role.FOLLOWER:
                break
        settle()  # the vote requests leave once the term and vote are durable
        for v in [m for m in sent if isinstance(m, RequestVote)]:
            reply = RequestVoteResponse(v.term, v.receiver, A, True, False)
            actor.handle(PeerFrame(v.receiver, encode(reply)))
        settle()
        assert core.is_leader
        yield actor, persisted
    finally:
        writer.stop(WAIT)
