"""The limits a hostile client cannot exceed, set in ``NodeConfig`` (and TOML), reach
the node's registry, and each one, when hit on a running node, gets a typed answer."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from actors.config import ConfigError, MemberAddress, NodeConfig, load_config
from actors.registry import registry_config
from examples.counter import CounterStateMachine
from protocol.ids import MemberId, RequestId
from protocol.wire import (
    ClientRequest,
    CreateSession,
    ErrorReason,
    Query,
    QueryError,
    RejectReason,
    RequestError,
    SessionCreated,
    SessionRejected,
)
from tests.actors.node.cluster import RawClient, local_cluster

LIMITS = {
    "max_sessions_per_connection": 2,
    "max_sessions": 50,
    "max_pending_requests_per_session": 3,
    "max_cached_responses_per_session": 4,
    "max_pending_queries_per_connection": 5,
    "max_payload_bytes": 1000,
}
R = RequestId


def test_defaults_are_sane_and_every_limit_reaches_the_registry() -> None:
    addresses = {MemberId("n1"): MemberAddress("inmem://p", "inmem://c")}
    default = registry_config(NodeConfig(MemberId("n1"), addresses, storage="memory"))
    assert default.max_sessions_per_connection == 8
    assert default.max_pending_requests_per_session == 1024
    assert default.max_cached_responses_per_session == 8192
    assert default.max_payload_bytes == 1024 * 1024
    custom = registry_config(NodeConfig(MemberId("n1"), addresses, storage="memory", **LIMITS))
    for name, value in LIMITS.items():
        assert getattr(custom, name) == value
    for name in LIMITS:
        with pytest.raises(ConfigError):
            NodeConfig(MemberId("n1"), addresses, storage="memory", **{name: 0})


def test_limits_load_from_toml(tmp_path: Path) -> None:
    lines = [f"{k} = {v}" for k, v in LIMITS.items()]
    (tmp_path / "n1.toml").write_text(
        'member_id = "n1"\nstorage = "memory"\n'
        'curve_server_key = "keys/server.key_secret"\n'
        'curve_node_key = "keys/n1.key_secret"\ncurve_peer_keys = "keys/peers"\n'
        + "\n".join(lines)
        + '\n[members.n1]\npeer = "tcp://127.0.0.1:1"\nclient = "tcp://127.0.0.1:2"\n'
    )
    config = load_config(tmp_path / "n1.toml")
    assert all(getattr(config, k) == v for k, v in LIMITS.items())
    assert config.curve_server_key == tmp_path / "keys" / "server.key_secret"
    assert config.curve_peer_keys == tmp_path / "keys" / "peers" and config.curve
    (tmp_path / "bad.toml").write_text(
        'member_id = "n1"\nstorage = "memory"\ncurve_peer_keys = 3\n'
        '[members.n1]\npeer = "tcp://127.0.0.1:1"\nclient = "tcp://127.0.0.1:2"\n'
    )
    with pytest.raises(ConfigError, match="curve_peer_keys"):
        load_config(tmp_path / "bad.toml")


def test_a_hostile_client_hits_each_limit_and_gets_a_typed_answer() -> None:
    with local_cluster(CounterStateMachine, n=1, **LIMITS) as cluster:
        leader = cluster.leader()
        raw = RawClient(cluster)
        try:
            raw.connect(leader.client_address)
            raw.create_session()
            # The session-open answer announced the payload limit.
            raw.send(ClientRequest(R(1), R(1), b"x" * 1001))
            assert raw.expect(RequestError).reason is ErrorReason.TOO_LARGE
            raw.send(Query(7, b"x" * 1001))
            assert raw.expect(QueryError).reason is ErrorReason.TOO_LARGE
            # A command far above the lowest pending id would leave too many cached.
            raw.send(ClientRequest(R(9), R(1), b"\x91\xa3get"))
            error = raw.expect(RequestError)
            assert error.request_id == 9 and error.reason is ErrorReason.TOO_MANY_PENDING
            # Sessions per connection.
            raw.create_session()
            raw.send(CreateSession({}, b"third"))
            rejected = raw.expect((SessionRejected, SessionCreated))
            assert isinstance(rejected, SessionRejected)
            assert rejected.reason is RejectReason.TOO_MANY_SESSIONS
            assert leader.status().role == "leader"  # still serving
        finally:
            raw.close()


def test_the_announced_limit_is_the_node_s() -> None:
    with local_cluster(CounterStateMachine, n=1, max_payload_bytes=1234, max_frame_bytes=8000) as c:
        leader = c.leader()
        raw = RawClient(c)
        try:
            raw.connect(leader.client_address)
            for attempt in range(100):  # a fresh leader may still be loading sessions
                raw.send(CreateSession({}, attempt.to_bytes(2, "big")))
                created = raw.expect((SessionCreated, SessionRejected))
                if isinstance(created, SessionCreated):
                    break
                assert created.reason is RejectReason.OVERLOADED
                time.sleep(0.02)
            assert isinstance(created, SessionCreated) and created.max_payload_bytes == 1234
        finally:
            raw.close()
