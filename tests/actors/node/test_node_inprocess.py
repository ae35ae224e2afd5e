"""Whole nodes in one process: election, exactly-once commands, failover, restarts."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest

from actors.loop_host import LoopHost
from actors.messages import Tick
from examples.counter import CounterStateMachine
from protocol.ids import RequestId
from protocol.wire import (
    ClientRequest,
    ClientResponse,
    ContinueSession,
    CreateSession,
    NotLeader,
    SessionContinued,
)
from tests.actors.node.cluster import (
    ACTOR_THREADS,
    WAIT,
    RawClient,
    local_cluster,
    transport_for,
    wait_for,
)


def inc(n: int) -> bytes:
    return msgpack.packb(["inc", n])


@pytest.mark.parametrize(
    ("transport", "actor_threads"),
    [
        ("memory", "shared"),
        ("zmq", "shared"),
        ("zmq", "separate"),
        ("zmq", "transport"),
        ("zmq", "hybrid"),
    ],
)
def test_three_nodes_elect_a_leader_and_apply_commands_once_everywhere(
    transport: str, actor_threads: str
) -> None:
    with local_cluster(
        CounterStateMachine, transport=transport, actor_threads=actor_threads
    ) as cluster:
        leader = cluster.leader()
        client = RawClient(cluster)
        try:
            client.connect(leader.client_address)
            client.create_session()
            for rid in range(1, 11):
                client.send(ClientRequest(RequestId(rid), RequestId(rid), inc(2)))
                response = client.expect(ClientResponse)
                assert response.request_id == rid
                assert msgpack.unpackb(response.payload) == 2 * rid
            # A duplicate of request 10 returns the cached response without running again.
            client.send(ClientRequest(RequestId(10), RequestId(10), inc(2)))
            assert msgpack.unpackb(client.expect(ClientResponse).payload) == 20
            client.send(ClientRequest(RequestId(11), RequestId(11), inc(0)))
            assert msgpack.unpackb(client.expect(ClientResponse).payload) == 20
        finally:
            client.close()
        # Where each actor runs (session, retry, consensus, registry): "L" on a
        # transport's I/O thread, "P" on a pykka thread; equal letters share a thread.
        expected = {
            "shared": ["P0", "P0", "P0", "P0"],
            "separate": ["P0", "P1", "P2", "P3"],
            "transport": ["L0", "L0", "L0", "L3"],
            "hybrid": ["P0", "P1", "L2", "L3"],
        }[actor_threads]
        hosts = [ref.host for ref in leader._refs]
        placement = [("L" if isinstance(h, LoopHost) else "P") + str(hosts.index(h)) for h in hosts]
        assert placement == expected
        applied = leader.status().applied_index
        wait_for(
            lambda: all(n.status().applied_index >= applied for n in cluster.nodes.values()),
            what="every replica applied the leader's log",
        )
        assert {n.status().sessions for n in cluster.nodes.values()} == {1}


def test_a_follower_answers_with_the_leaders_client_address() -> None:
    with local_cluster(CounterStateMachine) as cluster:
        leader = cluster.leader()
        follower = next(n for n in cluster.nodes.values() if n is not leader)
        client = RawClient(cluster)
        try:
            client.connect(follower.client_address)
            client.send(CreateSession({}, b"a"))
            assert client.expect(NotLeader).leader_hint == leader.client_address
        finally:
            client.close()


@ACTOR_THREADS
def test_session_survives_leader_failover_and_retried_request_runs_once(
    actor_threads: str,
) -> None:
    """§6.3: a client retrying after a crash gets the cached response, not a second run."""
    with local_cluster(
        CounterStateMachine, actor_threads=actor_threads, transport=transport_for(actor_threads)
    ) as cluster:
        old = cluster.leader()
        client = RawClient(cluster)
        try:
            client.connect(old.client_address)
            sid = client.create_session()
            client.send(ClientRequest(RequestId(1), RequestId(1), inc(5)))
            assert msgpack.unpackb(client.expect(ClientResponse).payload) == 5
            wait_for(
                lambda: all(n.status().applied_index >= old.status().applied_index
                            for n in cluster.nodes.values()),
                what="replication of request 1",
            )  # fmt: skip
            cluster.stop(old.member_id)
            new = cluster.leader()
            assert new.member_id != old.member_id
            client.connect(new.client_address)
            client.send(ContinueSession(sid, b"b"))
            client.expect(SessionContinued)
            # The response to request 1 was "lost": the client resends it with its id.
            client.send(ClientRequest(RequestId(1), RequestId(1), inc(5)))
            assert msgpack.unpackb(client.expect(ClientResponse).payload) == 5
            client.send(ClientRequest(RequestId(2), RequestId(2), inc(1)))
            assert msgpack.unpackb(client.expect(ClientResponse).payload) == 6
        finally:
            client.close()


@ACTOR_THREADS
def test_durable_cluster_restarts_from_disk(tmp_path: Path, actor_threads: str) -> None:
    with local_cluster(
        CounterStateMachine,
        data_dir=tmp_path,
        actor_threads=actor_threads,
        transport=transport_for(actor_threads),
    ) as cluster:
        leader = cluster.leader()
        client = RawClient(cluster)
        try:
            client.connect(leader.client_address)
            sid = client.create_session()
            for rid in range(1, 6):
                client.send(ClientRequest(RequestId(rid), RequestId(rid), inc(1)))
                client.expect(ClientResponse)
            for member in list(cluster.nodes):
                cluster.stop(member)
            for member in list(cluster.configs):
                cluster.start(member)
            leader = cluster.leader()
            client.connect(leader.client_address)
            client.send(ContinueSession(sid, b"b"))
            client.expect(SessionContinued)
            client.send(ClientRequest(RequestId(6), RequestId(6), inc(1)))
            assert msgpack.unpackb(client.expect(ClientResponse).payload) == 6
        finally:
            client.close()


def test_a_stuck_registry_finds_one_slow_tick_not_a_pile() -> None:
    """The slow ticker (registry and retry scheduler, every 50 ms) ticks through a
    gate too: while the registry is stuck the ticks are skipped, and once it is free
    it finds one waiting, not one per period it missed."""
    with local_cluster(CounterStateMachine, transport="memory", actor_threads="separate") as c:
        node = c.leader()
        registry = node.wiring.registry
        assert registry is not None
        handled: list[float] = []
        stuck, release = threading.Event(), threading.Event()

        def count_ticks(actor: Any) -> None:
            handle = actor.handle

            def counting(message: Any) -> None:
                if isinstance(message, Tick):
                    handled.append(time.monotonic())
                handle(message)

            actor.handle = counting

        def block(actor: Any) -> None:
            stuck.set()
            release.wait(WAIT)

        registry.call(count_ticks, timeout=WAIT)
        holder = threading.Thread(target=lambda: registry.call(block, timeout=WAIT))
        holder.start()
        try:
            assert stuck.wait(WAIT)
            gate = node._slow_gates[registry]
            wait_for(lambda: gate.skipped >= 8, what="slow ticks skipped while stuck")
        finally:
            released = time.monotonic()
            release.set()
            holder.join(WAIT)
        wait_for(registry.idle, what="the registry catching up")
        caught_up = len(handled)
        after = [t for t in handled if t >= released]
        # the one that waited, then at most one per period since (not the 8+ skipped)
        fired = 2 + int((time.monotonic() - released) / 0.05)
        assert 1 <= len(after) <= fired, (len(after), fired, gate.skipped)
        wait_for(lambda: len(handled) > caught_up, what="slow ticks going on")
