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
    ChangeKind,
    Configuration,
    EntryKind,
    LogEntry,
    MembershipChange,
    Proposed,
    Refusal,
    Refused,
    Role,
)
from tests.protocol.raft.support import A, B, C, D, cluster, core, drain, elect

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
    assert n1.role == Role.FOLLOWER and not n1.promotable
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
