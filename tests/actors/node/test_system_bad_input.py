"""Hostile and broken input at a running 3-node cluster over ZeroMQ on 127.0.0.1: random
bytes and truncated frames at the client ports (raw DEALER sockets) and the peer ports
(raw PUSH sockets), oversized payloads through the client, requests on connections whose
session is unknown or expired. A ``RaftClient`` works all along and nothing is lost.
Last, the largest command a node accepts must still fit the peer frames (in-memory)."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgpack
import pytest
import zmq

from actors.client import RequestFailedError
from actors.config import ENTRY_OVERHEAD_BYTES, ConfigError
from actors.node import Node
from examples.counter import increment
from protocol.codec import encode
from protocol.ids import MemberId, RequestId, SessionId
from protocol.raft.messages import AppendEntries, Heartbeat, RequestVote
from protocol.wire import (
    ClientRequest,
    CloseReason,
    CloseSession,
    ContinueSession,
    CreateSession,
    ErrorReason,
    KeepAlive,
    Query,
    RejectReason,
    RequestError,
    ServerMessage,
    ServerRequestAck,
    SessionClosed,
    SessionCreated,
    SessionRejected,
    decode_server_message,
)
from tests.actors.node.cluster import WAIT, wait_for
from tests.actors.node.system import (
    FAST_CLIENT,
    SystemCluster,
    Workload,
    check_exactly_once,
    node_threads,
    system_cluster,
)

pytestmark = pytest.mark.timeout(90)

MAX_PAYLOAD = 4096
MAX_FRAME = 64 * 1024
LIMITS: dict[str, Any] = {"max_payload_bytes": MAX_PAYLOAD, "max_frame_bytes": MAX_FRAME}


class Dealer:
    """A raw client socket: frames by hand, answers decoded (or not) by the test."""

    def __init__(self, ctx: zmq.Context[Any], address: str) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(address)

    def send(self, *parts: bytes) -> None:
        self.sock.send_multipart(list(parts))

    def recv(self, timeout: float = WAIT) -> ServerMessage | None:
        """The next answer, or None if nothing comes within ``timeout`` seconds."""
        if not self.sock.poll(int(timeout * 1000)):
            return None
        parts = self.sock.recv_multipart()
        assert len(parts) == 1, parts
        return decode_server_message(parts[0])

    def expect(self, kind: type[Any], timeout: float = WAIT) -> Any:
        msg = self.recv(timeout)
        assert isinstance(msg, kind), msg
        return msg

    def close(self) -> None:
        self.sock.close(0)


@contextmanager
def zmq_context() -> Iterator[zmq.Context[Any]]:
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        yield ctx
    finally:
        ctx.destroy(linger=0)


def garbage_frames(rng: random.Random) -> list[bytes]:
    """Random bytes, and valid client messages cut short at every kind of place."""
    valid = [
        encode(CreateSession({"counter": "v1"}, b"n")),
        encode(ClientRequest(RequestId(1), RequestId(1), msgpack.packb(increment(1)))),
        encode(ContinueSession(SessionId("x" * 32), b"n")),
        encode(Query(1, msgpack.packb(["get"]))),
    ]
    frames = [rng.randbytes(rng.randint(1, 300)) for _ in range(40)]
    for data in valid:
        frames += [data[:k] for k in range(1, len(data))]
    frames += [b"\x00", b"\xff" * 1000, msgpack.packb([1, 99999, []]), msgpack.packb({"a": 1})]
    return frames


def peer_messages(
    cluster: SystemCluster, rng: random.Random
) -> tuple[list[list[bytes]], list[list[bytes]], list[list[bytes]]]:
    """What a hostile process could push at a node's peer port, in three kinds:
    (messages of the wrong shape, well-shaped messages whose frame is bad, oversized)."""
    members = sorted(cluster.nodes)
    a, b = members[0], members[1]
    real = encode(AppendEntries(1, a, b, 0, 0, (), 0))
    beat = encode(Heartbeat(1, a, b, 0, 0))
    vote = encode(RequestVote(1, a, b, 0, 0))
    shape: list[list[bytes]] = [[rng.randbytes(rng.randint(1, 200))] for _ in range(20)]
    shape += [
        [b""],
        [b"", real],  # empty sender
        [b"\xff\xfe", real],  # sender not UTF-8
        [b"x" * 300, real],  # sender too long
        [a.encode(), real, real],  # three parts
    ]
    frames = [[a.encode(), rng.randbytes(rng.randint(1, 200))] for _ in range(20)]
    for frame in (real, beat, vote):
        frames += [[a.encode(), frame[:k]] for k in range(1, len(frame))]
    frames += [
        [b"intruder", real],  # the frame's sender is not the transport's sender
        [a.encode(), encode(Heartbeat(1, a, MemberId("nobody"), 0, 0))],  # misaddressed
    ]
    oversized = [[a.encode(), b"\x00" * (MAX_FRAME + 1)]]
    return shape, frames, oversized


def push_garbage(
    ctx: zmq.Context[Any],
    cluster: SystemCluster,
    node: Node,
    rng: random.Random,
) -> None:
    """Push every kind of bad peer message at ``node`` and wait until each was dropped
    where it should be: wrong shapes and oversized frames by the transport, bad frames
    by the consensus actor (which counts them)."""
    shape, frames, oversized = peer_messages(cluster, rng)
    peers = node._peers
    assert peers is not None
    before = peers.stats()
    dropped_before = node.board.read().peer_frames_dropped
    push = ctx.socket(zmq.PUSH)
    push.connect(node.peer_address)
    try:
        for parts in shape + frames + oversized:
            push.send_multipart(parts)

        def all_dropped() -> bool:
            now = peers.stats()
            dropped = node.board.read().peer_frames_dropped - dropped_before
            return (
                now.malformed - before.malformed == len(shape)
                and now.oversized - before.oversized == len(oversized)
                and dropped == len(frames)
            )

        wait_for(all_dropped, what=f"every bad peer message dropped by {node.member_id}")
    finally:
        push.close(0)


def check_nothing_broke(cluster: SystemCluster) -> None:
    for node in cluster.nodes.values():
        for ref in node._refs:
            assert ref.is_alive(), f"{node.member_id}: an actor died"
        assert node.status().role in ("leader", "follower")


def test_garbage_at_client_and_peer_ports_never_hurts_the_cluster() -> None:
    rng = random.Random(20240611)
    with system_cluster(transport="zmq", **LIMITS) as cluster, zmq_context() as ctx:
        work = Workload(cluster, window=5).start()
        try:
            work.wait_for_progress(20)
            for node in cluster.nodes.values():
                # Client port: each garbage frame gets a PROTOCOL_ERROR close, and its
                # connection is dropped (later frames on it go unanswered).
                frames = garbage_frames(rng)
                for i, frame in enumerate(frames):
                    dealer = Dealer(ctx, node.client_address)
                    try:
                        dealer.send(frame)
                        closed = dealer.expect(SessionClosed)
                        assert closed.reason is CloseReason.PROTOCOL_ERROR, (i, frame)
                        if i % 50 == 0:
                            dealer.send(encode(CreateSession({}, b"after")))
                            assert dealer.recv(timeout=0.1) is None
                    finally:
                        dealer.close()
                # Multi-part and empty messages are dropped by the transport.
                dealer = Dealer(ctx, node.client_address)
                try:
                    dealer.send(b"")
                    dealer.send(b"a", b"b")
                    dealer.send(encode(CreateSession({}, b"1")), b"extra")
                    dealer.send(b"\x00" * (MAX_FRAME + 1))
                    assert dealer.recv(timeout=0.2) is None
                finally:
                    dealer.close()
                # Peer port: none of it reaches the Raft core as a message.
                push_garbage(ctx, cluster, node, rng)
            work.wait_for_progress(work.succeeded + 50)
            check_nothing_broke(cluster)
        finally:
            work.stop()
        check_exactly_once(cluster, work)
    assert node_threads() == [], "a node or client left a thread running"


def test_oversized_payloads_and_unknown_sessions_get_typed_answers() -> None:
    with system_cluster(transport="zmq", **LIMITS) as cluster, zmq_context() as ctx:
        # The client allows itself (1 MiB) more than the cluster accepts.
        assert FAST_CLIENT.max_payload_bytes > 2 * MAX_FRAME
        client = cluster.client()
        assert client.call(increment(1), timeout=WAIT) == 1
        big = ["inc", 1, "x" * (2 * MAX_PAYLOAD)]
        with pytest.raises(RequestFailedError) as failed:
            client.call(big, timeout=WAIT)
        assert failed.value.reason is ErrorReason.TOO_LARGE
        with pytest.raises(RequestFailedError) as failed:
            client.query(["get", "x" * (2 * MAX_PAYLOAD)], timeout=WAIT)
        assert failed.value.reason is ErrorReason.TOO_LARGE
        # Over the frame limit too: the node announced its payload limit when the
        # session opened, so the client fails the command at once instead of sending
        # a frame the transport would drop unanswered (and the caller waiting for its
        # deadline).
        huge = ["inc", 1, "x" * (2 * MAX_FRAME)]
        started = time.monotonic()
        with pytest.raises(RequestFailedError) as failed:
            client.call(huge, timeout=WAIT)
        assert failed.value.reason is ErrorReason.TOO_LARGE
        assert time.monotonic() - started < WAIT / 2  # answered, not timed out
        assert client.call(increment(1), timeout=WAIT) == 2

        leader = cluster.leader()
        dealer = Dealer(ctx, leader.client_address)
        try:
            # Session messages on a connection that has no session.
            payload = msgpack.packb(increment(100))
            dealer.send(encode(ClientRequest(RequestId(1), RequestId(1), payload)))
            assert dealer.expect(RequestError).reason is ErrorReason.NO_SESSION
            dealer.send(encode(ServerRequestAck(RequestId(5))))
            assert dealer.expect(SessionClosed).reason is CloseReason.NO_SESSION
            dealer.send(encode(KeepAlive(SessionId("nope"), 0)))
            assert dealer.expect(SessionClosed).reason is CloseReason.NO_SESSION
            dealer.send(encode(CloseSession()))
            assert dealer.expect(SessionClosed).reason is CloseReason.NO_SESSION
            dealer.send(encode(ContinueSession(SessionId("never-was"), b"c1")))
            rejected = dealer.expect(SessionRejected)
            assert rejected.reason is RejectReason.SESSION_EXPIRED
            # A session that was closed (expired through the log) never comes back.
            dealer.send(encode(CreateSession({}, b"c2")))
            sid = dealer.expect(SessionCreated).session_id
            dealer.send(encode(CloseSession()))
            assert dealer.expect(SessionClosed).reason is CloseReason.CLIENT_REQUESTED
            wait_for(
                lambda: all(n.status().sessions == 1 for n in cluster.nodes.values()),
                what="the closed session removed everywhere",
            )
            dealer.send(encode(ContinueSession(sid, b"c3")))
            assert dealer.expect(SessionRejected).reason is RejectReason.SESSION_EXPIRED
            dealer.send(encode(ClientRequest(RequestId(1), RequestId(1), payload)))
            assert dealer.expect(RequestError).reason is ErrorReason.NO_SESSION
        finally:
            dealer.close()
        # None of the refused commands ran.
        assert client.call(increment(1), timeout=WAIT) == 3
        cluster.wait_converged()
        assert set(cluster.replica_counters().values()) == {3}
        check_nothing_broke(cluster)


def test_the_largest_accepted_command_still_replicates() -> None:
    """A command just under the payload limit must fit in an AppendEntries frame; a
    config where it could not is refused (it would stop replication for good)."""
    frame = 64 * 1024
    payload_limit = frame - ENTRY_OVERHEAD_BYTES
    with system_cluster(max_frame_bytes=frame, max_payload_bytes=payload_limit) as cluster:
        client = cluster.client()
        biggest = ["inc", 1, "x" * (payload_limit - 32)]
        assert len(msgpack.packb(biggest)) <= payload_limit
        assert client.call(biggest, timeout=WAIT) == 1
        assert client.call(increment(1), timeout=WAIT) == 2
        cluster.wait_converged()
        assert set(cluster.replica_counters().values()) == {2}
        config = next(iter(cluster.configs.values()))
    with pytest.raises(ConfigError):
        config.with_changes(max_payload_bytes=payload_limit + 1)
