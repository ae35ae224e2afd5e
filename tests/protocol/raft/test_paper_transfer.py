"""Leadership transfer, Raft dissertation §3.10.

The leader stops accepting proposals, brings the target's log up to date, then sends
it TimeoutNow; the target starts an election at once (voters honour it even while they
still hear from the old leader) and wins. A transfer that does not complete within an
election timeout is abandoned.
"""

from __future__ import annotations

from protocol.ids import MemberId
from protocol.raft import Refusal, Refused, TimeoutNow
from tests.protocol.raft.support import cluster, elect


def test_transfer_to_an_up_to_date_follower() -> None:
    cl = cluster(3)
    elect(cl, "n1")
    term = cl.core("n1").term
    assert cl.transfer("n1", "n2") is None
    cl.stabilize()
    assert cl.leader() == "n2" and cl.core("n2").term == term + 1


def test_transfer_catches_a_lagging_target_up_first() -> None:
    cl = cluster(3)
    elect(cl, "n1")
    cl.isolate("n3")
    for i in range(10):
        cl.propose("n1", [b"%d" % i])
    cl.stabilize()
    sent: list[object] = []
    original = cl.send

    def spy(msgs: list) -> None:  # type: ignore[type-arg]
        sent.extend(m for m in msgs if isinstance(m, TimeoutNow))
        original(msgs)

    cl.send = spy  # type: ignore[method-assign]
    cl.transfer("n1", "n3")
    assert sent == []  # n3 lags: no TimeoutNow yet
    refused = cl.propose("n1", [b"during"])
    assert isinstance(refused, Refused) and refused.reason == Refusal.TRANSFERRING
    cl.heal()
    for _ in range(5):
        cl.tick()
    cl.stabilize()
    assert len(sent) == 1 and cl.leader() == "n3"
    assert cl.core("n3").log.last_index >= 11


def test_a_transfer_to_a_dead_target_is_abandoned() -> None:
    cl = cluster(3)
    elect(cl, "n1")
    cl.crash("n3")
    cl.propose("n1", [b"x"])
    cl.transfer("n1", "n3")
    assert isinstance(cl.propose("n1", [b"y"]), Refused)
    for _ in range(12):
        cl.tick()
    assert cl.leader() == "n1"
    assert not isinstance(cl.propose("n1", [b"z"]), Refused)


def test_invalid_transfers_are_refused() -> None:
    cl = cluster(3)
    elect(cl, "n1")
    r = cl.transfer("n1", "n1")
    assert isinstance(r, Refused) and r.reason == Refusal.INVALID
    assert cl.transfer("n2", "n3") == Refused(Refusal.NOT_LEADER, MemberId("n1"))
    cl.isolate("n2")
    assert cl.transfer("n1", "n2") is None
    assert cl.transfer("n1", "n2") is None  # already in progress
