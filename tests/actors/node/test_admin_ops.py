"""Operating a running cluster: leadership transfer (in-process and over the client
port) during a counter workload; no command lost or applied twice."""

from __future__ import annotations

import pytest

from actors.client import AdminError, admin_request, remove_member
from protocol.admin import AdminOp
from protocol.ids import MemberId
from tests.actors.node.cluster import wait_for
from tests.actors.node.system import (
    FAST_CLIENT,
    Workload,
    check_exactly_once,
    join_member,
    system_cluster,
)

pytestmark = pytest.mark.timeout(90)


def test_transfer_leadership_twice_during_a_workload() -> None:
    with system_cluster() as cluster:
        first = cluster.leader()
        work = Workload(cluster, window=10, config=FAST_CLIENT).start()
        try:
            work.wait_for_progress(50)
            # 1: in-process, to a named voter.
            target = sorted(m for m in cluster.nodes if m != first.member_id)[0]
            response = first.transfer_leadership(target)
            assert response.ok, response
            assert cluster.leader().member_id == target
            work.wait_for_progress(work.succeeded + 50)
            # 2: over the client port, starting at a follower, to any voter.
            follower = next(n for m, n in cluster.nodes.items() if m != target)
            addresses = [follower.client_address]
            answer = admin_request(
                addresses,
                AdminOp.TRANSFER_LEADER,
                connection_factory=cluster.connection_factory(),
                timeout=20,
            )
            assert answer.ok
            assert cluster.leader().member_id != target
            work.wait_for_progress(work.succeeded + 50)
        finally:
            work.stop()
        check_exactly_once(cluster, work)


def test_transfer_refusals_are_typed() -> None:
    with system_cluster() as cluster:
        leader = cluster.leader()
        follower = next(n for n in cluster.nodes.values() if n is not leader)
        # A follower names the leader instead of transferring.
        answer = follower.transfer_leadership()
        assert not answer.ok
        assert answer.leader_hint == leader.client_address
        # A target that is no voter is refused for good, not retried forever.
        with pytest.raises(AdminError, match="not another voter"):
            admin_request(
                [leader.client_address],
                AdminOp.TRANSFER_LEADER,
                MemberId("nobody"),
                connection_factory=cluster.connection_factory(),
                timeout=10,
            )
        assert wait_for(lambda: leader.status().role == "leader")


def test_grow_to_five_and_shrink_back_during_a_workload() -> None:
    with system_cluster() as cluster:
        cluster.leader()
        factory = cluster.connection_factory()
        work = Workload(cluster, window=10, config=FAST_CLIENT).start()
        try:
            work.wait_for_progress(30)
            for index in (4, 5):
                join_member(cluster, index, factory)
                work.wait_for_progress(work.succeeded + 30)
            voters = set(cluster.leader().status().voters)
            assert voters == {MemberId(f"n{i}") for i in range(1, 6)}
            # Shrink: first the leader itself (it hands leadership away first), then n4.
            for step in range(2):
                leader = cluster.leader()
                victim = leader.member_id if step == 0 else MemberId("n4")
                addresses = [n.client_address for n in cluster.nodes.values()]
                answer = remove_member(addresses, victim, connection_factory=factory, timeout=40)
                assert answer.ok, answer
                # Ask the others only: the victim, once told it was removed, names no
                # leader any more, so "every node agrees" would never hold.
                others = [n for m, n in cluster.nodes.items() if m != victim]
                wait_for(
                    lambda v=victim, o=others: any(
                        n.status().role == "leader" and v not in n.status().voters for n in o
                    ),
                    what="the removal committed",
                )
                cluster.stop(victim)
                work.wait_for_progress(work.succeeded + 30)
        finally:
            work.stop()
        assert len(cluster.leader().status().voters) == 3
        check_exactly_once(cluster, work)


def test_concurrent_and_unreachable_changes_are_refused_without_blocking_writes() -> None:
    with system_cluster() as cluster:
        leader = cluster.leader()
        ghost = MemberId("ghost")
        # Nobody listens at the ghost's addresses: it never catches up. A fresh leader
        # refuses changes ("change in progress") until its own configuration entry
        # commits, so ask until the ghost's add is the operation in flight.

        def ghost_in_flight() -> bool:
            first = leader.add_member(ghost, "inmem://nowhere", "inmem://nowhere-c", timeout=0.5)
            assert not first.ok and first.retryable, first
            return ghost in leader.status().learners

        wait_for(ghost_in_flight, what="the ghost's add in flight")
        second = leader.add_member(MemberId("n9"), "inmem://x", "inmem://y", timeout=5)
        assert not second.ok and second.retryable
        assert "in flight" in second.error
        client = cluster.client(config=FAST_CLIENT)
        from examples.counter import increment

        assert client.submit(increment(1), timeout=10).result(timeout=12) == 1
        assert ghost in leader.status().learners
        # The stuck learner is cleared by removing it once the add has given up.
        cleared = wait_for(
            lambda: (r := leader.remove_member(ghost, timeout=10)).ok and r, what="removal"
        )
        assert cleared.ok
        assert ghost not in leader.status().learners
        assert client.submit(increment(1), timeout=10).result(timeout=12) == 2
