"""``RaftClient``: a session with a raft-actors cluster, for application code.

Threads (all daemon, all ended by :meth:`RaftClient.close`):

* the **loop thread** (``raft-client-N``, :mod:`actors.client.loop`) hosts the session
  (:mod:`actors.client.host`): it owns the pure
  :class:`~protocol.client.ClientSessionCore`, and the loop owns the ZeroMQ socket, so
  frames, ticks, submissions and acks all run there and the core needs no locks.
  Clients made with a shared :class:`~actors.client.loop.ClientLoop` use that loop's
  thread instead, and share its connections: sessions talking to the same member use
  one socket, and what they send in one turn of the loop travels as one frame
  (:mod:`actors.client.connections`);
* the **delivery thread** (``raft-client-N-delivery``, only with ``on_server_request``)
  runs the handler, so a handler may itself call the client;
* with a ``connection_factory`` (e.g. the in-memory transport), that connection's own
  I/O thread, replaced when the connection is (shared by the loop's clients that pass
  the same factory object).

Futures are resolved on the loop thread, so their done-callbacks run there: keep them
short and never block in them (a blocking ``call``/``query`` there is refused with
``RuntimeError`` because it could never complete).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any

from actors.client.delivery import ServerRequestDispatcher
from actors.client.host import ClientStats, ConnectionFactory, SessionHost
from actors.client.loop import ClientLoop
from actors.transport import (
    ClientConnection,
    ConnectionFrameHandler,
    CurveClient,
    ZmqClientConnection,
    ZmqOptions,
    load_key_pair,
    load_public_key,
)
from protocol.client import ClientClosedError, ClientConfig, ClientPhase, RequestTimeoutError
from protocol.ids import RequestId, SessionId
from protocol.session.user import MsgpackCodec, UserCodec

__all__ = [
    "RaftClient",
    "client_factory",
    "curve_client",
    "curve_connection_factory",
    "zmq_connection_factory",
]

_numbers = itertools.count(1)
#: How long ``call``/``query`` wait beyond the user's deadline for the session thread to
#: report the timeout itself (it does so within one tick).
_GRACE_S = 1.0


def zmq_connection_factory(on_frame: ConnectionFrameHandler) -> ClientConnection:
    """A ZeroMQ DEALER connection with its own I/O thread and context (for
    :func:`fetch_status` and the admin calls; a RaftClient given this factory, or none,
    uses a DEALER on its loop thread instead)."""
    return ZmqClientConnection(on_frame, name="client")


def curve_connection_factory(curve: CurveClient) -> ConnectionFactory:
    """ZeroMQ DEALER connections that are CURVE clients with ``curve``'s keys."""
    options = ZmqOptions(curve_client=curve)

    def factory(on_frame: ConnectionFrameHandler) -> ClientConnection:
        return ZmqClientConnection(on_frame, name="client", options=options)

    return factory


def client_factory(
    connection_factory: ConnectionFactory | None, curve: CurveClient | None
) -> ConnectionFactory:
    """``connection_factory`` if given, else ZeroMQ connections (CURVE with ``curve``)."""
    if connection_factory is not None:
        if curve is not None:
            raise ValueError("pass either connection_factory or curve, not both")
        return connection_factory
    return zmq_connection_factory if curve is None else curve_connection_factory(curve)


def curve_client(key_file: str | Path, server_key_file: str | Path) -> CurveClient:
    """A client's CURVE settings from its own ``.key_secret`` file and the cluster's
    server public key file (``.key``); raises ``CurveError`` for a bad file."""
    return CurveClient(load_key_pair(key_file), load_public_key(server_key_file))


class RaftClient:
    """One session with a cluster: exactly-once commands, queries, server requests.

    ``members``: client addresses of cluster members (any subset; leader hints lead to
    the others). ``capabilities`` go with the session's creation (they override
    ``config.capabilities``). ``on_server_request(payload)`` gets every server request's
    decoded payload, in order, exactly once per id, on the delivery thread; the request
    is acknowledged to the cluster only after it returned (if it raises, the error is
    logged and the request still counts as handled). ``codec`` encodes commands and
    queries and decodes responses and payloads (default: msgpack values).
    ``connection_factory(on_frame)`` builds the transport (default: a ZeroMQ DEALER on
    the loop thread; tests pass in-memory ones). ``config`` holds the protocol knobs;
    its ``members`` are replaced by ``members``. ``tick_ms`` is the resolution of timers
    (deadlines, keep-alives): a session is ticked when one is due, on that grid.
    ``loop``: a :class:`ClientLoop` shared with other clients (one thread for all of
    them); default: a private loop, closed with the client.
    ``curve`` (see :func:`curve_client`): talk CURVE with the client's key pair and the
    cluster's server public key (instead of ``connection_factory``).

    Nothing happens until :meth:`connect`. Use as a context manager to close it::

        with RaftClient(["tcp://127.0.0.1:7001"]).connect() as client:
            client.call(["inc", 1])
    """

    def __init__(
        self,
        members: Sequence[str],
        *,
        capabilities: Mapping[str, str] | None = None,
        on_server_request: Callable[[Any], None] | None = None,
        codec: UserCodec | None = None,
        connection_factory: ConnectionFactory | None = None,
        config: ClientConfig | None = None,
        tick_ms: int = 20,
        curve: CurveClient | None = None,
        loop: ClientLoop | None = None,
    ) -> None:
        if isinstance(members, str):
            raise TypeError("members must be a sequence of addresses, not one string")
        if tick_ms < 1:
            raise ValueError("tick_ms must be >= 1")
        base = config if config is not None else ClientConfig(tuple(members))
        caps = dict(capabilities) if capabilities is not None else dict(base.capabilities)
        self._config = dataclasses.replace(base, members=tuple(members), capabilities=caps)
        self._codec: UserCodec = codec if codec is not None else MsgpackCodec()
        self._tick_ms = tick_ms
        self.name = f"raft-client-{next(_numbers)}"
        self._lock = threading.Lock()
        self._state = "new"  # new -> running -> closed (or new -> closed)
        self._dispatcher: ServerRequestDispatcher | None = None
        if on_server_request is not None:
            self._dispatcher = ServerRequestDispatcher(
                on_server_request,
                self._codec.decode_payload,
                self._report_handled,
                name=f"{self.name}-delivery",
            )
        dispatcher = self._dispatcher
        self._own_loop = loop is None
        self._loop = loop if loop is not None else ClientLoop(name=self.name)
        if connection_factory is not None and curve is not None:
            raise ValueError("pass either connection_factory or curve, not both")
        if connection_factory is zmq_connection_factory:
            connection_factory = None  # the same DEALER, without a thread of its own
        self._host = SessionHost(
            self._config,
            loop=self._loop,
            decode_response=self._codec.decode_response,
            connection_factory=connection_factory,
            curve=curve,
            tick_ms=tick_ms,
            deliver=None if dispatcher is None else dispatcher.put,
            on_exit=self._on_host_exit,
            name=self.name,
        )

    # ------------------------------------------------------------------ life cycle

    def connect(self, timeout: float = 10.0) -> RaftClient:
        """Start, and wait until the session is open; returns ``self``.

        Raises ``TimeoutError`` if no session opened within ``timeout`` seconds, the
        session's typed error if the cluster refused it (``SessionRejectedError``), or
        ``ClientClosedError`` if the client was closed; in each case the client is
        closed (no threads left). Call it once.
        """
        with self._lock:
            if self._state == "closed":
                raise ClientClosedError("client closed")
            if self._state == "running":
                raise RuntimeError("connect() was already called")
            self._state = "running"
            if self._dispatcher is not None:
                self._dispatcher.start()
        try:
            self._host.start()
        except ClientClosedError:  # the shared loop was closed
            self.close(timeout=1.0)
            raise
        if not self._host.opened.wait(timeout):
            self.close(timeout=1.0)
            members = ", ".join(self._config.members)
            raise TimeoutError(f"no session with the cluster ({members}) within {timeout}s")
        error = self._host.open_error
        if error is not None:
            self.close(timeout=1.0)
            raise error
        return self

    def close(self, timeout: float = 5.0) -> None:
        """End the session (``CloseSession``) and stop every thread; idempotent.

        Pending futures fail with ``ClientClosedError``; server requests not yet handled
        are dropped (unacknowledged). Waits at most ``timeout`` seconds in all (for the
        server's confirmation, then the threads). Called from a handler or a future's
        callback it cannot wait for its own thread, which then ends right after.
        """
        with self._lock:
            state, self._state = self._state, "closed"
        if state == "new":
            return
        deadline = time.monotonic() + timeout
        if self._own_loop:
            self._loop.close(timeout)
        else:
            self._host.close(timeout)
            if not self._loop.in_loop_thread():
                self._host.finished.wait(max(deadline - time.monotonic(), 0.0))
        if self._dispatcher is not None:
            self._dispatcher.stop()
            self._dispatcher.join(deadline - time.monotonic())

    def __enter__(self) -> RaftClient:
        """Connects (with the default timeout) unless :meth:`connect` was called."""
        with self._lock:
            state = self._state
        if state == "new":
            self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ requests

    def submit(self, command: Any, *, timeout: float | None = None) -> Future[Any]:
        """Send ``command`` for exactly-once application; the future gets the decoded
        response.

        The future fails only with a typed error: ``RequestTimeoutError`` (a
        ``TimeoutError``) once ``timeout`` seconds passed (the command may still be
        applied), ``SessionExpiredError``, ``ResponseEvictedError``,
        ``RequestFailedError`` (application error, too large), ``ResponseDecodeError``,
        ``ClientClosedError``. Leader changes are retried, never surfaced. Cancelling
        the future only stops the waiting, not the command. A command the codec cannot
        encode raises here.
        """
        payload = self._codec.encode_command(command)
        future: Future[Any] = Future()
        if not self._host.submit(payload, self._deadline(timeout), future):
            future.set_exception(ClientClosedError("client closed"))
        return future

    def call(self, command: Any, timeout: float | None = None) -> Any:
        """:meth:`submit` and wait: the decoded response, or the future's typed error."""
        self._refuse_on_session_thread("call")
        return _wait(self.submit(command, timeout=timeout), timeout)

    def query_async(self, query: Any, *, timeout: float | None = None) -> Future[Any]:
        """Run a linearizable read-only ``query``; the future gets the decoded answer.

        Errors as for :meth:`submit` (``RequestFailedError`` when the application's
        ``query`` raised).
        """
        payload = self._codec.encode_query(query)
        future: Future[Any] = Future()
        if not self._host.query(payload, self._deadline(timeout), future):
            future.set_exception(ClientClosedError("client closed"))
        return future

    def query(self, query: Any, timeout: float | None = None) -> Any:
        """:meth:`query_async` and wait."""
        self._refuse_on_session_thread("query")
        return _wait(self.query_async(query, timeout=timeout), timeout)

    # ------------------------------------------------------------------ inspection

    @property
    def session_id(self) -> SessionId | None:
        """The session's id once the cluster created it."""
        return self._host.session_id

    @property
    def phase(self) -> ClientPhase:
        """Where the client is in its life cycle (as of the last event handled)."""
        return self._host.phase

    @property
    def config(self) -> ClientConfig:
        return self._config

    def stats(self) -> ClientStats:
        host, dispatcher = self._host, self._dispatcher
        return ClientStats(
            connects=host.connects,
            frames_in=host.frames_in,
            bad_frames=host.bad_frames,
            stale_frames=host.stale_frames,
            server_requests_handled=0 if dispatcher is None else dispatcher.handled,
            handler_errors=0 if dispatcher is None else dispatcher.errors,
        )

    def threads(self) -> list[threading.Thread]:
        """This client's own threads that are still alive (not the connection's, nor a
        shared loop's)."""
        own = [self._loop.thread] if self._own_loop else []
        if self._dispatcher is not None:
            own.append(self._dispatcher.thread)
        return [t for t in own if t.is_alive()]

    # ------------------------------------------------------------------ internals

    def _deadline(self, timeout: float | None) -> int | None:
        """Check the call is allowed; the session clock's deadline for ``timeout``."""
        if self._state == "new":  # (one attribute read: no lock needed)
            raise RuntimeError("call connect() first")
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout must be None or >= 0, not {timeout!r}")
        return self._host.deadline_ms(timeout)

    def _refuse_on_session_thread(self, what: str) -> None:
        if self._loop.in_loop_thread():
            raise RuntimeError(
                f"{what}() inside a future's done-callback would wait for itself; "
                "use submit()/query_async() there"
            )

    def _report_handled(self, request_id: RequestId) -> None:
        self._host.handled(request_id)

    def _on_host_exit(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.stop()


def _wait(future: Future[Any], timeout: float | None) -> Any:
    """The future's outcome; the session thread reports the deadline itself within a
    tick, the grace period only guards against a wedged client."""
    limit = None if timeout is None else timeout + _GRACE_S
    done, _ = concurrent.futures.wait([future], limit)
    if not done:
        raise RequestTimeoutError(f"no outcome within {timeout}s")
    return future.result()
