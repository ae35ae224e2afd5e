"""``RaftOptions.lazy_commit_notices``: commit-only AppendEntries wait for the next tick.

With the option on, a leader whose commit index advances does not send a follower that
has nothing new to receive an AppendEntries carrying only the commit index: the follower
learns it from the next append or heartbeat to it, or at the leader's next tick. With it
off (the default, the paper's behaviour) the notice goes out at once.
"""

from __future__ import annotations

import pytest

from protocol.raft import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    RaftCore,
    RaftMessage,
    RequestVoteResponse,
    Role,
)
from tests.protocol.raft.support import A, B, C, campaign, cluster, core, drain, elect


def _leader(lazy: bool = True, **kw: object) -> RaftCore:
    """A leader of (A, B, C) whose no-op is committed and known to both followers,
    with no heartbeat due for a long while (unless ``heartbeat_ticks`` says so)."""
    kw.setdefault("heartbeat_ticks", 9)
    c = core(pre_vote=False, lazy_commit_notices=lazy, **kw)
    campaign(c)
    c.step(RequestVoteResponse(1, B, A, True))
    drain(c)
    for f in (B, C):
        c.step(AppendEntriesResponse(1, f, A, True, 1))
    drain(c)
    for f in (B, C):  # followers acknowledge the (eager or delayed) notice
        c.step(AppendEntriesResponse(1, f, A, True, 1))
    c.tick()
    drain(c)
    assert c.is_leader and c.commit_index == 1
    return c


def _propose(c: RaftCore) -> int:
    """Propose one command and hand out its appends; its index."""
    c.propose([b"x"])
    drain(c)
    return c.last_index


def _appends(msgs: list[RaftMessage]) -> list[AppendEntries]:
    return [m for m in msgs if isinstance(m, AppendEntries)]


def test_without_the_option_the_commit_index_is_sent_at_once() -> None:
    c = _leader(lazy=False)
    last = _propose(c)
    c.step(AppendEntriesResponse(1, B, A, True, last))
    notices = _appends(drain(c)[0])
    assert {m.receiver for m in notices} == {B, C}
    assert all(not m.entries and m.commit == last for m in notices)


def test_no_commit_only_append_between_ticks_and_all_of_them_at_the_next_tick() -> None:
    c = _leader()
    last = _propose(c)
    c.step(AppendEntriesResponse(1, B, A, True, last))
    assert c.commit_index == last
    msgs, _ = drain(c)
    assert _appends(msgs) == []
    c.step(AppendEntriesResponse(1, C, A, True, last))  # C too: nothing new either
    assert _appends(drain(c)[0]) == []
    c.tick()
    notices = _appends(drain(c)[0])
    assert [m.receiver for m in notices] == [B, C]  # once each, in a fixed order
    assert all(not m.entries and m.commit == last for m in notices)
    c.tick()
    assert _appends(drain(c)[0]) == []  # told: no longer due


def test_the_next_append_carries_the_commit_index_instead() -> None:
    c = _leader()
    last = _propose(c)
    c.step(AppendEntriesResponse(1, B, A, True, last))
    drain(c)
    c.propose([b"y"])
    fresh = _appends(drain(c)[0])
    assert {m.receiver for m in fresh} == {B, C}
    assert all(m.entries and m.commit == last for m in fresh)
    c.tick()
    assert _appends(drain(c)[0]) == []


def test_a_heartbeat_replaces_the_notice_only_if_it_carries_the_commit_index() -> None:
    """A heartbeat carries min(match, commit): C has not acknowledged the last entry, so
    its heartbeat is one behind and the notice still goes; B's heartbeat is enough."""
    c = _leader(heartbeat_ticks=1)
    last = _propose(c)
    c.step(AppendEntriesResponse(1, B, A, True, last))
    assert _appends(drain(c)[0]) == []
    c.tick()
    msgs, _ = drain(c)
    beats = {m.receiver: m.commit for m in msgs if isinstance(m, Heartbeat)}
    assert beats == {B: last, C: last - 1}
    notices = _appends(msgs)
    assert [(m.receiver, m.commit, m.entries) for m in notices] == [(C, last, ())]


def test_a_follower_that_falls_back_to_probing_is_no_longer_due() -> None:
    c = _leader()
    last = _propose(c)
    c.step(AppendEntriesResponse(1, B, A, True, last))
    drain(c)
    # C rejects (say it lost its log): it goes back to probing, and the probe it is
    # sent carries the commit index itself.
    c.step(AppendEntriesResponse(1, C, A, False, last, 1, 0))
    probes = _appends(drain(c)[0])
    assert [(m.receiver, m.commit) for m in probes] == [(C, last)]
    c.tick()
    assert [m.receiver for m in _appends(drain(c)[0])] == [B]


def test_a_paused_follower_stays_due_until_it_can_be_sent_to() -> None:
    c = _leader(max_inflight_msgs=1)
    last = _propose(c)
    c.step(AppendEntriesResponse(1, B, A, True, last))
    drain(c)
    c.propose([b"y"])  # B is sent entry last + 1 (carrying the commit index), C is full
    fresh = _appends(drain(c)[0])
    assert [m.receiver for m in fresh] == [B]
    c.tick()
    assert _appends(drain(c)[0]) == []  # C is paused: no room for the notice
    c.step(AppendEntriesResponse(1, C, A, True, last))  # frees C's window
    msgs = _appends(drain(c)[0])
    assert [(m.receiver, len(m.entries), m.commit) for m in msgs] == [(C, 1, last)]


def test_a_deposed_leader_sends_no_notices() -> None:
    c = _leader()
    last = _propose(c)
    c.step(AppendEntriesResponse(1, B, A, True, last))
    drain(c)
    c.step(AppendEntries(2, B, A, last, 1, (), last))  # a leader of a later term
    assert c.role == Role.FOLLOWER
    drain(c)
    c.tick()
    assert _appends(drain(c)[0]) == []


def test_followers_learn_a_commit_within_one_tick() -> None:
    cl = cluster(3, lazy_commit_notices=True)
    elect(cl, "n1")
    cl.run(2)
    leader = cl.core("n1")
    cl.propose("n1", [b"x"])
    cl.stabilize()
    commit = leader.commit_index
    assert commit == leader.last_index
    assert any(cl.core(m).commit_index < commit for m in ("n2", "n3"))  # not yet told
    cl.tick(["n1"])
    assert all(cl.core(m).commit_index == commit for m in ("n2", "n3"))
    assert all(n.sm.index == commit for n in cl.live())


@pytest.mark.parametrize("lazy", [False, True])
def test_a_stream_of_commands_needs_half_the_messages_with_the_option(lazy: bool) -> None:
    """One command per round trip: each costs an append and its acknowledgement per
    follower, and without the option a commit notice and its acknowledgement too; with
    it, each append carries the previous command's commit index."""
    cl = cluster(3, lazy_commit_notices=lazy, heartbeat_ticks=5)
    elect(cl, "n1")
    cl.run(1)
    before = cl.sent
    for k in range(20):
        cl.propose("n1", [b"%d" % k])
        cl.stabilize()
    assert cl.sent - before == 20 * 2 * (2 if lazy else 4)
    cl.tick(["n1"])
    leader = cl.core("n1")
    assert all(n.sm.index == leader.last_index for n in cl.live())
