"""RaftClient against a fake cluster (real registries and session state machine, fake
consensus: see ``fake_server.py``), over the in-memory transport and once over ZeroMQ.

Every wait is bounded; every client and cluster a test makes is closed by a fixture,
which also checks that no client thread is left behind.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import pytest

from actors.client import (
    ClientClosedError,
    ClientConfig,
    ClientPhase,
    RaftClient,
    RequestFailedError,
    RequestTimeoutError,
    ResponseDecodeError,
    SessionExpiredError,
    SessionRejectedError,
    fetch_status,
)
from actors.transport import Faults, InMemoryClientConnection, InMemoryHub
from examples.counter import decrement, get, increment
from protocol.codec import encode
from protocol.ids import RequestId
from protocol.session import MsgpackCodec
from protocol.wire import (
    ClientResponse,
    ContinueSession,
    CreateSession,
    ErrorReason,
    NotLeader,
    ServerRequestAck,
)
from tests.actors.fake_server import FakeCluster
from tests.actors.transport.harness import wait_until

WAIT_S = 10.0
#: Quick timers so failovers and retries happen within a test's budget.
FAST = ClientConfig(
    ("replaced",),
    keep_alive_interval_ms=100,
    resend_interval_ms=300,
    server_timeout_ms=400,
    handshake_timeout_ms=300,
    retry_backoff_ms=20,
)
THREAD_PREFIXES = ("raft-client", "raft-transport-client")


def client_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIXES)]


@pytest.fixture
def hub() -> Iterator[InMemoryHub]:
    hub = InMemoryHub(seed=7)
    yield hub
    hub.stop()


@pytest.fixture
def cluster(hub: InMemoryHub) -> Iterator[FakeCluster]:
    made = FakeCluster(hub, 3)
    yield made
    made.close()


MakeClient = Callable[..., RaftClient]


@pytest.fixture
def make_client(cluster: FakeCluster) -> Iterator[MakeClient]:
    made: list[RaftClient] = []

    def make(members: list[str] | None = None, **kw: Any) -> RaftClient:
        kw.setdefault("connection_factory", cluster.connection_factory())
        kw.setdefault("config", FAST)
        client = RaftClient(members if members is not None else cluster.addresses, **kw)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()
    assert client_threads() == [], "a client left a thread running"


def result(future: Future[Any]) -> Any:
    return future.result(timeout=WAIT_S)


def failure(future: Future[Any]) -> BaseException | None:
    return future.exception(timeout=WAIT_S)


def check_a_listener_hears_every_crossing(
    cluster: FakeCluster,
    make_client: MakeClient,
    connected: Callable[[], None] = lambda: None,
) -> None:
    """A listener (with a handler) and a writer; ``connected()`` runs once both are
    connected. Five writes each cross a multiple of 10, so the counter tells the
    listener: it hears of each once, in order, and acknowledges all (through the log)."""
    seen: list[Any] = []
    all_seen = threading.Event()

    def handler(payload: Any) -> None:
        seen.append(payload)
        if len(seen) == 5:
            all_seen.set()

    listener = make_client(on_server_request=handler).connect(timeout=WAIT_S)
    writer = make_client().connect(timeout=WAIT_S)
    connected()
    for _ in range(5):
        writer.call(increment(10), timeout=WAIT_S)
    assert all_seen.wait(WAIT_S)
    wait_until(lambda: cluster.pending_server_requests() == 0)  # acked, through the log
    assert seen == [["crossed", v] for v in (10, 20, 30, 40, 50)]
    assert listener.stats().server_requests_handled == 5


# ------------------------------------------------------------------ sessions and requests


def test_connect_opens_a_session_and_commands_apply_exactly_once(
    cluster: FakeCluster, make_client: MakeClient
) -> None:
    client = make_client().connect(timeout=WAIT_S)
    assert client.session_id is not None and client.phase is ClientPhase.ACTIVE
    assert cluster.sm.sessions() == {client.session_id: {}}
    assert client.call(increment(5), timeout=WAIT_S) == 5
    assert client.call(decrement(2)) == 3
    assert client.query(get(), timeout=WAIT_S) == 3
    assert result(client.query_async(get())) == 3
    assert cluster.applied == [(client.session_id, 1), (client.session_id, 2)]


def test_capabilities_go_with_the_session_and_a_refusal_is_typed(
    cluster: FakeCluster, make_client: MakeClient
) -> None:
    client = make_client(capabilities={"counter": "v1"}).connect(timeout=WAIT_S)
    assert cluster.sm.sessions()[client.session_id] == {"counter": "v1"}  # type: ignore[index]
    refused = make_client(capabilities={"counter": "v2"})
    with pytest.raises(SessionRejectedError, match="v1 only"):
        refused.connect(timeout=WAIT_S)
    assert refused.threads() == []


def test_many_concurrent_futures_each_complete_once_with_their_own_response(
    cluster: FakeCluster, make_client: MakeClient
) -> None:
    client = make_client().connect(timeout=WAIT_S)
    futures: list[Future[Any]] = []
    lock = threading.Lock()

    def submitter() -> None:
        mine = [client.submit(increment(1)) for _ in range(100)]
        with lock:
            futures.extend(mine)

    threads = [threading.Thread(target=submitter) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    assert len(futures) == 400
    assert sorted(result(f) for f in futures) == list(range(1, 401))
    assert cluster.counter() == 400
    assert sorted(rid for _, rid in cluster.applied) == list(range(1, 401))


def test_duplicated_and_reordered_frames_change_nothing(
    hub: InMemoryHub, cluster: FakeCluster, make_client: MakeClient
) -> None:
    client = make_client().connect(timeout=WAIT_S)
    hub.faults = Faults(duplicate=0.5, reorder=0.3, reorder_ms=5)
    futures = [client.submit(increment(1)) for _ in range(100)]
    assert sorted(result(f) for f in futures) == list(range(1, 101))
    hub.faults = Faults()
    assert hub.stats().duplicated > 0
    assert cluster.counter() == 100 and len(cluster.applied) == 100
    # a stray duplicate of an old answer is ignored too
    assert client.session_id is not None
    cluster.send_raw(client.session_id, encode(ClientResponse(RequestId(1), b"\x00")))
    assert client.call(get(), timeout=WAIT_S) == 100


def test_application_errors_and_undecodable_responses_fail_only_their_future(
    make_client: MakeClient,
) -> None:
    class PickyCodec(MsgpackCodec):
        def decode_response(self, data: bytes) -> Any:  # type: ignore[override]
            value = super().decode_response(data)
            if value == 2:
                raise ValueError("I do not like 2")
            return value

    client = make_client(codec=PickyCodec()).connect(timeout=WAIT_S)
    with pytest.raises(RequestFailedError) as info:
        client.call(["bogus"], timeout=WAIT_S)
    assert info.value.reason is ErrorReason.APPLICATION_ERROR
    assert client.call(increment(1)) == 1
    error = failure(client.submit(increment(1)))
    assert isinstance(error, ResponseDecodeError) and isinstance(error.__cause__, ValueError)
    assert client.call(increment(1)) == 3


def test_a_bad_frame_is_counted_and_dropped(cluster: FakeCluster, make_client: MakeClient) -> None:
    client = make_client().connect(timeout=WAIT_S)
    assert client.session_id is not None
    cluster.send_raw(client.session_id, b"\xc1 not a message")
    wait_until(lambda: client.stats().bad_frames == 1)
    assert client.call(increment(1), timeout=WAIT_S) == 1


# ------------------------------------------------------------------ server requests


@pytest.mark.parametrize("faults", [Faults(), Faults(duplicate=0.5, reorder=0.3, reorder_ms=5)])
def test_server_requests_are_handled_in_order_exactly_once_and_acked(
    hub: InMemoryHub, cluster: FakeCluster, make_client: MakeClient, faults: Faults
) -> None:
    def faulty() -> None:
        hub.faults = faults

    try:
        check_a_listener_hears_every_crossing(cluster, make_client, faulty)
    finally:
        hub.faults = Faults()


def test_a_server_request_is_acked_only_after_its_handler_returned(
    cluster: FakeCluster, make_client: MakeClient
) -> None:
    entered, gate = threading.Event(), threading.Event()
    calls: list[Any] = []

    def handler(payload: Any) -> None:
        calls.append(payload)
        entered.set()
        assert gate.wait(WAIT_S)

    make_client(on_server_request=handler).connect(timeout=WAIT_S)
    writer = make_client().connect(timeout=WAIT_S)
    writer.call(increment(10), timeout=WAIT_S)
    assert entered.wait(WAIT_S)
    retried = cluster.retried
    wait_until(lambda: cluster.retried > retried)  # the cluster resent it: not acked
    with cluster.lock:
        assert not any(isinstance(m, ServerRequestAck) for m in cluster.leader.received)
    assert cluster.pending_server_requests() == 1 and calls == [["crossed", 10]]
    gate.set()
    wait_until(lambda: cluster.pending_server_requests() == 0)
    assert calls == [["crossed", 10]]  # the resend was not handled again


def test_a_handler_may_use_the_client_and_one_that_raises_does_not_block_the_rest(
    make_client: MakeClient,
) -> None:
    answers: list[Any] = []
    done = threading.Event()
    listener: RaftClient | None = None

    def handler(payload: Any) -> None:
        assert listener is not None
        if payload == ["crossed", 10]:
            raise RuntimeError("handler bug")
        answers.append(listener.call(get(), timeout=WAIT_S))  # no deadlock
        done.set()

    listener = make_client(on_server_request=handler).connect(timeout=WAIT_S)
    writer = make_client().connect(timeout=WAIT_S)
    writer.call(increment(10), timeout=WAIT_S)
    writer.call(increment(10), timeout=WAIT_S)
    assert done.wait(WAIT_S)
    assert answers == [20]
    stats = listener.stats()
    assert stats.server_requests_handled == 2 and stats.handler_errors == 1


# ------------------------------------------------------------------ leaders


def test_a_follower_sends_the_client_to_the_leader_transparently(
    cluster: FakeCluster, make_client: MakeClient
) -> None:
    leader, follower, _ = cluster.nodes
    client = make_client([follower.address, leader.address]).connect(timeout=WAIT_S)
    assert client.call(increment(1), timeout=WAIT_S) == 1
    assert client.stats().connects == 2
    with cluster.lock:
        assert [type(m) for m in follower.received] == [CreateSession]


@pytest.mark.parametrize("crash", [False, True], ids=["step-down", "crash"])
def test_after_a_leader_change_the_session_continues_and_pending_requests_complete_once(
    cluster: FakeCluster, make_client: MakeClient, crash: bool
) -> None:
    _, new, _ = cluster.nodes
    client = make_client().connect(timeout=WAIT_S)
    sid = client.session_id
    assert client.call(increment(1), timeout=WAIT_S) == 1
    cluster.hold_responses = True  # applied, but the answers die with the old leader
    pending = [client.submit(increment(1)) for _ in range(3)]
    wait_until(lambda: cluster.counter() == 4)
    if crash:
        cluster.crash_leader(new)
    else:
        cluster.move_leader(new)
    during = [client.submit(increment(1)) for _ in range(2)]
    assert [result(f) for f in pending + during] == [2, 3, 4, 5, 6]
    assert client.session_id == sid and client.phase is ClientPhase.ACTIVE
    assert cluster.counter() == 6
    assert sorted(rid for _, rid in cluster.applied) == [1, 2, 3, 4, 5, 6]  # exactly once
    with cluster.lock:
        assert any(isinstance(m, ContinueSession) and m.session_id == sid for m in new.received)


def test_frames_from_a_connection_already_left_are_ignored(
    hub: InMemoryHub, cluster: FakeCluster, make_client: MakeClient
) -> None:
    handlers: list[Callable[[bytes], None]] = []

    def factory(on_frame: Callable[[bytes], None]) -> InMemoryClientConnection:
        handlers.append(on_frame)
        return InMemoryClientConnection(hub, on_frame)

    leader, follower, _ = cluster.nodes
    client = make_client([follower.address, leader.address], connection_factory=factory)
    client.connect(timeout=WAIT_S)
    assert len(handlers) == 2  # the follower's, then the leader's
    handlers[0](encode(NotLeader("inmem://nobody-here")))  # late, from the follower
    wait_until(lambda: client.stats().stale_frames == 1)
    assert client.call(increment(1), timeout=WAIT_S) == 1
    assert client.stats().connects == 2  # it did not follow the stale hint


# ------------------------------------------------------------------ failures


def test_a_timeout_fires_only_after_the_deadline_and_the_late_answer_is_ignored(
    cluster: FakeCluster, make_client: MakeClient
) -> None:
    client = make_client().connect(timeout=WAIT_S)
    cluster.hold_responses = True
    start = time.monotonic()
    with pytest.raises(RequestTimeoutError):
        client.call(increment(1), timeout=0.2)
    assert time.monotonic() - start >= 0.2
    error = failure(client.submit(increment(1), timeout=0.05))
    assert isinstance(error, TimeoutError)  # RequestTimeoutError is a TimeoutError
    no_deadline = client.submit(increment(1))
    cluster.release()  # the answers arrive late; the timed-out futures stay failed
    assert result(no_deadline) == 3
    assert client.call(get(), timeout=WAIT_S) == 3  # the timed-out commands did apply


def test_an_expired_session_fails_pending_and_later_requests(
    cluster: FakeCluster, make_client: MakeClient
) -> None:
    client = make_client().connect(timeout=WAIT_S)
    assert client.session_id is not None
    cluster.hold_responses = True
    pending = [client.submit(increment(1)) for _ in range(3)]
    wait_until(lambda: cluster.counter() == 3)
    cluster.expire(client.session_id)
    assert all(isinstance(failure(f), SessionExpiredError) for f in pending)
    assert client.phase is ClientPhase.FAILED
    with pytest.raises(SessionExpiredError):
        client.call(increment(1), timeout=WAIT_S)
    with pytest.raises(SessionExpiredError):
        client.query(get(), timeout=WAIT_S)


def test_connect_gives_up_after_its_timeout_and_leaves_no_threads(
    hub: InMemoryHub, make_client: MakeClient
) -> None:
    client = make_client(["inmem://nobody-here"])
    with pytest.raises(TimeoutError):
        client.connect(timeout=0.3)
    assert client.threads() == []
    with pytest.raises(ClientClosedError):
        client.connect()


# ------------------------------------------------------------------ life cycle


def test_close_ends_the_session_fails_pending_futures_and_leaves_no_threads(
    cluster: FakeCluster, make_client: MakeClient
) -> None:
    before = set(threading.enumerate())
    client = make_client(on_server_request=lambda payload: None).connect(timeout=WAIT_S)
    sid = client.session_id
    assert client.call(increment(1), timeout=WAIT_S) == 1
    cluster.hold_responses = True
    pending = client.submit(increment(1))
    client.close()
    assert isinstance(failure(pending), ClientClosedError)
    assert set(threading.enumerate()) == before
    wait_until(lambda: sid not in cluster.sm.sessions())  # CloseSession reached the leader
    client.close()  # idempotent
    assert isinstance(failure(client.submit(increment(1))), ClientClosedError)
    with pytest.raises(ClientClosedError):
        client.call(increment(1))


def test_a_context_manager_connects_and_closes(
    cluster: FakeCluster, make_client: MakeClient
) -> None:
    with make_client() as client:
        assert client.call(increment(1), timeout=WAIT_S) == 1
        assert client.threads() != []
    assert client.threads() == [] and client.phase is ClientPhase.CLOSED


def test_a_handler_may_close_its_own_client(make_client: MakeClient) -> None:
    closed = threading.Event()
    listener: RaftClient | None = None

    def handler(payload: Any) -> None:
        assert listener is not None
        listener.close()
        closed.set()

    listener = make_client(on_server_request=handler).connect(timeout=WAIT_S)
    make_client().connect(timeout=WAIT_S).call(increment(10), timeout=WAIT_S)
    assert closed.wait(WAIT_S)
    listener.close()  # from outside: joins what the handler could not
    assert listener.threads() == []


def test_blocking_calls_in_a_done_callback_are_refused(make_client: MakeClient) -> None:
    client = make_client().connect(timeout=WAIT_S)
    outcome: Future[Any] = Future()

    def callback(_: Future[Any]) -> None:
        try:
            client.call(get())
        except RuntimeError as exc:
            outcome.set_result(exc)

    client.submit(increment(1)).add_done_callback(callback)
    assert isinstance(result(outcome), RuntimeError)


def test_misuse_is_refused(cluster: FakeCluster, make_client: MakeClient) -> None:
    client = make_client()
    with pytest.raises(RuntimeError, match="connect"):
        client.submit(get())
    client.connect(timeout=WAIT_S)
    with pytest.raises(RuntimeError, match="already"):
        client.connect()
    with pytest.raises(ValueError):
        client.submit(get(), timeout=-1)
    with pytest.raises(TypeError):
        client.submit(object())  # the codec cannot encode it
    with pytest.raises(TypeError):
        RaftClient("inmem://a")
    with pytest.raises(ValueError):
        RaftClient(["inmem://a"], tick_ms=0)
    with pytest.raises(ValueError):
        RaftClient([])
    assert client.config.members == tuple(cluster.addresses)


# ------------------------------------------------------------------ status


def test_fetch_status_asks_any_node_without_a_session(
    hub: InMemoryHub, cluster: FakeCluster
) -> None:
    follower = cluster.nodes[1]

    def factory(on_frame: Callable[[bytes], None]) -> InMemoryClientConnection:
        return InMemoryClientConnection(hub, on_frame)

    status = fetch_status(follower.address, timeout=WAIT_S, connection_factory=factory)
    assert status.role == "follower" and status.leader == "n1"
    assert status.client_address == follower.address and status.sessions == 0
    with pytest.raises(TimeoutError):
        fetch_status("inmem://nobody-here", timeout=0.3, connection_factory=factory)
    assert client_threads() == []


# ------------------------------------------------------------------ over ZeroMQ


def test_over_zeromq_sessions_failover_status_and_a_clean_close() -> None:
    cluster = FakeCluster(None, 2)
    try:
        before = set(threading.enumerate())
        follower = cluster.nodes[1]
        client = RaftClient([follower.address, cluster.nodes[0].address], config=FAST).connect(
            timeout=WAIT_S
        )
        assert client.call(increment(2), timeout=WAIT_S) == 2
        cluster.move_leader(follower)
        assert client.call(increment(2), timeout=WAIT_S) == 4
        assert client.query(get(), timeout=WAIT_S) == 4
        assert fetch_status(follower.address, timeout=WAIT_S).role == "leader"
        client.close()
        assert set(threading.enumerate()) == before
        assert cluster.counter() == 4
    finally:
        cluster.close()
    assert client_threads() == []
