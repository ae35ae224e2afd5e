"""A leader hands the session actor the commands it proposed, already decoded.

Decoding a committed entry on the leader would only undo the ``encode`` the leader did
when it proposed it, so the consensus actor keeps the command objects (by their bytes)
and passes them along in ``ApplyEntries.commands``. These tests pin that what it passes
is exactly what decoding gives, and that nothing is kept that must not be.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from actors.consensus import ConsensusActor
from actors.messages import ApplyEntries, PeerFrame
from actors.storage import StorageError
from protocol.actions import ClientRequestAction, ServerRequestAckAction
from protocol.codec import encode
from protocol.ids import RequestId, SessionId
from protocol.raft import (
    AppendEntries,
    AppendEntriesResponse,
    Role,
)
from protocol.session import ClientRequest, decode_session_command
from tests.actors.consensus_harness import A, B, Recorder, hand_driven_leader


@pytest.fixture
def leader() -> Iterator[tuple[ConsensusActor, Recorder]]:
    """A 3-member leader driven by hand on the test's thread (see consensus_harness)."""
    rec = Recorder()
    with hand_driven_leader(rec, rec.sent, rec) as (actor, _):
        yield actor, rec


def commit_all(actor: ConsensusActor, rec: Recorder) -> list[ApplyEntries]:
    """Let n2 acknowledge everything; return the ApplyEntries told since."""
    actor.settle()  # type: ignore[attr-defined]
    start = len(rec.told)
    last = actor.core.last_index
    actor.handle(PeerFrame(B, encode(AppendEntriesResponse(actor.core.term, B, A, True, last))))
    assert actor.core.commit_index == last
    return [m for m in rec.told[start:] if isinstance(m, ApplyEntries)]


def test_committed_client_requests_arrive_decoded_as_decoding_would(
    leader: tuple[ConsensusActor, Recorder],
) -> None:
    actor, rec = leader
    sid = SessionId("s" * 32)
    actions = [
        ClientRequestAction(sid, RequestId(1), RequestId(1), b"\x91\x01"),
        ServerRequestAckAction(sid, RequestId(3)),  # rare: decoded by the session actor
        ClientRequestAction(sid, RequestId(2), RequestId(1), b"\x91\x02"),
    ]
    actor.handle(actions)
    applied = commit_all(actor, rec)
    entries = [e for m in applied for e in m.entries if e.data]
    commands = [
        c for m in applied for c, e in zip(m.commands or [], m.entries, strict=True) if e.data
    ]
    assert len(entries) == 3
    assert [type(c) for c in commands] == [ClientRequest, type(None), ClientRequest]
    for entry, cmd in zip(entries, commands, strict=True):
        if cmd is not None:
            assert decode_session_command(entry.data) == cmd
    assert actor._proposed == {}  # handed over, not kept


def test_refused_proposals_and_a_lost_leadership_leave_nothing_behind(
    leader: tuple[ConsensusActor, Recorder],
) -> None:
    actor = leader[0]
    actor._failed = StorageError("disk")  # the leader refuses writes from now on
    actor.handle([ClientRequestAction(SessionId("s"), RequestId(1), RequestId(1), b"")])
    assert actor._proposed == {}
    actor._failed = None
    actor.handle([ClientRequestAction(SessionId("s"), RequestId(2), RequestId(1), b"")])
    assert len(actor._proposed) == 1
    term = actor.core.term + 1  # a newer leader appears: this one steps down
    heartbeat = AppendEntries(term, B, A, actor.core.last_index, actor.core.term, (), 0)
    actor.handle(PeerFrame(B, encode(heartbeat)))
    assert actor.core.role == Role.FOLLOWER
    assert actor._proposed == {}
