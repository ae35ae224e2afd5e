"""A leader proposes the next batch once its previous one committed.

Commands that arrive while the leader's latest batch is uncommitted wait
(``RaftCore.proposal_in_flight``) and then go out together: one append per follower
for all of them, not one per arrival. They never wait longer than that: not past the
commit, not past a full append's worth, not when the leader steps down or its storage
failed (they are refused at once then).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from actors.consensus import ConsensusActor
from actors.messages import PeerFrame
from actors.storage import StorageError
from protocol.actions import ClientRequestAction, SendRequestError
from protocol.codec import encode
from protocol.ids import RequestId, SessionId
from protocol.raft import AppendEntries, AppendEntriesResponse
from tests.actors.consensus_harness import A, B, C, Recorder, hand_driven_leader

SID = SessionId("s")


def request(n: int) -> ClientRequestAction:
    return ClientRequestAction(SID, RequestId(n), RequestId(n), b"\x91" + bytes([n]))


def appends_since(rec: Recorder, start: int) -> list[AppendEntries]:
    return [m for m in rec.sent[start:] if isinstance(m, AppendEntries) and m.entries]


def ack(actor: ConsensusActor, member: str, index: int) -> None:
    msg = AppendEntriesResponse(actor.core.term, B if member == "n2" else C, A, True, index)
    actor.handle(PeerFrame(msg.sender, encode(msg)))


@pytest.fixture
def leader() -> Iterator[tuple[ConsensusActor, Recorder]]:
    """A 3-member leader with its no-op committed and nothing in flight."""
    rec = Recorder()
    with hand_driven_leader(rec, rec.sent, rec) as (actor, _):
        actor.settle()  # type: ignore[attr-defined]
        ack(actor, "n2", actor.core.last_index)
        ack(actor, "n3", actor.core.last_index)
        assert not actor.core.proposal_in_flight
        yield actor, rec


def test_commands_arriving_during_a_commit_round_go_out_together_after_it(
    leader: tuple[ConsensusActor, Recorder],
) -> None:
    actor, rec = leader
    start = len(rec.sent)
    actor.handle([request(1)])
    first = appends_since(rec, start)
    assert [len(m.entries) for m in first] == [1, 1]  # to n2 and n3 at once: nothing held
    actor.settle()  # type: ignore[attr-defined]
    start = len(rec.sent)
    for n in (2, 3, 4):
        actor.handle([request(n)])
    assert appends_since(rec, start) == []  # held: request 1 is not committed yet
    assert actor.core.last_index == first[0].entries[-1].index
    ack(actor, "n2", first[0].entries[-1].index)  # request 1 commits
    together = appends_since(rec, start)
    assert sorted(m.receiver for m in together) == [B, C]
    assert all(len(m.entries) == 3 for m in together)


def test_a_full_append_worth_is_not_held(leader: tuple[ConsensusActor, Recorder]) -> None:
    actor, rec = leader
    actor.handle([request(1)])
    actor.settle()  # type: ignore[attr-defined]
    start = len(rec.sent)
    full = actor.core.options.max_entries_per_msg
    actor.handle([request(2 + i % 200) for i in range(full - 1)])
    assert appends_since(rec, start) == []
    actor.handle([request(250)])
    assert sum(len(m.entries) for m in appends_since(rec, start)) == 2 * full


def test_a_full_append_worth_of_bytes_is_not_held(leader: tuple[ConsensusActor, Recorder]) -> None:
    actor, rec = leader
    actor.handle([request(1)])
    actor.settle()  # type: ignore[attr-defined]
    start, before = len(rec.sent), actor.core.last_index
    big = actor.core.options.max_append_bytes // 3
    for n in (2, 3):
        actor.handle([ClientRequestAction(SID, RequestId(n), RequestId(n), bytes(big))])
    assert appends_since(rec, start) == [] and actor.core.last_index == before
    actor.handle([ClientRequestAction(SID, RequestId(4), RequestId(4), bytes(big))])
    assert actor.core.last_index == before + 3  # all three proposed together
    assert max(m.entries[-1].index for m in appends_since(rec, start)) == before + 3


def test_held_commands_are_refused_at_once_when_the_leader_steps_down(
    leader: tuple[ConsensusActor, Recorder],
) -> None:
    actor, rec = leader
    actor.handle([request(1)])
    actor.settle()  # type: ignore[attr-defined]
    actor.handle([request(2)])
    told = len(rec.told)
    newer = AppendEntries(actor.core.term + 1, B, A, 0, 0, (), 0)
    actor.handle(PeerFrame(B, encode(newer)))
    assert not actor.core.is_leader
    refusals = [m for m in rec.told[told:] if isinstance(m, SendRequestError)]
    assert [r.request_id for r in refusals] == [RequestId(2)]


def test_nothing_is_held_once_storage_failed(leader: tuple[ConsensusActor, Recorder]) -> None:
    actor, rec = leader
    actor.handle([request(1)])
    actor.settle()  # type: ignore[attr-defined]
    actor.handle(StorageError("disk gone"))
    told = len(rec.told)
    actor.handle([request(2)])
    refusals = [m for m in rec.told[told:] if isinstance(m, SendRequestError)]
    assert [r.request_id for r in refusals] == [RequestId(2)]
