"""Sessions of one ClientLoop sharing connections, against a fake cluster (real
registries and session state machine, see ``fake_server.py``), in memory and over
ZeroMQ: shared connections, batches both ways, hints, failover, server requests, bad
items and the sessions-per-connection bound."""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

import pytest

from actors.client import ClientLoop, RaftClient
from actors.client.connections import BATCH_BYTES
from actors.transport import InMemoryClientConnection, InMemoryHub
from examples.counter import increment
from protocol.codec import decode, encode
from protocol.ids import RequestId
from protocol.wire import (
    SERVER_FRAME_TYPES,
    ClientBatch,
    ClientRequest,
    CloseReason,
    CreateSession,
    NotLeader,
    ServerBatch,
    SessionClosed,
    SessionCreated,
    decode_server_message,
)
from tests.actors.fake_server import FakeCluster
from tests.actors.test_client import (
    FAST,
    WAIT_S,
    check_a_listener_hears_every_crossing,
    client_threads,
)
from tests.actors.transport.harness import wait_until


@pytest.fixture(params=["inmem", "zmq"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def cluster(kind: str) -> Iterator[FakeCluster]:
    hub = InMemoryHub(seed=11) if kind == "inmem" else None
    made = FakeCluster(hub, 3, max_sessions_per_connection=4)
    yield made
    made.close()
    if hub is not None:
        hub.stop()


MakeClient = Callable[..., RaftClient]
T = TypeVar("T")


@pytest.fixture
def loop() -> Iterator[ClientLoop]:
    with ClientLoop(name="raft-client-shared", sessions_per_connection=4) as made:
        yield made
    assert client_threads() == [], "a client left a thread running"


@pytest.fixture
def make_client(cluster: FakeCluster, loop: ClientLoop) -> Iterator[MakeClient]:
    made: list[RaftClient] = []
    # one factory object for all: connections are shared only when it is the same
    factory = cluster.connection_factory() if cluster.hub is not None else None

    def make(members: list[str] | None = None, **kw: Any) -> RaftClient:
        kw.setdefault("connection_factory", factory)
        kw.setdefault("config", FAST)
        kw.setdefault("loop", loop)
        client = RaftClient(members if members is not None else cluster.addresses, **kw)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def senders(cluster: FakeCluster) -> set[bytes]:
    with cluster.lock:
        return set(cluster.leader.connections)


def test_sessions_share_one_connection_and_batch_both_ways(
    cluster: FakeCluster, loop: ClientLoop, make_client: MakeClient
) -> None:
    clients = [make_client().connect(timeout=WAIT_S) for _ in range(3)]
    assert len(loop.connections) == 1 and len(senders(cluster)) == 1
    futures: list[Future[Any]] = []
    done = threading.Event()

    def submit_all() -> None:  # on the loop thread: all of it in one turn
        for client in clients:
            futures.extend(client.submit(increment(1)) for _ in range(20))
        done.set()

    loop.post(submit_all)
    assert done.wait(WAIT_S)
    assert sorted(f.result(timeout=WAIT_S) for f in futures) == list(range(1, 61))
    assert cluster.leader.batches_in >= 1  # the turn went out in (few) batch frames
    applied = cluster.applied
    assert len(applied) == len(set(applied)) == 60  # each command once
    assert all(c.stats().bad_frames == 0 and c.stats().connects == 1 for c in clients)


def test_one_session_follows_a_hint_while_the_other_stays(
    cluster: FakeCluster, loop: ClientLoop, make_client: MakeClient
) -> None:
    a = make_client().connect(timeout=WAIT_S)
    b = make_client().connect(timeout=WAIT_S)
    assert b.session_id is not None
    follower = cluster.nodes[1]
    cluster.send_to_session(b.session_id, NotLeader(follower.address))
    # b goes to the follower, which sends it back; it takes a fresh connection (the
    # one it left said "not here", so it takes no newcomers), while a, which never
    # noticed, stays where it was
    wait_until(lambda: b.stats().connects == 3)
    assert b.call(increment(1), timeout=WAIT_S) == 1
    assert a.call(increment(1), timeout=WAIT_S) == 2
    assert a.stats().connects == 1
    wait_until(lambda: len(loop.connections) == 2)  # the follower's connection is closed
    with cluster.lock:
        assert follower.connections  # b did go there


def test_a_failover_moves_every_session_and_resends_with_the_same_ids(
    cluster: FakeCluster, loop: ClientLoop, make_client: MakeClient
) -> None:
    clients = [make_client().connect(timeout=WAIT_S) for _ in range(3)]
    cluster.hold_responses = True
    futures = [c.submit(increment(1)) for c in clients]
    wait_until(lambda: len(cluster.applied) == 3)
    cluster.move_leader(cluster.nodes[2])  # the answers are lost with the old leader
    assert sorted(f.result(timeout=WAIT_S) for f in futures) == [1, 2, 3]
    assert len(cluster.applied) == 3  # the resends got the cached answers
    assert [c.call(increment(1), timeout=WAIT_S) for c in clients] == [4, 5, 6]
    wait_until(lambda: len(loop.connections) == 1)  # all on one connection to the new leader
    assert len(senders(cluster)) == 1


def test_server_requests_on_a_shared_connection_arrive_in_order_exactly_once(
    cluster: FakeCluster, make_client: MakeClient
) -> None:
    def on_one_connection() -> None:
        assert len(senders(cluster)) == 1

    check_a_listener_hears_every_crossing(cluster, make_client, on_one_connection)


def test_sessions_beyond_the_limit_get_another_connection(
    cluster: FakeCluster, make_client: MakeClient
) -> None:
    with ClientLoop(name="raft-client-small", sessions_per_connection=2) as small:
        clients = [make_client(loop=small).connect(timeout=WAIT_S) for _ in range(5)]
        assert len(small.connections) == 3
        assert len(senders(cluster)) == 3
        assert [c.call(increment(1), timeout=WAIT_S) for c in clients] == [1, 2, 3, 4, 5]
        for client in clients:
            client.close()
        wait_until(lambda: len(small.connections) == 0)  # closed with their last session


@pytest.fixture
def raw_cluster() -> Iterator[FakeCluster]:
    hub = InMemoryHub(seed=5)
    made = FakeCluster(hub, 1, max_sessions_per_connection=4)
    yield made
    made.close()
    hub.stop()


def test_a_loop_sharing_more_widely_than_the_node_allows_learns_the_nodes_number(
    cluster: FakeCluster, make_client: MakeClient
) -> None:
    """The node takes 4 sessions per connection, the loop puts 6 on one: the sessions
    on channels 4 and 5 are refused, back off and take a fresh connection; from then on
    the loop puts at most 4 on a connection to that node, and nobody bounces."""
    with ClientLoop(name="raft-client-wide", sessions_per_connection=6) as wide:
        clients = [make_client(loop=wide).connect(timeout=WAIT_S) for _ in range(12)]
        assert [c.call(increment(1), timeout=WAIT_S) for c in clients] == list(range(1, 13))
        # the 5th was refused once; without learning, the 9th and 10th would be too
        assert [c.stats().connects for c in clients] == [1] * 4 + [2] + [1] * 7
        held = on_loop(wide, lambda: wide.connections.table.connections().values())
        assert sorted(held) == [4, 4, 4]  # sessions per connection
        for client in clients:
            client.close()


def on_loop(loop: ClientLoop, read: Callable[[], Iterable[T]]) -> list[T]:
    """What ``read`` gives, read on the loop thread (the pool is the loop's alone)."""
    got: Future[list[T]] = Future()
    loop.post(lambda: got.set_result(list(read())))
    return got.result(timeout=WAIT_S)


def largest_batch_of_a_burst(cluster: FakeCluster, loop: ClientLoop, *clients: RaftClient) -> int:
    """Each client submits 120 commands of ~330 bytes in one loop turn (so they go out
    in batches); the largest batch frame the leader got."""
    with cluster.lock:
        cluster.leader.largest_batch = 0
    futures: list[Future[Any]] = []
    posted = threading.Event()

    def submit_all() -> None:
        for client in clients:
            futures.extend(client.submit(["get", "x" * 300]) for _ in range(120))
        posted.set()

    loop.post(submit_all)
    assert posted.wait(WAIT_S)
    for future in futures:
        future.result(timeout=WAIT_S)
    with cluster.lock:
        return cluster.leader.largest_batch


def test_batches_stay_under_every_sharing_sessions_payload_limit() -> None:
    """A shared connection batches under the payload limit of every session on it (the
    node announces 30000 bytes, below the loop's own bound): the bound drops when a
    session with a lower limit joins and rises again when it leaves."""
    assert BATCH_BYTES > 40_000  # (else a burst would not show the announced limit)
    hub = InMemoryHub(seed=3)
    cluster = FakeCluster(hub, 1, max_payload_bytes=30_000)
    factory = cluster.connection_factory()
    try:
        with ClientLoop(name="raft-client-bound") as loop:

            def client(max_payload_bytes: int = 1 << 20) -> RaftClient:
                config = dataclasses.replace(FAST, max_payload_bytes=max_payload_bytes)
                made = RaftClient(
                    cluster.addresses, config=config, loop=loop, connection_factory=factory
                )
                return made.connect(timeout=WAIT_S)

            big = client()  # told 30000 by the node
            assert 1000 < largest_batch_of_a_burst(cluster, loop, big) <= 30_000
            small = client(1000)
            assert largest_batch_of_a_burst(cluster, loop, big, small) <= 1000
            small.close()
            assert 1000 < largest_batch_of_a_burst(cluster, loop, big) <= 30_000
            smaller = client(500)
            assert largest_batch_of_a_burst(cluster, loop, big, smaller) <= 500
            smaller.close()
            assert 1000 < largest_batch_of_a_burst(cluster, loop, big) <= 30_000
            assert len(loop.connections) == 1  # all of it on one shared connection
            big.close()
    finally:
        cluster.close()
        hub.stop()


def test_late_frames_for_a_channel_count_as_stale_frames_of_the_session_that_left_it(
    raw_cluster: FakeCluster,
) -> None:
    """A frame for a channel whose session left is that session's stale frame (not the
    others'), also when it arrives after the connection closed with its last session."""
    hub = raw_cluster.hub
    assert hub is not None
    handlers: list[Callable[[bytes], None]] = []

    def factory(on_frame: Callable[[bytes], None]) -> InMemoryClientConnection:
        handlers.append(on_frame)
        return InMemoryClientConnection(hub, on_frame)

    late = encode(NotLeader("inmem://nobody-here"))
    with ClientLoop(name="raft-client-stale") as loop:
        a, b = (
            RaftClient(raw_cluster.addresses, config=FAST, loop=loop, connection_factory=factory)
            for _ in range(2)
        )
        a.connect(timeout=WAIT_S)
        b.connect(timeout=WAIT_S)
        assert len(handlers) == 1  # one shared connection: a on channel 0, b on 1
        b.close()
        handlers[0](encode(ServerBatch(((1, late),))))
        wait_until(lambda: b.stats().stale_frames == 1)
        assert a.call(increment(1), timeout=WAIT_S) == 1  # the hint did not reach a
        a.close()
        assert len(loop.connections) == 0
        handlers[0](late)  # posted after the close: still a's, and stale
        wait_until(lambda: a.stats().stale_frames == 1)
        assert a.stats().connects == 1 and b.stats().stale_frames == 1


def test_a_batch_with_a_bad_item_costs_only_that_channel(raw_cluster: FakeCluster) -> None:
    cluster = raw_cluster
    frames: queue.Queue[bytes] = queue.Queue()
    assert cluster.hub is not None
    conn = InMemoryClientConnection(cluster.hub, frames.put)
    conn.start()
    try:
        conn.connect(cluster.leader.address)
        request = ClientRequest(RequestId(1), RequestId(1), b"x")
        conn.send(encode(ClientBatch(((0, encode(CreateSession({}, b"n"))), (1, b"\xc1junk")))))
        conn.send(encode(ClientBatch(((2, encode(request)),))))
        got: list[tuple[int, Any]] = []
        while len(got) < 3:
            msg: Any = decode(frames.get(timeout=WAIT_S), SERVER_FRAME_TYPES)
            if isinstance(msg, ServerBatch):
                got.extend((c, decode_server_message(item)) for c, item in msg.items)
            else:
                got.append((0, msg))
        assert (1, SessionClosed(CloseReason.PROTOCOL_ERROR, None)) in got
        assert any(c == 0 and isinstance(m, SessionCreated) for c, m in got)
        assert any(c == 2 and m.request_id == 1 for c, m in got)  # NO_SESSION: a typed error
        # a channel beyond the node's limit (4) is refused, without state
        conn.send(encode(ClientBatch(((4, encode(request)),))))
        refused: Any = decode(frames.get(timeout=WAIT_S), SERVER_FRAME_TYPES)
        assert refused == ServerBatch(((4, encode(SessionClosed(CloseReason.NO_SESSION, None))),))
        # a batch that is no batch (a channel beyond 255) drops the whole connection;
        # only channel 0 holds anything now, so the answer is a single message
        conn.send(encode(ClientBatch(((256, encode(request)),))))
        closed: Any = decode(frames.get(timeout=WAIT_S), SERVER_FRAME_TYPES)
        assert closed == SessionClosed(CloseReason.PROTOCOL_ERROR, None)
        with cluster.lock:
            assert cluster.leader.registry.status().connections == 0
    finally:
        conn.stop()
