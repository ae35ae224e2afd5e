"""CURVE on the ZeroMQ transports: allowed keys get through, others are refused at the
handshake, admin keys are told apart, and the bytes on the wire are encrypted."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from actors.transport import (
    CurveClient,
    CurveError,
    CurveServer,
    TransportError,
    ZmqClientConnection,
    ZmqClientTransport,
    ZmqOptions,
    ZmqPeerTransport,
    curve_available,
    generate_keys,
    load_key_pair,
    load_public_key,
    load_public_keys,
)
from actors.transport.curve import ZapHandler
from protocol.ids import MemberId
from tests.actors.node.cluster import wait_for
from tests.security.harness import Inbox, Stoppers, send_until
from tests.security.keys import KeyRing
from tests.security.relay import RecordingRelay

pytestmark = pytest.mark.skipif(not curve_available(), reason="libzmq without CURVE")

SECRET = b"PLAINTEXT-MARKER-7f3a9c"


def test_key_files_round_trip_and_bad_files_are_typed_errors(tmp_path: Path) -> None:
    public, secret = generate_keys(tmp_path, "me")
    pair = load_key_pair(secret)
    assert load_public_key(public) == pair.public and len(pair.secret) == 40
    assert load_public_keys(tmp_path) == frozenset({pair.public})
    assert pair.secret.decode() not in repr(pair)
    with pytest.raises(CurveError):
        generate_keys(tmp_path, "me")  # never overwrites
    with pytest.raises(CurveError):
        generate_keys(tmp_path, "../x")
    with pytest.raises(CurveError):
        load_key_pair(public)  # no secret in a .key file
    (tmp_path / "junk.key").write_text("not a certificate\n")
    with pytest.raises(CurveError):
        load_public_key(tmp_path / "junk.key")
    with pytest.raises(CurveError):
        load_public_keys(tmp_path / "missing")
    with pytest.raises(CurveError):
        load_key_pair(tmp_path / "missing.key_secret")


def test_peer_transport_needs_both_curve_sides(keys: KeyRing) -> None:
    options = keys.peer_options("n1")
    with pytest.raises(ValueError):
        ZmqPeerTransport(
            MemberId("n1"), Inbox().peer, options=ZmqOptions(curve_server=options.curve_server)
        )


def test_allowed_peers_talk_and_a_stranger_peer_is_refused(
    keys: KeyRing, stoppers: Stoppers
) -> None:
    inbox = Inbox()
    target = ZmqPeerTransport(MemberId("n1"), inbox.peer, options=keys.peer_options("n1"))
    stoppers.append(target)
    target.start()
    friend = ZmqPeerTransport(MemberId("n2"), Inbox().peer, options=keys.peer_options("n2"))
    stranger = ZmqPeerTransport(
        MemberId("n3"), Inbox().peer, options=keys.peer_options("peer", role="strangers")
    )
    stoppers += [friend, stranger]
    for transport in (friend, stranger):
        transport.start()
        transport.add_peer(MemberId("n1"), target.address)
    zap = target._zap
    assert zap is not None
    # The stranger's handshake is refused (counted), so none of its frames arrive.
    stranger.send(MemberId("n1"), b"from-stranger")
    wait_for(lambda: zap.refused > 0, 5.0, "the stranger's handshake refused")
    assert send_until(lambda: friend.send(MemberId("n1"), b"from-friend"), inbox)
    for _ in range(20):
        stranger.send(MemberId("n1"), b"from-stranger")
    inbox.event.clear()
    assert send_until(lambda: friend.send(MemberId("n1"), b"again"), inbox)
    assert all(frame != b"from-stranger" for _, frame in inbox.frames)
    assert {frame for _, frame in inbox.frames} <= {b"from-friend", b"again"}


def test_client_port_admits_allowed_keys_tells_admins_apart_and_refuses_strangers(
    keys: KeyRing, stoppers: Stoppers
) -> None:
    server_pair = keys.pair("server", "server")
    clients = load_public_keys(keys.root / "clients")
    admins = load_public_keys(keys.root / "admins")
    got: list[tuple[bytes, bool]] = []
    arrived = threading.Event()
    server: ZmqClientTransport

    def on_frame(routing_id: bytes, frame: bytes, admin: bool) -> None:
        got.append((frame, admin))
        server.send(routing_id, b"echo:" + frame)
        arrived.set()

    server = ZmqClientTransport(
        on_frame,
        options=ZmqOptions(curve_server=CurveServer(server_pair, clients | admins, admins)),
    )
    stoppers.append(server)
    server.start()
    assert server.curve

    def connect(curve: CurveClient) -> tuple[ZmqClientConnection, Inbox]:
        inbox = Inbox()
        conn = ZmqClientConnection(
            inbox.client,
            options=ZmqOptions(curve_client=curve),
        )
        stoppers.append(conn)
        conn.start()
        conn.connect(server.address)
        return conn, inbox

    client, client_inbox = connect(keys.client())
    admin, admin_inbox = connect(keys.client("admins", "admin"))
    stranger, stranger_inbox = connect(keys.client("strangers", "client"))
    stranger.send(b"stranger")
    zap = server._zap
    assert zap is not None
    wait_for(lambda: zap.refused > 0, 5.0, "the stranger's handshake refused")
    client.send(b"client")
    admin.send(b"admin")
    wait_for(lambda: len(client_inbox.frames) == 1 and len(admin_inbox.frames) == 1, 5.0)
    assert sorted(got) == [(b"admin", True), (b"client", False)]
    assert client_inbox.frames == [(None, b"echo:client")]
    assert stranger_inbox.frames == []


def test_zap_handler_refuses_malformed_and_non_curve_requests(keys: KeyRing) -> None:
    sent: list[list[bytes]] = []

    class FakeSocket:
        def send_multipart(self, parts: list[bytes]) -> None:
            sent.append(parts)

    server = CurveServer(keys.pair("server", "server"), frozenset())
    zap = ZapHandler("clients", server, "test")
    zap.socket = FakeSocket()  # type: ignore[assignment]
    zap.handle([b"1.0"])  # not even a request id: ignored
    zap.handle([b"1.0", b"r1"])
    zap.handle([b"1.0", b"r2", b"clients", b"addr", b"", b"NULL"])
    zap.handle([b"1.0", b"r3", b"other", b"addr", b"", b"CURVE", b"k" * 32])
    zap.handle([b"1.0", b"r4", b"clients", b"addr", b"", b"CURVE", b"k" * 32])
    assert [p[1:3] for p in sent] == [
        [b"r1", b"400"],
        [b"r2", b"400"],
        [b"r3", b"400"],
        [b"r4", b"400"],
    ]
    assert zap.refused == 4


@pytest.mark.parametrize("curve", [False, True], ids=["plain", "curve"])
def test_peer_traffic_is_encrypted_only_with_curve(
    keys: KeyRing, curve: bool, stoppers: Stoppers
) -> None:
    """The check can fail: without CURVE the marker is visible on the wire."""
    inbox = Inbox()
    options = keys.peer_options("n1") if curve else ZmqOptions()
    target = ZmqPeerTransport(MemberId("n1"), inbox.peer, options=options)
    stoppers.append(target)
    target.start()
    port = int(target.address.rsplit(":", 1)[1])
    with RecordingRelay(port) as relay:
        sender = ZmqPeerTransport(
            MemberId("n2"),
            Inbox().peer,
            options=keys.peer_options("n2") if curve else ZmqOptions(),
        )
        stoppers.append(sender)
        sender.start()
        sender.add_peer(MemberId("n1"), relay.address)
        assert send_until(lambda: sender.send(MemberId("n1"), SECRET), inbox)
        assert (SECRET in relay.recorded()) is not curve
        assert len(relay.recorded()) > len(SECRET)


@pytest.mark.parametrize("curve", [False, True], ids=["plain", "curve"])
def test_client_traffic_is_encrypted_only_with_curve(
    keys: KeyRing, curve: bool, stoppers: Stoppers
) -> None:
    server_pair = keys.pair("server", "server")
    clients = load_public_keys(keys.root / "clients")
    server: ZmqClientTransport

    def echo(routing_id: bytes, frame: bytes, admin: bool) -> None:
        server.send(routing_id, frame[::-1])

    server = ZmqClientTransport(
        echo,
        options=ZmqOptions(curve_server=CurveServer(server_pair, clients))
        if curve
        else ZmqOptions(),
    )
    stoppers.append(server)
    server.start()
    port = int(server.address.rsplit(":", 1)[1])
    with RecordingRelay(port) as relay:
        inbox = Inbox()
        conn = ZmqClientConnection(
            inbox.client,
            options=ZmqOptions(curve_client=keys.client()) if curve else ZmqOptions(),
        )
        stoppers.append(conn)
        conn.start()
        conn.connect(relay.address)
        conn.send(SECRET)
        assert inbox.event.wait(5.0)
        assert inbox.frames == [(None, SECRET[::-1])]
        wire = relay.recorded()
        assert (SECRET in wire) is not curve and (SECRET[::-1] in wire) is not curve


def test_curve_needs_a_curve_capable_libzmq(monkeypatch: pytest.MonkeyPatch, keys: KeyRing) -> None:
    import actors.transport.zmq_transport as zt

    monkeypatch.setattr(zt, "curve_available", lambda: False)
    with pytest.raises(TransportError):
        ZmqOptions(curve_client=keys.client())
