"""Test fixtures for whole nodes: in-process clusters over the in-memory hub or ZeroMQ."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from actors.cluster import free_ports
from actors.config import MemberAddress, NodeConfig
from actors.node import Node
from actors.transport import (
    ClientConnection,
    InMemoryClientConnection,
    InMemoryHub,
    ZmqClientConnection,
)
from protocol.codec import encode
from protocol.ids import MemberId, SessionId
from protocol.session import UserStateMachine
from protocol.wire import (
    CreateSession,
    RejectReason,
    ServerMessage,
    SessionCreated,
    SessionRejected,
    decode_server_message,
)

WAIT = 15.0  # seconds: generous bound for anything a healthy cluster does

#: Every way a node can host its actors (``NodeConfig.actor_threads``; the default,
#: "hybrid", is what every other test runs): representative node tests run under each.
#: ("transport" and "hybrid" host on the ZeroMQ transports' threads; over the in-memory
#: transport they fall back to pykka threads: see :func:`transport_for`.)
ACTOR_THREADS = pytest.mark.parametrize(
    "actor_threads", ["hybrid", "separate", "shared", "transport"]
)


def transport_for(actor_threads: str) -> str:
    """The transport a test parametrized by :data:`ACTOR_THREADS` runs on: ZeroMQ for
    "transport" and "hybrid" (whose point are the ZeroMQ threads), else the in-memory
    one."""
    return "zmq" if actor_threads in ("transport", "hybrid") else "memory"


def tcp_endpoints(n: int) -> list[str]:
    """``n`` distinct ``tcp://127.0.0.1:PORT`` endpoints, their ports free right now
    (drawn in one :func:`free_ports` call: separate draws are not kept apart)."""
    return [f"tcp://127.0.0.1:{port}" for port in free_ports(n)]


def wait_for(predicate: Callable[[], Any], timeout: float = WAIT, what: str = "condition") -> Any:
    """Poll ``predicate`` until truthy (status is only observable by polling)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class LocalCluster:
    """N nodes in this process; ``transport`` is "memory" (one hub) or "zmq"."""

    def __init__(
        self,
        make_machine: Callable[[], UserStateMachine],
        n: int = 3,
        *,
        transport: str = "memory",
        data_dir: Path | None = None,
        **config: Any,
    ) -> None:
        self.make_machine = make_machine
        self.hub = InMemoryHub(seed=7) if transport == "memory" else None
        self.transport = transport
        if transport == "memory":
            members = {
                MemberId(f"n{i}"): MemberAddress(f"inmem://peer-{i}", f"inmem://client-{i}")
                for i in range(1, n + 1)
            }
        else:
            ends = tcp_endpoints(2 * n)
            members = {
                MemberId(f"n{i}"): MemberAddress(ends[2 * i - 2], ends[2 * i - 1])
                for i in range(1, n + 1)
            }
        storage = "durable" if data_dir is not None else "memory"
        self.configs = {
            m: NodeConfig(
                m,
                members,
                data_dir=(data_dir / m) if data_dir is not None else None,
                storage=storage,  # type: ignore[arg-type]
                transport=transport,  # type: ignore[arg-type]
                **config,
            )
            for m in members
        }
        self.nodes: dict[MemberId, Node] = {}

    def start(self, member: MemberId | None = None) -> None:
        for m in [member] if member else list(self.configs):
            self.nodes[m] = Node(self.configs[m], self.make_machine(), hub=self.hub).start()

    def stop(self, member: MemberId) -> None:
        self.nodes.pop(member).stop()

    def leader(self, timeout: float = WAIT) -> Node:
        def find() -> Node | None:
            leaders = [n for n in self.nodes.values() if n.status().role == "leader"]
            if len(leaders) != 1:
                return None
            term = leaders[0].status().term
            agreed = all(n.status().leader == leaders[0].member_id for n in self.nodes.values())
            return leaders[0] if agreed and term > 0 else None

        node: Node = wait_for(find, timeout, "one agreed leader")
        return node

    def connection(self, handler: Callable[[bytes], None]) -> ClientConnection:
        if self.hub is not None:
            return InMemoryClientConnection(self.hub, handler)
        return ZmqClientConnection(handler)

    def close(self) -> None:
        for node in self.nodes.values():
            node.stop()
        self.nodes.clear()
        if self.hub is not None:
            self.hub.stop()


class RawClient:
    """Speaks the wire protocol by hand, to test nodes independently of RaftClient."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.inbox: queue.Queue[ServerMessage] = queue.Queue()
        self.conn = cluster.connection(lambda f: self.inbox.put(decode_server_message(f)))
        self.conn.start()

    def connect(self, address: str) -> None:
        self.conn.connect(address)

    def send(self, msg: Any) -> None:
        self.conn.send(encode(msg))

    def expect(self, kind: type[Any] | tuple[type[Any], ...], timeout: float = WAIT) -> Any:
        """The next message of ``kind``, skipping others (e.g. keep-alive answers)."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.inbox.get(timeout=max(0.01, deadline - time.monotonic()))
            if isinstance(msg, kind):
                return msg

    def create_session(self, timeout: float = WAIT) -> SessionId:
        """Create a session, retrying while a fresh leader is still loading its sessions."""
        deadline = time.monotonic() + timeout
        attempt = 0
        while time.monotonic() < deadline:
            attempt += 1
            self.send(CreateSession({}, attempt.to_bytes(4, "big")))
            msg = self.expect((SessionCreated, SessionRejected), deadline - time.monotonic())
            if isinstance(msg, SessionCreated):
                return msg.session_id
            assert msg.reason == RejectReason.OVERLOADED, msg
            time.sleep(0.02)
        raise AssertionError("no session within the timeout")

    def close(self) -> None:
        self.conn.stop()


@contextmanager
def local_cluster(
    make_machine: Callable[[], UserStateMachine], **kwargs: Any
) -> Iterator[LocalCluster]:
    cluster = LocalCluster(make_machine, **kwargs)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()
