"""Shared pieces of the whole-system tests (``test_system_*.py``): a cluster fixture that
also makes ``RaftClient``\\ s on it, and checks that replicas agree.

Every cluster and client a test makes is closed by the fixture (clients first), even
when the test fails; every wait has a deadline.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

import msgpack

from actors.client import ClientConfig, RaftClient
from actors.host import HostedRef
from actors.node import Node
from actors.transport import ClientConnection, InMemoryClientConnection, ZmqClientConnection
from examples.counter import CounterStateMachine, get, increment
from protocol.ids import MemberId
from tests.actors.node.cluster import WAIT, LocalCluster, tcp_endpoints, wait_for

#: Client timers short enough for failovers to finish well within a test's budget.
FAST_CLIENT = ClientConfig(
    ("replaced",),
    keep_alive_interval_ms=100,
    resend_interval_ms=300,
    server_timeout_ms=600,
    handshake_timeout_ms=400,
    retry_backoff_ms=20,
)

#: Node timers for quick elections (ticks of 10 ms).
FAST_NODE: dict[str, Any] = {"election_timeout_ms": 200, "heartbeat_ms": 40}


class SystemCluster(LocalCluster):
    """A :class:`LocalCluster` that also makes (and closes) ``RaftClient``\\ s."""

    def __init__(self, make_machine: Callable[[], Any], **kwargs: Any) -> None:
        super().__init__(make_machine, **kwargs)
        self.clients: list[RaftClient] = []

    @property
    def client_addresses(self) -> list[str]:
        return [a.client for a in next(iter(self.configs.values())).members.values()]

    def connection_factory(self) -> Callable[[Callable[[bytes], None]], ClientConnection]:
        hub = self.hub
        if hub is not None:

            def in_memory(handler: Callable[[bytes], None]) -> ClientConnection:
                return InMemoryClientConnection(hub, handler)

            return in_memory

        def zmq(handler: Callable[[bytes], None]) -> ClientConnection:
            return ZmqClientConnection(handler, name="client")

        return zmq

    def client(
        self,
        *,
        on_server_request: Callable[[Any], None] | None = None,
        config: ClientConfig = FAST_CLIENT,
        connection_factory: Callable[[Callable[[bytes], None]], ClientConnection] | None = None,
        connect: bool = True,
    ) -> RaftClient:
        """A RaftClient on every member (connected unless ``connect=False``)."""
        client = RaftClient(
            self.client_addresses,
            on_server_request=on_server_request,
            connection_factory=connection_factory or self.connection_factory(),
            config=config,
            tick_ms=10,
        )
        self.clients.append(client)
        return client.connect(timeout=WAIT) if connect else client

    def close(self) -> None:
        for client in self.clients:
            client.close(timeout=2.0)
        self.clients.clear()
        super().close()

    def wait_converged(self, timeout: float = WAIT) -> int:
        """Wait until every running replica applied the same index as the leader and
        that index is committed; returns it."""

        def converged() -> int | None:
            statuses = [n.status() for n in self.nodes.values()]
            applied = {s.applied_index for s in statuses}
            if len(applied) == 1 and all(s.commit_index >= s.applied_index for s in statuses):
                index = applied.pop()
                return index if index > 0 else None
            return None

        index: int = wait_for(converged, timeout, "every replica applied the same index")
        return index

    def replica_snapshots(self, timeout: float = WAIT) -> dict[MemberId, bytes]:
        """Each running replica's session state machine snapshot, once they are all
        byte-identical (replicas that applied the same log must be); returns them."""

        def same() -> dict[MemberId, bytes] | None:
            snaps = {m: replica_snapshot(n) for m, n in self.nodes.items()}
            return snaps if len(set(snaps.values())) == 1 else None

        snaps: dict[MemberId, bytes] = wait_for(same, timeout, "byte-identical replica states")
        return snaps

    def replica_counters(self) -> dict[MemberId, int]:
        """The counter's value in each running replica's own state (not via the leader)."""
        return {m: counter_of(s) for m, s in self.replica_snapshots().items()}


class Workload:
    """Increments by 1 from one client in windows of ``window`` commands until stopped;
    counts the commands that succeeded (each must have been applied exactly once)."""

    def __init__(
        self, cluster: SystemCluster, window: int = 10, config: ClientConfig = FAST_CLIENT
    ) -> None:
        self.client = cluster.client(config=config)
        self.window = window
        self.succeeded = 0
        self.failures: list[BaseException] = []
        self.responses: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="raft-test-workload")

    def start(self) -> Workload:
        self._thread.start()
        return self

    def wait_for_progress(self, at_least: int) -> None:
        wait_for(lambda: self.succeeded >= at_least or self.failures, what="progress")
        assert not self.failures, self.failures

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(WAIT * 2)
        assert not self._thread.is_alive(), "workload did not finish"

    def _run(self) -> None:
        while not self._stop.is_set():
            futures: list[Future[Any]] = [
                self.client.submit(increment(1), timeout=WAIT) for _ in range(self.window)
            ]
            for future in futures:
                try:
                    self.responses.append(future.result(timeout=WAIT + 2))
                    self.succeeded += 1
                except Exception as exc:  # every failure is a test failure
                    self.failures.append(exc)
                    return


def join_member(
    cluster: SystemCluster,
    index: int,
    factory: Callable[[Callable[[bytes], None]], ClientConnection],
) -> Node:
    """Start a fresh node n<index> (empty storage of the cluster's kind, ``join=True``)
    that knows the current members, ask the cluster to add it, and return it once it is
    a voter."""
    from actors.client import add_member
    from actors.config import MemberAddress

    member = MemberId(f"n{index}")
    members = {m: MemberAddress(n.peer_address, n.client_address) for m, n in cluster.nodes.items()}
    if cluster.transport == "zmq":
        members[member] = MemberAddress(*tcp_endpoints(2))
    else:
        members[member] = MemberAddress(f"inmem://peer-{index}", f"inmem://client-{index}")
    model = next(iter(cluster.configs.values()))
    data_dir = model.data_dir.parent / member if model.data_dir is not None else None
    config = model.with_changes(member_id=member, members=members, data_dir=data_dir)
    node = Node(config, CounterStateMachine(), hub=cluster.hub, join=True).start()
    addresses = [n.client_address for m, n in cluster.nodes.items()]
    cluster.nodes[member] = node
    answer = add_member(
        addresses, member, node.peer_address, node.client_address,
        connection_factory=factory, timeout=40,
    )  # fmt: skip
    assert answer.ok, answer
    return node


def check_exactly_once(cluster: SystemCluster, work: Workload) -> None:
    assert not work.failures, work.failures
    # Every response is a distinct value of the counter: no command ran twice.
    assert sorted(work.responses) == list(range(1, work.succeeded + 1))
    assert work.client.query(get(), timeout=WAIT) == work.succeeded
    cluster.wait_converged()
    counters = cluster.replica_counters()
    assert set(counters.values()) == {work.succeeded}, counters


def replica_snapshot(node: Node) -> bytes:
    """The snapshot of ``node``'s session state machine, taken on its actor's thread
    (so it is consistent: never half an entry applied)."""
    ref = node.wiring.session
    assert isinstance(ref, HostedRef)
    snapshot: bytes = ref.call(lambda actor: actor.machine.snapshot(), timeout=WAIT)
    return snapshot


def counter_of(snapshot: bytes) -> int:
    """The counter's value in a session state machine snapshot (0 before any command)."""
    _version, _applied, state = msgpack.unpackb(snapshot, raw=False, strict_map_key=False)
    value: int = state.get("counter", 0)
    return value


@contextmanager
def system_cluster(**kwargs: Any) -> Iterator[SystemCluster]:
    """A started counter cluster (in-memory transport unless told otherwise)."""
    for key, value in FAST_NODE.items():
        kwargs.setdefault(key, value)
    cluster = SystemCluster(CounterStateMachine, **kwargs)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


def node_threads() -> list[threading.Thread]:
    """Threads a node, hub or client of this project may have started."""
    prefixes = ("raft-", "ticker-", "storage-writer-", "actors-")
    return [
        t
        for t in threading.enumerate()
        if t.name.startswith(prefixes) or "Actor" in t.name or "ThreadingActor" in t.name
    ]
