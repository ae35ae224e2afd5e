"""The whole system in one process (3 nodes on the in-memory hub, the counter example,
``RaftClient``): sessions and requests, server requests delivered in order and acked,
retry of unacknowledged server requests, and expiry of silent sessions."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import msgpack
import pytest

from actors.client import (
    ClientPhase,
    RaftClient,
    RequestFailedError,
    SessionExpiredError,
    SessionRejectedError,
    fetch_status,
)
from actors.transport import ClientConnection, InMemoryClientConnection
from examples.counter import CROSSING_STEP, get, increment
from protocol.ids import RequestId
from protocol.wire import (
    ClientRequest,
    ErrorReason,
    KeepAlive,
    RequestError,
    ServerRequest,
    ServerRequestAck,
    SessionClosed,
)
from tests.actors.node.cluster import ACTOR_THREADS, WAIT, RawClient, transport_for, wait_for
from tests.actors.node.system import FAST_CLIENT, SystemCluster, node_threads, system_cluster

pytestmark = pytest.mark.timeout(60)


def results(futures: list[Future[Any]]) -> list[Any]:
    return [f.result(timeout=WAIT) for f in futures]


def crossed(old: int, new: int) -> bool:
    return old // CROSSING_STEP != new // CROSSING_STEP


def wait_no_pending_server_requests(cluster: SystemCluster) -> None:
    wait_for(
        lambda: all(n.status().pending_server_requests == 0 for n in cluster.nodes.values()),
        what="no pending server requests on any replica",
    )


# ------------------------------------------------------------------ 1. sessions, requests


@ACTOR_THREADS
def test_sessions_and_requests_through_raft_client(actor_threads: str) -> None:
    with system_cluster(
        actor_threads=actor_threads, transport=transport_for(actor_threads)
    ) as cluster:
        a = cluster.client()
        b = cluster.client()
        assert a.session_id is not None and b.session_id is not None
        assert a.session_id != b.session_id
        wait_for(
            lambda: all(n.status().sessions == 2 for n in cluster.nodes.values()),
            what="both sessions on every replica",
        )
        # Blocking calls: each response is the value right after that command.
        assert [a.call(increment(1), timeout=WAIT) for _ in range(20)] == list(range(1, 21))
        # Many commands in flight from two sessions at once: each session's commands
        # apply in request-id order, and every value is seen by exactly one command.
        fa = [a.submit(increment(1)) for _ in range(150)]
        fb = [b.submit(increment(1)) for _ in range(150)]
        ra, rb = results(fa), results(fb)
        assert ra == sorted(ra) and rb == sorted(rb)
        assert sorted(ra + rb) == list(range(21, 321))
        assert a.query(get(), timeout=WAIT) == 320
        assert b.call(get(), timeout=WAIT) == 320
        cluster.wait_converged()
        assert set(cluster.replica_counters().values()) == {320}
        assert a.stats().connects >= 1 and a.phase is ClientPhase.ACTIVE

    assert node_threads() == [], "a node, hub or client left a thread running"


def test_many_sessions_application_errors_rejections_and_closing() -> None:
    with system_cluster() as cluster:
        first = cluster.client()
        # A command the counter does not know is an application error: cached like a
        # response, the same on every replica, and the node carries on.
        with pytest.raises(RequestFailedError) as failed:
            first.call(["bogus"], timeout=WAIT)
        assert failed.value.reason is ErrorReason.APPLICATION_ERROR
        assert "bogus" in failed.value.detail
        with pytest.raises(RequestFailedError) as failed:
            first.query(["bogus"], timeout=WAIT)
        assert failed.value.reason is ErrorReason.APPLICATION_ERROR
        # The application refuses sessions that speak another version.
        refused = RaftClient(
            cluster.client_addresses,
            capabilities={"counter": "v2"},
            connection_factory=cluster.connection_factory(),
            config=FAST_CLIENT,
        )
        with pytest.raises(SessionRejectedError):
            refused.connect(timeout=WAIT)
        assert refused.threads() == []
        # Thirty sessions at once, twenty commands each.
        many = [cluster.client() for _ in range(30)]
        futures = [c.submit(increment(1)) for c in many for _ in range(20)]
        assert sorted(results(futures)) == list(range(1, 601))
        wait_for(
            lambda: all(n.status().sessions == 31 for n in cluster.nodes.values()),
            what="31 sessions on every replica",
        )
        # Closing a client ends its session through the log, on every replica.
        for c in many:
            c.close()
        wait_for(
            lambda: all(n.status().sessions == 1 for n in cluster.nodes.values()),
            what="closed sessions removed everywhere",
        )
        assert first.call(get(), timeout=WAIT) == 600
        for node in cluster.nodes.values():
            status = fetch_status(
                node.client_address, timeout=WAIT, connection_factory=cluster.connection_factory()
            )
            assert status.member_id == node.member_id and status.sessions == 1
        cluster.wait_converged()
        cluster.replica_snapshots()


# ------------------------------------------------------------------ 2. server requests


@ACTOR_THREADS
def test_server_requests_reach_the_other_sessions_in_order_exactly_once(
    actor_threads: str,
) -> None:
    with system_cluster(
        actor_threads=actor_threads, transport=transport_for(actor_threads)
    ) as cluster:
        got: dict[str, list[Any]] = {"a": [], "b": []}
        lock = threading.Lock()

        def handler(name: str) -> Callable[[Any], None]:
            def handle(payload: Any) -> None:
                with lock:
                    got[name].append(payload)

            return handle

        a = cluster.client(on_server_request=handler("a"))
        b = cluster.client(on_server_request=handler("b"))
        # Both sessions increment concurrently; whoever crosses a multiple of 10
        # notifies the other one, in the order the crossings were applied.
        fa = [a.submit(increment(3)) for _ in range(40)]
        fb = [b.submit(increment(2)) for _ in range(40)]
        ra, rb = results(fa), results(fb)
        want_b = sorted(["crossed", v] for v in ra if crossed(v - 3, v))
        want_a = sorted(["crossed", v] for v in rb if crossed(v - 2, v))
        assert want_a and want_b

        def delivered() -> bool:
            with lock:
                return len(got["a"]) >= len(want_a) and len(got["b"]) >= len(want_b)

        wait_for(delivered, what="every server request delivered")
        wait_no_pending_server_requests(cluster)  # the acks went through Raft everywhere
        with lock:
            assert got["a"] == want_a  # in order (values only grow), each exactly once
            assert got["b"] == want_b
        assert a.stats().server_requests_handled == len(want_a)
        assert b.stats().server_requests_handled == len(want_b)
        cluster.replica_snapshots()


# ------------------------------------------------------------------ 3. retry


def test_unacknowledged_server_requests_are_resent_until_acked() -> None:
    with system_cluster(retry_interval_ms=50, retry_age_ms=150) as cluster:
        leader = cluster.leader()
        raw = RawClient(cluster)
        try:
            raw.connect(leader.client_address)
            sid = raw.create_session()
            writer = cluster.client()
            assert writer.call(increment(CROSSING_STEP), timeout=WAIT) == CROSSING_STEP
            first = raw.expect(ServerRequest)
            assert first.request_id == 1
            assert msgpack.unpackb(first.payload) == ["crossed", CROSSING_STEP]
            # Not acked: the leader's retry scheduler proposes GetRequestsForRetry and the
            # same request (same id, same payload) comes again, more than once.
            for _ in range(2):
                assert raw.expect(ServerRequest) == first
                raw.send(KeepAlive(sid, 0))
            assert {n.status().pending_server_requests for n in cluster.nodes.values()} == {1}
            raw.send(ServerRequestAck(RequestId(1)))
            wait_no_pending_server_requests(cluster)
            # Drain resends that were already on their way, then nothing more comes
            # for several retry periods.
            while True:
                try:
                    late = raw.inbox.get(timeout=0.6)
                except queue.Empty:
                    break
                assert not isinstance(late, ServerRequest) or late == first
            assert writer.call(increment(1), timeout=WAIT) == CROSSING_STEP + 1
            # A later request gets the next id: ids are never reused.
            assert writer.call(increment(CROSSING_STEP), timeout=WAIT) == 2 * CROSSING_STEP + 1
            second = raw.expect(ServerRequest)
            assert second.request_id == 2
        finally:
            raw.close()


# ------------------------------------------------------------------ 4. expiry


def test_silent_sessions_expire_through_the_log_and_the_client_learns_it() -> None:
    with system_cluster(session_timeout_ms=800, keep_alive_ms=100) as cluster:
        hub = cluster.hub
        assert hub is not None

        def quiet_connection(handler: Callable[[bytes], None]) -> ClientConnection:
            return InMemoryClientConnection(hub, handler, node="quiet-client")

        live = cluster.client()
        quiet = cluster.client(connection_factory=quiet_connection)
        leader = cluster.leader()
        raw = RawClient(cluster)
        try:
            raw.connect(leader.client_address)
            raw.create_session()  # and then never another word
            assert quiet.call(increment(1), timeout=WAIT) == 1
            wait_for(
                lambda: all(n.status().sessions == 3 for n in cluster.nodes.values()),
                what="three sessions everywhere",
            )
            # The raw client says nothing and the quiet one is cut off: both expire.
            hub.isolate("quiet-client")
            pending = quiet.submit(increment(100))
            wait_for(
                lambda: all(n.status().sessions == 1 for n in cluster.nodes.values()),
                what="the two silent sessions expired on every replica",
            )
            # The raw client's connection learns it was expired.
            closed = raw.expect(SessionClosed)
            assert closed.reason.name == "SESSION_EXPIRED"
            raw.send(ClientRequest(RequestId(1), RequestId(1), msgpack.packb(increment(1))))
            assert raw.expect(RequestError).reason.name == "NO_SESSION"
            hub.heal()
            with pytest.raises(SessionExpiredError):
                pending.result(timeout=WAIT)
            with pytest.raises(SessionExpiredError):
                quiet.call(increment(1), timeout=WAIT)
            assert quiet.phase is ClientPhase.FAILED
            # The live session kept going all along; the lost command never ran.
            assert live.call(increment(1), timeout=WAIT) == 2
            assert live.query(get(), timeout=WAIT) == 2
            cluster.wait_converged()
            assert set(cluster.replica_counters().values()) == {2}
        finally:
            raw.close()
