"""CURVE on whole nodes (in-process, ZeroMQ on 127.0.0.1): members and allowed clients
work as usual; a peer without an allowed key is not counted and cannot disrupt
elections; a client without an allowed key gets nothing; only admin keys run admin
operations; and what a client sends is not readable on the wire."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from actors.client import (
    AdminError,
    RaftClient,
    RequestTimeoutError,
    admin_request,
    fetch_status,
)
from actors.config import ConfigError, NodeConfig
from actors.security import node_curve
from actors.transport import (
    CurveClient,
    CurveServer,
    ZmqOptions,
    ZmqPeerTransport,
    curve_available,
)
from examples.counter import get, increment
from protocol.admin import AdminOp
from protocol.codec import encode
from protocol.ids import MemberId
from protocol.raft.messages import AppendEntries, RequestVote
from tests.actors.node.cluster import WAIT, wait_for
from tests.actors.node.system import FAST_CLIENT, FAST_NODE, SystemCluster
from tests.security.keys import KeyRing
from tests.security.relay import RecordingRelay

pytestmark = pytest.mark.skipif(not curve_available(), reason="libzmq without CURVE")

N1, N2, N3 = MemberId("n1"), MemberId("n2"), MemberId("n3")
MARKER = "CLIENT-SECRET-PAYLOAD-5b1e"


def curve_settings(keys: KeyRing, member: str) -> dict[str, Any]:
    return {
        "curve_server_key": keys.server,
        "curve_node_key": keys.root / "peers" / f"{member}.key_secret",
        "curve_peer_keys": keys.root / "peers",
        "curve_client_keys": keys.root / "clients",
        "curve_admin_keys": keys.root / "admins",
    }


@contextmanager
def cluster_of(
    keys: KeyRing | None,
    overrides: dict[MemberId, dict[str, Any]] | None = None,
    start: list[MemberId] | None = None,
) -> Iterator[SystemCluster]:
    from examples.counter import CounterStateMachine

    cluster = SystemCluster(CounterStateMachine, transport="zmq", **FAST_NODE)
    for m, cfg in list(cluster.configs.items()):
        changes = curve_settings(keys, m) if keys is not None else {}
        changes.update((overrides or {}).get(m, {}))
        cluster.configs[m] = cfg.with_changes(**changes)
    try:
        for m in start or list(cluster.configs):
            cluster.start(m)
        yield cluster
    finally:
        cluster.close()


def client_of(cluster: SystemCluster, curve: CurveClient | None, members: list[str]) -> RaftClient:
    client = RaftClient(members, curve=curve, config=FAST_CLIENT, tick_ms=10)
    cluster.clients.append(client)
    return client


def test_config_checks_the_curve_keys(keys: KeyRing, tmp_path: Path) -> None:
    from actors.config import MemberAddress

    addresses = {N1: MemberAddress("tcp://127.0.0.1:1", "tcp://127.0.0.1:2")}
    base = NodeConfig(N1, addresses, storage="memory")
    assert node_curve(base) is None and not base.curve
    with pytest.raises(ConfigError):
        base.with_changes(curve_server_key=keys.server)  # no node key, no peer keys
    with pytest.raises(ConfigError):
        base.with_changes(curve_client_keys=keys.root / "clients")  # CURVE is not on
    on = base.with_changes(**curve_settings(keys, "n1"))
    assert on.curve and node_curve(on) is not None
    with pytest.raises(ConfigError, match="not the public key"):
        node_curve(on.with_changes(curve_node_key=keys.root / "strangers" / "peer.key_secret"))
    with pytest.raises(ConfigError, match="CURVE"):
        node_curve(on.with_changes(curve_server_key=tmp_path / "missing.key_secret"))


def test_allowed_clients_work_and_others_get_no_session_and_no_answer(keys: KeyRing) -> None:
    with cluster_of(keys) as cluster:
        addresses = cluster.client_addresses
        client = client_of(cluster, keys.client(), addresses).connect(timeout=WAIT)
        assert client.call(increment(5), timeout=WAIT) == 5
        assert client.query(get(), timeout=WAIT) == 5
        assert fetch_status(addresses[0], curve=keys.client(), timeout=WAIT).member_id
        # No key, or a key the cluster does not know: the handshake fails, nothing
        # arrives, nothing is answered (a session is never opened).
        for curve in (None, keys.client("strangers", "client")):
            stranger = client_of(cluster, curve, addresses)
            with pytest.raises(TimeoutError):
                stranger.connect(timeout=1.5)
            with pytest.raises(TimeoutError):
                fetch_status(addresses[0], curve=curve, timeout=0.5)
        leader = cluster.leader()
        assert leader.status().sessions == 1
        assert client.query(get(), timeout=WAIT) == 5


def test_only_admin_keys_run_admin_operations(keys: KeyRing) -> None:
    with cluster_of(keys) as cluster:
        addresses = cluster.client_addresses
        old = cluster.leader().member_id
        with pytest.raises(AdminError, match="admin key") as refused:
            admin_request(addresses, AdminOp.TRANSFER_LEADER, None, curve=keys.client(), timeout=5)
        assert refused.value.response is not None and not refused.value.response.retryable
        assert cluster.leader().member_id == old
        response = admin_request(
            addresses,
            AdminOp.TRANSFER_LEADER,
            None,
            curve=keys.client("admins", "admin"),
            timeout=WAIT,
        )
        assert response.ok
        assert wait_for(lambda: cluster.leader().member_id != old, WAIT, "a new leader")


def test_admin_operations_are_open_without_curve() -> None:
    with cluster_of(None) as cluster:
        old = cluster.leader().member_id
        response = admin_request(
            cluster.client_addresses, AdminOp.TRANSFER_LEADER, None, timeout=WAIT
        )
        assert response.ok and wait_for(lambda: cluster.leader().member_id != old, WAIT)


def agreed_leader(cluster: SystemCluster) -> tuple[MemberId, int] | None:
    """(leader, term) if n1 and n2 name the same leader in the same term."""
    a, b = cluster.nodes[N1].status(), cluster.nodes[N2].status()
    if a.leader is not None and a.leader == b.leader and a.term == b.term:
        return a.leader, a.term
    return None


def repel(attack: Callable[[], bool], defended: Callable[[], bool], what: str) -> None:
    """With CURVE: the attack must be seen defended (``what``), then keep failing for
    a second of further attempts."""
    wait_for(lambda: attack() or defended(), WAIT, what)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert not attack()
        time.sleep(0.05)


@pytest.mark.parametrize("curve", [False, True], ids=["plain", "curve"])
def test_a_peer_without_an_allowed_key_cannot_disrupt_elections(keys: KeyRing, curve: bool) -> None:
    """A rogue posing as n3 (not running) sends n1 and n2 leadership-transfer vote
    requests with a huge term, which voters honour even while they have a leader.
    Without CURVE that throws out the leader (so the check can fail); with CURVE the
    rogue's key is refused at the handshake, nothing arrives, leader and term stay."""
    with cluster_of(keys if curve else None, start=[N1, N2]) as cluster:
        leader, term = wait_for(lambda: agreed_leader(cluster), WAIT, "n1 and n2 agree on a leader")
        client = client_of(cluster, keys.client() if curve else None, cluster.client_addresses[:2])
        client.connect(timeout=WAIT)
        assert client.call(increment(1), timeout=WAIT) == 1
        options = ZmqOptions()
        if curve:
            server = keys.pair("server", "server")  # even knowing the server key
            stranger = CurveClient(keys.pair("strangers", "peer"), server.public)
            options = ZmqOptions(
                curve_server=CurveServer.for_members(server, {}), curve_client=stranger
            )
        rogue = ZmqPeerTransport(N3, lambda sender, frame: None, options=options)
        rogue.start()
        try:
            for m in (N1, N2):
                rogue.add_peer(m, cluster.configs[m].address.peer)

            def attack() -> bool:
                for m in (N1, N2):
                    vote = RequestVote(term + 100, N3, m, 10**9, 10**9, transfer=True)
                    rogue.send(m, encode(vote))
                return max(cluster.nodes[m].status().term for m in (N1, N2)) > term + 50

            def refused() -> bool:
                zaps = [getattr(cluster.nodes[m]._peers, "_zap", None) for m in (N1, N2)]
                return all(z is not None and z.refused > 0 for z in zaps)

            if not curve:
                wait_for(attack, WAIT, "the forged vote request to throw out the leader")
                return
            repel(attack, refused, "both handshakes refused")
        finally:
            rogue.stop()
        assert agreed_leader(cluster) == (leader, term)
        assert client.call(increment(1), timeout=WAIT) == 2


@pytest.mark.parametrize("curve", [False, True], ids=["plain", "curve"])
def test_a_member_key_cannot_speak_for_another_member(keys: KeyRing, curve: bool) -> None:
    """n1 and n2 run; a rogue holding n3's valid member key (n3 is not running) poses as
    the leader and as the follower: AppendEntries "from the leader" with a huge term to
    the follower, and a leadership-transfer vote request "from the follower" to the
    leader. Without CURVE that throws out the leader (so the check can fail); with CURVE
    the handshakes pass (the key is allowed) but every frame is dropped and counted as
    forged, and leader and term stay."""
    with cluster_of(keys if curve else None, start=[N1, N2]) as cluster:
        leader, term = wait_for(lambda: agreed_leader(cluster), WAIT, "n1 and n2 agree on a leader")
        follower = N2 if leader == N1 else N1
        client = client_of(cluster, keys.client() if curve else None, cluster.client_addresses[:2])
        client.connect(timeout=WAIT)
        assert client.call(increment(1), timeout=WAIT) == 1
        options = ZmqOptions()
        if curve:
            server = keys.pair("server", "server")
            stolen = CurveClient(keys.pair("peers", "n3"), server.public)
            options = ZmqOptions(
                curve_server=CurveServer.for_members(server, {}), curve_client=stolen
            )
        as_leader = ZmqPeerTransport(leader, lambda sender, frame: None, options=options)
        as_follower = ZmqPeerTransport(follower, lambda sender, frame: None, options=options)
        try:
            for rogue, target in ((as_leader, follower), (as_follower, leader)):
                rogue.start()
                rogue.add_peer(target, cluster.configs[target].address.peer)

            def attack() -> bool:
                append = AppendEntries(term + 100, leader, follower, 10**9, term, (), 10**9)
                as_leader.send(follower, encode(append))
                vote = RequestVote(term + 100, follower, leader, 10**9, 10**9, transfer=True)
                as_follower.send(leader, encode(vote))
                return max(cluster.nodes[m].status().term for m in (N1, N2)) > term + 50

            def forged() -> bool:
                return all(cluster.nodes[m]._peers.stats().forged > 0 for m in (N1, N2))

            if not curve:
                wait_for(attack, WAIT, "the forged messages to throw out the leader")
                return
            repel(attack, forged, "forged frames dropped on n1 and n2")
        finally:
            as_leader.stop()
            as_follower.stop()
        assert agreed_leader(cluster) == (leader, term)
        assert client.call(increment(1), timeout=WAIT) == 2


@pytest.mark.parametrize("curve", [False, True], ids=["plain", "curve"])
def test_client_commands_are_unreadable_on_the_wire_with_curve(keys: KeyRing, curve: bool) -> None:
    """A recording relay between client and leader: the marker shows in plain text
    without CURVE (so the check can fail) and not with it."""
    with cluster_of(keys if curve else None) as cluster:
        leader = cluster.leader()
        port = int(leader.client_address.rsplit(":", 1)[1])
        with RecordingRelay(port) as relay:
            client = client_of(cluster, keys.client() if curve else None, [relay.address])
            client.connect(timeout=WAIT)
            assert client.call(["inc", 1, MARKER], timeout=WAIT) == 1
            assert (MARKER.encode() in relay.recorded()) is not curve


def test_a_member_whose_key_is_not_allowed_is_not_counted(keys: KeyRing, tmp_path: Path) -> None:
    """n3 runs with a key n1 and n2 do not allow (while it allows theirs): it hears the
    leader, but its answers never arrive, so once n1 or n2 is gone nothing commits --
    n3 does not count towards a majority."""
    own = tmp_path / "n3-view"
    own.mkdir()
    for m in ("n1", "n2"):
        shutil.copy(keys.root / "peers" / f"{m}.key", own / f"{m}.key")
    shutil.copy(keys.root / "strangers" / "peer.key", own / "n3.key")
    overrides = {
        N3: {
            "curve_node_key": keys.root / "strangers" / "peer.key_secret",
            "curve_peer_keys": own,
        }
    }
    with cluster_of(keys, overrides) as cluster:
        leader = wait_for(
            lambda: next((m for m in (N1, N2) if cluster.nodes[m].status().role == "leader"), None),
            WAIT,
            "a leader among n1 and n2",
        )
        client = client_of(cluster, keys.client(), cluster.client_addresses[:2])
        client.connect(timeout=WAIT)
        assert client.call(increment(1), timeout=WAIT) == 1
        wait_for(lambda: cluster.nodes[N3].status().leader == leader, WAIT, "n3 hears the leader")
        cluster.stop(N2 if leader == N1 else N1)
        with pytest.raises(RequestTimeoutError):
            client.call(increment(1), timeout=2.0)
