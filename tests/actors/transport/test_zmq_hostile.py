"""Hostile input at the ZeroMQ ports: raw sockets sending garbage never stop a transport.

Raw ZeroMQ sockets send messages of the wrong shape (counted as malformed), frames over
the size limit (counted as oversized, or cut off by libzmq when far over it), and raw
TCP connections send random bytes. (libzmq still speaks the old ZMTP 1.0, whose
"handshake" random bytes can pass, so garbage may even arrive as well-shaped frames:
that is what the validator -- the codec -- is for.) After each attack the transport
still delivers good frames.
"""

from __future__ import annotations

import random
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from actors.transport import (
    TransportError,
    ZmqClientConnection,
    ZmqClientTransport,
    ZmqOptions,
    ZmqPeerTransport,
)
from actors.transport._zmq_loop import MAXMSGSIZE_SLACK
from protocol.ids import MemberId

from .harness import WAIT_S, Inbox, transport_threads, wait_until

LIMIT = 4096


@pytest.fixture
def ctx() -> Iterator[zmq.Context[Any]]:
    """A context for the test's raw sockets (all used from the test thread only)."""
    context: zmq.Context[Any] = zmq.Context()
    try:
        yield context
    finally:
        context.destroy(linger=0)
    assert transport_threads() == []


@pytest.fixture
def peer() -> Iterator[tuple[ZmqPeerTransport, Inbox]]:
    inbox = Inbox()
    transport = ZmqPeerTransport(
        MemberId("victim"), inbox.peer, options=ZmqOptions(max_frame_bytes=LIMIT)
    )
    transport.start()
    try:
        yield transport, inbox
    finally:
        transport.stop()


@pytest.fixture
def server() -> Iterator[tuple[ZmqClientTransport, Inbox]]:
    inbox = Inbox()
    transport = ZmqClientTransport(inbox.client, options=ZmqOptions(max_frame_bytes=LIMIT))
    transport.start()
    try:
        yield transport, inbox
    finally:
        transport.stop()


def raw(ctx: zmq.Context[Any], kind: int, address: str) -> zmq.Socket[Any]:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDTIMEO, int(WAIT_S * 1000))
    sock.setsockopt(zmq.RCVTIMEO, int(WAIT_S * 1000))
    sock.connect(address)
    return sock


def tcp_garbage(address: str, seed: int) -> None:
    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    rng = random.Random(seed)
    with socket.create_connection((host, int(port)), timeout=WAIT_S) as s:
        for _ in range(20):
            try:
                s.sendall(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 512))))
            except OSError:  # libzmq hung up on us: fine
                return


def test_malformed_peer_messages_are_counted(
    ctx: zmq.Context[Any], peer: tuple[ZmqPeerTransport, Inbox]
) -> None:
    transport, inbox = peer
    push = raw(ctx, zmq.PUSH, transport.address)
    bad: list[list[bytes]] = [
        [b"only one part"],
        [b"x", b"frame", b"extra"],
        [b"", b"empty sender"],
        [b"\xff\xfe", b"sender not utf-8"],
        [b"s" * 256, b"sender too long"],
    ]
    for parts in bad:
        push.send_multipart(parts)
    push.send_multipart([b"mallory", b"well formed"])
    assert inbox.get() == (MemberId("mallory"), b"well formed")
    assert transport.stats().malformed == len(bad)
    push.close()


def test_oversized_peer_frames_are_counted_or_cut_off(
    ctx: zmq.Context[Any], peer: tuple[ZmqPeerTransport, Inbox]
) -> None:
    transport, inbox = peer
    push = raw(ctx, zmq.PUSH, transport.address)
    push.send_multipart([b"big", b"o" * (LIMIT + 1)])  # over our limit: counted
    wait_until(lambda: transport.stats().oversized == 1)
    # Far over: libzmq drops the connection before buffering it; nothing is delivered.
    push.send_multipart([b"huge", b"h" * (LIMIT + MAXMSGSIZE_SLACK + 1)])
    push.close()
    fresh = raw(ctx, zmq.PUSH, transport.address)
    fresh.send_multipart([b"ok", b"after the flood"])
    assert inbox.get() == (MemberId("ok"), b"after the flood")
    assert inbox.empty()
    fresh.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_tcp_garbage_at_both_ports_is_harmless(
    ctx: zmq.Context[Any],
    peer: tuple[ZmqPeerTransport, Inbox],
    server: tuple[ZmqClientTransport, Inbox],
    seed: int,
) -> None:
    transport, inbox = peer
    srv, requests = server
    tcp_garbage(transport.address, seed)
    tcp_garbage(srv.address, seed + 100)
    push = raw(ctx, zmq.PUSH, transport.address)
    push.send_multipart([b"n2", b"still alive"])
    inbox.find(lambda item: item == (MemberId("n2"), b"still alive"))
    dealer = raw(ctx, zmq.DEALER, srv.address)
    dealer.send(b"request")
    rid, _ = requests.find(lambda item: item[1] == b"request")
    srv.send(rid, b"response")
    assert dealer.recv() == b"response"
    push.close()
    dealer.close()


def test_malformed_client_messages_are_counted(
    ctx: zmq.Context[Any], server: tuple[ZmqClientTransport, Inbox]
) -> None:
    srv, requests = server
    dealer = raw(ctx, zmq.DEALER, srv.address)
    dealer.send_multipart([b"two", b"parts"])
    dealer.send(b"")
    req = raw(ctx, zmq.REQ, srv.address)  # REQ adds an empty delimiter part
    req.send(b"from a REQ socket")
    dealer.send(b"o" * (LIMIT + 1))
    dealer.send(b"fine")
    assert requests.get()[1] == b"fine"
    wait_until(lambda: srv.stats().malformed == 3)
    assert srv.stats().oversized == 1
    dealer.close()
    req.close()


def test_malformed_server_messages_are_counted_by_the_client(ctx: zmq.Context[Any]) -> None:
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.setsockopt(zmq.RCVTIMEO, int(WAIT_S * 1000))
    port = router.bind_to_random_port("tcp://127.0.0.1")
    inbox = Inbox()
    client = ZmqClientConnection(inbox.connection, options=ZmqOptions(max_frame_bytes=LIMIT))
    client.start()
    try:
        client.connect(f"tcp://127.0.0.1:{port}")
        client.send(b"hello")
        rid, hello = router.recv_multipart()
        assert hello == b"hello"
        router.send_multipart([rid, b"two", b"parts"])
        router.send_multipart([rid, b"x" * (LIMIT + 1)])
        router.send_multipart([rid, b"welcome"])
        assert inbox.get() == (b"welcome",)
        assert client.stats().malformed == 1
        assert client.stats().oversized == 1
    finally:
        client.stop()
        router.close()


def test_bad_peer_address_is_logged_not_fatal(peer: tuple[ZmqPeerTransport, Inbox]) -> None:
    transport, inbox = peer
    transport.add_peer(MemberId("broken"), "not an address")
    transport.send(MemberId("broken"), b"lost")
    wait_until(lambda: transport.stats().dropped == 1)
    transport.add_peer(MemberId("self"), transport.address)
    wait_until(lambda: _probe(transport, inbox))
    with pytest.raises(ValueError):
        transport.add_peer(MemberId(""), transport.address)


def _probe(transport: ZmqPeerTransport, inbox: Inbox) -> bool:
    transport.send(MemberId("self"), b"\x00probe")
    return inbox.probed.wait(0.02)


def test_bind_failures_raise_typed_errors_and_leave_no_thread() -> None:
    for bad in ("tcp://256.1.1.1:1", "nonsense"):
        transport = ZmqPeerTransport(MemberId("n"), Inbox().peer, bind=bad)
        with pytest.raises(TransportError):
            transport.start()
        transport.stop()
        server = ZmqClientTransport(Inbox().client, bind=bad)
        with pytest.raises(TransportError):
            server.start()
    assert transport_threads() == []
    with pytest.raises(ValueError):
        ZmqPeerTransport(MemberId("n"), Inbox().peer, options=ZmqOptions(max_frame_bytes=0))
    with pytest.raises(ValueError):
        ZmqPeerTransport(MemberId("x" * 300), Inbox().peer)


def test_a_shared_context_is_left_open(ctx: zmq.Context[Any]) -> None:
    inbox = Inbox()
    a = ZmqPeerTransport(MemberId("a"), inbox.peer, options=ZmqOptions(context=ctx))
    a.start()
    a.stop()
    assert not ctx.closed


def test_a_full_outbox_drops_instead_of_blocking(ctx: zmq.Context[Any]) -> None:
    """While the I/O thread is stuck (here: in a misbehaving handler), sends beyond
    ``queue_limit`` are refused at once and counted."""
    release, entered = threading.Event(), threading.Event()

    def stuck(member: MemberId, frame: bytes) -> None:
        entered.set()
        release.wait(WAIT_S)

    b = ZmqPeerTransport(MemberId("b"), stuck, options=ZmqOptions(queue_limit=10))
    b.start()
    try:
        push = raw(ctx, zmq.PUSH, b.address)
        push.send_multipart([b"a", b"block"])
        assert entered.wait(WAIT_S)
        accepted = [b.send(MemberId("a"), b"x") for _ in range(25)]
        assert accepted == [True] * 10 + [False] * 15
        assert b.stats().dropped == 15
        release.set()
        push.close()
    finally:
        release.set()
        b.stop()
