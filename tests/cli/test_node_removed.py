"""``raft-actors node`` as an operator runs it: joins with ``--join``, serves metrics
on ``--metrics-port``, exits with a clear message once removed, and refuses to start
again with the removed member's data directory."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest

from actors.cli import main
from tests.actors.node.cluster import tcp_endpoints
from tests.actors.node.system import system_cluster
from tests.cli.cli_procs import start_cli, wait_for_line

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_a_joined_node_serves_metrics_then_exits_once_removed(tmp_path: Path) -> None:
    with system_cluster(transport="zmq") as cluster:
        leader = cluster.leader()
        addresses = ",".join(n.client_address for n in cluster.nodes.values())
        members = "".join(
            f'[members.{m}]\npeer = "{n.peer_address}"\nclient = "{n.client_address}"\n'
            for m, n in cluster.nodes.items()
        )
        peer, client = tcp_endpoints(2)
        toml = tmp_path / "n4.toml"
        toml.write_text(
            'member_id = "n4"\ndata_dir = "n4"\nelection_timeout_ms = 200\nheartbeat_ms = 40\n'
            f'{members}[members.n4]\npeer = "{peer}"\nclient = "{client}"\n'
        )
        argv = ["node", "--config", str(toml), "--app", "counter", "--join"]
        proc, lines = start_cli([*argv, leader.client_address, "--metrics-port", "0"])
        try:
            url_line = wait_for_line(lines, "metrics on http://127.0.0.1:")[-1]
            url = re.search(r"http://\S+", url_line)
            assert url is not None
            wait_for_line(lines, "n4 is a voting member")
            with urllib.request.urlopen(url.group(0), timeout=10) as response:
                text = response.read().decode()
            assert 'raft_role{member="n4",role="follower"} 1.0' in text
            assert main(["cluster", "remove", "n4", "--members", addresses]) == 0
            wait_for_line(lines, "n4 was removed from the cluster; exiting")
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        assert (tmp_path / "n4" / "REMOVED").exists()
        # Its old data directory still names it a voter: a restart is refused.
        again, again_lines = start_cli(["node", "--config", str(toml), "--app", "counter"])
        try:
            line = wait_for_line(again_lines, "refusing to start")[-1]
            assert "was removed from the cluster" in line
            assert again.wait(timeout=30) == 1
        finally:
            if again.poll() is None:
                again.kill()
            again.wait(timeout=10)
        assert "n4" not in leader.status().voters
