"""The session thread: the one place that owns a client's :class:`ClientSessionCore`.

Everything that touches the core goes through one queue read by one thread (not a
pykka actor: a queue with a timeout gives ticks for free, and the client then needs no
actor system): transport frames, ticks every ``tick_ms``, user submissions and queries,
"handled" reports from the delivery thread, and close. The thread carries out the
core's effects: it opens connections, encodes and sends messages, resolves the user's
futures and hands server requests to the delivery thread.

Connections: every ``connect`` effect builds a *new* connection from the factory, with
a frame handler bound to a generation number, and stops the old one; frames of an older
generation that are still in the queue are ignored (counted as stale). So a late
``NotLeader`` from a node the client already left cannot send it away from the leader.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Any

from actors.transport import ClientConnection, ConnectionFrameHandler
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
    ServerRequest,
    SessionClosed,
    decode_server_message,
)

__all__ = ["ClientStats", "ConnectionFactory", "SessionHost"]

LOG = logging.getLogger("actors.client")

#: Builds a (not yet started) connection that passes received frames to the handler.
ConnectionFactory = Callable[[ConnectionFrameHandler], ClientConnection]

_FRAME, _SUBMIT, _QUERY, _HANDLED, _CLOSE = range(5)
#: Queue items handled before the next tick check.
_BATCH = 512
_STARTED = (ClientPhase.ACTIVE, ClientPhase.FAILED, ClientPhase.CLOSED)


@dataclass(frozen=True, slots=True)
class ClientStats:
    """A snapshot of one client's counters."""

    #: Connections opened (the first one, plus one per reconnect).
    connects: int
    #: Frames decoded and handed to the session core.
    frames_in: int
    #: Frames that did not decode as a server message: dropped.
    bad_frames: int
    #: Frames of a connection the client had already left: ignored.
    stale_frames: int
    #: Server requests handed to the handler.
    server_requests_handled: int
    #: Server requests whose payload did not decode or whose handler raised.
    handler_errors: int


class SessionHost:
    """Hosts one :class:`ClientSessionCore` on its own thread (see the module docstring).

    ``deliver`` receives batches of server requests in order (the delivery thread's
    queue); ``None`` means there is no handler, and requests count as handled at once.
    ``on_exit`` runs on the thread when it ends (the client stops its delivery thread).
    """

    def __init__(
        self,
        config: ClientConfig,
        *,
        decode_response: Callable[[bytes], Any],
        connection_factory: ConnectionFactory,
        tick_ms: int,
        deliver: Callable[[list[ServerRequest]], None] | None,
        on_exit: Callable[[], None],
        name: str,
    ) -> None:
        self._core = ClientSessionCore(config)
        self._config = config
        self._decode_response = decode_response
        self._factory = connection_factory
        self._tick_ms = tick_ms
        self._deliver = deliver
        self._on_exit = on_exit
        self._name = name
        self._inbox: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._accepting = True  # guarded by _lock: user items are still taken
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._t0 = time.monotonic()
        # session thread only:
        self._conn: ClientConnection | None = None
        self._generation = 0
        self._requests: dict[RequestId, Future[Any]] = {}
        self._queries: dict[int, Future[Any]] = {}
        self._closing_until: int | None = None
        self._done = False
        # written by the session thread, read anywhere:
        self.session_id: SessionId | None = None
        self.phase = ClientPhase.IDLE
        #: Set once the session is open or the client failed/closed before that.
        self.opened = threading.Event()
        #: Why the session never opened (when ``opened`` is set and it did not).
        self.open_error: ClientError | None = None
        self.connects = 0
        self.frames_in = 0
        self.bad_frames = 0
        self.stale_frames = 0

    # ------------------------------------------------------------------ any thread

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for the thread to end (not from the thread itself)."""
        thread = self._thread
        if thread.ident is not None and thread is not threading.current_thread():
            thread.join(max(timeout, 0.0))
            if thread.is_alive():  # pragma: no cover - a wedged transport
                LOG.error("%s: the session thread did not stop in time", self._name)

    def deadline_ms(self, timeout_s: float | None) -> int | None:
        """The session clock's deadline ``timeout_s`` from now (rounded up, so a
        timeout never fires before the user's deadline)."""
        if timeout_s is None:
            return None
        return math.ceil((time.monotonic() - self._t0 + timeout_s) * 1000)

    def submit(self, payload: bytes, deadline_ms: int | None, future: Future[Any]) -> bool:
        """Queue a command; False if the client is closing (the caller fails the future)."""
        return self._post((_SUBMIT, payload, deadline_ms, future))

    def query(self, payload: bytes, deadline_ms: int | None, future: Future[Any]) -> bool:
        """Queue a query; False if the client is closing."""
        return self._post((_QUERY, payload, deadline_ms, future))

    def handled(self, request_id: RequestId) -> None:
        """The delivery thread finished the server requests up to ``request_id``."""
        self._inbox.put((_HANDLED, request_id))

    def close(self, timeout_s: float) -> None:
        """Ask the thread to close the session (once) and to end."""
        with self._lock:
            if not self._accepting:
                return
            self._accepting = False
            self._inbox.put((_CLOSE, timeout_s))

    def _post(self, item: tuple[Any, ...]) -> bool:
        with self._lock:
            if self._accepting:
                self._inbox.put(item)
                return True
        return False

    # ------------------------------------------------------------------ session thread

    def _now(self) -> int:
        return int((time.monotonic() - self._t0) * 1000)

    def _run(self) -> None:
        try:
            self._apply(self._core.start(self._now()))
            next_tick = self._now() + self._tick_ms
            while not self._done:
                wait_s = max(next_tick - self._now(), 0) / 1000
                try:
                    item: tuple[Any, ...] | None = self._inbox.get(timeout=wait_s)
                except queue.Empty:
                    item = None
                if item is not None:
                    self._handle(item)
                    for _ in range(_BATCH):
                        if self._done:
                            break
                        try:
                            self._handle(self._inbox.get_nowait())
                        except queue.Empty:
                            break
                now = self._now()
                if now >= next_tick and not self._done:
                    next_tick = now + self._tick_ms
                    self._tick(now)
                    if self._closing_until is not None and now >= self._closing_until:
                        self._done = True  # no confirmation of the close: stop anyway
        except Exception:  # pragma: no cover - every item is guarded
            LOG.exception("%s: the session thread failed", self._name)
        finally:
            self._shutdown()

    def _tick(self, now: int) -> None:
        try:
            self._apply(self._core.on_tick(now))
        except Exception:  # a bug is logged, never the end of the session thread
            LOG.exception("%s: handling a tick failed", self._name)

    def _handle(self, item: tuple[Any, ...]) -> None:
        try:
            kind = item[0]
            if kind == _FRAME:
                self._frame(item[1], item[2])
            elif kind == _SUBMIT:
                self._submit(item[1], item[2], item[3])
            elif kind == _QUERY:
                self._query(item[1], item[2], item[3])
            elif kind == _HANDLED:
                self._apply(self._core.on_server_requests_handled(item[1], self._now()))
            elif kind == _CLOSE:
                self._close(item[1])
        except Exception:
            LOG.exception("%s: handling an event failed", self._name)

    def _frame(self, generation: int, frame: bytes) -> None:
        if generation != self._generation:
            self.stale_frames += 1
            return
        try:
            msg = decode_server_message(frame)
        except ProtocolError as exc:
            self.bad_frames += 1
            if self.bad_frames & (self.bad_frames - 1) == 0:  # 1st, 2nd, 4th, 8th...
                LOG.warning(
                    "%s: dropped a bad frame (%d so far): %s", self._name, self.bad_frames, exc
                )
            return
        self.frames_in += 1
        if self._closing_until is not None:
            if isinstance(msg, SessionClosed | NotLeader):
                self._done = True  # the server has our CloseSession (or has no session)
            return
        self._apply(self._core.on_message(msg, self._now()))

    def _submit(self, payload: bytes, deadline_ms: int | None, future: Future[Any]) -> None:
        rid, fx = self._core.submit(payload, self._now(), deadline_ms)
        self._requests[rid] = future
        self._apply(fx)

    def _query(self, payload: bytes, deadline_ms: int | None, future: Future[Any]) -> None:
        cid, fx = self._core.query(payload, self._now(), deadline_ms)
        self._queries[cid] = future
        self._apply(fx)

    def _close(self, timeout_s: float) -> None:
        now = self._now()
        fx = self._core.close(now)
        told = any(isinstance(m, CloseSession) for m in fx.send)
        self._apply(fx)
        if told:  # wait (a little) for the server to confirm, so the frame is not lost
            patience = min(timeout_s * 1000, self._config.handshake_timeout_ms)
            self._closing_until = now + max(int(patience), 0)
        else:
            self._done = True

    # ------------------------------------------------------------------ effects

    def _apply(self, fx: ClientEffects) -> None:
        """Carry out one batch in the documented order; a connect is followed by the
        core's ``on_connected`` (or ``on_disconnected``) and its own batch."""
        while True:
            opened: bool | None = None
            if fx.connect is not None:
                opened = self._open(fx.connect)
            conn = self._conn
            if conn is not None:
                for msg in fx.send:
                    conn.send(encode(msg))
            for c in fx.completed:
                self._resolve(self._requests.pop(c.request_id, None), c.response, c.error)
            for q in fx.queries_completed:
                self._resolve(self._queries.pop(q.correlation_id, None), q.response, q.error)
            if fx.deliver:
                if self._deliver is not None:
                    self._deliver(fx.deliver)
                else:  # nobody to hand them to: handled as soon as delivered
                    self.handled(fx.deliver[-1].request_id)
            if opened is None:
                break
            now = self._now()
            fx = self._core.on_connected(now) if opened else self._core.on_disconnected(now)
        self.session_id = self._core.session_id
        self.phase = phase = self._core.phase
        if phase in _STARTED and not self.opened.is_set():
            if phase is not ClientPhase.ACTIVE:
                self.open_error = self._core.failure
            self.opened.set()

    def _open(self, address: str) -> bool:
        """Drop the current connection and open a new one to ``address``."""
        self._generation += 1
        self._drop_connection()
        inbox, generation = self._inbox, self._generation

        def on_frame(frame: bytes) -> None:
            inbox.put((_FRAME, generation, frame))

        conn: ClientConnection | None = None
        try:
            conn = self._factory(on_frame)
            conn.start()
            conn.connect(address)
        except Exception as exc:
            LOG.warning("%s: cannot connect to %s: %s", self._name, address, exc)
            if conn is not None:
                conn.stop()
            return False
        self._conn = conn
        self.connects += 1
        LOG.debug("%s: connected to %s", self._name, address)
        return True

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.stop()
            except Exception:  # pragma: no cover - stop() never raises by contract
                LOG.exception("%s: stopping a connection failed", self._name)

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

    def _shutdown(self) -> None:
        """Stop the connection, fail whatever is still waiting, release the waiters."""
        with self._lock:
            self._accepting = False
        self._done = True
        self._drop_connection()
        closed = ClientClosedError("client closed")
        leftovers = [*self._requests.values(), *self._queries.values()]
        self._requests.clear()
        self._queries.clear()
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if item[0] in (_SUBMIT, _QUERY):
                leftovers.append(item[3])
        for future in leftovers:
            self._resolve(future, None, closed)
        self.phase = self._core.phase
        if not self.opened.is_set():
            self.open_error = self._core.failure or closed
            self.opened.set()
        try:
            self._on_exit()
        except Exception:  # pragma: no cover - the client's own hook
            LOG.exception("%s: exit hook failed", self._name)
