"""A member added at run time stays reachable from members restarted with their
original config files (which do not list it): they keep what they learned."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import actors.address_book as address_book
from actors.address_book import MEMBERS_FILE
from actors.config import MemberAddress
from actors.node import Node, NodeError
from examples.counter import CounterStateMachine, increment
from protocol.ids import MemberId
from tests.actors.node.cluster import WAIT
from tests.actors.node.system import join_member, system_cluster

pytestmark = pytest.mark.timeout(90)

N1, N4 = MemberId("n1"), MemberId("n4")


@pytest.mark.parametrize("transport", ["memory", "zmq"])
def test_a_restarted_leader_replicates_to_a_member_added_after_its_config(
    tmp_path: Path, transport: str
) -> None:
    with system_cluster(data_dir=tmp_path, transport=transport) as cluster:
        cluster.leader()
        join_member(cluster, 4, cluster.connection_factory())
        assert N4 not in cluster.configs[N1].members
        assert N4 in (tmp_path / N1 / MEMBERS_FILE).read_text()

        cluster.stop(N1)
        cluster.start(N1)  # its config file, as written before n4 existed
        leader = cluster.leader()
        if leader.member_id != N1:
            answer = leader.transfer_leadership(N1)
            assert answer.ok, answer
        assert cluster.leader().member_id == N1

        client = cluster.client()
        for _ in range(5):
            client.call(increment(1), timeout=WAIT)
        # n4 applies what only n1 can send it now.
        cluster.wait_converged()
        assert set(cluster.replica_counters().values()) == {5}
        assert cluster.replica_counters()[N4] == 5


def test_a_learned_address_that_cannot_be_saved_is_an_error_but_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(path: Path, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    with system_cluster(data_dir=tmp_path) as cluster:
        node = cluster.leader()
        monkeypatch.setattr(address_book, "atomic_write", full_disk)
        with pytest.raises(NodeError, match=r"could not save the address of n9.*No space left"):
            node.learn_member(MemberId("n9"), "inmem://peer-9", "inmem://client-9")
        assert node.status().role == "leader"
        assert not (tmp_path / node.member_id / MEMBERS_FILE).exists()
        # used until the restart all the same
        peers = node._peers
        assert peers is not None and peers.peers()[MemberId("n9")] == "inmem://peer-9"


def test_a_node_with_a_damaged_address_file_refuses_to_start(tmp_path: Path) -> None:
    (tmp_path / N1).mkdir()
    (tmp_path / N1 / MEMBERS_FILE).write_text('{"format": 1, "members": {"n4": 7}}')
    refused = r"refusing to start: .*MEMBERS is not a member address"
    with pytest.raises(NodeError, match=refused), system_cluster(data_dir=tmp_path):
        pass


def test_a_member_without_an_address_is_named_in_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with system_cluster() as cluster:
        leader = cluster.leader()
        members = {
            m: MemberAddress(n.peer_address, n.client_address) for m, n in cluster.nodes.items()
        }
        members[N4] = MemberAddress("inmem://peer-4", "inmem://client-4")
        config = cluster.configs[leader.member_id].with_changes(member_id=N4, members=members)
        cluster.nodes[N4] = Node(config, CounterStateMachine(), hub=cluster.hub, join=True).start()
        with caplog.at_level(logging.WARNING, logger="actors.consensus"):
            # In-process on the leader only: the followers are never told n4's address.
            answer = leader.add_member(N4, "inmem://peer-4", "inmem://client-4")
            assert answer.ok, answer
            cluster.wait_converged()
        warned = {
            r.getMessage().split("]")[0].lstrip("[")
            for r in caplog.records
            if "member n4 is in the cluster's configuration, but this node has no address"
            in r.getMessage()
        }
        assert warned == set(cluster.nodes) - {leader.member_id, N4}


@pytest.mark.parametrize("bad", ["127.0.0.1:9001", "tcp:/127.0.0.1:9001", "tcp://"])
def test_an_address_that_is_no_endpoint_is_refused_and_not_kept(tmp_path: Path, bad: str) -> None:
    with system_cluster(data_dir=tmp_path) as cluster:
        node = cluster.leader()
        with pytest.raises(NodeError, match="not an endpoint such as tcp://host:port"):
            node.learn_member(MemberId("n9"), bad, "tcp://127.0.0.1:9002")
        answer = node.add_member(MemberId("n9"), "tcp://127.0.0.1:9001", bad)
        assert not answer.ok and "not an endpoint" in answer.error
        assert not (tmp_path / node.member_id / MEMBERS_FILE).exists()
        assert node.status().voters == tuple(sorted(cluster.nodes))
