"""Real nodes (in-process) serving sessions that share connections: the registry
actor's batch handling and per-connection answer frames, and a failover under them."""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import pytest

from actors.client import ClientLoop, RaftClient
from actors.transport import ClientConnection, ConnectionFrameHandler
from examples.counter import CounterStateMachine, increment
from protocol.codec import decode, encode
from protocol.wire import (
    SERVER_FRAME_TYPES,
    ClientBatch,
    CloseReason,
    CreateSession,
    ServerBatch,
    SessionClosed,
    SessionCreated,
    decode_server_message,
)
from tests.actors.node.cluster import WAIT, local_cluster, wait_for
from tests.actors.node.system import FAST_CLIENT


@pytest.mark.parametrize("transport", ["memory", "zmq"])
def test_shared_sessions_follow_the_leader_and_survive_its_crash(transport: str) -> None:
    with local_cluster(CounterStateMachine, transport=transport) as cluster:
        leader = cluster.leader()
        follower = next(n for n in cluster.nodes.values() if n is not leader)
        members = [follower.client_address] + [
            n.client_address for n in cluster.nodes.values() if n is not follower
        ]
        factory: Callable[[ConnectionFrameHandler], ClientConnection] | None = None
        if transport == "memory":
            factory = cluster.connection  # one object: the clients share connections
        with ClientLoop(name="raft-client-shared-node") as loop:
            clients = [
                RaftClient(members, config=FAST_CLIENT, loop=loop, connection_factory=factory)
                for _ in range(3)
            ]
            try:
                for client in clients:  # each starts at the follower and follows its hint
                    client.connect(timeout=WAIT)
                assert len(loop.connections) == 1
                futures: list[Future[Any]] = []
                submitted = threading.Event()

                def burst() -> None:  # one loop turn: one batch frame
                    for client in clients:
                        futures.extend(client.submit(increment(1)) for _ in range(10))
                    submitted.set()

                loop.post(burst)
                assert submitted.wait(WAIT)
                assert sorted(f.result(timeout=WAIT) for f in futures) == list(range(1, 31))
                applied = leader.status().applied_index
                wait_for(
                    lambda: all(
                        n.status().applied_index >= applied for n in cluster.nodes.values()
                    ),
                    what="replication",
                )
                cluster.stop(leader.member_id)
                cluster.leader()
                results = [c.call(increment(1), timeout=WAIT) for c in clients]
                assert sorted(results) == [31, 32, 33]  # nothing applied twice
                wait_for(lambda: len(loop.connections) == 1, what="one shared connection")
            finally:
                for client in clients:
                    client.close()


def test_a_node_answers_a_bad_item_on_its_channel_only() -> None:
    with local_cluster(CounterStateMachine) as cluster:
        leader = cluster.leader()
        frames: queue.Queue[bytes] = queue.Queue()
        conn = cluster.connection(frames.put)
        conn.start()
        try:
            conn.connect(leader.client_address)
            create = encode(CreateSession({}, b"n"))
            got: list[tuple[int, Any]] = []
            for _ in range(50):  # a fresh leader may still be loading its sessions
                conn.send(encode(ClientBatch(((0, create), (1, b"\xc1junk")))))
                got.clear()
                while len(got) < 2:
                    msg: Any = decode(frames.get(timeout=WAIT), SERVER_FRAME_TYPES)
                    if isinstance(msg, ServerBatch):
                        got.extend((c, decode_server_message(i)) for c, i in msg.items)
                    else:
                        got.append((0, msg))
                if any(isinstance(m, SessionCreated) for _, m in got):
                    break
            assert (1, SessionClosed(CloseReason.PROTOCOL_ERROR, None)) in got
            assert any(c == 0 and isinstance(m, SessionCreated) for c, m in got)
        finally:
            conn.stop()


def test_default_clients_fit_a_node_that_takes_fewer_sessions_per_connection() -> None:
    """A node configured for 2 sessions per connection, a default loop (8): the third
    session is refused once and moves; from then on the loop puts 2 on a connection.
    (Patient handshake and server timeouts: the connect counts are the point, and on a
    loaded machine a handshake can take longer than FAST_CLIENT's 400 ms.)"""
    patient = dataclasses.replace(FAST_CLIENT, handshake_timeout_ms=5_000, server_timeout_ms=10_000)
    with local_cluster(CounterStateMachine, n=1, max_sessions_per_connection=2) as cluster:
        leader = cluster.leader()
        with ClientLoop(name="raft-client-narrow-node") as loop:
            clients = [
                RaftClient(
                    [leader.client_address],
                    config=patient,
                    loop=loop,
                    connection_factory=cluster.connection,
                )
                for _ in range(6)
            ]
            try:
                for client in clients:
                    client.connect(timeout=WAIT)
                assert [c.call(increment(1), timeout=WAIT) for c in clients] == [1, 2, 3, 4, 5, 6]
                assert [c.stats().connects for c in clients] == [1, 1, 2, 1, 1, 1]
                assert len(loop.connections) == 3
                assert leader.status().sessions == 6
            finally:
                for client in clients:
                    client.close()
