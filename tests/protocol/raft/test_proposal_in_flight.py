"""``RaftCore.proposal_in_flight``: the leader's latest proposed batch is uncommitted.

Hosts hold further commands while it is True and propose them together once it turns
False (``actors.consensus``), so that under load one commit round carries one batch.
It must turn False when the batch commits and whenever the core stops being leader
(held commands then get their refusal at once), and never be True on a follower.
"""

from __future__ import annotations

from protocol.raft import AppendEntries, AppendEntriesResponse, RaftCore, RequestVoteResponse
from tests.protocol.raft.support import A, B, C, campaign, cluster, core, drain, elect


def _leader() -> RaftCore:
    c = core(pre_vote=False, heartbeat_ticks=9)
    campaign(c)
    c.step(RequestVoteResponse(1, B, A, True))
    drain(c)
    for f in (B, C):
        c.step(AppendEntriesResponse(1, f, A, True, 1))
    drain(c)
    assert c.is_leader and c.commit_index == 1
    return c


def test_a_new_leader_has_nothing_in_flight_even_before_its_noop_commits() -> None:
    c = core(pre_vote=False)
    campaign(c)
    c.step(RequestVoteResponse(1, B, A, True))
    drain(c)
    assert c.is_leader and c.commit_index == 0
    assert not c.proposal_in_flight


def test_a_batch_is_in_flight_until_a_quorum_has_it() -> None:
    c = _leader()
    c.propose([b"a", b"b"])
    assert c.proposal_in_flight
    drain(c)  # the leader's own write is durable: one of three
    assert c.proposal_in_flight
    c.step(AppendEntriesResponse(1, B, A, True, 2))  # two of three, but not the last
    assert c.proposal_in_flight
    c.step(AppendEntriesResponse(1, B, A, True, 3))
    assert c.commit_index == 3
    assert not c.proposal_in_flight


def test_only_the_latest_batch_counts() -> None:
    c = _leader()
    c.propose([b"a"])
    c.propose([b"b"])  # a host may propose anyway (a full batch waiting)
    drain(c)
    c.step(AppendEntriesResponse(1, C, A, True, 2))
    assert c.commit_index == 2 and c.proposal_in_flight
    c.step(AppendEntriesResponse(1, C, A, True, 3))
    assert not c.proposal_in_flight


def test_a_deposed_leader_has_nothing_in_flight() -> None:
    c = _leader()
    c.propose([b"a"])
    drain(c)
    assert c.proposal_in_flight
    c.step(AppendEntries(2, B, A, 1, 1, (), 1))  # a newer leader
    assert not c.is_leader
    assert not c.proposal_in_flight


def test_followers_never_have_a_proposal_in_flight() -> None:
    k = cluster()
    elect(k)
    leader = k.core("n1")
    k.propose("n1", [b"x"])
    assert leader.proposal_in_flight
    assert not any(k.core(m).proposal_in_flight for m in ("n2", "n3"))
    k.stabilize()
    assert not leader.proposal_in_flight


def test_a_leader_deposed_and_elected_again_starts_with_nothing_in_flight() -> None:
    c = _leader()
    c.propose([b"a"])  # never committed in term 1
    drain(c)
    c.step(AppendEntries(2, B, A, 1, 1, (), 1))  # deposed by n2 in term 2
    campaign(c)  # n1 tries again in term 3 and wins
    c.step(RequestVoteResponse(c.term, C, A, True))
    drain(c)
    assert c.is_leader and c.commit_index < 2
    assert not c.proposal_in_flight
