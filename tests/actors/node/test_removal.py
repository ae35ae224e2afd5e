"""A removed node learns it was removed, stops taking part, says so, and cannot come
back with its old data directory; the cluster is not disrupted by it."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.node import Node, NodeError
from actors.removal import REMOVED_FILE
from examples.counter import CounterStateMachine
from protocol.ids import MemberId
from tests.actors.node.cluster import wait_for
from tests.actors.node.system import FAST_CLIENT, Workload, check_exactly_once, system_cluster

pytestmark = pytest.mark.timeout(90)


def test_a_removed_follower_stops_and_cannot_restart_with_its_data(tmp_path: Path) -> None:
    with system_cluster(data_dir=tmp_path) as cluster:
        leader = cluster.leader()
        victim = next(n for n in cluster.nodes.values() if n is not leader)
        work = Workload(cluster, window=10, config=FAST_CLIENT).start()
        try:
            work.wait_for_progress(20)
            term = leader.status().term
            assert wait_for(lambda: leader.remove_member(victim.member_id, timeout=10).ok)
            # The leader answers the removed member's next message (its pre-vote, once
            # heartbeats stop) with a notice: it then takes no part, and says so.
            assert victim.removal.event.wait(20), "the removed node was not told"
            assert wait_for(lambda: victim.status().role == "removed")
            marker = tmp_path / victim.member_id / REMOVED_FILE
            assert "was removed from the cluster" in marker.read_text()
            work.wait_for_progress(work.succeeded + 30)
            # It did not disrupt the cluster: same leader, same term.
            assert leader.status().role == "leader" and leader.status().term == term
            assert victim.status().term <= term
        finally:
            work.stop()
        removed = victim.member_id
        cluster.stop(removed)
        check_exactly_once(cluster, work)
        # Restarting it with its old data directory (whose configuration still names
        # it a voter) is refused with a clear error.
        again = Node(cluster.configs[removed], CounterStateMachine(), hub=cluster.hub)
        with pytest.raises(NodeError, match="removed from the cluster"):
            again.start()


def test_a_removed_in_memory_node_is_told_again_after_a_restart() -> None:
    with system_cluster() as cluster:
        leader = cluster.leader()
        victim = MemberId("n3") if leader.member_id != MemberId("n3") else MemberId("n2")
        # Right after the election the leader's no-op may be uncommitted: a retryable
        # "change in progress" until it is.
        assert wait_for(lambda: leader.remove_member(victim, timeout=10).ok, what="removal")
        cluster.stop(victim)
        # Nothing persisted (memory storage): it starts with the founding configuration
        # and is told again at its first pre-vote, without disturbing the leader.
        term = leader.status().term
        cluster.start(victim)
        node = cluster.nodes[victim]
        assert node.removal.event.wait(20)
        assert wait_for(lambda: node.status().role == "removed")
        assert leader.status().role == "leader" and leader.status().term == term


def test_a_removed_node_added_back_while_running_takes_part_again(tmp_path: Path) -> None:
    with system_cluster(data_dir=tmp_path) as cluster:
        leader = cluster.leader()
        victim = next(n for n in cluster.nodes.values() if n is not leader)
        assert wait_for(lambda: leader.remove_member(victim.member_id, timeout=10).ok)
        assert victim.removal.event.wait(20)
        marker = tmp_path / victim.member_id / REMOVED_FILE
        assert marker.exists()
        # Added back under the same id (with its old, still running state): the leader
        # replicates to it again, so it is a follower again and the mark is cleared.
        answer = wait_for(
            lambda: (
                (
                    r := leader.add_member(
                        victim.member_id, victim.peer_address, victim.client_address, timeout=20
                    )
                ).ok
                and r
            ),
            what="re-add",
        )
        assert answer.ok
        assert wait_for(lambda: victim.status().role == "follower")
        assert not victim.removal.is_set and not marker.exists()
        assert victim.member_id in leader.status().voters
