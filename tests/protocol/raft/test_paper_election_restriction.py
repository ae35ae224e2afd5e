"""The election restriction and commitment rules, Raft dissertation §3.6.

§3.6.1: a voter refuses a candidate whose log is less up to date than its own (last
term, then length). §3.6.2 (figure 3.7, "figure 8" of the paper): a leader never
commits an entry of an earlier term by counting replicas, only by committing an entry
of its own term after it.
"""

from __future__ import annotations

from protocol.ids import MemberId
from protocol.raft import (
    AppendEntriesResponse,
    Configuration,
    EntryKind,
    HardState,
    LogEntry,
    RaftCore,
    RequestVote,
    RequestVoteResponse,
    RestoredState,
    SnapshotMeta,
)
from tests.protocol.raft.support import A, B, C, D, E, campaign, core, drain


def _with_log(me: str, terms: list[int], term: int, voters: str = "abc") -> RaftCore:
    entries = tuple(
        LogEntry(i + 1, t, EntryKind.COMMAND, b"e%d" % (i + 1)) for i, t in enumerate(terms)
    )
    config = Configuration(tuple(MemberId(v) for v in voters))
    restored = RestoredState(HardState(term=term), SnapshotMeta(0, 0, config), entries=entries)
    return core(MemberId(me), restored=restored, pre_vote=False)


def _vote(voter: RaftCore, last_index: int, last_term: int, term: int = 9) -> bool:
    voter.step(RequestVote(term, B, voter.id, last_index, last_term))
    msgs, _ = drain(voter)
    return [m.granted for m in msgs if isinstance(m, RequestVoteResponse)] == [True]


def test_votes_only_for_logs_at_least_as_up_to_date() -> None:
    assert not _vote(_with_log("a", [1, 2, 2], 2), 5, 1)  # lower last term, longer
    assert not _vote(_with_log("a", [1, 2, 2], 2), 2, 2)  # same term, shorter
    assert _vote(_with_log("a", [1, 2, 2], 2), 3, 2)  # same
    assert _vote(_with_log("a", [1, 2, 2], 2), 1, 3)  # higher last term, shorter


def test_figure_8_old_term_entries_are_not_committed_by_counting() -> None:
    leader = _with_log("a", [1, 2], 3, voters="abcde")
    campaign(leader)
    assert leader.term == 4
    for v in (B, C):
        leader.step(RequestVoteResponse(4, v, A, True))
    assert leader.is_leader
    drain(leader)  # appends and persists its no-op at index 3, term 4
    # entry 2 (term 2) is now on a majority (a, b, c) ...
    leader.step(AppendEntriesResponse(4, B, A, True, 2))
    leader.step(AppendEntriesResponse(4, C, A, True, 2))
    drain(leader)
    assert leader.commit_index == 0  # ... and still not committed (§3.6.2)
    leader.step(AppendEntriesResponse(4, B, A, True, 3))
    leader.step(AppendEntriesResponse(4, D, A, True, 3))
    drain(leader)
    assert leader.commit_index == 3  # committing the no-op commits entry 2 too
    assert E not in (B, C, D)


def test_leader_counts_itself_only_once_its_entries_are_durable() -> None:
    leader = _with_log("a", [], 0)
    campaign(leader)
    leader.step(RequestVoteResponse(1, B, A, True))
    rd = leader.ready()  # the no-op is handed out but not yet durable
    assert rd.entries and rd.entries[-1].index == 1
    leader.step(AppendEntriesResponse(1, B, A, True, 1))
    assert leader.commit_index == 0  # b alone is not a majority: a's copy is not durable
    leader.on_persisted(1, 1)
    assert leader.commit_index == 1


def test_leader_commits_with_followers_before_its_own_write_completes() -> None:
    leader = _with_log("a", [], 0)
    campaign(leader)
    leader.step(RequestVoteResponse(1, B, A, True))
    leader.ready()
    leader.step(AppendEntriesResponse(1, B, A, True, 1))
    leader.step(AppendEntriesResponse(1, C, A, True, 1))
    assert leader.commit_index == 1
    rd = leader.ready()
    assert rd.committed_entries == []  # applied only once durable locally
    leader.on_persisted(1, 1)
    assert [e.index for e in leader.ready().committed_entries] == [1]
    assert C in leader.progress
