"""The registry in its own process: RaftActions and ServerActions cross ZeroMQ.

Three members' consensus and session actors run in this process; their three client
registries run in child processes (``python -m actors.registry_node``). A RaftClient
talking to the registries' client addresses must not notice.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from actors.client import RaftClient
from actors.config import CURVE_KEYS, MemberAddress, NodeConfig
from actors.node import Node, RegistryLink
from actors.transport import CurveClient, curve_available
from examples.counter import CounterStateMachine, get, increment
from protocol.ids import MemberId
from tests.actors.node.cluster import tcp_endpoints, wait_for
from tests.security.keys import make_keys


def _toml(cfg: NodeConfig) -> str:
    lines = [f'member_id = "{cfg.member_id}"', 'storage = "memory"']
    for name in CURVE_KEYS:
        if getattr(cfg, name) is not None:
            lines.append(f'{name} = "{getattr(cfg, name)}"')
    for m, a in cfg.members.items():
        lines += [f"[members.{m}]", f'peer = "{a.peer}"', f'client = "{a.client}"']
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class SplitCluster:
    nodes: list[Node]
    client_addresses: list[str]
    #: The client's and an admin's CURVE settings (None: plain)
    curve: CurveClient | None
    admin_curve: CurveClient | None


@pytest.fixture(params=["plain", "curve"])
def split_cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[SplitCluster]:
    """Three split members; with ``curve`` the node-registry links, the peer ports and
    the client ports all require CURVE keys."""
    ends = iter(tcp_endpoints(12))
    members = {MemberId(f"n{i}"): MemberAddress(next(ends), next(ends)) for i in (1, 2, 3)}
    links = {m: (next(ends), next(ends)) for m in members}
    configs = {m: NodeConfig(m, members, storage="memory") for m in members}
    curve: CurveClient | None = None
    admin_curve: CurveClient | None = None
    if request.param == "curve":
        if not curve_available():
            pytest.skip("libzmq without CURVE")
        keys = make_keys(tmp_path / "keys")
        configs = {
            m: cfg.with_changes(
                curve_server_key=keys.server,
                curve_node_key=keys.root / "peers" / f"{m}.key_secret",
                curve_peer_keys=keys.root / "peers",
                curve_client_keys=keys.root / "clients",
                curve_admin_keys=keys.root / "admins",
            )
            for m, cfg in configs.items()
        }
        curve = keys.client()
        admin_curve = keys.client("admins", "admin")
    procs: list[subprocess.Popen[bytes]] = []
    nodes: list[Node] = []
    try:
        for m, cfg in configs.items():
            path = tmp_path / f"{m}.toml"
            path.write_text(_toml(cfg))
            core_link, registry_link = links[m]
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "actors.registry_node",
                        "--config",
                        str(path),
                        "--link-bind",
                        registry_link,
                        "--core",
                        core_link,
                    ],
                    stderr=(tmp_path / f"{m}.registry.log").open("wb"),
                )
            )
        for m, cfg in configs.items():
            core_link, registry_link = links[m]
            node = Node(
                cfg, CounterStateMachine(), registry_link=RegistryLink(core_link, registry_link)
            )
            nodes.append(node.start())
        yield SplitCluster(nodes, [a.client for a in members.values()], curve, admin_curve)
    finally:
        for node in nodes:
            node.stop()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def test_a_registry_in_its_own_process_serves_clients(split_cluster: SplitCluster) -> None:
    nodes, client_addresses = split_cluster.nodes, split_cluster.client_addresses
    curve = split_cluster.curve
    # With CURVE the node's end of the link checks keys too (the registry's end reads
    # the same config; a mismatch would leave the link silent and this test stuck).
    assert all((getattr(n._link, "_zap", None) is not None) == (curve is not None) for n in nodes)
    wait_for(lambda: any(n.status().role == "leader" for n in nodes), what="a leader")
    client = RaftClient(client_addresses, curve=curve).connect(timeout=20)
    try:
        for i in range(1, 21):
            assert client.call(increment(1), timeout=10) == i
        assert client.query(get(), timeout=10) == 20
        applied = max(n.status().applied_index for n in nodes)
        wait_for(lambda: all(n.status().applied_index >= applied for n in nodes), what="replicas")
        assert [n.status().sessions for n in nodes] == [1, 1, 1]
    finally:
        client.close()


def test_status_and_admin_through_a_registry_in_its_own_process(
    split_cluster: SplitCluster,
) -> None:
    from actors.client import AdminError, admin_request, fetch_status
    from protocol.admin import AdminOp

    nodes, client_addresses = split_cluster.nodes, split_cluster.client_addresses
    curve = split_cluster.curve
    wait_for(lambda: any(n.status().role == "leader" for n in nodes), what="a leader")
    client = RaftClient(client_addresses, curve=curve).connect(timeout=20)
    try:
        for i in range(1, 6):
            assert client.call(increment(1), timeout=10) == i
    finally:
        client.close()
    leader = next(n for n in nodes if n.status().role == "leader")

    def truthful() -> bool:
        statuses = [fetch_status(a, timeout=5, curve=curve) for a in client_addresses]
        return (
            all(
                s.commit_index >= 5 and s.applied_index >= 5 and len(s.voters) == 3
                for s in statuses
            )
            and sum(s.role == "leader" for s in statuses) == 1
        )

    # The registry processes answer with their node's real status (pushed over the link).
    assert wait_for(truthful, what="truthful status from every registry process")
    index = client_addresses.index(leader.client_address)
    assert fetch_status(client_addresses[index], timeout=5, curve=curve).member_id == (
        leader.member_id
    )
    if curve is not None:
        # The registry process checks the key before it forwards: a client key may not.
        with pytest.raises(AdminError, match="admin key"):
            admin_request(client_addresses, AdminOp.TRANSFER_LEADER, timeout=20, curve=curve)
        assert leader.status().role == "leader"
    # An admin request sent to a registry process is carried out by its node.
    answer = admin_request(
        client_addresses, AdminOp.TRANSFER_LEADER, timeout=20, curve=split_cluster.admin_curve
    )
    assert answer.ok, answer
    assert wait_for(lambda: leader.status().role == "follower", what="leadership moved")
    # A registry whose node is gone does not keep reporting the node's last status.
    stopped = nodes[0]
    address = client_addresses[0]
    stopped.stop()
    assert wait_for(
        lambda: fetch_status(address, timeout=5, curve=curve).role == "unreachable",
        what="the registry process noticing its node is gone",
    )
