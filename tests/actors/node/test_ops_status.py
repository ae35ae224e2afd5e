"""Operators' status: the leader's last contact with each follower and uptime, over
the wire and in ``cluster status --members``; the promotion lag setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.cli_cluster import format_remote_status
from actors.client import fetch_status
from actors.config import load_config
from actors.node import Node
from examples.counter import CounterStateMachine
from tests.actors.node.cluster import wait_for
from tests.actors.node.system import system_cluster

pytestmark = pytest.mark.timeout(60)


def test_leader_reports_last_contact_with_each_follower() -> None:
    with system_cluster(transport="zmq") as cluster:
        leader = cluster.leader()
        followers = sorted(m for m in cluster.nodes if m != leader.member_id)

        def fresh_contact() -> dict[str, int] | None:
            contact = dict(leader.status().last_contact_ms)
            ok = sorted(contact) == followers and all(0 <= ms < 1000 for ms in contact.values())
            return contact if ok else None

        contact = wait_for(fresh_contact, what="recent contact with every follower")
        follower = cluster.nodes[followers[0]]
        assert follower.status().last_contact_ms == ()
        # Over the wire, as `cluster status --members` shows it.
        statuses = {
            n.client_address: fetch_status(n.client_address, timeout=10)
            for n in cluster.nodes.values()
        }
        assert all(s.uptime_ms > 0 for s in statuses.values())
        lines = format_remote_status(dict(statuses))
        assert lines[0].split()[-2:] == ["UPTIME", "CONTACT"]
        row = next(line for line in lines[1:] if line.split()[1] == leader.member_id)
        cell = row.split()[-1]
        assert sorted(part.split(":")[0] for part in cell.split(",")) == followers
        assert all(part.split(":")[1].endswith("ms") for part in cell.split(","))
        assert contact.keys() == set(followers)
        # A follower that stops answering falls behind in the leader's view.
        cluster.stop(followers[1])
        assert wait_for(lambda: dict(leader.status().last_contact_ms)[followers[1]] > 300)


def test_promotion_lag_is_a_config_key(tmp_path: Path) -> None:
    toml = tmp_path / "n1.toml"
    toml.write_text(
        'member_id = "n1"\nstorage = "memory"\npromotion_lag_entries = 500\n'
        '[members.n1]\npeer = "tcp://127.0.0.1:1"\nclient = "tcp://127.0.0.1:2"\n'
    )
    config = load_config(toml)
    assert config.promotion_lag_entries == 500
    node = Node(config, CounterStateMachine())
    assert node._raft_options().promotion_lag == 500
