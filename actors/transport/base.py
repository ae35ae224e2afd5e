"""The one transport interface: opaque byte frames between nodes and between clients and nodes.

Three roles share the same shape (``start``/``stop``/``stats`` plus a role-specific
``send``), and each has a ZeroMQ and an in-memory implementation that pass one
conformance suite:

* :class:`PeerTransport` links the nodes of a cluster (Raft RPCs). Peers are addressed
  by :class:`~protocol.ids.MemberId`; the peer set changes at run time with
  :meth:`~PeerTransport.add_peer` / :meth:`~PeerTransport.remove_peer` as membership
  changes. Every received frame arrives with the member id its sender claims (with
  CURVE: only if that is the member its key belongs to; other frames are dropped).
* :class:`ClientTransport` is the server side of the client link: it is bound to an
  address, tells incoming frames apart by an opaque *routing id* per client
  connection, answers by routing id and can cut a connection off. Every received
  frame arrives with its sender's authenticated identity: whether it may send admin
  requests (with CURVE: whether its key is an admin key).
* :class:`ClientConnection` is the client side: it connects to one server address at a
  time and can reconnect elsewhere (each connection gets a fresh routing id).

Delivery is best effort, like the network: a frame may be dropped (full queues, an
unreachable or unknown peer, a peer that is not yet connected, a partition), and the
receiver must tolerate duplicates and reordering across reconnects. On one healthy link
frames arrive in the order they were sent. Raft and the session layer are built for
exactly that.

Threading contract: handlers are plain callables invoked on the transport's own thread
(the ZeroMQ I/O thread, or the in-memory hub's delivery thread). They must return
quickly and never block -- the actor shells pass something like ``actor_ref.tell``.
An exception raised by a handler is logged and counted, and never stops the transport.
``send``, ``add_peer``, ``disconnect`` ... may be called from any thread; they never
block on the network. A handler may call ``send`` (e.g. to answer) and even ``stop``
(which then returns at once; the thread ends when the handler returns, and a later
``stop()`` from another thread joins it).

Lifecycle: ``start()`` binds/creates everything (and raises :class:`TransportError` if
it cannot); ``stop()`` closes every socket (linger 0, pending frames are discarded) and
joins the transport's threads; both are idempotent, and a stopped transport cannot be
started again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from protocol.codec import DEFAULT_MAX_FRAME_BYTES
from protocol.ids import MemberId

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "ClientConnection",
    "ClientFrameHandler",
    "ClientTransport",
    "ConnectionFrameHandler",
    "FrameValidator",
    "PeerFrameHandler",
    "PeerTransport",
    "Transport",
    "TransportError",
    "TransportStats",
]

#: ``on_frame(from_member, frame)`` for a :class:`PeerTransport`.
PeerFrameHandler = Callable[[MemberId, bytes], None]
#: ``on_frame(routing_id, frame, admin)`` for a :class:`ClientTransport`: ``admin`` tells
#: whether the sender is authenticated as an administrator (with CURVE: an admin key;
#: without authentication: the transport's configured default).
ClientFrameHandler = Callable[[bytes, bytes, bool], None]
#: ``on_frame(frame)`` for a :class:`ClientConnection`.
ConnectionFrameHandler = Callable[[bytes], None]
#: Optional check run on the transport thread before a received frame is handed on:
#: it raises (anything, typically ``ProtocolError``) to reject the frame, which is then
#: dropped and counted as a decode error. Its return value is ignored.
FrameValidator = Callable[[bytes], object]


class TransportError(Exception):
    """A transport cannot do what was asked: bind failed, restart after stop, bad address."""


@dataclasses.dataclass(frozen=True, slots=True)
class TransportStats:
    """A snapshot of one transport's counters (all monotonic from ``start()``).

    ``frames_out`` counts frames handed to the network (or hub), not frames delivered.
    """

    frames_in: int = 0
    """Frames delivered to the handler."""
    frames_out: int = 0
    """Frames handed to the wire (ZeroMQ accepted them) or to the hub."""
    bytes_in: int = 0
    """Payload bytes of ``frames_in``."""
    bytes_out: int = 0
    """Payload bytes of ``frames_out``."""
    dropped: int = 0
    """Frames dropped for lack of a route: unknown or unreachable peer, a full queue
    (ZeroMQ high-water mark), a disconnected routing id, or a transport not running."""
    oversized: int = 0
    """Frames over ``max_frame_bytes`` in either direction, dropped."""
    malformed: int = 0
    """Received messages of the wrong shape (multipart layout, bad sender id), dropped."""
    decode_errors: int = 0
    """Received frames the validator rejected, dropped."""
    handler_errors: int = 0
    """Exceptions raised by the handler (logged and swallowed)."""
    forged: int = 0
    """Peer frames whose claimed sender is not the member their CURVE key belongs to,
    dropped (CURVE peer transports only)."""


@runtime_checkable
class Transport(Protocol):
    """What every transport role has: a lifecycle and counters."""

    def start(self) -> None:
        """Bind/connect and start the transport's thread; idempotent.

        Raises :class:`TransportError` if binding fails or the transport was stopped.
        """
        ...

    def stop(self) -> None:
        """Close every socket (linger 0) and join the thread; idempotent, never raises."""
        ...

    def stats(self) -> TransportStats:
        """The current counters."""
        ...


@runtime_checkable
class PeerTransport(Transport, Protocol):
    """Node <-> node frames, addressed by member id (see the module docstring)."""

    @property
    def member_id(self) -> MemberId:
        """This node's id; receivers see it as the sender of every frame sent here."""
        ...

    @property
    def address(self) -> str:
        """The address other nodes connect to (the real one after ``start()``, e.g. with
        the port chosen for ``tcp://127.0.0.1:0``)."""
        ...

    def add_peer(self, member: MemberId, address: str) -> None:
        """Make ``member`` reachable at ``address`` (replacing any previous address)."""
        ...

    def remove_peer(self, member: MemberId) -> None:
        """Forget ``member``; frames queued for it are discarded. Unknown ids are ignored."""
        ...

    def peers(self) -> dict[MemberId, str]:
        """The current peer table (a copy)."""
        ...

    def send(self, to: MemberId, frame: bytes) -> bool:
        """Queue ``frame`` for ``to``; never blocks.

        Returns False when the frame is dropped at once (oversized, not running, queue
        full); True means accepted, not delivered. Frames to a member that is not a peer
        when the I/O thread handles them are dropped and counted.
        """
        ...


@runtime_checkable
class ClientTransport(Transport, Protocol):
    """Server side of the client link: frames tagged by per-connection routing ids."""

    @property
    def address(self) -> str:
        """The bound address clients connect to (real port after ``start()``)."""
        ...

    def send(self, routing_id: bytes, frame: bytes) -> bool:
        """Queue ``frame`` for the connection ``routing_id``; never blocks.

        Returns False when dropped at once; frames to unknown or disconnected routing
        ids are dropped (and counted) later on the I/O thread.
        """
        ...

    def disconnect(self, routing_id: bytes) -> None:
        """Cut a connection off: from now on its frames are dropped (counted) and frames
        to it are not sent. The client notices by silence and reconnects (which gives
        it a new routing id). Queued frames sent *before* this call still go out, so a
        final "closed, try the leader at ..." frame can precede it."""
        ...


@runtime_checkable
class ClientConnection(Transport, Protocol):
    """Client side of the client link: one connection to one server at a time."""

    @property
    def address(self) -> str | None:
        """The server address of the current connection, None when not connected."""
        ...

    def connect(self, address: str) -> None:
        """(Re)connect to ``address``: closes the current connection, if any, discarding
        its queued frames, and opens a new one with a new routing id. Asynchronous:
        frames sent after this call are queued for the new connection."""
        ...

    def close(self) -> None:
        """Close the current connection (the transport stays started; ``connect`` again)."""
        ...

    def send(self, frame: bytes) -> bool:
        """Queue ``frame`` to the server; never blocks. False when dropped at once
        (oversized, not running, not connected, queue full)."""
        ...
