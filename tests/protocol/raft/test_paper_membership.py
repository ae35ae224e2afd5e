"""Cluster membership changes, Raft dissertation §4 (§4.1-§4.2).

Single-server changes: a new member joins as a non-voting learner, catches up, and is
then promoted; members are removed one at a time. A configuration takes effect as soon
as its entry is in a log (and is reverted if that entry is overwritten), only one
change may be uncommitted, and a leader that removed itself steps down once the change
commits. Configurations are kept in snapshots.
"""

from __future__ import annotations

from protocol.codec import encode
from protocol.ids import MemberId
from protocol.raft import (
    AppendEntries,
    AppendEntriesResponse,
    ChangeKind,
    Configuration,
    EntryKind,
    Heartbeat,
    LogEntry,
    MembershipChange,
    Proposed,
    Refusal,
    Refused,
    RequestVote,
    RequestVoteResponse,
    Role,
)
from protocol.raft.messages import RemovedNotice
from tests.protocol.raft.support import A, B, C, D, campaign, cluster, core, drain, elect

S1 = MemberId("s1")


def test_add_learner_catch_up_then_promote() -> None:
    cl = cluster(3, spares=1)
    elect(cl, "n1")
    for i in range(10):
        cl.propose("n1", [b"%d" % i])
    assert isinstance(cl.change("n1", ChangeKind.ADD_LEARNER, "s1"), Proposed)
    cl.stabilize()
    learner = cl.core("s1")
    assert learner.config.learners == (S1,) and not learner.promotable
    assert cl.nodes[S1].sm.values[-1] == b"9"
    for _ in range(40):
        learner.tick()
    assert learner.role == Role.FOLLOWER  # learners never campaign
    assert isinstance(cl.change("n1", ChangeKind.PROMOTE, "s1"), Proposed)
    cl.stabilize()
    assert S1 in cl.core("n1").config.voters and learner.promotable


def test_learners_do_not_count_towards_commitment() -> None:
    cl = cluster(3, spares=1)
    elect(cl, "n1")
    cl.change("n1", ChangeKind.ADD_LEARNER, "s1")
    cl.stabilize()
    cl.isolate("n2")
    cl.isolate("n3")
    cl.blocked -= {(MemberId("n1"), S1), (S1, MemberId("n1"))}
    result = cl.propose("n1", [b"x"])
    assert isinstance(result, Proposed)
    cl.run(3)
    assert cl.core("s1").log.last_index >= result.last_index
    assert cl.core("n1").commit_index < result.last_index


def test_promotion_waits_for_the_learner_to_catch_up() -> None:
    cl = cluster(3, spares=1)
    elect(cl, "n1")
    cl.isolate("s1")
    cl.change("n1", ChangeKind.ADD_LEARNER, "s1")
    cl.stabilize()
    refused = cl.change("n1", ChangeKind.PROMOTE, "s1")
    assert isinstance(refused, Refused) and refused.reason == Refusal.TOO_BUSY


def test_one_change_at_a_time_and_invalid_changes() -> None:
    cl = cluster(3, spares=1)
    elect(cl, "n1")
    cl.isolate("n1")
    assert isinstance(cl.change("n1", ChangeKind.ADD_LEARNER, "s1"), Proposed)
    second = cl.change("n1", ChangeKind.REMOVE, "n2")
    assert isinstance(second, Refused) and second.reason == Refusal.CHANGE_IN_PROGRESS
    cl.heal()
    cl.run(3)
    for kind, who in [
        (ChangeKind.ADD_LEARNER, "n2"),
        (ChangeKind.PROMOTE, "n2"),
        (ChangeKind.REMOVE, "zz"),
    ]:
        r = cl.change("n1", kind, who)
        assert isinstance(r, Refused) and r.reason == Refusal.INVALID
    assert cl.change("n2", ChangeKind.REMOVE, "n3") == Refused(Refusal.NOT_LEADER, MemberId("n1"))


def test_removing_the_last_voter_is_refused() -> None:
    c = core(A, (A,))
    for _ in range(20):
        c.tick()
    drain(c)
    r = c.change_membership(MembershipChange(ChangeKind.REMOVE, A))
    assert isinstance(r, Refused) and r.reason == Refusal.INVALID


def test_removed_member_stops_receiving_and_quorum_shrinks() -> None:
    cl = cluster(3)
    elect(cl, "n1")
    cl.change("n1", ChangeKind.REMOVE, "n3")
    cl.stabilize()
    assert cl.core("n1").config.voters == (MemberId("n1"), MemberId("n2"))
    cl.crash("n3")
    result = cl.propose("n1", [b"x"])
    cl.stabilize()
    assert isinstance(result, Proposed) and cl.core("n1").commit_index >= result.last_index


def test_leader_removing_itself_steps_down_after_commit() -> None:
    cl = cluster(3)
    elect(cl, "n1")
    assert isinstance(cl.change("n1", ChangeKind.REMOVE, "n1"), Proposed)
    cl.stabilize()
    n1 = cl.core("n1")
    assert n1.role == Role.REMOVED and n1.removed and not n1.promotable
    for _ in range(60):
        cl.tick()
    assert cl.leader() in (MemberId("n2"), MemberId("n3"))


def test_configuration_is_effective_when_appended_and_reverted_when_overwritten() -> None:
    f = core(B, (A, B, C))
    new = Configuration((A, B, C, D))
    entry = LogEntry(1, 1, EntryKind.CONFIGURATION, encode(new))
    f.step(AppendEntries(1, A, B, 0, 0, (entry,), 0))
    assert f.config == new and f.config_index == 1  # not yet committed
    other = LogEntry(1, 2, EntryKind.COMMAND, b"x")
    f.step(AppendEntries(2, C, B, 0, 0, (other,), 0))
    assert f.config == Configuration((A, B, C))


def test_garbage_configuration_entries_are_refused() -> None:
    f = core(B, (A, B, C))
    bad = LogEntry(1, 1, EntryKind.CONFIGURATION, b"\x01\x02")
    f.step(AppendEntries(1, A, B, 0, 0, (bad,), 0))
    assert f.log.last_index == 0


def test_configuration_survives_snapshots_and_restarts() -> None:
    cl = cluster(3, spares=1, compaction_tail=0)
    elect(cl, "n1")
    cl.change("n1", ChangeKind.ADD_LEARNER, "s1")
    cl.stabilize()
    meta = cl.take_snapshot("n1")
    assert meta is not None and meta.configuration.learners == (S1,)
    cl.crash("n1")
    cl.restart("n1")
    assert cl.core("n1").config.learners == (S1,)


def test_a_member_removed_by_an_uncommitted_entry_can_still_campaign() -> None:
    """Its log (holding its own removal) may be the only one that can win."""
    f = core(A, (A, B))
    entry = LogEntry(1, 1, EntryKind.CONFIGURATION, encode(Configuration((B,))))
    f.step(AppendEntries(1, B, A, 0, 0, (entry,), 0))
    assert A not in f.config.voters and f.promotable


def test_a_removed_member_is_told_and_stops_taking_part() -> None:
    """The leader never sends the removed member its removal; it answers the member's
    next message (here its pre-vote once heartbeats stop) with a RemovedNotice."""
    cl = cluster(3)
    elect(cl, "n1")
    cl.change("n1", ChangeKind.REMOVE, "n3")
    cl.stabilize()
    n3 = cl.core("n3")
    assert MemberId("n3") in n3.config.voters  # it never got the entry removing it
    term = cl.core("n1").term
    cl.run(100)
    assert n3.role == Role.REMOVED and n3.removed
    assert cl.core("n1").is_leader and cl.core("n1").term == term  # not disrupted
    # From now on it ignores ticks and messages (but a leader's) and sends nothing.
    for _ in range(50):
        n3.tick()
    n3.step(RequestVote(term + 5, MemberId("n2"), MemberId("n3"), 99, 99))
    n3.step(AppendEntries(term - 1, MemberId("n1"), MemberId("n3"), 0, 0, (), 0))
    assert drain(n3)[0] == [] and n3.role == Role.REMOVED and n3.term == term
    # A leader replicating to it again (it was added back) makes it a follower.
    n3.step(Heartbeat(term, MemberId("n1"), MemberId("n3"), 0, 0))
    assert n3.role == Role.FOLLOWER and n3.leader == MemberId("n1")


def test_the_leader_ignores_non_members_and_tells_only_once_committed() -> None:
    lead = core(A, (A, B, C), pre_vote=False)
    campaign(lead)
    lead.step(RequestVoteResponse(lead.term, B, A, True))
    drain(lead)
    lead.step(AppendEntriesResponse(lead.term, B, A, True, lead.last_index))
    drain(lead)
    assert lead.is_leader and lead.commit_index == lead.last_index
    stranger = MemberId("zz")
    # A stranger's pre-vote (even for a later term) neither disrupts nor is answered
    # with a vote; the committed configuration does not hold it: it is told.
    lead.step(RequestVote(lead.term + 1, stranger, A, 99, 99, pre_vote=True))
    msgs = drain(lead)[0]
    assert msgs == [RemovedNotice(lead.term, A, stranger, 0)] and lead.is_leader
    # While a removal is uncommitted the leader only ignores the member.
    assert isinstance(lead.change_membership(MembershipChange(ChangeKind.REMOVE, C)), Proposed)
    drain(lead)
    lead.step(RequestVote(lead.term + 1, C, A, 99, 99, pre_vote=True))
    assert not [m for m in drain(lead)[0] if isinstance(m, RemovedNotice)]


def test_a_notice_from_an_older_term_is_ignored() -> None:
    f = core(B, (A, B, C))
    f.step(AppendEntries(5, A, B, 0, 0, (), 0))
    f.step(RemovedNotice(4, C, B, 9))
    assert f.role == Role.FOLLOWER and not f.removed
    f.step(RemovedNotice(5, A, B, 9))
    assert f.removed


def test_a_follower_believes_a_removal_notice_only_from_its_leader() -> None:
    """A member that still hears from its leader is not removed on another's word (a
    forged or confused notice would otherwise stop a healthy member for good)."""
    f = core(B, (A, B, C))
    f.step(AppendEntries(5, A, B, 0, 0, (), 0))
    f.step(RemovedNotice(5, C, B, 9))
    f.step(RemovedNotice(7, C, B, 9))
    assert f.role == Role.FOLLOWER and f.leader == A and f.term == 5 and not f.removed
    f.step(RemovedNotice(5, A, B, 9))
    assert f.removed


def test_a_late_notice_is_ignored_by_a_member_added_again() -> None:
    f = core(B, (A, C))  # B is not in its own (old) configuration
    readd = LogEntry(1, 5, EntryKind.CONFIGURATION, encode(Configuration((A, C), (B,))))
    f.step(AppendEntries(5, A, B, 0, 0, (readd,), 0))
    assert f.config_index == 1
    f.step(RemovedNotice(5, A, B, 0))  # sent before the re-add, delivered after
    assert not f.removed
    f.step(RemovedNotice(5, A, B, 1))
    assert f.removed


def test_promotion_lag_lets_a_learner_within_n_entries_be_promoted() -> None:
    """``promotion_lag``: a learner within N entries of the leader's last entry may be
    promoted before it reaches the commit index; 0 keeps the strict rule."""
    for lag, expected in ((0, False), (5, True), (2, False)):
        cl = cluster(3, spares=1, promotion_lag=lag)
        elect(cl, "n1")
        cl.change("n1", ChangeKind.ADD_LEARNER, "s1")
        cl.stabilize()
        cl.isolate("s1")
        for i in range(4):
            cl.propose("n1", [b"%d" % i])
        cl.stabilize()
        lead = cl.core("n1")
        assert lead.commit_index == lead.last_index
        assert lead.last_index - lead.progress[S1].match == 4
        result = cl.change("n1", ChangeKind.PROMOTE, "s1")
        assert isinstance(result, Proposed) is expected, (lag, result)
        assert lead.caught_up(S1) is expected


def test_promotion_lag_never_promotes_a_learner_that_never_answered() -> None:
    """With a lag larger than the whole log, a learner that never answered must still
    not be promoted: a dead voter would make every later commit impossible."""
    cl = cluster(1, spares=1, promotion_lag=100)
    elect(cl, "n1")
    cl.isolate("s1")
    cl.change("n1", ChangeKind.ADD_LEARNER, "s1")
    cl.stabilize()
    lead = cl.core("n1")
    assert lead.progress[S1].match == 0 and lead.commit_index == lead.last_index
    assert not lead.caught_up(S1)
    assert not isinstance(cl.change("n1", ChangeKind.PROMOTE, "s1"), Proposed)
    cl.propose("n1", [b"x"])
    cl.stabilize()
    assert lead.commit_index == lead.last_index  # still committing alone


def test_the_leader_tracks_last_contact_per_follower_in_ticks() -> None:
    cl = cluster(3)
    assert cl.core("n1").last_contact_ticks() == {}  # not leading
    elect(cl, "n1")
    cl.run(5)
    contact = cl.core("n1").last_contact_ticks()
    assert set(contact) == {MemberId("n2"), MemberId("n3")}
    assert all(t is not None and 0 <= t <= 2 for t in contact.values())
    cl.isolate("n3")
    cl.run(7)
    contact = cl.core("n1").last_contact_ticks()
    n3 = contact[MemberId("n3")]
    assert n3 is not None and n3 >= 6 and (contact[MemberId("n2")] or 0) <= 2
