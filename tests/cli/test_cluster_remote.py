"""``cluster status --members`` and ``cluster transfer-leader`` against nodes reachable
only by address (an in-process cluster over ZeroMQ, no cluster directory)."""

from __future__ import annotations

import pytest

from actors.cli import main
from actors.cli_cluster import format_remote_status
from tests.actors.node.system import system_cluster

pytestmark = pytest.mark.timeout(90)


def test_status_and_transfer_by_address(capsys: pytest.CaptureFixture[str]) -> None:
    with system_cluster(transport="zmq") as cluster:
        leader = cluster.leader()
        addresses = ",".join(n.client_address for n in cluster.nodes.values())
        assert main(["cluster", "status", "--members", addresses]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0].split()[:3] == ["ADDRESS", "MEMBER", "ROLE"]
        rows = {line.split()[1]: line.split() for line in out[1:4]}
        assert set(rows) == set(cluster.nodes)
        assert rows[leader.member_id][2] == "leader"
        assert all(r[4] == leader.member_id for r in rows.values())
        assert all(r[8] == ",".join(sorted(cluster.nodes)) for r in rows.values())
        assert out[-1].startswith(f"leader {leader.member_id} ")

        target = next(m for m in sorted(cluster.nodes) if m != leader.member_id)
        assert main(["cluster", "transfer-leader", target, "--members", addresses]) == 0
        assert f"leadership transferred to {target}" in capsys.readouterr().out
        assert cluster.leader().member_id == target

        assert main(["cluster", "transfer-leader", "nobody", "--members", addresses]) == 1
        assert "not another voter" in capsys.readouterr().err


def test_unreachable_addresses_are_rows() -> None:
    lines = format_remote_status({"tcp://127.0.0.1:1": None})
    assert lines[1].split()[:3] == ["tcp://127.0.0.1:1", "-", "unreachable"]


def test_status_with_nobody_answering_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.actors.node.cluster import tcp_endpoints

    (address,) = tcp_endpoints(1)
    assert main(["cluster", "status", "--members", address, "--timeout", "0.3"]) == 1
    assert "no leader; 0/1 addresses answered" in capsys.readouterr().out


def test_add_and_remove_by_address(capsys: pytest.CaptureFixture[str]) -> None:
    import dataclasses

    from actors.config import MemberAddress
    from actors.node import Node
    from examples.counter import CounterStateMachine
    from protocol.ids import MemberId
    from tests.actors.node.cluster import tcp_endpoints

    with system_cluster(transport="zmq") as cluster:
        cluster.leader()
        addresses = ",".join(n.client_address for n in cluster.nodes.values())
        new = MemberId("n4")
        peer, client = tcp_endpoints(2)
        members = {
            m: MemberAddress(n.peer_address, n.client_address) for m, n in cluster.nodes.items()
        }
        members[new] = MemberAddress(peer, client)
        config = dataclasses.replace(
            cluster.configs[MemberId("n1")], member_id=new, members=members
        )
        cluster.nodes[new] = Node(config, CounterStateMachine(), join=True).start()
        argv = ["cluster", "add", "n4", "--peer", peer, "--client", client, "--members", addresses]
        assert main(argv) == 0
        assert "n4 is a voting member" in capsys.readouterr().out
        assert new in cluster.leader().status().voters
        assert main(["cluster", "remove", "n4", "--members", addresses]) == 0
        assert "removed n4" in capsys.readouterr().out
        cluster.stop(new)  # first: once told it was removed, n4 names no leader
        assert new not in cluster.leader().status().voters


def test_node_join_asks_the_cluster_to_add_it() -> None:
    import dataclasses
    import threading

    from actors.cli_node import _ask_to_join
    from actors.config import MemberAddress
    from actors.node import Node
    from examples.counter import CounterStateMachine
    from protocol.ids import MemberId
    from tests.actors.node.cluster import tcp_endpoints

    with system_cluster(transport="zmq") as cluster:
        leader = cluster.leader()
        new = MemberId("n5")
        members = {
            m: MemberAddress(n.peer_address, n.client_address) for m, n in cluster.nodes.items()
        }
        members[new] = MemberAddress(*tcp_endpoints(2))
        config = dataclasses.replace(
            cluster.configs[MemberId("n1")], member_id=new, members=members
        )
        node = cluster.nodes[new] = Node(config, CounterStateMachine(), join=True).start()
        stop = threading.Event()
        joiner = threading.Thread(target=_ask_to_join, args=(node, leader.client_address, stop))
        joiner.start()
        try:
            joiner.join(60)
            assert not joiner.is_alive()
        finally:
            stop.set()
            joiner.join(10)
        assert new in cluster.leader().status().voters
        assert node.status().voters == cluster.leader().status().voters
