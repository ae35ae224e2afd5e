"""Preventing disruptions, Raft dissertation §9.6 (PreVote) with §6.2/§4.2.3
(CheckQuorum and leader leases on votes).

A member that cannot reach a majority does not bump its term (PreVote), so it does not
disrupt the cluster when it comes back; a leader that has not heard from a majority
for an election timeout steps down (CheckQuorum); followers that hear from a leader
ignore vote requests.
"""

from __future__ import annotations

from protocol.raft import (
    AppendEntriesResponse,
    Heartbeat,
    RequestVote,
    RequestVoteResponse,
    Role,
)
from tests.protocol.raft.support import A, B, C, campaign, cluster, core, drain, elect


def test_pre_candidate_asks_without_bumping_its_term() -> None:
    c = core(pre_vote=True)
    msgs = campaign(c)
    assert c.role == Role.PRE_CANDIDATE and c.term == 0 and c.voted_for is None
    assert all(isinstance(m, RequestVote) and m.pre_vote and m.term == 1 for m in msgs)
    c.step(RequestVoteResponse(1, B, A, True, pre_vote=True))
    assert c.role == Role.CANDIDATE and c.term == 1


def test_pre_vote_grant_does_not_change_the_voter() -> None:
    v = core(B)
    v.step(RequestVote(1, A, B, 0, 0, pre_vote=True))
    msgs, _ = drain(v)
    assert msgs == [RequestVoteResponse(1, B, A, True, True)]
    assert v.term == 0 and v.voted_for is None


def test_rejected_pre_candidate_returns_to_follower() -> None:
    c = core(pre_vote=True)
    campaign(c)
    c.step(RequestVoteResponse(0, B, A, False, pre_vote=True))
    c.step(RequestVoteResponse(0, C, A, False, pre_vote=True))
    assert c.role == Role.FOLLOWER and c.term == 0


def test_partitioned_member_does_not_disrupt_when_it_returns() -> None:
    cl = cluster(3)
    elect(cl, "n1")
    term = cl.core("n1").term
    cl.isolate("n3")
    for _ in range(100):
        cl.tick()
    assert cl.core("n3").term == term  # PreVote: no term inflation
    cl.heal()
    for _ in range(30):
        cl.tick()
    assert cl.leader() == "n1" and cl.core("n1").term == term


def test_without_pre_vote_the_partitioned_member_inflates_its_term() -> None:
    cl = cluster(3, pre_vote=False, check_quorum=False)
    elect(cl, "n1")
    cl.isolate("n3")
    for _ in range(100):
        cl.tick()
    assert cl.core("n3").term > cl.core("n1").term


def test_check_quorum_leader_steps_down_without_a_majority() -> None:
    cl = cluster(3)
    elect(cl, "n1")
    cl.isolate("n1")
    for _ in range(25):
        cl.tick(["n1"])
    assert cl.core("n1").role == Role.FOLLOWER


def test_without_check_quorum_an_isolated_leader_stays() -> None:
    cl = cluster(3, check_quorum=False)
    elect(cl, "n1")
    cl.isolate("n1")
    for _ in range(25):
        cl.tick(["n1"])
    assert cl.core("n1").is_leader


def test_followers_in_a_lease_ignore_vote_requests() -> None:
    v = core(B, check_quorum=True)
    v.step(Heartbeat(1, A, B, 0, 0))
    drain(v)
    v.step(RequestVote(2, C, B, 5, 1))
    msgs, _ = drain(v)
    assert msgs == [] and v.term == 1 and v.leader == A
    for _ in range(10):
        v.tick()
    v.step(RequestVote(2, C, B, 5, 1))
    msgs, _ = drain(v)
    assert msgs == [RequestVoteResponse(2, B, C, True)]


def test_stale_leader_learns_the_new_term_from_any_follower() -> None:
    v = core(B)
    v.step(Heartbeat(5, C, B, 0, 0))
    drain(v)
    v.step(Heartbeat(3, A, B, 0, 0))
    msgs, _ = drain(v)
    assert msgs == [AppendEntriesResponse(5, B, A, False, 0)]
    v.step(RequestVote(4, A, B, 0, 0, pre_vote=True))
    msgs, _ = drain(v)
    assert msgs == [RequestVoteResponse(5, B, A, False, True)]
