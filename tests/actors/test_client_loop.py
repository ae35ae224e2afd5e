"""ClientLoop: many RaftClient sessions on one thread, over ZeroMQ sockets owned by that
thread (and over the in-memory transport, whose connections post to the loop).

Against the fake cluster of ``fake_server.py``. Every wait is bounded; every cluster,
loop and client a test makes is closed by a fixture, which also checks that no client
thread is left behind.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest
import zmq

from actors.client import ClientClosedError, ClientLoop, ClientPhase, RaftClient
from actors.transport import InMemoryHub
from examples.counter import get, increment
from protocol.client import ClientSessionCore
from protocol.codec import encode
from protocol.ids import SessionId
from protocol.wire import CreateSession, SessionCreated, decode_client_message
from tests.actors.fake_server import FakeCluster
from tests.actors.test_client import FAST, WAIT_S, client_threads, failure, result
from tests.actors.transport.harness import wait_until


@pytest.fixture
def zmq_cluster() -> Iterator[FakeCluster]:
    made = FakeCluster(None, 2)
    yield made
    made.close()


@pytest.fixture
def loops() -> Iterator[list[ClientLoop]]:
    made: list[ClientLoop] = []
    yield made
    for loop in made:
        loop.close()
    assert client_threads() == [], "a client or loop left a thread running"


def new_loop(loops: list[ClientLoop], **kw: Any) -> ClientLoop:
    loop = ClientLoop(**kw)
    loops.append(loop)
    return loop


def test_many_sessions_share_one_thread_and_apply_exactly_once(
    zmq_cluster: FakeCluster, loops: list[ClientLoop]
) -> None:
    loop = new_loop(loops)
    clients = [
        RaftClient(zmq_cluster.addresses, config=FAST, loop=loop).connect(timeout=WAIT_S)
        for _ in range(12)
    ]
    assert len({c.session_id for c in clients}) == 12
    assert client_threads() == [loop.thread]  # one thread for all of them
    assert all(c.threads() == [] for c in clients)  # the loop is not theirs
    futures = [c.submit(increment(1)) for _ in range(10) for c in clients]
    assert sorted(result(f) for f in futures) == list(range(1, 121))
    assert zmq_cluster.counter() == 120 and len(zmq_cluster.applied) == 120
    for c in clients[:6]:
        c.close()
        assert c.phase is ClientPhase.CLOSED
    assert all(c.call(increment(1), timeout=WAIT_S) > 120 for c in clients[6:])
    wait_until(lambda: len(zmq_cluster.sm.sessions()) == 6)  # the closes reached the leader


def test_a_done_callback_may_submit_the_next_command_on_the_loop_thread(
    zmq_cluster: FakeCluster, loops: list[ClientLoop]
) -> None:
    loop = new_loop(loops)
    client = RaftClient(zmq_cluster.addresses, config=FAST, loop=loop).connect(timeout=WAIT_S)
    finished: Future[list[Any]] = Future()
    seen: list[Any] = []

    def chain(future: Future[Any]) -> None:
        assert threading.current_thread() is loop.thread
        seen.append(future.result())
        if len(seen) == 50:
            finished.set_result(seen)
        else:
            client.submit(increment(1)).add_done_callback(chain)

    # The first answer is held until the callback is attached: a future already done
    # runs its callback on the attaching (main) thread, which is not what this checks.
    zmq_cluster.hold_responses = True
    client.submit(increment(1)).add_done_callback(chain)
    zmq_cluster.release()
    assert result(finished) == list(range(1, 51))

    refused: Future[BaseException] = Future()

    def block(_: Future[Any]) -> None:
        try:
            client.call(get())
        except RuntimeError as exc:
            refused.set_result(exc)

    client.submit(get()).add_done_callback(block)
    assert isinstance(result(refused), RuntimeError)


def test_closing_the_loop_fails_pending_futures_and_refuses_new_clients(
    zmq_cluster: FakeCluster, loops: list[ClientLoop]
) -> None:
    loop = new_loop(loops)
    clients = [
        RaftClient(zmq_cluster.addresses, config=FAST, loop=loop).connect(timeout=WAIT_S)
        for _ in range(3)
    ]
    zmq_cluster.hold_responses = True
    pending = [c.submit(increment(1)) for c in clients]
    wait_until(lambda: zmq_cluster.counter() == 3)
    loop.close(timeout=2.0)
    assert not loop.thread.is_alive()
    assert all(isinstance(failure(f), ClientClosedError) for f in pending)
    assert all(c.phase is ClientPhase.CLOSED for c in clients)
    assert isinstance(failure(clients[0].submit(increment(1))), ClientClosedError)
    clients[0].close()  # the client's own close is still fine (and idempotent)
    with pytest.raises(ClientClosedError):
        RaftClient(zmq_cluster.addresses, config=FAST, loop=loop).connect(timeout=WAIT_S)
    with pytest.raises(ClientClosedError):
        loop.start()
    loop.close()  # idempotent


def test_an_unusable_address_is_skipped_at_once(
    zmq_cluster: FakeCluster, loops: list[ClientLoop]
) -> None:
    loop = new_loop(loops)
    members = ["no-such-transport://x", zmq_cluster.addresses[0]]
    client = RaftClient(members, config=FAST, loop=loop).connect(timeout=WAIT_S)
    assert client.call(increment(1), timeout=WAIT_S) == 1
    assert client.stats().connects == 1  # the bad address never made a connection


def test_bad_and_oversized_frames_are_counted_and_dropped(
    zmq_cluster: FakeCluster, loops: list[ClientLoop]
) -> None:
    loop = new_loop(loops, max_frame_bytes=1_000)
    client = RaftClient(zmq_cluster.addresses, config=FAST, loop=loop).connect(timeout=WAIT_S)
    assert client.session_id is not None
    zmq_cluster.send_raw(client.session_id, b"\xc1 not a message")
    zmq_cluster.send_raw(client.session_id, b"x" * 2_000)
    wait_until(lambda: client.stats().bad_frames == 2)
    assert client.call(increment(1), timeout=WAIT_S) == 1


def test_a_multi_part_message_from_a_server_is_dropped(loops: list[ClientLoop]) -> None:
    loop = new_loop(loops)
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.setsockopt(zmq.RCVTIMEO, int(WAIT_S * 1000))
    try:
        port = router.bind_to_random_port("tcp://127.0.0.1")
        client = RaftClient([f"tcp://127.0.0.1:{port}"], config=FAST, loop=loop)
        opened = threading.Thread(target=client.connect, kwargs={"timeout": WAIT_S})
        opened.start()
        routing_id, frame = router.recv_multipart()
        hello = decode_client_message(frame)
        assert isinstance(hello, CreateSession)
        answer = encode(SessionCreated(SessionId("s1"), hello.nonce))
        router.send_multipart([routing_id, answer, b"trailer"])  # not one frame: dropped
        wait_until(lambda: client.stats().bad_frames == 1)
        assert client.phase is ClientPhase.HANDSHAKING
        router.send_multipart([routing_id, answer])
        opened.join(WAIT_S)
        assert client.phase is ClientPhase.ACTIVE and client.session_id == "s1"
        client.close(timeout=0.5)
    finally:
        router.close(0)
        context.term()


def test_in_memory_connections_post_to_a_shared_loop(loops: list[ClientLoop]) -> None:
    hub = InMemoryHub(seed=3)
    cluster = FakeCluster(hub, 2)
    try:
        loop = new_loop(loops)
        factory = cluster.connection_factory()
        clients = [
            RaftClient(
                cluster.addresses, config=FAST, loop=loop, connection_factory=factory
            ).connect(timeout=WAIT_S)
            for _ in range(4)
        ]
        futures = [c.submit(increment(2)) for c in clients for _ in range(5)]
        assert sorted(result(f) for f in futures) == list(range(2, 41, 2))
        cluster.move_leader(cluster.nodes[1])
        assert clients[0].call(get(), timeout=WAIT_S) == 40
        for c in clients:
            c.close()
    finally:
        cluster.close()
        hub.stop()


def test_a_bug_in_tick_scheduling_is_logged_and_the_sessions_go_on(
    zmq_cluster: FakeCluster,
    loops: list[ClientLoop],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = new_loop(loops)
    clients = [
        RaftClient(zmq_cluster.addresses, config=FAST, loop=loop).connect(timeout=WAIT_S)
        for _ in range(2)
    ]

    def broken(self: Any) -> int | None:
        raise RuntimeError("next_tick_ms bug")

    monkeypatch.setattr(ClientSessionCore, "next_tick_ms", broken)
    # Ticks still come, every tick_ms: wait for three server timeouts' worth of them
    # (the keep-alives they send keep the sessions alive); commands still complete.
    ticks = 2 * 3 * FAST.server_timeout_ms // 20
    wait_until(lambda: caplog.text.count("handling a tick failed") >= ticks, timeout=10)
    assert [result(c.submit(increment(1))) for c in clients] == [1, 2]
    assert all(c.phase is ClientPhase.ACTIVE for c in clients)
