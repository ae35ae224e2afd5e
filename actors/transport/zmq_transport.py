"""ZeroMQ implementations of :mod:`actors.transport.base` (see that module for the contract).

Wire layout:

* Peers: every node binds one PULL socket; for every peer it has one PUSH socket
  connected to that peer's PULL address, with ``ZMQ_IMMEDIATE`` (no queueing for a peer
  that is not connected) and a bounded high-water mark; sends are non-blocking and a
  frame that would block is dropped and counted -- Raft retries. A message is two
  parts: ``[sender member id (UTF-8, 1..255 bytes), frame]``.
* Clients: the server binds a ROUTER (``ZMQ_ROUTER_MANDATORY``, so frames to gone
  clients are counted, not silently lost); a client connection is a DEALER sending
  single-part messages. The ROUTER sees ``[routing id, frame]``.

Optional CURVE (:mod:`.curve`, set in :class:`ZmqOptions`): the binding sockets (PULL,
ROUTER) are CURVE servers that let in only allowed public keys, the connecting ones
(PUSH, DEALER) CURVE clients; a ZAP handler on the transport's own I/O thread checks the
keys, and the ROUTER hands each client frame on with whether it came from an admin key
(the ``admin`` argument of ``on_frame``). On the PULL socket each key speaks for one
member (:attr:`.curve.CurveServer.members`): the ZAP handler names it as the
connection's ``User-Id``, and a message whose sender id is another member is dropped
and counted (``forged``), so a member key cannot speak for the other members.

Each transport has one I/O thread that owns all its sockets (:mod:`._zmq_loop`).
Received frames over ``max_frame_bytes`` and messages of the wrong shape are dropped and
counted; hostile bytes at a port (even non-ZMTP garbage, which libzmq rejects at the
handshake) never stop the thread.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from typing import Any

import zmq

from protocol.codec import DEFAULT_MAX_FRAME_BYTES
from protocol.ids import MemberId

from ._common import log_rate_limited
from ._zmq_loop import (
    DEFAULT_HWM,
    DEFAULT_QUEUE_LIMIT,
    LOG,
    NOBLOCK,
    Command,
    ZmqLoop,
    bindable,
    recv_parts,
    send_pair,
)
from .base import (
    ClientFrameHandler,
    ConnectionFrameHandler,
    FrameValidator,
    PeerFrameHandler,
    TransportError,
)
from .curve import (
    ADMIN_USER,
    CurveClient,
    CurveServer,
    ZapHandler,
    configure_client,
    configure_server,
    curve_available,
)

__all__ = [
    "MAX_MEMBER_ID_BYTES",
    "ZmqClientConnection",
    "ZmqClientTransport",
    "ZmqOptions",
    "ZmqPeerTransport",
]

MAX_MEMBER_ID_BYTES = 255
#: How many disconnected routing ids a ClientTransport remembers (oldest forgotten first).
MAX_BANNED_ROUTING_IDS = 65_536

_SEND, _ADD, _REMOVE, _DISCONNECT, _CONNECT, _CLOSE = range(6)


@dataclass(frozen=True, slots=True)
class ZmqOptions:
    """Settings shared by every ZeroMQ transport.

    ``max_frame_bytes``: larger frames are dropped and counted, both ways. ``hwm``: the
    sockets' high-water marks. ``queue_limit``: frames queued for the I/O thread before
    sends are dropped. ``validator``: run on every received frame; one that raises drops
    it (counted as a decode error). ``context``: a caller-owned ZeroMQ context (else
    each transport makes and terminates its own; with CURVE servers, at most one
    transport per context, as each binds the context's ZAP endpoint).
    ``curve_server``: CURVE for the binding sockets (peer PULL, client ROUTER);
    ``curve_client``: CURVE for the connecting ones (peer PUSH, client DEALER). A peer
    transport needs both or neither, and its ``curve_server`` must bind keys to member
    ids (:meth:`CurveServer.for_members`).
    """

    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    hwm: int = DEFAULT_HWM
    queue_limit: int = DEFAULT_QUEUE_LIMIT
    validator: FrameValidator | None = None
    context: zmq.Context[Any] | None = None
    curve_server: CurveServer | None = None
    curve_client: CurveClient | None = None

    def __post_init__(self) -> None:
        if (self.curve_server or self.curve_client) and not curve_available():
            raise TransportError("CURVE was asked for, but this libzmq has no CURVE support")


DEFAULT_OPTIONS = ZmqOptions()


def _loop_init(loop: ZmqLoop, name: str, options: ZmqOptions) -> None:
    ZmqLoop.__init__(
        loop,
        name,
        context=options.context,
        max_frame_bytes=options.max_frame_bytes,
        hwm=options.hwm,
        queue_limit=options.queue_limit,
        validator=options.validator,
    )


def _member_bytes(member: MemberId) -> bytes:
    raw = member.encode("utf-8")
    if not 0 < len(raw) <= MAX_MEMBER_ID_BYTES:
        raise ValueError(f"member id must be 1..{MAX_MEMBER_ID_BYTES} UTF-8 bytes: {member!r}")
    return raw


class ZmqPeerTransport(ZmqLoop):
    """Node <-> node frames over PULL (in) and one PUSH per peer (out).

    ``bind`` is where this node listens (``tcp://127.0.0.1:0`` picks a free port; read
    :attr:`address` after :meth:`start`). ``on_frame(from_member, frame)`` runs on the
    I/O thread. Without CURVE nothing is authenticated; with CURVE only peers holding
    an allowed key get frames in, and only under the member id their key belongs to
    (``options.curve_server.members``): a frame claiming another sender is dropped,
    counted as ``forged`` and logged (rate-limited).
    """

    def __init__(
        self,
        member_id: MemberId,
        on_frame: PeerFrameHandler,
        *,
        bind: str = "tcp://127.0.0.1:0",
        options: ZmqOptions = DEFAULT_OPTIONS,
    ) -> None:
        if (options.curve_server is None) != (options.curve_client is None):
            raise ValueError("a CURVE peer transport needs curve_server and curve_client")
        if options.curve_server is not None and options.curve_server.members is None:
            raise ValueError(
                "a CURVE peer transport's curve_server must bind each key to its member "
                "(CurveServer.for_members)"
            )
        _loop_init(self, f"peer-{member_id}", options)
        self._options = options
        self._zap = (
            None
            if options.curve_server is None
            else ZapHandler("peers", options.curve_server, f"peer-{member_id}")
        )
        self._member_id = member_id
        self._member_raw = _member_bytes(member_id)
        self._on_frame = on_frame
        self._bind = bind
        self._address = bind
        self._peers_lock = threading.Lock()
        self._peers: dict[MemberId, str] = {}
        # I/O thread only:
        self._pull: zmq.Socket[Any] | None = None
        self._push: dict[MemberId, tuple[str, zmq.Socket[Any]]] = {}
        # With CURVE: the member whose key sent the message being handled (its User-Id).
        self._key_member = ""

    @property
    def member_id(self) -> MemberId:
        return self._member_id

    @property
    def address(self) -> str:
        return self._address

    def add_peer(self, member: MemberId, address: str) -> None:
        _member_bytes(member)
        with self._peers_lock:
            self._peers[member] = address
        self._enqueue_control((_ADD, member, address))

    def remove_peer(self, member: MemberId) -> None:
        with self._peers_lock:
            self._peers.pop(member, None)
        self._enqueue_control((_REMOVE, member))

    def peers(self) -> dict[MemberId, str]:
        with self._peers_lock:
            return dict(self._peers)

    def send(self, to: MemberId, frame: bytes) -> bool:
        return self._enqueue_frame((_SEND, to, frame), len(frame))

    # -- I/O thread ------------------------------------------------------------------

    def _open(self, context: zmq.Context[Any]) -> None:
        if self._zap is not None:
            self._zap.open(context)
        pull = context.socket(zmq.PULL)
        self._pull = pull
        self._configure(pull, receives=True)
        if self._options.curve_server is not None:
            configure_server(pull, self._options.curve_server, "peers")
        try:
            pull.bind(bindable(self._bind))
        except zmq.ZMQError as exc:
            raise TransportError(f"cannot bind {self._bind}: {exc}") from exc
        self._address = pull.getsockopt_string(zmq.LAST_ENDPOINT)

    def _receivers(self) -> list[zmq.Socket[Any]]:
        zap = [] if self._zap is None or self._zap.socket is None else [self._zap.socket]
        return zap + ([] if self._pull is None else [self._pull])

    def _receive(self, socket: zmq.Socket[Any]) -> list[bytes]:
        if self._zap is None or socket is not self._pull:  # plain: as cheap as ever
            return recv_parts(socket)
        frames = socket.recv_multipart(zmq.NOBLOCK, copy=False)
        try:
            self._key_member = str(frames[0].get("User-Id"))
        except zmq.ZMQError:  # pragma: no cover - CURVE connections always carry it
            self._key_member = ""  # matches no sender id (1..255 bytes)
        return [f.bytes for f in frames]

    def _on_command(self, command: Command) -> None:
        op = command[0]
        if op == _SEND:
            to: MemberId = command[1]
            frame: bytes = command[2]
            entry = self._push.get(to)
            if entry is None:
                self._counters.bump("dropped")
                return
            try:
                send_pair(entry[1], self._member_raw, frame)
            except zmq.ZMQError:  # Again: not connected or high-water mark reached
                self._counters.bump("dropped")
                return
            self._counters.sent(len(frame))
        elif op == _ADD:
            member, address = command[1], command[2]
            old = self._push.get(member)
            if old is not None and old[0] == address:
                return
            self._drop_peer(member)
            assert self._ctx is not None
            push = self._ctx.socket(zmq.PUSH)
            self._configure(push, receives=False)
            push.setsockopt(zmq.IMMEDIATE, 1)
            if self._options.curve_client is not None:
                configure_client(push, self._options.curve_client)
            try:
                push.connect(address)
            except zmq.ZMQError as exc:
                push.close(0)
                LOG.error(
                    "%s: cannot connect to peer %s at %r: %s", self._name, member, address, exc
                )
                return
            self._push[member] = (address, push)
        elif op == _REMOVE:
            self._drop_peer(command[1])

    def _drop_peer(self, member: MemberId) -> None:
        old = self._push.pop(member, None)
        if old is not None:
            old[1].close(0)

    def _on_message(self, socket: zmq.Socket[Any], parts: list[bytes]) -> None:
        if self._zap is not None and socket is self._zap.socket:
            self._zap.handle(parts)
            return
        if len(parts) != 2:
            self._malformed(f"{len(parts)} parts, want 2")
            return
        sender_raw, frame = parts
        if not 0 < len(sender_raw) <= MAX_MEMBER_ID_BYTES:
            self._malformed(f"sender id of {len(sender_raw)} bytes")
            return
        try:
            sender = MemberId(sender_raw.decode("utf-8"))
        except UnicodeDecodeError:
            self._malformed("sender id is not UTF-8")
            return
        if self._zap is not None and sender != self._key_member:
            self._forged(sender)
            return
        if not self._accept(frame):
            return
        self._counters.received(len(frame))
        try:
            self._on_frame(sender, frame)
        except Exception:
            self._handler_failed()

    def _forged(self, sender: MemberId) -> None:
        n = self._counters.bump("forged")
        log_rate_limited(
            n,
            "%s: dropped a frame claiming to come from %r over the CURVE key of %r "
            "(a member key speaks only for the member its NAME.key file is named after)",
            self._name,
            sender,
            self._key_member,
        )

    def _close(self) -> None:
        for _, push in self._push.values():
            push.close(0)
        self._push.clear()
        if self._pull is not None:
            self._pull.close(0)
        if self._zap is not None:
            self._zap.close()


class ZmqClientTransport(ZmqLoop):
    """Server side of the client link: one ROUTER bound at ``bind``.

    ``on_frame(routing_id, frame, admin)`` runs on the I/O thread. Client frames must be
    non-empty single-part messages; anything else is dropped as malformed.

    With ``options.curve_server`` only allowed keys connect, and ``admin`` tells whether
    the frame came from an admin key; without CURVE nobody is authenticated and
    ``admin`` is ``admin_without_curve`` for every frame.
    """

    def __init__(
        self,
        on_frame: ClientFrameHandler,
        *,
        bind: str = "tcp://127.0.0.1:0",
        name: str = "clients",
        options: ZmqOptions = DEFAULT_OPTIONS,
        admin_without_curve: bool = True,
    ) -> None:
        _loop_init(self, name, options)
        self._curve = options.curve_server
        self._zap = None if self._curve is None else ZapHandler("clients", self._curve, name)
        # I/O thread only: whether the message being received came from an admin.
        self._admin_now = admin_without_curve if self._curve is None else False
        self._on_frame = on_frame
        self._bind = bind
        self._address = bind
        # I/O thread only:
        self._router: zmq.Socket[Any] | None = None
        self._banned: collections.OrderedDict[bytes, None] = collections.OrderedDict()

    @property
    def address(self) -> str:
        return self._address

    def send(self, routing_id: bytes, frame: bytes) -> bool:
        return self._enqueue_frame((_SEND, routing_id, frame), len(frame))

    def disconnect(self, routing_id: bytes) -> None:
        self._enqueue_control((_DISCONNECT, routing_id))

    @property
    def curve(self) -> bool:
        """Whether CURVE authentication is on."""
        return self._curve is not None

    # -- I/O thread ------------------------------------------------------------------

    def _open(self, context: zmq.Context[Any]) -> None:
        if self._zap is not None:
            self._zap.open(context)
        router = context.socket(zmq.ROUTER)
        self._router = router
        self._configure(router, receives=True)
        if self._curve is not None:
            configure_server(router, self._curve, "clients")
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        try:
            router.bind(bindable(self._bind))
        except zmq.ZMQError as exc:
            raise TransportError(f"cannot bind {self._bind}: {exc}") from exc
        self._address = router.getsockopt_string(zmq.LAST_ENDPOINT)

    def _receivers(self) -> list[zmq.Socket[Any]]:
        zap = [] if self._zap is None or self._zap.socket is None else [self._zap.socket]
        return zap + ([] if self._router is None else [self._router])

    def _receive(self, socket: zmq.Socket[Any]) -> list[bytes]:
        if self._curve is None or socket is not self._router:
            return recv_parts(socket)
        frames = socket.recv_multipart(zmq.NOBLOCK, copy=False)
        try:
            user = frames[-1].get("User-Id")
        except zmq.ZMQError:  # pragma: no cover - CURVE connections always carry it
            user = ""
        self._admin_now = user == ADMIN_USER.decode()
        return [f.bytes for f in frames]

    def _on_command(self, command: Command) -> None:
        op, routing_id = command[0], command[1]
        if op == _SEND:
            frame: bytes = command[2]
            if routing_id in self._banned or self._router is None:
                self._counters.bump("dropped")
                return
            try:
                send_pair(self._router, routing_id, frame)
            except zmq.ZMQError:  # EHOSTUNREACH: unknown routing id; Again: HWM reached
                self._counters.bump("dropped")
                return
            self._counters.sent(len(frame))
        elif op == _DISCONNECT:
            self._banned[routing_id] = None
            self._banned.move_to_end(routing_id)
            while len(self._banned) > MAX_BANNED_ROUTING_IDS:
                self._banned.popitem(last=False)

    def _on_message(self, socket: zmq.Socket[Any], parts: list[bytes]) -> None:
        if self._zap is not None and socket is self._zap.socket:
            self._zap.handle(parts)
            return
        if len(parts) != 2 or not parts[1]:
            self._malformed(f"{len(parts)} parts from a client, want routing id + 1 frame")
            return
        routing_id, frame = parts
        if routing_id in self._banned:
            self._counters.bump("dropped")
            return
        if not self._accept(frame):
            return
        self._counters.received(len(frame))
        try:
            self._on_frame(routing_id, frame, self._admin_now)
        except Exception:
            self._handler_failed()

    def _close(self) -> None:
        if self._router is not None:
            self._router.close(0)
        if self._zap is not None:
            self._zap.close()


class ZmqClientConnection(ZmqLoop):
    """Client side of the client link: a DEALER to one server address at a time.

    Unlike peer links the DEALER queues (up to the high-water mark) while the TCP
    connection is being set up, so a request sent right after :meth:`connect` is not
    lost; ``on_frame(frame)`` runs on the I/O thread. With ``options.curve_client`` the
    DEALER is a CURVE client (a server that refuses its key never answers).
    """

    def __init__(
        self,
        on_frame: ConnectionFrameHandler,
        *,
        name: str = "client",
        options: ZmqOptions = DEFAULT_OPTIONS,
    ) -> None:
        _loop_init(self, name, options)
        self._curve = options.curve_client
        self._on_frame = on_frame
        self._target_lock = threading.Lock()
        self._target: str | None = None
        # I/O thread only:
        self._dealer: zmq.Socket[Any] | None = None

    @property
    def address(self) -> str | None:
        with self._target_lock:
            return self._target

    def connect(self, address: str) -> None:
        with self._target_lock:
            self._target = address
        self._enqueue_control((_CONNECT, address))

    def close(self) -> None:
        with self._target_lock:
            self._target = None
        self._enqueue_control((_CLOSE,))

    def send(self, frame: bytes) -> bool:
        if self.address is None and len(frame) <= self._max_frame_bytes:
            self._counters.bump("dropped")
            return False
        return self._enqueue_frame((_SEND, frame), len(frame))

    # -- I/O thread ------------------------------------------------------------------

    def _open(self, context: zmq.Context[Any]) -> None:
        pass  # the DEALER is made by connect()

    def _receivers(self) -> list[zmq.Socket[Any]]:
        return [] if self._dealer is None else [self._dealer]

    def _on_command(self, command: Command) -> None:
        op = command[0]
        if op == _SEND:
            frame: bytes = command[1]
            if self._dealer is None:
                self._counters.bump("dropped")
                return
            try:
                self._dealer.send(frame, NOBLOCK)
            except zmq.ZMQError:
                self._counters.bump("dropped")
                return
            self._counters.sent(len(frame))
        elif op == _CONNECT:
            self._close()
            assert self._ctx is not None
            dealer = self._ctx.socket(zmq.DEALER)
            self._configure(dealer, receives=True)
            if self._curve is not None:
                configure_client(dealer, self._curve)
            try:
                dealer.connect(command[1])
            except zmq.ZMQError as exc:
                dealer.close(0)
                LOG.error("%s: cannot connect to %r: %s", self._name, command[1], exc)
                return
            self._dealer = dealer
            self._poller_dirty = True
        elif op == _CLOSE:
            self._close()

    def _on_message(self, socket: zmq.Socket[Any], parts: list[bytes]) -> None:
        if len(parts) != 1:
            self._malformed(f"{len(parts)} parts from the server, want 1")
            return
        frame = parts[0]
        if not self._accept(frame):
            return
        self._counters.received(len(frame))
        try:
            self._on_frame(frame)
        except Exception:
            self._handler_failed()

    def _close(self) -> None:
        if self._dealer is not None:
            self._dealer.close(0)
            self._dealer = None
            self._poller_dirty = True
