"""``raft-actors node`` exits with status 1 once its node has failed (a transport's I/O
thread died), after stopping it, instead of running on as a half-dead member."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

import actors.node
from actors.cli import main
from actors.node import Node
from tests.actors.node.cluster import tcp_endpoints

pytestmark = pytest.mark.timeout(60)


def test_the_node_command_exits_1_when_its_node_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[Node] = []

    class FailingNode(Node):
        def start(self) -> Node:
            super().start()
            started.append(self)
            # What the peer loop's on_failure does when the loop dies (its own path is
            # tests/actors/node/test_transport_failure.py), from another thread.
            threading.Thread(
                target=self._transport_failed, args=("peer", RuntimeError("injected"))
            ).start()
            return self

    monkeypatch.setattr(actors.node, "Node", FailingNode)
    toml = tmp_path / "n1.toml"
    peer, client = tcp_endpoints(2)
    toml.write_text(
        'member_id = "n1"\nstorage = "memory"\n'
        f'[members.n1]\npeer = "{peer}"\nclient = "{client}"\n'
    )
    assert main(["node", "--config", str(toml), "--app", "counter"]) == 1
    assert len(started) == 1
    node: Any = started[0]
    assert node.failed.is_set() and "injected" in node.failure
    assert node._state == "stopped"
