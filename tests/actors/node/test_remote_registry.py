"""The registry in its own process: RaftActions and ServerActions cross ZeroMQ.

Three members' consensus and session actors run in this process; their three client
registries run in child processes (``python -m actors.registry_node``). A RaftClient
talking to the registries' client addresses must not notice.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.client import RaftClient
from actors.config import CURVE_KEYS, MemberAddress, NodeConfig
from actors.node import Node, RegistryLink
from actors.transport import CurveClient, curve_available
from examples.counter import CounterStateMachine, get, increment
from protocol.ids import MemberId
from tests.actors.node.cluster import free_port, wait_for
from tests.security.keys import make_keys


def _toml(cfg: NodeConfig) -> str:
    lines = [f'member_id = "{cfg.member_id}"', 'storage = "memory"']
    for name in CURVE_KEYS:
        if getattr(cfg, name) is not None:
            lines.append(f'{name} = "{getattr(cfg, name)}"')
    for m, a in cfg.members.items():
        lines += [f"[members.{m}]", f'peer = "{a.peer}"', f'client = "{a.client}"']
    return "\n".join(lines) + "\n"


@pytest.fixture(params=["plain", "curve"])
def split_cluster(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[list[Node], list[str], CurveClient | None]]:
    """Three split members; with ``curve`` the node-registry links, the peer ports and
    the client ports all require CURVE keys."""
    members = {
        MemberId(f"n{i}"): MemberAddress(
            f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
        )
        for i in (1, 2, 3)
    }
    links = {
        m: (f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}") for m in members
    }
    configs = {m: NodeConfig(m, members, storage="memory") for m in members}
    curve: CurveClient | None = None
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
            )
            for m, cfg in configs.items()
        }
        curve = keys.client()
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
        yield nodes, [a.client for a in members.values()], curve
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


def test_a_registry_in_its_own_process_serves_clients(
    split_cluster: tuple[list[Node], list[str], CurveClient | None],
) -> None:
    nodes, client_addresses, curve = split_cluster
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
