"""Leader election, Raft dissertation §3.4 (and the persistence rules of §3.8).

Followers that hear nothing for a randomized election timeout become candidates, vote
for themselves in a new term and ask the others; a majority makes a leader, which
appends a no-op; every member votes at most once per term.
"""

from __future__ import annotations

import random

from protocol.ids import MemberId
from protocol.raft import (
    AppendEntries,
    EntryKind,
    Heartbeat,
    RaftCore,
    RequestVote,
    RequestVoteResponse,
    Role,
)
from tests.protocol.raft.support import A, B, C, campaign, cluster, core, drain, elect, options


def test_follower_times_out_within_randomized_bounds_and_campaigns() -> None:
    timeouts = set()
    for seed in range(30):
        c = core(seed=seed, pre_vote=False)
        ticks = 0
        while c.role == Role.FOLLOWER:
            c.tick()
            ticks += 1
        assert 10 <= ticks < 20
        timeouts.add(ticks)
        assert c.role == Role.CANDIDATE and c.term == 1 and c.voted_for == A
        rd = c.ready()
        assert rd.hard_state is not None and rd.hard_state.term == 1
        assert rd.hard_state.voted_for == A
        # §3.8: votes may only be requested once term and vote are durable
        assert rd.messages == []
        assert {m.receiver for m in rd.persisted_messages} == {B, C}
        assert all(isinstance(m, RequestVote) and not m.pre_vote for m in rd.persisted_messages)
    assert len(timeouts) > 3  # randomized


def test_candidate_with_majority_becomes_leader_and_appends_a_noop() -> None:
    c = core(pre_vote=False)
    campaign(c)
    c.step(RequestVoteResponse(1, B, A, True))
    assert c.role == Role.LEADER and c.leader == A
    msgs, readys = drain(c)
    assert readys[0].entries[-1].kind == EntryKind.NOOP
    assert readys[0].entries[-1].term == 1
    assert {m.receiver for m in msgs if isinstance(m, AppendEntries)} == {B, C}


def test_candidate_rejected_by_a_majority_returns_to_follower() -> None:
    c = core(pre_vote=False)
    campaign(c)
    c.step(RequestVoteResponse(1, B, A, False))
    assert c.role == Role.CANDIDATE
    c.step(RequestVoteResponse(1, C, A, False))
    assert c.role == Role.FOLLOWER and c.term == 1


def test_at_most_one_vote_per_term_first_come_first_served() -> None:
    c = core(A, pre_vote=False)
    c.step(RequestVote(1, B, A, 0, 0))
    c.step(RequestVote(1, C, A, 0, 0))
    c.step(RequestVote(1, B, A, 0, 0))  # a retry by the same candidate is granted again
    msgs, readys = drain(c)
    grants = [(m.receiver, m.granted) for m in msgs if isinstance(m, RequestVoteResponse)]
    assert grants == [(B, True), (C, False), (B, True)]
    assert readys[0].hard_state is not None and readys[0].hard_state.voted_for == B
    assert readys[0].messages == [] and len(readys[0].persisted_messages) == 3


def test_vote_survives_restart_via_hard_state() -> None:
    c = core(A, pre_vote=False)
    c.step(RequestVote(1, B, A, 0, 0))
    _, readys = drain(c)
    hs = readys[0].hard_state
    assert hs is not None
    from protocol.raft import Configuration, RestoredState, SnapshotMeta

    restored = RestoredState(hs, SnapshotMeta(0, 0, Configuration((A, B, C))))
    again = RaftCore(A, options(pre_vote=False), random.Random(1), restored)
    again.step(RequestVote(1, C, A, 0, 0))
    msgs, _ = drain(again)
    assert [m.granted for m in msgs if isinstance(m, RequestVoteResponse)] == [False]


def test_candidate_steps_down_for_a_leader_of_its_term() -> None:
    c = core(pre_vote=False)
    campaign(c)
    c.step(AppendEntries(1, B, A, 0, 0, (), 0))
    assert c.role == Role.FOLLOWER and c.leader == B and c.term == 1


def test_higher_term_turns_anyone_into_a_follower() -> None:
    c = core(pre_vote=False)
    campaign(c)
    c.step(RequestVoteResponse(1, B, A, True))
    assert c.is_leader
    c.step(Heartbeat(5, C, A, 0, 0))
    assert c.role == Role.FOLLOWER and c.term == 5 and c.leader == C
    assert c.voted_for is None


def test_stale_term_messages_are_ignored() -> None:
    c = core(pre_vote=False)
    c.step(Heartbeat(3, B, A, 0, 0))
    drain(c)
    c.step(RequestVote(2, C, A, 10, 2))
    c.step(AppendEntries(2, C, A, 0, 0, (), 0))
    msgs, _ = drain(c)
    assert c.term == 3 and c.leader == B
    assert not any(isinstance(m, RequestVoteResponse) and m.granted for m in msgs)


def test_misaddressed_and_self_messages_are_ignored() -> None:
    c = core()
    c.step(Heartbeat(9, B, MemberId("zz"), 0, 0))
    c.step(Heartbeat(9, A, A, 0, 0))
    assert c.term == 0


def test_single_voter_elects_itself() -> None:
    c = core(A, (A,), pre_vote=True)
    for _ in range(20):
        c.tick()
    assert c.is_leader and c.term == 1
    drain(c)
    assert c.commit_index == 1  # its no-op, once persisted


def test_clusters_of_three_and_five_elect_exactly_one_leader() -> None:
    for n in (3, 5):
        cl = cluster(n)
        for _ in range(60):
            cl.tick()
        leaders = [x.core for x in cl.live() if x.core is not None and x.core.is_leader]
        assert len(leaders) == 1
        assert all(x.core is not None and x.core.leader == leaders[0].id for x in cl.live())


def test_elect_helper_picks_the_given_member() -> None:
    cl = cluster(3)
    elect(cl, "n2")
    assert cl.leader() == "n2"
