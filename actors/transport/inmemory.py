"""In-memory implementations of the transport interfaces, on an :class:`InMemoryHub`.

Same semantics as the ZeroMQ transports (see :mod:`actors.transport.base`); the network
in between -- delivery thread, virtual clock, faults, partitions -- is :mod:`.hub`.
Addresses look like ``inmem://NAME``; omit ``bind`` to get a fresh one (like port 0).
The hub's queue is unbounded: there is no ``queue_limit`` here.
"""

from __future__ import annotations

import threading

from protocol.codec import DEFAULT_MAX_FRAME_BYTES
from protocol.ids import MemberId

from ._common import LOG, Counters, log_rate_limited
from .base import (
    ClientFrameHandler,
    ConnectionFrameHandler,
    FrameValidator,
    PeerFrameHandler,
    TransportError,
    TransportStats,
)
from .hub import InMemoryHub

__all__ = ["InMemoryClientConnection", "InMemoryClientTransport", "InMemoryPeerTransport"]


class _Endpoint:
    """Lifecycle, counters and receive-side checks shared by the in-memory transports."""

    _prefix = "endpoint"
    _binds = True  # whether start() takes an address on the hub

    def __init__(
        self,
        hub: InMemoryHub,
        *,
        bind: str | None,
        node: str | None,
        max_frame_bytes: int,
        validator: FrameValidator | None,
    ) -> None:
        if max_frame_bytes <= 0:
            raise ValueError("max_frame_bytes must be positive")
        self._hub = hub
        self._bind_to = bind
        self._address = bind or ""
        self._node = node
        self._max_frame_bytes = max_frame_bytes
        self._validator = validator
        self._counters = Counters()
        self._state_lock = threading.Lock()
        self._state = "new"
        self._running = False

    @property
    def node(self) -> str:
        """The label partitions refer to."""
        return self._node or self._address

    def start(self) -> None:
        with self._state_lock:
            if self._state == "running":
                return
            if self._state == "stopped":
                raise TransportError(f"{self._address}: a stopped transport cannot restart")
            self._hub.start()
            if self._binds:
                self._address = self._hub._bind(self, self._bind_to, self._prefix)
            self._state = "running"
            self._running = True

    def stop(self) -> None:
        with self._state_lock:
            was_running = self._state == "running"
            self._state = "stopped"
            self._running = False
        if was_running:
            self._stopped()

    def _stopped(self) -> None:
        self._hub._unbind(self._address)

    def stats(self) -> TransportStats:
        return self._counters.snapshot()

    def _may_send(self, size: int) -> bool:
        if size > self._max_frame_bytes:
            n = self._counters.bump("oversized")
            log_rate_limited(n, "%s: dropped an outgoing %d-byte frame", self._address, size)
            return False
        if not self._running:
            self._counters.bump("dropped")
            return False
        return True

    def _accept(self, frame: bytes) -> bool:
        """Receive-side checks; False when the frame must not reach the handler."""
        if not self._running:
            return False
        if len(frame) > self._max_frame_bytes:
            n = self._counters.bump("oversized")
            log_rate_limited(n, "%s: dropped a received %d-byte frame", self._address, len(frame))
            return False
        if self._validator is not None:
            try:
                self._validator(frame)
            except Exception as exc:
                n = self._counters.bump("decode_errors")
                log_rate_limited(n, "%s: rejected a received frame: %s", self._address, exc)
                return False
        self._counters.received(len(frame))
        return True

    def _handler_failed(self) -> None:
        n = self._counters.bump("handler_errors")
        LOG.exception("%s: frame handler raised (%d so far)", self._address, n)


class InMemoryPeerTransport(_Endpoint):
    """:class:`~actors.transport.base.PeerTransport` on an :class:`InMemoryHub`.

    ``node`` (default: the member id) is the label partitions use.
    """

    _prefix = "peer"

    def __init__(
        self,
        hub: InMemoryHub,
        member_id: MemberId,
        on_frame: PeerFrameHandler,
        *,
        bind: str | None = None,
        node: str | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        validator: FrameValidator | None = None,
    ) -> None:
        super().__init__(
            hub,
            bind=bind,
            node=node or member_id,
            max_frame_bytes=max_frame_bytes,
            validator=validator,
        )
        if not member_id:
            raise ValueError("member id must not be empty")
        self._member_id = member_id
        self._on_frame = on_frame
        self._peers_lock = threading.Lock()
        self._peers: dict[MemberId, str] = {}

    @property
    def member_id(self) -> MemberId:
        return self._member_id

    @property
    def address(self) -> str:
        return self._address

    def add_peer(self, member: MemberId, address: str) -> None:
        if not member:
            raise ValueError("member id must not be empty")
        with self._peers_lock:
            self._peers[member] = address

    def remove_peer(self, member: MemberId) -> None:
        with self._peers_lock:
            self._peers.pop(member, None)

    def peers(self) -> dict[MemberId, str]:
        with self._peers_lock:
            return dict(self._peers)

    def send(self, to: MemberId, frame: bytes) -> bool:
        if not self._may_send(len(frame)):
            return False
        with self._peers_lock:
            address = self._peers.get(to)
        target = None if address is None else self._hub._lookup(address)
        if not isinstance(target, InMemoryPeerTransport):
            self._counters.bump("dropped")  # unknown peer, or nobody listening there
            return True  # like ZeroMQ: accepted, then found unroutable
        frame = bytes(frame)
        sender = self._member_id
        self._counters.sent(len(frame))
        self._hub._schedule(self.node, target.node, lambda: target._receive(sender, frame))
        return True

    def _receive(self, sender: MemberId, frame: bytes) -> bool:
        if not self._accept(frame):
            return self._running
        try:
            self._on_frame(sender, frame)
        except Exception:
            self._handler_failed()
        return True


class InMemoryClientTransport(_Endpoint):
    """:class:`~actors.transport.base.ClientTransport` on an :class:`InMemoryHub`.

    ``node`` (default: the address) is the label partitions use; give a node's client
    and peer transports the same label to partition the node as a whole.
    """

    _prefix = "clients"

    def __init__(
        self,
        hub: InMemoryHub,
        on_frame: ClientFrameHandler,
        *,
        bind: str | None = None,
        node: str | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        validator: FrameValidator | None = None,
    ) -> None:
        super().__init__(
            hub, bind=bind, node=node, max_frame_bytes=max_frame_bytes, validator=validator
        )
        self._on_frame = on_frame
        self._banned_lock = threading.Lock()
        self._banned: set[bytes] = set()

    @property
    def address(self) -> str:
        return self._address

    def send(self, routing_id: bytes, frame: bytes) -> bool:
        if not self._may_send(len(frame)):
            return False
        with self._banned_lock:
            banned = routing_id in self._banned
        connection = None if banned else self._hub._connection(routing_id)
        if connection is None or connection._server_address != self._address:
            self._counters.bump("dropped")
            return True
        frame = bytes(frame)
        self._counters.sent(len(frame))
        self._hub._schedule(
            self.node, connection.node, lambda: connection._receive(routing_id, frame)
        )
        return True

    def disconnect(self, routing_id: bytes) -> None:
        with self._banned_lock:
            self._banned.add(routing_id)

    def _receive(self, routing_id: bytes, frame: bytes, admin: bool) -> bool:
        with self._banned_lock:
            banned = routing_id in self._banned
        if banned:
            self._counters.bump("dropped")
            return True
        if not frame:
            n = self._counters.bump("malformed")
            log_rate_limited(n, "%s: dropped an empty client frame", self._address)
            return True
        if not self._accept(frame):
            return self._running
        try:
            self._on_frame(routing_id, frame, admin)
        except Exception:
            self._handler_failed()
        return True


class InMemoryClientConnection(_Endpoint):
    """:class:`~actors.transport.base.ClientConnection` on an :class:`InMemoryHub`.

    Frames sent while no server is bound at the address are dropped (counted). There is
    no authentication in memory: ``admin`` is the identity the server is told each
    frame comes from (standing in for a CURVE key; default: an administrator, as a
    node without CURVE treats everyone).
    """

    _prefix = "client"
    _binds = False

    def __init__(
        self,
        hub: InMemoryHub,
        on_frame: ConnectionFrameHandler,
        *,
        node: str | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        validator: FrameValidator | None = None,
        admin: bool = True,
    ) -> None:
        super().__init__(
            hub, bind=None, node=node, max_frame_bytes=max_frame_bytes, validator=validator
        )
        self._on_frame = on_frame
        self._admin = admin
        self._conn_lock = threading.Lock()
        self._server_address: str | None = None
        self._routing_id: bytes | None = None
        if node is None:
            self._node = f"client-{next(hub._names)}"

    @property
    def address(self) -> str | None:
        with self._conn_lock:
            return self._server_address

    @property
    def routing_id(self) -> bytes | None:
        """The routing id the server sees for the current connection (tests use it)."""
        with self._conn_lock:
            return self._routing_id

    def connect(self, address: str) -> None:
        self.close()
        routing_id = self._hub._new_connection(self)
        with self._conn_lock:
            self._server_address = address
            self._routing_id = routing_id

    def close(self) -> None:
        with self._conn_lock:
            routing_id = self._routing_id
            self._server_address = self._routing_id = None
        if routing_id is not None:
            self._hub._drop_connection(routing_id)

    def _stopped(self) -> None:
        self.close()

    def send(self, frame: bytes) -> bool:
        with self._conn_lock:
            address, routing_id = self._server_address, self._routing_id
        if address is None and len(frame) <= self._max_frame_bytes:
            self._counters.bump("dropped")
            return False
        if not self._may_send(len(frame)):
            return False
        assert address is not None and routing_id is not None
        server = self._hub._lookup(address)
        if not isinstance(server, InMemoryClientTransport):
            self._counters.bump("dropped")
            return True
        frame = bytes(frame)
        self._counters.sent(len(frame))
        admin = self._admin
        self._hub._schedule(
            self.node, server.node, lambda: server._receive(routing_id, frame, admin)
        )
        return True

    def _receive(self, routing_id: bytes, frame: bytes) -> bool:
        with self._conn_lock:
            current = self._routing_id
        if routing_id != current:
            return False  # sent to a connection that has since been closed
        if not self._accept(frame):
            return self._running
        try:
            self._on_frame(frame)
        except Exception:
            self._handler_failed()
        return True
