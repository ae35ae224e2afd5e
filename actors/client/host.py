"""One client session on a :class:`~actors.client.loop.ClientLoop`: the one place that
owns a client's :class:`ClientSessionCore`.

Everything that touches the core runs on the loop's thread (not a pykka actor: the
loop's poll timeout gives ticks for free, and the client then needs no actor system):
received frames, ticks, user submissions and queries (posted by the
user's thread), "handled" reports from the delivery thread, and close. The host carries
out the core's effects: it opens connections, encodes and sends messages, resolves the
user's futures and hands server requests to the delivery thread.

Connections: every ``connect`` effect moves the session to a *new* channel: a channel of
a connection its loop already has to that member (shared with other sessions of the
loop, see :mod:`actors.client.connections`), never of the connection it leaves, or of
a new one. By default a connection is a ZeroMQ DEALER made, polled, written and closed
on the loop thread; with a ``connection_factory`` it is that transport's connection, on
its own thread, posting frames to the loop. Channels are never reused, so frames still
in flight for a channel the session left are dropped (counted as stale): a late
``NotLeader`` from a node the client already left cannot send it away from the leader.
What the session sends goes out at the end of the loop's turn, batched with everything
else queued for its connection.

Ticks: a session is ticked when its core has something timed
(:meth:`ClientSessionCore.next_tick_ms`: a deadline, a connect or handshake timeout,
a keep-alive, a resend check, the server's silence limit), rounded up to the loop's
``tick_ms`` grid so that the sessions of a loop tick together, and at most once per
``tick_ms``. An idle session wakes for its keep-alives only, not every ``tick_ms``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from actors.client.connections import Channel, ConnectionFactory
from actors.transport import CurveClient
from protocol.client import (
    ClientClosedError,
    ClientConfig,
    ClientEffects,
    ClientError,
    ClientPhase,
    ClientSessionCore,
    ResponseDecodeError,
)
from protocol.codec import ProtocolError, encode
from protocol.ids import RequestId, SessionId
from protocol.wire import (
    CloseSession,
    NotLeader,
    RejectReason,
    ServerMessage,
    ServerRequest,
    SessionClosed,
    SessionContinued,
    SessionCreated,
    SessionRejected,
    decode_server_message,
)

if TYPE_CHECKING:
    from actors.client.loop import ClientLoop

__all__ = ["ClientStats", "ConnectionFactory", "SessionHost"]

LOG = logging.getLogger("actors.client")

_STARTED = (ClientPhase.ACTIVE, ClientPhase.FAILED, ClientPhase.CLOSED)
#: How far ahead "never" is for a session with nothing timed (any input that times
#: something reschedules it).
_UNTIMED_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class ClientStats:
    """A snapshot of one client's counters."""

    #: Connections opened (the first one, plus one per reconnect).
    connects: int
    #: Frames decoded and handed to the session core.
    frames_in: int
    #: Frames that did not decode as a server message (or were oversized or
    #: multi-part): dropped.
    bad_frames: int
    #: Frames of a connection the client had already left: ignored.
    stale_frames: int
    #: Server requests handed to the handler.
    server_requests_handled: int
    #: Server requests whose payload did not decode or whose handler raised.
    handler_errors: int


class SessionHost:
    """Hosts one :class:`ClientSessionCore` on a :class:`ClientLoop` (see the module
    docstring).

    ``connection_factory`` None means ZeroMQ sockets on the loop thread. ``deliver``
    receives batches of server requests in order (the delivery thread's queue);
    ``None`` means there is no handler, and requests count as handled at once.
    ``on_exit`` runs on the loop thread when the session ends (the client stops its
    delivery thread).
    """

    def __init__(
        self,
        config: ClientConfig,
        *,
        loop: ClientLoop,
        decode_response: Callable[[bytes], Any],
        connection_factory: ConnectionFactory | None,
        curve: CurveClient | None = None,
        tick_ms: int,
        deliver: Callable[[list[ServerRequest]], None] | None,
        on_exit: Callable[[], None],
        name: str,
    ) -> None:
        self._core = ClientSessionCore(config)
        self._config = config
        self._loop = loop
        self._decode_response = decode_response
        self._factory = connection_factory
        self._curve = curve
        self._tick_ms = tick_ms
        self._deliver = deliver
        self._on_exit = on_exit
        self._name = name
        self._lock = threading.Lock()
        self._accepting = True  # guarded by _lock: user items are still taken
        # loop thread only:
        self._channel: Channel | None = None
        self._requests: dict[RequestId, Future[Any]] = {}
        self._queries: dict[int, Future[Any]] = {}
        self._closing_until: int | None = None
        self._done = False
        self.next_tick_ms = 0
        # written by the loop thread, read anywhere:
        self.session_id: SessionId | None = None
        self.phase = ClientPhase.IDLE
        #: Set once the session is open or the client failed/closed before that.
        self.opened = threading.Event()
        self._open_reported = False  # loop thread: ``opened`` was set
        #: Set once the session ended on the loop (nothing is left waiting).
        self.finished = threading.Event()
        #: Why the session never opened (when ``opened`` is set and it did not).
        self.open_error: ClientError | None = None
        self.connects = 0
        self.frames_in = 0
        self.bad_frames = 0
        self.stale_frames = 0

    # ------------------------------------------------------------------ any thread

    def start(self) -> None:
        """Host the session on the loop (``ClientClosedError`` if the loop is closed)."""
        self._loop.attach(self)

    def deadline_ms(self, timeout_s: float | None) -> int | None:
        """The session clock's deadline ``timeout_s`` from now (rounded up, so a
        timeout never fires before the user's deadline)."""
        return None if timeout_s is None else self._loop.deadline_ms(timeout_s)

    def submit(self, payload: bytes, deadline_ms: int | None, future: Future[Any]) -> bool:
        """Queue a command; False if the client is closing (the caller fails the future)."""
        with self._lock:
            if self._accepting:
                self._loop.post(self._submit, payload, deadline_ms, future)
                return True
        return False

    def query(self, payload: bytes, deadline_ms: int | None, future: Future[Any]) -> bool:
        """Queue a query; False if the client is closing."""
        with self._lock:
            if self._accepting:
                self._loop.post(self._query, payload, deadline_ms, future)
                return True
        return False

    def handled(self, request_id: RequestId) -> None:
        """The delivery thread finished the server requests up to ``request_id``."""
        self._loop.post(self._handled, request_id)

    def close(self, timeout_s: float) -> None:
        """Ask the loop to close the session (once); see :attr:`finished`."""
        with self._lock:
            if not self._accepting:
                return
            self._accepting = False
            self._loop.post(self._close, timeout_s)

    # ------------------------------------------------------------------ loop thread

    def begin(self) -> None:
        """Start the session (called by the loop)."""
        now = self._loop.now_ms()
        self._guarded(lambda: self._apply(self._core.start(now)))
        self._schedule(now, now)

    def tick(self, now: int) -> None:
        self.next_tick_ms = now + self._tick_ms  # (kept if what follows fails)
        if self._done:
            return
        closing = self._closing_until is not None and now >= self._closing_until
        try:
            self._apply(self._core.on_tick(now))
            if not closing:
                self._schedule(now, now + self._tick_ms)
        except Exception:  # a bug is logged, never the end of the loop
            LOG.exception("%s: handling a tick failed", self._name)
        if closing:
            self.shutdown()  # no confirmation of the close: stop anyway

    def _schedule(self, now: int, earliest: int) -> None:
        """Set the next tick: when the core (or a close waiting for its confirmation)
        has something timed, on the ``tick_ms`` grid, not before ``earliest``."""
        due = self._core.next_tick_ms()
        closing = self._closing_until
        if closing is not None and (due is None or closing < due):
            due = closing
        if due is None:
            self.next_tick_ms = now + _UNTIMED_MS
            return
        step = self._tick_ms
        self.next_tick_ms = at = max(-(-due // step) * step, earliest)
        self._loop.schedule_tick(at)

    @property
    def max_payload_bytes(self) -> int:
        """The session's payload limit in force (its connection batches under it)."""
        return self._core.max_payload_bytes

    def shutdown(self) -> None:
        """Stop the connection, fail whatever is still waiting, release the waiters."""
        with self._lock:
            self._accepting = False
        if self._done:
            return
        self._done = True
        self._drop_connection()
        closed = ClientClosedError("client closed")
        leftovers = [*self._requests.values(), *self._queries.values()]
        self._requests.clear()
        self._queries.clear()
        for future in leftovers:
            self._resolve(future, None, closed)
        self.phase = self._core.phase
        if not self.opened.is_set():
            self.open_error = self._core.failure or closed
            self.opened.set()
        self._loop.detach(self)
        try:
            self._on_exit()
        except Exception:  # pragma: no cover - the client's own hook
            LOG.exception("%s: exit hook failed", self._name)
        self.finished.set()

    def _guarded(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:  # a bug is logged, never the end of the loop
            LOG.exception("%s: handling an event failed", self._name)

    def bad_frame(self, why: object) -> None:
        """A frame (or batch item) for this session did not decode: count, log rarely."""
        self.bad_frames += 1
        if self.bad_frames & (self.bad_frames - 1) == 0:  # 1st, 2nd, 4th, 8th...
            LOG.warning("%s: dropped a bad frame (%d so far): %s", self._name, self.bad_frames, why)

    def frame(self, frame: bytes) -> None:
        """A frame for this session's channel (a batch item): decode and handle it."""
        try:
            msg = decode_server_message(frame)
        except ProtocolError as exc:
            self.bad_frame(exc)
            return
        self.message(msg)

    def message(self, msg: ServerMessage) -> None:
        """A message for this session's channel (guarded: a bug is logged, never the
        end of the loop or of the other sessions on the connection)."""
        if self._done:
            return
        self.frames_in += 1
        try:
            if self._closing_until is not None:
                if isinstance(msg, SessionClosed | NotLeader):
                    self.shutdown()  # the server has our CloseSession (or has no session)
                return
            if (
                type(msg) is SessionRejected
                and msg.reason is RejectReason.TOO_MANY_SESSIONS
                and self._channel is not None
            ):  # this channel is beyond the node's limit: the next ones stay below it
                self._loop.connections.refused(self)
            self._apply(self._core.on_message(msg, self._loop.now_ms()))
            if isinstance(msg, SessionCreated | SessionContinued) and self._channel is not None:
                # the node may have announced a lower payload limit
                self._channel.payload_limit_lowered(self._core.max_payload_bytes)
        except Exception:
            LOG.exception("%s: handling a message failed", self._name)

    def _submit(self, payload: bytes, deadline_ms: int | None, future: Future[Any]) -> None:
        if self._done:
            self._resolve(future, None, ClientClosedError("client closed"))
            return
        now = self._loop.now_ms()
        rid, fx = self._core.submit(payload, now, deadline_ms)
        self._requests[rid] = future
        self._apply(fx)
        self._deadline_added(now, deadline_ms)

    def _query(self, payload: bytes, deadline_ms: int | None, future: Future[Any]) -> None:
        if self._done:
            self._resolve(future, None, ClientClosedError("client closed"))
            return
        now = self._loop.now_ms()
        cid, fx = self._core.query(payload, now, deadline_ms)
        self._queries[cid] = future
        self._apply(fx)
        self._deadline_added(now, deadline_ms)

    def _deadline_added(self, now: int, deadline_ms: int | None) -> None:
        """A user deadline before the next tick moves the tick earlier."""
        if deadline_ms is not None and deadline_ms < self.next_tick_ms:
            self._schedule(now, now)

    def _handled(self, request_id: RequestId) -> None:
        if not self._done:
            self._apply(self._core.on_server_requests_handled(request_id, self._loop.now_ms()))

    def _close(self, timeout_s: float) -> None:
        if self._done:
            return
        now = self._loop.now_ms()
        fx = self._core.close(now)
        told = any(isinstance(m, CloseSession) for m in fx.send)
        self._apply(fx)
        if told:  # wait (a little) for the server to confirm, so the frame is not lost
            patience = min(timeout_s * 1000, self._config.handshake_timeout_ms)
            self._closing_until = now + max(int(patience), 0)
            self._schedule(now, now)
        else:
            self.shutdown()

    # ------------------------------------------------------------------ effects

    def _apply(self, fx: ClientEffects) -> None:
        """Carry out one batch in the documented order; a connect is followed by the
        core's ``on_connected`` (or ``on_disconnected``) and its own batch."""
        while True:
            opened: bool | None = None
            if fx.connect is not None:
                opened = self._open(fx.connect)
            channel = self._channel
            if channel is not None and fx.send:
                for msg in fx.send:
                    channel.send(encode(msg))
            if fx.completed:
                requests = self._requests
                for c in fx.completed:
                    self._resolve(requests.pop(c.request_id, None), c.response, c.error)
            if fx.queries_completed:
                for q in fx.queries_completed:
                    self._resolve(self._queries.pop(q.correlation_id, None), q.response, q.error)
            if fx.deliver:
                if self._deliver is not None:
                    self._deliver(fx.deliver)
                else:  # nobody to hand them to: handled as soon as delivered
                    self.handled(fx.deliver[-1].request_id)
            if opened is None:
                break
            now = self._loop.now_ms()
            fx = self._core.on_connected(now) if opened else self._core.on_disconnected(now)
        core = self._core
        phase = core.phase
        if phase is not self.phase:
            # A new phase times something else (a connect, a handshake, keep-alives):
            # only ever later within one phase, so only a change needs a new tick.
            self.phase = phase
            if not self._done:
                now = self._loop.now_ms()
                self._schedule(now, now)
        if not self._open_reported:
            self.session_id = core.session_id
            if phase in _STARTED:
                if phase is not ClientPhase.ACTIVE:
                    self.open_error = core.failure
                self._open_reported = True
                self.opened.set()

    def _open(self, address: str) -> bool:
        """Leave the current channel for a new one on a connection to ``address``."""
        self._channel = None
        try:
            self._channel = self._loop.connections.open(self, address, self._curve, self._factory)
        except Exception as exc:
            LOG.warning("%s: cannot connect to %s: %s", self._name, address, exc)
            return False
        self.connects += 1
        LOG.debug("%s: connected to %s", self._name, address)
        return True

    def _drop_connection(self) -> None:
        if self._channel is not None:
            self._channel = None
            self._loop.connections.release(self)

    def _resolve(
        self, future: Future[Any] | None, response: bytes | None, error: Exception | None
    ) -> None:
        if future is None:
            return
        value: Any = None
        if error is None:
            assert response is not None
            try:
                value = self._decode_response(response)
            except Exception as exc:
                error = ResponseDecodeError(f"the codec cannot decode the response: {exc!r}")
                error.__cause__ = exc
        try:
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)
        except InvalidStateError:
            pass  # the user cancelled the future: nobody is waiting
