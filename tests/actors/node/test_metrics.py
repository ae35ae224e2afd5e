"""The metrics endpoint: scraped over HTTP during a workload, its numbers move."""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.config import ConfigError, NodeConfig, config_from_dict
from actors.metrics import LATENCY_BUCKETS, Histogram, NodeMetrics
from actors.node import Node, NodeError
from examples.counter import CounterStateMachine
from protocol.ids import MemberId
from protocol.raft.types import Role
from tests.actors.node.cluster import tcp_endpoints
from tests.actors.node.system import FAST_CLIENT, Workload, system_cluster

pytestmark = pytest.mark.timeout(90)

prometheus_parser = pytest.importorskip("prometheus_client.parser")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """Every sample at ``url``, keyed by (name, sorted labels without ``member``)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    out: Samples = {}
    for family in prometheus_parser.text_string_to_metric_families(text):
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "member"))
            out[(s.name, labels)] = s.value
    return out


@given(st.lists(st.floats(min_value=0, max_value=10, allow_nan=False), max_size=50))
def test_histogram_buckets_are_cumulative_and_count_everything(values: list[float]) -> None:
    h = Histogram(LATENCY_BUCKETS)
    for v in values:
        h.observe(v)
    pairs = h.cumulative()
    assert pairs[-1] == ("+Inf", float(len(values)))
    counts = [c for _, c in pairs]
    assert counts == sorted(counts)
    for le, c in pairs[:-1]:
        assert c == sum(1 for v in values if v <= float(le))
    assert h.count == len(values)
    assert h.sum == pytest.approx(sum(values))


def test_roles_count_elections() -> None:
    m = NodeMetrics()
    for role in (Role.PRE_CANDIDATE, Role.CANDIDATE, Role.CANDIDATE, Role.LEADER, Role.FOLLOWER):
        m.on_role(role)
    assert (m.elections_started, m.elections_won) == (2, 1)


def test_metrics_keys_in_toml() -> None:
    members = {"n1": {"peer": "tcp://127.0.0.1:1", "client": "tcp://127.0.0.1:2"}}
    raw = {"member_id": "n1", "members": members, "storage": "memory"}
    config = config_from_dict({**raw, "metrics_port": 9100, "metrics_host": "0.0.0.0"})
    assert (config.metrics_port, config.metrics_host) == (9100, "0.0.0.0")
    assert config_from_dict(raw).metrics_port is None
    with pytest.raises(ConfigError, match="metrics_port"):
        config_from_dict({**raw, "metrics_port": 70000})
    with pytest.raises(ConfigError, match="metrics_port"):
        config_from_dict({**raw, "metrics_port": "9100"})


def test_metrics_without_the_extra_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails
    member = MemberId("n1")
    config = NodeConfig(
        member,
        {member: _addresses()},
        storage="memory",
        metrics_port=0,
    )
    node = Node(config, CounterStateMachine())
    with pytest.raises(NodeError, match=r"raft-actors\[metrics\]"):
        node.start()
    assert node.metrics_url is None


def _addresses() -> object:
    from actors.config import MemberAddress

    return MemberAddress(*tcp_endpoints(2))


def test_endpoint_numbers_move_with_a_workload(tmp_path: Path) -> None:
    with system_cluster(transport="zmq", data_dir=tmp_path, metrics_port=0) as cluster:
        leader = cluster.leader()
        url = leader.metrics_url
        assert url is not None and url.startswith("http://127.0.0.1:")
        follower = next(n for n in cluster.nodes.values() if n is not leader)
        work = Workload(cluster, window=10, config=FAST_CLIENT).start()
        try:
            work.wait_for_progress(20)
            before = scrape(url)
            follower_before = scrape(str(follower.metrics_url))
            work.wait_for_progress(work.succeeded + 50)
        finally:
            work.stop()
        after = scrape(url)
        follower_after = scrape(str(follower.metrics_url))

    def moved(name: str, labels: tuple[tuple[str, str], ...] = ()) -> bool:
        return after[(name, labels)] > before[(name, labels)]

    assert after[("raft_role", (("role", "leader"),))] == 1.0
    assert after[("raft_role", (("role", "follower"),))] == 0.0
    assert after[("raft_term", ())] >= 1
    assert after[("raft_elections_won_total", ())] >= 1
    assert after[("raft_sessions", ())] >= 1
    # Whether ticks were skipped depends on the machine's load; the count is exported.
    assert 0 <= after[("raft_ticks_skipped_total", ())] <= leader.board.metrics.ticks_skipped
    for name in (
        "raft_proposals_total",
        "raft_commits_total",
        "raft_applies_total",
        "raft_commit_index",
        "raft_applied_index",
        "raft_last_log_index",
        "raft_log_entries",
        "raft_log_bytes",
        "raft_apply_seconds_count",
        "raft_fsync_seconds_count",
        "raft_append_batch_entries_count",
        "raft_uptime_seconds",
    ):
        assert moved(name), name
    for port in ("peer", "client"):
        assert moved("raft_frames_in_total", (("port", port),)), port
        assert moved("raft_frames_out_total", (("port", port),)), port
        assert after[("raft_frame_decode_errors_total", (("port", port),))] == 0
    assert (
        after[("raft_apply_seconds_bucket", (("le", "+Inf"),))]
        == after[("raft_apply_seconds_count", ())]
    )
    # A follower applies too, but proposes nothing and serves no client.
    assert follower_after[("raft_role", (("role", "follower"),))] == 1.0
    assert follower_after[("raft_applies_total", ())] > follower_before[("raft_applies_total", ())]
    assert follower_after[("raft_proposals_total", ())] == 0
    assert (
        follower_after[("raft_frames_in_total", (("port", "peer"),))]
        > follower_before[("raft_frames_in_total", (("port", "peer"),))]
    )
