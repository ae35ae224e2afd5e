"""Replacing a member during a counter workload: remove it, then add a node with an
empty data directory, under the same member id or a new one. No acknowledged command
is lost or applied twice, and every node ends with the same state."""

from __future__ import annotations

import pytest

from actors.client import remove_member
from protocol.ids import MemberId
from tests.actors.node.system import (
    FAST_CLIENT,
    Workload,
    check_exactly_once,
    join_member,
    system_cluster,
)

pytestmark = pytest.mark.timeout(120)


def test_replace_a_member_under_the_same_id_and_under_a_new_one() -> None:
    with system_cluster() as cluster:
        cluster.leader()
        factory = cluster.connection_factory()
        work = Workload(cluster, window=10, config=FAST_CLIENT).start()
        try:
            work.wait_for_progress(30)
            for old, index in ((MemberId("n3"), 3), (MemberId("n2"), 4)):
                addresses = [n.client_address for n in cluster.nodes.values()]
                if cluster.leader().member_id == old:
                    other = next(m for m in cluster.nodes if m != old)
                    assert cluster.leader().transfer_leadership(other).ok
                answer = remove_member(addresses, old, connection_factory=factory, timeout=40)
                assert answer.ok, answer
                removed = cluster.nodes[old]
                # The old node learns it is out (and would refuse to restart on its data).
                assert removed.removal.event.wait(20), f"{old} was not told"
                cluster.stop(old)
                work.wait_for_progress(work.succeeded + 20)
                fresh = join_member(cluster, index, factory)  # empty (in-memory) storage
                assert not fresh.removal.is_set
                work.wait_for_progress(work.succeeded + 30)
            voters = set(cluster.leader().status().voters)
            assert voters == {MemberId("n1"), MemberId("n3"), MemberId("n4")}
        finally:
            work.stop()
        check_exactly_once(cluster, work)
