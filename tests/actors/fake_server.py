"""A fake cluster for client tests, built from the pure cores instead of Raft.

Each :class:`FakeNode` is a real :class:`~protocol.registry.Registry` behind a real
client transport (in-memory or ZeroMQ). Consensus is faked: a ``RaftAction`` the
leader's registry proposes is "committed" at once -- turned into its session command
and applied to the one shared :class:`~protocol.session.SessionStateMachine` (the
counter of ``examples/counter``) -- and the resulting ``ServerAction``\\ s go back into
the leader's registry. So everything the client sees is what the real node's registry
would send, with the real session semantics (response cache, server requests pending
until acked, retries), and a "leader change" is just telling the registries.

Knobs for tests: :attr:`FakeCluster.hold_responses` (apply commands but keep their
answers back, as if lost), :meth:`FakeCluster.crash_leader`,
:meth:`FakeCluster.expire`, :meth:`FakeCluster.send_raw`.
Every node answers ``StatusRequest`` whatever its role.

One lock serialises everything (transport threads, the tick thread, test calls).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from actors.transport import (
    ClientConnection,
    ClientTransport,
    ConnectionFrameHandler,
    InMemoryClientConnection,
    InMemoryClientTransport,
    InMemoryHub,
    ZmqClientTransport,
)
from examples.counter import CounterStateMachine, get
from protocol.actions import (
    CreateSessionAction,
    ExpireSessionAction,
    LeadershipChanged,
    NodeRole,
    QueryAction,
    RaftAction,
    SendQueryError,
    SendQueryResponse,
    SendResponse,
    ServerAction,
    SessionsSnapshot,
)
from protocol.admin import NodeStatus, StatusRequest, StatusResponse
from protocol.bridge import to_server_actions, to_session_command
from protocol.codec import ProtocolError, decode, encode
from protocol.ids import MemberId, SessionId
from protocol.registry import Registry, RegistryConfig, RegistryEffects, routing_ids, split_key
from protocol.session import (
    ApplicationError,
    GetRequestsForRetry,
    MsgpackCodec,
    RequestResult,
    RetryBatch,
    SessionStateMachine,
)
from protocol.wire import (
    CLIENT_FRAME_TYPES,
    ClientBatch,
    ErrorReason,
    ServerMessage,
    decode_client_message,
)

_CODEC = MsgpackCodec()

# ------------------------------------------------------------------ the glue (pure)


# ------------------------------------------------------------------ nodes and cluster


class FakeNode:
    """One member: a registry behind a client transport (the transport is made by the
    cluster, which also owns the lock every handler takes)."""

    def __init__(self, cluster: FakeCluster, name: str, ids: Callable[[], SessionId]) -> None:
        self.name = name
        self.registry = Registry(cluster.registry_config, ids)
        self.alive = True
        self.transport: ClientTransport = cluster._make_transport(self)
        self.address = ""
        #: Every routing id that sent this node a frame.
        self.connections: set[bytes] = set()
        #: Decoded client messages received, in order (batch items one by one).
        self.received: list[Any] = []
        #: Client frames received, and how many of them were batches.
        self.frames_in = 0
        self.batches_in = 0
        #: The size of the largest batch frame received (a test may reset it).
        self.largest_batch = 0


class FakeCluster:
    """``n`` fake members; the first is the leader (see the module docstring).

    ``hub`` given: in-memory transports on it; ``None``: ZeroMQ on 127.0.0.1 (port 0).
    A tick thread (every ``tick_ms``) runs the registries' expiry and resends pending
    server requests last sent more than ``retry_after_ms`` ago.
    """

    def __init__(
        self,
        hub: InMemoryHub | None,
        n: int = 2,
        *,
        session_timeout_ms: int = 10_000,
        retry_after_ms: int = 200,
        tick_ms: int = 10,
        max_sessions_per_connection: int = 8,
        max_payload_bytes: int = 1 << 20,
    ) -> None:
        self.hub = hub
        self.lock = threading.RLock()
        self.registry_config = RegistryConfig(
            session_timeout_ms=session_timeout_ms,
            max_sessions_per_connection=max_sessions_per_connection,
            max_payload_bytes=max_payload_bytes,
        )
        self.sm = SessionStateMachine(CounterStateMachine())
        self.index = 0
        self.term = 1
        self.retry_after_ms = retry_after_ms
        self.hold_responses = False
        self.held: list[ServerAction] = []
        #: (session, request id) of every command applied (not served from the cache).
        self.applied: list[tuple[SessionId, int]] = []
        #: Server requests resent by the fake retry scheduler.
        self.retried = 0
        self._t0 = time.monotonic()
        counter = itertools.count(1)
        self.nodes = [
            FakeNode(self, f"n{i + 1}", lambda: SessionId(f"s{next(counter)}")) for i in range(n)
        ]
        for node in self.nodes:
            node.transport.start()
            node.address = node.transport.address
        self.leader = self.nodes[0]
        with self.lock:
            self._set_roles()
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick_loop, args=(tick_ms,), name="fake-tick")
        self._ticker.start()

    # ------------------------------------------------------------------ test controls

    @property
    def addresses(self) -> list[str]:
        return [node.address for node in self.nodes]

    def connection_factory(self) -> Callable[[ConnectionFrameHandler], ClientConnection]:
        """In-memory connections on this cluster's hub."""
        hub = self.hub
        assert hub is not None
        return lambda on_frame: InMemoryClientConnection(hub, on_frame)

    def crash_leader(self, new_leader: FakeNode) -> None:
        """The leader dies silently (its transport stops; answers it held are lost) and
        ``new_leader`` takes over in a new term, loading the sessions as a new leader
        does."""
        with self.lock:
            old = self.leader
            old.alive = False
            self.held.clear()
            self.hold_responses = False
            self.term += 1
            self.leader = new_leader
            self._set_roles()
        old.transport.stop()

    def move_leader(self, new_leader: FakeNode) -> None:
        """A clean leadership change: the old leader steps down (telling its clients);
        answers it held back are lost."""
        with self.lock:
            self.held.clear()
            self.hold_responses = False
            self.term += 1
            self.leader = new_leader
            self._set_roles()

    def release(self) -> None:
        """Send the answers held back by :attr:`hold_responses`."""
        with self.lock:
            self.hold_responses = False
            held, self.held = self.held, []
            self._to_leader(held)

    def expire(self, session_id: SessionId) -> None:
        """The leader expires a session (through the fake log)."""
        with self.lock:
            self._commit([ExpireSessionAction(session_id)])

    def send_raw(self, session_id: SessionId, frame: bytes) -> None:
        """Send any bytes to the connection the session is bound to on the leader."""
        with self.lock:
            key = self.leader.registry.connection_of(session_id)
            assert key is not None, "session not bound"
            self.leader.transport.send(split_key(key)[0], frame)

    def send_to_session(self, session_id: SessionId, msg: ServerMessage) -> None:
        """Send ``msg`` on the leader to the channel the session is bound to."""
        with self.lock:
            key = self.leader.registry.connection_of(session_id)
            assert key is not None, "session not bound"
            for routing_id, frame in self.leader.registry.frames([(key, msg)]):
                self.leader.transport.send(routing_id, frame)

    def pending_server_requests(self) -> int:
        with self.lock:
            return self.sm.stats().pending_server_requests

    def counter(self) -> int:
        """The counter's value, read straight from the state machine."""
        with self.lock:
            answer = self.sm.query(_CODEC.encode_query(get()))
        assert isinstance(answer, bytes), answer
        value: int = _CODEC.decode_response(answer)
        return value

    def close(self) -> None:
        self._stop.set()
        self._ticker.join(10)
        for node in self.nodes:
            node.transport.stop()

    # ------------------------------------------------------------------ plumbing

    def _now(self) -> int:
        return int((time.monotonic() - self._t0) * 1000)

    def _make_transport(self, node: FakeNode) -> ClientTransport:
        def on_frame(routing_id: bytes, frame: bytes, admin: bool) -> None:
            self._on_frame(node, routing_id, frame)

        if self.hub is not None:
            return InMemoryClientTransport(self.hub, on_frame, bind=f"inmem://fake-{node.name}")
        return ZmqClientTransport(on_frame, name=f"fake-{node.name}")

    def _set_roles(self) -> None:
        leader = self.leader
        for node in self.nodes:
            if not node.alive:
                continue
            if node is leader:
                change = LeadershipChanged(
                    NodeRole.LEADER, MemberId(node.name), node.address, self.term
                )
                self._carry(node, node.registry.on_server_action(change, self._now()))
                snapshot = SessionsSnapshot(self.term, self.sm.sessions())
                self._carry(node, node.registry.on_server_action(snapshot, self._now()))
            else:
                change = LeadershipChanged(
                    NodeRole.FOLLOWER, MemberId(leader.name), leader.address, self.term
                )
                self._carry(node, node.registry.on_server_action(change, self._now()))

    def _on_frame(self, node: FakeNode, routing_id: bytes, frame: bytes) -> None:
        with self.lock:
            if not node.alive:
                return
            node.connections.add(routing_id)
            node.frames_in += 1
            try:
                msg: Any = decode(frame, (*CLIENT_FRAME_TYPES, StatusRequest))
            except ProtocolError:
                self._carry(node, node.registry.on_bad_connection(routing_id))
                return
            if isinstance(msg, StatusRequest):
                answer = StatusResponse(msg.correlation_id, self._status(node))
                node.transport.send(routing_id, encode(answer))
                return
            if isinstance(msg, ClientBatch):
                node.batches_in += 1
                node.largest_batch = max(node.largest_batch, len(frame))
                for _, item in msg.items:
                    with contextlib.suppress(ProtocolError):
                        node.received.append(decode_client_message(item))
            else:
                node.received.append(msg)
            self._carry(node, node.registry.on_routed(routing_id, msg, self._now()))

    def _carry(self, node: FakeNode, fx: RegistryEffects) -> None:
        """Carry out a registry's effects: send, commit proposals (leader only), close."""
        self._send(node, fx)
        if fx.propose and node is self.leader and node.alive:
            self._commit(fx.propose)

    def _send(self, node: FakeNode, fx: RegistryEffects) -> None:
        """Send ``fx``'s messages (one frame per connection, as a node does), then close."""
        for routing_id, frame in node.registry.frames(fx.send):
            node.transport.send(routing_id, frame)
        for routing_id in routing_ids(fx.close):
            node.transport.disconnect(routing_id)

    def _commit(self, actions: list[RaftAction]) -> None:
        """Apply proposals at once, in order; answers go to the leader's registry."""
        out: list[ServerAction] = []
        for action in actions:
            now = self._now()
            if isinstance(action, QueryAction):
                answer = self.sm.query(action.payload)
                if isinstance(answer, bytes):
                    out.append(SendQueryResponse(action.connection, action.correlation_id, answer))
                else:
                    reason = ErrorReason.APPLICATION_ERROR
                    out.append(
                        SendQueryError(
                            action.connection, action.correlation_id, reason, answer.message
                        )
                    )
                continue
            command = to_session_command(action, now)
            assert command is not None
            self.index += 1
            caps = action.capabilities if isinstance(action, CreateSessionAction) else {}
            result = self.sm.apply(self.index, command)
            if (
                isinstance(result, RequestResult)
                and not result.from_cache
                and isinstance(result.response, bytes | ApplicationError)
            ):
                self.applied.append((result.session_id, result.request_id))
            actions_out = to_server_actions(result, caps)
            if self.hold_responses and isinstance(result, RequestResult):
                self.held.extend(a for a in actions_out if isinstance(a, SendResponse))
                actions_out = [a for a in actions_out if not isinstance(a, SendResponse)]
            out.extend(actions_out)
        self._to_leader(out)

    def _to_leader(self, actions: list[ServerAction]) -> None:
        work = deque(actions)
        leader = self.leader
        while work:
            fx = leader.registry.on_server_action(work.popleft(), self._now())
            self._send(leader, fx)
            if fx.propose:  # (the registry does not propose in answer to actions today)
                self._commit(fx.propose)

    def _tick_loop(self, tick_ms: int) -> None:
        while not self._stop.wait(tick_ms / 1000):
            with self.lock:
                now = self._now()
                for node in self.nodes:
                    if node.alive:
                        self._carry(node, node.registry.on_tick(now))
                before = now - self.retry_after_ms
                if self.sm.has_pending_requests_sent_before(before):
                    self.index += 1
                    result = self.sm.apply(self.index, GetRequestsForRetry(before, now))
                    assert isinstance(result, RetryBatch)
                    self.retried += len(result.server_requests)
                    self._to_leader(to_server_actions(result, {}))

    def _status(self, node: FakeNode) -> NodeStatus:
        stats = self.sm.stats()
        leader = node is self.leader
        return NodeStatus(
            member_id=MemberId(node.name),
            role="leader" if leader else "follower",
            term=self.term,
            leader=MemberId(self.leader.name),
            commit_index=self.index,
            applied_index=self.index,
            last_log_index=self.index,
            snapshot_index=0,
            voters=tuple(MemberId(n.name) for n in self.nodes),
            learners=(),
            sessions=stats.sessions,
            pending_server_requests=stats.pending_server_requests,
            client_address=node.address,
            peer_address="",
            pid=os.getpid(),
            uptime_ms=self._now(),
        )
