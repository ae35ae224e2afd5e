"""Log replication and the Log Matching property, Raft dissertation §3.5.

The leader appends proposals and replicates them with AppendEntries carrying the
previous entry's index and term; followers refuse a mismatch (with a hint so that the
leader skips a whole conflicting term per round trip), drop conflicting suffixes and
append; an entry is committed once a majority stores it. Replication is batched
(entries and bytes per message), pipelined (bounded in-flight messages/bytes) and
memory at the leader is bounded (uncommitted bytes).
"""

from __future__ import annotations

import pytest

from protocol.raft import (
    AppendEntries,
    AppendEntriesResponse,
    Configuration,
    EntryKind,
    HardState,
    LogEntry,
    Proposed,
    RaftCore,
    Refusal,
    Refused,
    RestoredState,
    SnapshotMeta,
)
from tests.protocol.raft.support import A, B, C, cluster, core, drain, elect


def _entries(*terms: int, start: int = 1) -> tuple[LogEntry, ...]:
    return tuple(
        LogEntry(start + k, t, EntryKind.COMMAND, f"{start + k}".encode())
        for k, t in enumerate(terms)
    )


def _follower_with(*terms: int, term: int = 0) -> RaftCore:
    restored = RestoredState(
        HardState(term=max([term, *terms], default=0)),
        SnapshotMeta(0, 0, Configuration((A, B, C))),
        entries=_entries(*terms),
    )
    return core(B, restored=restored)


@pytest.mark.eager_commit
def test_proposals_commit_on_a_majority_and_apply_everywhere() -> None:
    cl = cluster(3)
    elect(cl, "n1")
    result = cl.propose("n1", [b"x", b"y"])
    assert isinstance(result, Proposed) and result.last_index == result.first_index + 1
    cl.stabilize()
    for node in cl.live():
        assert node.sm.values[-2:] == [b"x", b"y"]
        assert node.core is not None and node.core.commit_index == result.last_index


def test_commit_needs_a_majority() -> None:
    cl = cluster(3)
    elect(cl, "n1")
    cl.isolate("n1")
    result = cl.propose("n1", [b"x"])
    assert isinstance(result, Proposed)
    cl.run(3)
    assert cl.core("n1").commit_index < result.last_index
    cl.heal()
    cl.run(3)
    assert cl.core("n1").commit_index >= result.last_index


def test_non_leaders_refuse_proposals_with_a_leader_hint() -> None:
    cl = cluster(3)
    elect(cl, "n1")
    refused = cl.propose("n2", [b"x"])
    assert refused == Refused(Refusal.NOT_LEADER, cl.core("n1").id)
    assert not refused.retryable
    assert cl.core("n1").propose([]) == Refused(
        Refusal.INVALID, cl.core("n1").id, "nothing to propose"
    )


def test_uncommitted_bytes_are_bounded_with_a_retryable_refusal() -> None:
    cl = cluster(3, max_uncommitted_bytes=100)
    elect(cl, "n1")
    cl.isolate("n1")
    assert isinstance(cl.propose("n1", [b"x" * 60]), Proposed)
    refused = cl.propose("n1", [b"x" * 60])
    assert isinstance(refused, Refused) and refused.reason == Refusal.TOO_BUSY
    assert refused.retryable
    cl.heal()
    cl.run(3)
    assert isinstance(cl.propose("n1", [b"x" * 60]), Proposed)


def test_follower_rejects_a_gap_with_its_length_as_hint() -> None:
    f = _follower_with(1, 1)
    f.step(AppendEntries(2, A, B, 5, 2, _entries(2, start=6), 0))
    msgs, _ = drain(f)
    assert msgs == [AppendEntriesResponse(2, B, A, False, 5, 3, 0)]


def test_follower_rejects_a_term_mismatch_with_the_first_index_of_its_term() -> None:
    f = _follower_with(1, 2, 2, 2)
    f.step(AppendEntries(3, A, B, 4, 3, (), 0))
    msgs, _ = drain(f)
    assert msgs == [AppendEntriesResponse(3, B, A, False, 4, 2, 2)]


def test_follower_drops_a_conflicting_suffix_and_appends() -> None:
    f = _follower_with(1, 2, 2, 2)
    f.step(AppendEntries(3, A, B, 2, 2, _entries(3, 3, start=3), 0))
    msgs, readys = drain(f)
    assert msgs == [AppendEntriesResponse(3, B, A, True, 4)]
    assert readys[0].truncate_from == 3  # the restored entries are in storage
    assert [e.term for e in f.log.entries] == [1, 2, 3, 3]


def test_overwriting_handed_out_entries_asks_storage_to_truncate() -> None:
    f = _follower_with()
    f.step(AppendEntries(1, C, B, 0, 0, _entries(1, 1, 1), 0))
    drain(f)
    f.step(AppendEntries(2, A, B, 1, 1, _entries(2, start=2), 1))
    _, readys = drain(f)
    assert readys[0].truncate_from == 2
    assert [e.index for e in readys[0].entries] == [2]


def test_stale_append_does_not_truncate_a_longer_matching_log() -> None:
    f = _follower_with(1, 1, 1, 1)
    f.step(AppendEntries(1, A, B, 1, 1, _entries(1, start=2), 0))
    msgs, _ = drain(f)
    assert f.log.last_index == 4
    assert msgs == [AppendEntriesResponse(1, B, A, True, 2)]


def test_follower_commit_is_capped_by_what_the_message_covers() -> None:
    f = _follower_with(1, 1, 7)
    f.step(AppendEntries(8, A, B, 2, 1, (), 5))
    drain(f)
    assert f.commit_index == 2


def test_acks_are_only_sent_after_persisting() -> None:
    f = _follower_with()
    f.step(AppendEntries(1, A, B, 0, 0, _entries(1), 0))
    rd = f.ready()
    assert rd.messages == [] and len(rd.persisted_messages) == 1
    assert rd.entries == list(_entries(1))


def test_fast_backtracking_skips_whole_terms() -> None:
    """Figure 3.7-like: a follower with many entries of a stale term converges in a
    few round trips rather than one per entry."""
    cl = cluster(3, max_entries_per_msg=1000)
    elect(cl, "n1")
    cl.isolate("n2")
    for _ in range(50):
        cl.propose("n1", [b"stale"])  # never committed: n3 down too
    cl.crash("n3")
    cl.run(1)
    cl.crash("n1")
    cl.heal()
    cl.restart("n3")
    elect(cl, "n2")
    for _ in range(20):
        cl.propose("n2", [b"new"])
    cl.stabilize()
    cl.restart("n1")
    before = cl.delivered
    for _ in range(30):
        cl.tick()
        if cl.core("n1").log.last_term == cl.core("n2").term:
            break
    assert cl.core("n1").log.last_term == cl.core("n2").term
    assert cl.delivered - before < 40


def test_batches_respect_entry_and_byte_limits() -> None:
    cl = cluster(3, max_entries_per_msg=4, max_append_bytes=25, max_inflight_msgs=1000)
    elect(cl, "n1")
    leader = cl.core("n1")
    leader.propose([b"0123456789"] * 10)
    msgs = [m for m in leader.ready().messages if isinstance(m, AppendEntries)]
    assert msgs and all(len(m.entries) <= 4 for m in msgs)
    assert all(sum(len(e.data) for e in m.entries) <= 25 for m in msgs)
    assert sum(len(m.entries) for m in msgs if m.receiver == msgs[0].receiver) == 10


def test_in_flight_appends_per_follower_are_bounded() -> None:
    cl = cluster(3, max_entries_per_msg=1, max_inflight_msgs=3)
    elect(cl, "n1")
    leader = cl.core("n1")
    leader.propose([b"x"] * 10)
    msgs = [m for m in leader.ready().messages if isinstance(m, AppendEntries)]
    per = {m.receiver: 0 for m in msgs}
    for m in msgs:
        per[m.receiver] += 1
    assert set(per.values()) == {3}


def test_in_flight_bytes_per_follower_are_bounded() -> None:
    cl = cluster(3, max_entries_per_msg=1, max_inflight_bytes=20)
    elect(cl, "n1")
    leader = cl.core("n1")
    leader.propose([b"0123456789"] * 10)
    msgs = [m for m in leader.ready().messages if isinstance(m, AppendEntries)]
    assert len([m for m in msgs if m.receiver == msgs[0].receiver]) == 2


def test_lost_appends_are_recovered_by_heartbeats() -> None:
    cl = cluster(3, max_entries_per_msg=1, max_inflight_msgs=2)
    elect(cl, "n1")
    leader = cl.core("n1")
    cl.faults.drop = 1.0
    cl.propose("n1", [b"x"] * 6)  # the appends are lost
    cl.faults.drop = 0.0
    for _ in range(20):
        cl.tick()
    cl.stabilize()
    assert all(n.sm.index == leader.last_index for n in cl.live())
