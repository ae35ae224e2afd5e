"""Operating a running cluster: leadership transfer (in-process and over the client
port) during a counter workload; no command lost or applied twice."""

from __future__ import annotations

import pytest

from actors.client import AdminError, admin_request
from protocol.admin import AdminOp
from protocol.ids import MemberId
from tests.actors.node.cluster import wait_for
from tests.actors.node.system import FAST_CLIENT, Workload, check_exactly_once, system_cluster

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
