"""The connections of one :class:`~actors.client.loop.ClientLoop`, shared by its sessions.

Sessions on one loop that talk to the same member (with the same CURVE settings and
connection factory) share one connection: up to ``sessions_per_connection`` of them,
each on its own *channel* (see :mod:`protocol.wire`). Which session gets which
connection and channel is :class:`~protocol.client.ChannelTable`'s pure decision;
this module owns the sockets.

Sending: a session queues frames on its :class:`Channel`; at the end of the loop's turn
(:meth:`ConnectionPool.flush`) each connection sends everything queued as few frames as
the batch bounds allow -- one single message for channel 0 is sent as it always was, so
a lone client's frames are unchanged.

Receiving: a connection decodes each frame (one message for channel 0, or a
``ServerBatch``) and hands every message to the session holding its channel; a
message for a channel nobody holds now (its session left) is stale and dropped. A
frame that does not decode counts as a bad frame of every session on the connection,
an item that does not decode as one of its channel's session.

A ZeroMQ connection (:class:`_ZmqConnection`) is a DEALER made, polled, read, written
and closed on the loop thread; a ``connection_factory``'s connection
(:class:`_ForeignConnection`) has its own I/O thread, which posts received frames to
the loop (frames of a connection closed meanwhile are dropped as stale).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import zmq

from actors.transport import ClientConnection, ConnectionFrameHandler, CurveClient
from actors.transport._zmq_loop import EVENTS, MAXMSGSIZE_SLACK, NOBLOCK, POLLIN, RCVMORE
from actors.transport.curve import configure_client
from protocol.client import ChannelTable
from protocol.codec import ProtocolError
from protocol.wire import ClientBatch, ServerBatch, decode_server_frame, pack_batches

if TYPE_CHECKING:
    from actors.client.host import SessionHost
    from actors.client.loop import ClientLoop

__all__ = [
    "DEFAULT_MAX_BATCH_ITEMS",
    "DEFAULT_SESSIONS_PER_CONNECTION",
    "Channel",
    "ConnectionFactory",
    "ConnectionPool",
]

LOG = logging.getLogger("actors.client")

#: Builds a (not yet started) connection that passes received frames to the handler.
ConnectionFactory = Callable[[ConnectionFrameHandler], ClientConnection]

#: Sessions one connection carries at most (a node accepts its
#: ``max_sessions_per_connection`` channels per connection, 8 by default, and refuses
#: the others with ``TOO_MANY_SESSIONS``: the loop then uses that many for the member).
DEFAULT_SESSIONS_PER_CONNECTION = 8
#: Items in one batch frame (a node accepts ``max_batch_items``, 1024 by default).
DEFAULT_MAX_BATCH_ITEMS = 256
#: Soft bound on one batch frame's bytes (also never above the sessions' payload
#: limit, which the node's frame limit exceeds; a larger single item goes alone).
BATCH_BYTES = 64 * 1024
#: Frames read from one socket per poll before the loop turns to other work.
_READ_BATCH = 256

_Key = tuple[str, CurveClient | None, ConnectionFactory | None]


class Channel:
    """A session's channel on a shared connection: what it sends goes out with the
    connection's next flush."""

    __slots__ = ("channel", "connection")

    def __init__(self, connection: _Connection, channel: int) -> None:
        self.connection = connection
        self.channel = channel

    def send(self, frame: bytes) -> None:
        conn = self.connection
        if not conn.outbox:
            conn.pool.dirty.append(conn)
        conn.outbox.append((self.channel, frame))

    def payload_limit_lowered(self, limit: int) -> None:
        """The session's payload limit dropped to ``limit`` (a node announced its own):
        the connection's batches stay under it."""
        conn = self.connection
        conn.batch_bytes = min(conn.batch_bytes, limit)


class _Connection:
    """One transport connection and its outbox (subclasses own the socket)."""

    def __init__(self, pool: ConnectionPool, ident: int) -> None:
        self.pool = pool
        self.ident = ident
        self.outbox: list[tuple[int, bytes]] = []
        self.closed = False
        #: Who was given each channel: frames for a channel its session left count as
        #: that session's stale frames (the one record of it: it outlives the table's
        #: entry, for frames a foreign connection posted before it closed).
        self.owners: dict[int, SessionHost] = {}
        #: A batch bound the node surely takes: at most :data:`BATCH_BYTES` and the
        #: payload limit of every session on the connection (kept up to date as
        #: sessions join and leave, see :meth:`ConnectionPool.open` and ``release``).
        self.batch_bytes = BATCH_BYTES

    def flush(self) -> None:
        outbox, self.outbox = self.outbox, []
        if self.closed or not outbox:
            return
        if len(outbox) == 1 and outbox[0][0] == 0:
            self.send_frame(outbox[0][1])  # the lone client's usual case
            return
        max_items, limit = self.pool.max_batch_items, self.batch_bytes
        for frame in pack_batches(outbox, ClientBatch, max_items=max_items, max_bytes=limit):
            self.send_frame(frame)

    def send_frame(self, frame: bytes) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class _ZmqConnection(_Connection):
    """A DEALER owned by the loop thread: made, polled, written and closed only there."""

    def __init__(
        self, pool: ConnectionPool, ident: int, address: str, curve: CurveClient | None
    ) -> None:
        super().__init__(pool, ident)
        loop = pool.loop
        socket = loop.context.socket(zmq.DEALER)
        try:
            if curve is not None:
                configure_client(socket, curve)
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt(zmq.SNDHWM, loop.hwm)
            socket.setsockopt(zmq.RCVHWM, loop.hwm)
            socket.setsockopt(zmq.RECONNECT_IVL, 100)
            socket.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
            socket.setsockopt(zmq.MAXMSGSIZE, loop.max_frame_bytes + MAXMSGSIZE_SLACK)
            socket.connect(address)
        except zmq.ZMQError:
            socket.close(0)
            raise
        self.socket = socket
        #: Frames not sent because the high-water mark was reached.
        self.dropped = 0
        self._fd: int = socket.getsockopt(zmq.FD)
        loop.register(self._fd, self)

    def send_frame(self, frame: bytes) -> None:
        try:
            self.socket.send(frame, NOBLOCK)
        except zmq.Again:  # the high-water mark: lost like on the network, resent later
            self.dropped += 1
        # a send may consume the descriptor's signal of a message that arrived
        self.pool.loop.check(self)

    def readable(self, signalled: bool = False) -> None:
        """Read until ``ZMQ_EVENTS`` shows nothing waiting or a ``recv`` finds nothing
        (either re-arms the descriptor), or a bounded batch (then the loop is asked to
        come back). ``signalled``: the descriptor fired, so try ``recv`` first."""
        socket = self.socket
        getsockopt, recv = socket.getsockopt, socket.recv
        max_bytes = self.pool.loop.max_frame_bytes
        dispatch = self.pool.dispatch
        ask = not signalled
        for _ in range(_READ_BATCH):
            if self.closed:
                return  # a frame made its last session leave: the socket is gone
            if ask and not getsockopt(EVENTS) & POLLIN:
                return
            ask = True
            try:
                frame = recv(NOBLOCK)
            except zmq.Again:  # a wake-up for something else
                return
            if getsockopt(RCVMORE):  # servers send single-part messages only
                while getsockopt(RCVMORE):
                    recv()
                self.pool.bad_frame(self, "a multi-part message")
            elif len(frame) > max_bytes:
                self.pool.bad_frame(self, f"an oversized frame ({len(frame)} bytes)")
            else:
                dispatch(self, frame)
        self.pool.loop.check(self)  # the batch is used up: more may be waiting

    def stop(self) -> None:
        self.closed = True
        self.pool.loop.unregister(self._fd)
        self.socket.close(0)


class _ForeignConnection(_Connection):
    """A connection from a ``connection_factory``: its own thread posts frames to us."""

    def __init__(
        self, pool: ConnectionPool, ident: int, address: str, factory: ConnectionFactory
    ) -> None:
        super().__init__(pool, ident)
        post, dispatch = pool.loop.post, pool.dispatch_posted

        def on_frame(data: bytes) -> None:
            post(dispatch, self, data)

        conn = factory(on_frame)
        try:
            conn.start()
            conn.connect(address)
        except Exception:
            conn.stop()
            raise
        self._conn = conn

    def send_frame(self, frame: bytes) -> None:
        self._conn.send(frame)

    def stop(self) -> None:
        self.closed = True
        try:
            self._conn.stop()
        except Exception:  # pragma: no cover - stop() never raises by contract
            LOG.exception("stopping a client connection failed")


class ConnectionPool:
    """The connections of one loop (see the module docstring). Loop thread only."""

    def __init__(
        self, loop: ClientLoop, sessions_per_connection: int, max_batch_items: int
    ) -> None:
        if max_batch_items < 1:
            raise ValueError("max_batch_items must be >= 1")
        self.loop = loop
        self.max_batch_items = max_batch_items
        self.table: ChannelTable[_Key, SessionHost] = ChannelTable(sessions_per_connection)
        self._connections: dict[int, _Connection] = {}
        #: Connections with something queued (flushed at the end of the loop's turn).
        self.dirty: list[_Connection] = []

    def open(
        self,
        host: SessionHost,
        address: str,
        curve: CurveClient | None,
        factory: ConnectionFactory | None,
    ) -> Channel:
        """Move ``host`` to a channel of a connection to ``address`` (never the one it
        leaves); raises what opening a new connection raised (``host`` then has none)."""
        left = self.table.where(host)
        placement = self.table.place(host, (address, curve, factory))
        if placement.closed is not None:
            self._close(placement.closed)
        elif left is not None:
            self._bound_batches(left[0])
        ident = placement.connection
        if placement.opened:
            try:
                conn: _Connection
                if factory is None:
                    conn = _ZmqConnection(self, ident, address, curve)
                else:
                    conn = _ForeignConnection(self, ident, address, factory)
            except Exception:
                self.table.release(host)
                raise
            self._connections[ident] = conn
        conn = self._connections[ident]
        conn.owners[placement.channel] = host
        conn.batch_bytes = min(conn.batch_bytes, host.max_payload_bytes)
        return Channel(conn, placement.channel)

    def refused(self, host: SessionHost) -> None:
        """The node refused ``host``'s channel as beyond its sessions per connection:
        connections to that member get fewer channels from now on (see
        :class:`~protocol.client.ChannelTable`)."""
        self.table.refused(host)

    def release(self, host: SessionHost) -> None:
        """``host`` leaves its channel; its connection closes if it was the last one."""
        where = self.table.where(host)
        closed = self.table.release(host)
        if closed is not None:
            self._close(closed)
        elif where is not None:
            self._bound_batches(where[0])

    def flush(self) -> None:
        """Send what every connection queued this turn."""
        dirty, self.dirty = self.dirty, []
        for conn in dirty:
            try:
                conn.flush()
            except Exception:  # one broken connection must not stop the others
                LOG.exception("%s: sending on a connection failed", self.loop.name)

    def close_all(self) -> None:
        for ident in list(self._connections):
            self._close(ident)

    def _bound_batches(self, ident: int) -> None:
        """A session left connection ``ident``: its bound may rise again."""
        conn = self._connections.get(ident)
        if conn is not None:
            limit = BATCH_BYTES
            for host in self.table.sessions_on(ident):
                limit = min(limit, host.max_payload_bytes)
            conn.batch_bytes = limit

    def dispatch_posted(self, conn: _Connection, frame: bytes) -> None:
        """A foreign connection's frame, now on the loop thread (maybe closed since:
        then every message in it is stale)."""
        self.dispatch(conn, frame)

    def dispatch(self, conn: _Connection, frame: bytes) -> None:
        """Hand a received frame's messages to the sessions holding their channels."""
        try:
            msg = decode_server_frame(frame)
        except ProtocolError as exc:
            if not conn.closed:
                self.bad_frame(conn, exc)
            return
        table, ident = self.table, conn.ident
        if not isinstance(msg, ServerBatch):
            host = None if conn.closed else table.session_at(ident, 0)
            if host is not None:
                host.message(msg)
            else:
                self._stale(conn, 0)
            return
        for channel, item in msg.items:
            host = None if conn.closed else table.session_at(ident, channel)
            if host is not None:
                host.frame(item)
            else:
                self._stale(conn, channel)

    def bad_frame(self, conn: _Connection, why: object) -> None:
        for host in self.table.sessions_on(conn.ident):
            host.bad_frame(why)

    def _stale(self, conn: _Connection, channel: int) -> None:
        former = conn.owners.get(channel)
        if former is not None:
            former.stale_frames += 1

    def _close(self, ident: int) -> None:
        conn = self._connections.pop(ident, None)
        if conn is not None:
            conn.outbox.clear()  # (linger 0: queued frames are dropped, as on a socket)
            conn.stop()

    def __len__(self) -> int:
        return len(self._connections)
