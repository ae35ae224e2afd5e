"""Linearizable reads with ReadIndex, Raft dissertation §6.4.

The leader records its commit index as the read index, but only once it has committed
an entry of its own term; it then confirms it is still leader by a round of heartbeats
acknowledged by a majority, and only then releases the read. Followers forward reads
to the leader. A leader cut off from the majority never releases reads.
"""

from __future__ import annotations

from protocol.raft import (
    HeartbeatResponse,
    ReadIndexRequest,
    ReadIndexResponse,
    ReadState,
    Refusal,
    Refused,
    RequestVoteResponse,
    Role,
)
from tests.protocol.raft.support import A, B, C, campaign, cluster, core, drain, elect


def test_read_is_released_after_a_quorum_heartbeat_round() -> None:
    cl = cluster(3)
    elect(cl, "n1")
    cl.propose("n1", [b"x"])
    cl.stabilize()
    commit = cl.core("n1").commit_index
    assert cl.read("n1", b"r1") is None
    cl.stabilize()
    assert cl.read_results[b"r1"] == commit


def test_read_waits_for_an_entry_of_the_leaders_term() -> None:
    c = core(A, pre_vote=False)
    campaign(c)
    c.step(RequestVoteResponse(1, B, A, True))
    drain(c)
    assert c.read_index(b"r") is None
    _, readys = drain(c)
    assert all(not r.read_states for r in readys)
    c.step(HeartbeatResponse(1, B, A, 5))  # no round is open yet: nothing confirmed
    assert not c.ready().read_states
    from protocol.raft import AppendEntriesResponse

    c.step(AppendEntriesResponse(1, B, A, True, 1))  # the no-op commits
    msgs, _ = drain(c)
    rounds = {m.read_round for m in msgs if hasattr(m, "read_round")}
    assert rounds == {1}
    c.step(HeartbeatResponse(1, C, A, 1))
    _, readys = drain(c)
    assert [s for r in readys for s in r.read_states] == [ReadState(1, b"r")]


def test_isolated_leader_never_releases_reads_and_fails_them_on_step_down() -> None:
    cl = cluster(3)
    elect(cl, "n1")
    cl.isolate("n1")
    cl.read("n1", b"stale?")
    for _ in range(25):
        cl.tick(["n1"])
    assert b"stale?" not in cl.read_results
    assert cl.core("n1").role == Role.FOLLOWER
    assert b"stale?" in cl.failed_reads


def test_followers_forward_reads_to_the_leader() -> None:
    cl = cluster(3)
    elect(cl, "n1")
    cl.propose("n1", [b"x"])
    cl.stabilize()
    assert cl.read("n2", b"via-follower") is None
    cl.stabilize()
    assert cl.read_results[b"via-follower"] == cl.core("n1").commit_index


def test_reads_without_a_leader_are_refused() -> None:
    c = core(B)
    assert c.read_index(b"r") == Refused(Refusal.NOT_LEADER, None)
    c.step(ReadIndexRequest(0, A, B, b"r"))
    msgs, _ = drain(c)
    assert msgs == [ReadIndexResponse(0, B, A, b"r", 0, False)]
    c.step(ReadIndexResponse(0, A, B, b"r", 0, False))
    _, readys = drain(c)
    assert readys[0].failed_reads == [b"r"]


def test_single_voter_reads_immediately() -> None:
    c = core(A, (A,))
    for _ in range(20):
        c.tick()
    drain(c)
    assert c.read_index(b"r") is None
    assert c.ready().read_states == [ReadState(1, b"r")]


def test_pending_reads_are_bounded() -> None:
    cl = cluster(3, max_pending_reads=2)
    elect(cl, "n1")
    cl.isolate("n1")
    assert cl.read("n1", b"1") is None and cl.read("n1", b"2") is None
    refused = cl.read("n1", b"3")
    assert isinstance(refused, Refused) and refused.retryable
