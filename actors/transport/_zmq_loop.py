"""The single I/O thread behind every ZeroMQ transport.

ZeroMQ sockets are not thread-safe, so each transport owns one thread that creates,
uses and closes all of its sockets. Other threads talk to it through a lock-free
outbox (a :class:`collections.deque`) of commands and wake it with a byte on an OS
pipe that the thread polls next to its sockets. (A pipe rather than an inproc socket:
any number of caller threads may write to a pipe, while a ZeroMQ socket may only ever
be used by one thread.) Wake-ups are coalesced: a caller writes a byte only when no
wake-up is pending, so a burst of sends costs one system call.

Actors may run on this thread too (:mod:`actors.loop_host`): a :class:`LoopGuest`
whose letters from other threads are ``RUN`` commands in the outbox, and whose sends
made on this thread go to the socket at once.

The thread polls its receiving sockets and the pipe; received messages and queued
commands are handled in bounded batches so neither direction starves the other. Any
exception while handling one message or command is logged and counted, never fatal.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

import zmq

from ._common import LOG, THREAD_PREFIX, Counters, log_rate_limited
from .base import FrameValidator, TransportError, TransportStats

__all__ = ["LOG", "ZmqLoop", "bindable"]
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
BATCH = 256  # messages or commands handled per socket/outbox turn
DEFAULT_HWM = 10_000
DEFAULT_QUEUE_LIMIT = 100_000
#: libzmq cuts off a peer whose message part exceeds ZMQ_MAXMSGSIZE. We set it this much
#: above ``max_frame_bytes`` so frames slightly too large are still received, dropped
#: and counted by our own check, while huge ones never get buffered at all.
MAXMSGSIZE_SLACK = 64 * 1024

#: ZeroMQ flags and options as plain ints for the hot paths: pyzmq's constants are enum
#: members, and every ``&``/``|`` on one builds a new enum object in Python.
NOBLOCK = int(zmq.NOBLOCK)
SNDMORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)
RCVMORE = int(zmq.RCVMORE)
EVENTS = int(zmq.EVENTS)
POLLIN = int(zmq.POLLIN)

Command = tuple[Any, ...]
#: Outbox command ``(RUN, fn, a, b)``: call ``fn(a, b)`` on the I/O thread (a letter for
#: an actor hosted on the loop, see :mod:`actors.loop_host`); no subclass op is a str.
RUN = "run"
_get_ident = threading.get_ident


class LoopGuest(Protocol):
    """What runs on a loop's I/O thread besides its sockets (:mod:`actors.loop_host`);
    every hook is called on that thread."""

    def loop_started(self) -> None:
        """The thread runs (sockets open), before it handles anything."""

    def loop_stopped(self, pending: Sequence[Command]) -> None:
        """The thread ends; ``pending`` are the ``RUN`` commands it will not run."""

    def has_local(self) -> bool:
        """Whether work told from the thread itself is waiting."""

    def work_off(self) -> None:
        """Do that work (after each batch of received messages)."""


def bindable(address: str) -> str:
    """``tcp://HOST:0`` means "any free port": libzmq spells that ``tcp://HOST:*``."""
    if address.startswith("tcp://") and address.endswith(":0"):
        return address[:-2] + ":*"
    return address


class ZmqLoop:
    """Lifecycle, outbox, wake-up pipe and poll loop; subclasses own the sockets.

    Subclass hooks (all run on the I/O thread): :meth:`_open` creates and binds the
    sockets, :meth:`_receivers` lists the sockets to poll, :meth:`_on_message` handles
    one received multipart message, :meth:`_on_command` one queued command, and
    :meth:`_close` closes every socket (linger 0).
    """

    def __init__(
        self,
        name: str,
        *,
        context: zmq.Context[Any] | None,
        max_frame_bytes: int,
        hwm: int,
        queue_limit: int,
        validator: FrameValidator | None,
    ) -> None:
        if max_frame_bytes <= 0 or hwm <= 0 or queue_limit <= 0:
            raise ValueError("max_frame_bytes, hwm and queue_limit must be positive")
        self._name = name
        self._given_context = context
        self._max_frame_bytes = max_frame_bytes
        self._hwm = hwm
        self._queue_limit = queue_limit
        self._validator = validator
        self._counters = Counters()
        self._outbox: deque[Command] = deque()
        self._state_lock = threading.Lock()
        self._state = "new"  # new -> running -> stopped; or new -> stopped
        self._running = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._wake_lock = threading.Lock()
        self._wake_r = -1
        self._wake_w = -1
        self._wake_pending = False
        self._poller_dirty = True
        self._ctx: zmq.Context[Any] | None = None  # set on the I/O thread before _open
        #: The I/O thread's id once it runs.
        self._ident: int | None = None
        self._guest: LoopGuest | None = None
        #: Called once, on the I/O thread as it ends, if the loop itself failed (a bug
        #: or a libzmq error outside the per-message guards): the thread is gone then.
        self.on_failure: Callable[[BaseException], None] | None = None

    # -- guest side (actors.loop_host) -------------------------------------------------

    def attach_guest(self, guest: LoopGuest) -> None:
        """Run ``guest`` on this loop's I/O thread (before :meth:`start`; one guest)."""
        if self._state != "new" or self._guest is not None:
            raise TransportError(f"{self._name}: a guest joins a new loop, and only one")
        self._guest = guest

    def call_soon(self, fn: Callable[[Any, Any], None], a: Any, b: Any) -> bool:
        """Queue ``fn(a, b)`` for the I/O thread, behind the outbox (any thread, also
        before :meth:`start`); False once the loop stopped. From the I/O thread itself
        no wake-up is needed: the loop does not sleep while its outbox holds work."""
        with self._state_lock:  # so that nothing lands after the loop took the last ones
            if self._state == "stopped":
                return False
            self._outbox.append((RUN, fn, a, b))
        self._wake_if_elsewhere()
        return True

    def outbox_empty(self) -> bool:
        """Nothing queued for the I/O thread right now (a hint)."""
        return not self._outbox

    # -- caller side -----------------------------------------------------------------

    def start(self) -> None:
        with self._state_lock:
            if self._state == "running":
                return
            if self._state == "stopped":
                raise TransportError(f"{self._name}: a stopped transport cannot restart")
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
            thread = threading.Thread(
                target=self._run, name=f"{THREAD_PREFIX}-{self._name}", daemon=True
            )
            self._thread = thread
            thread.start()
            if not self._ready.wait(START_TIMEOUT_S):  # pragma: no cover - wedged libzmq
                self._stopping = True
                self._state = "stopped"
                raise TransportError(f"{self._name}: I/O thread did not start")
            if self._start_error is not None:
                thread.join(STOP_TIMEOUT_S)
                self._state = "stopped"
                raise TransportError(
                    f"{self._name}: cannot start: {self._start_error}"
                ) from self._start_error
            self._state = "running"
            self._running = True

    def stop(self) -> None:
        with self._state_lock:
            was_running = self._state == "running"
            self._state = "stopped"
            self._running = False
        if was_running:
            self._stopping = True
            self._wake()
        # Join even when already stopped: a handler may have called stop() on the I/O
        # thread itself, which cannot join there; the next outside caller does.
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(STOP_TIMEOUT_S)
            if thread.is_alive():  # pragma: no cover - wedged libzmq
                LOG.error("%s: I/O thread did not stop within %.0fs", self._name, STOP_TIMEOUT_S)

    def stats(self) -> TransportStats:
        return self._counters.snapshot()

    def _enqueue_frame(self, command: Command, size: int) -> bool:
        """Queue an outgoing frame: False (and counted) if it is dropped right away."""
        if size > self._max_frame_bytes:
            n = self._counters.bump("oversized")
            log_rate_limited(n, "%s: dropped an outgoing %d-byte frame", self._name, size)
            return False
        if not self._running or len(self._outbox) >= self._queue_limit:
            self._counters.bump("dropped")
            return False
        if not self._outbox and self._ident == _get_ident():
            # On the I/O thread itself (an actor hosted here) with nothing older queued:
            # send now, no outbox, no wake-up. (With something queued the frame waits
            # its turn: it must not overtake, say, the storage writer's acknowledgements.)
            try:
                self._on_command(command)
            except Exception:
                LOG.exception("%s: failed to send a frame", self._name)
            return True
        self._outbox.append(command)
        self._wake_if_elsewhere()
        return True

    def _enqueue_control(self, command: Command) -> None:
        """Queue a control command (never dropped for a full queue)."""
        self._outbox.append(command)
        self._wake_if_elsewhere()

    def _wake_if_elsewhere(self) -> None:
        # The I/O thread itself needs no wake-up: it does not sleep while its outbox
        # holds work (a byte would cost a write now and a read on the next turn).
        if not self._wake_pending and self._ident != _get_ident():
            self._wake()

    def _wake(self) -> None:
        self._wake_pending = True
        with self._wake_lock:
            if self._wake_w >= 0:
                with contextlib.suppress(BlockingIOError):
                    os.write(self._wake_w, b"\x01")

    # -- I/O thread ------------------------------------------------------------------

    def _open(self, context: zmq.Context[Any]) -> None:
        raise NotImplementedError

    def _receivers(self) -> list[zmq.Socket[Any]]:
        raise NotImplementedError

    def _on_message(self, socket: zmq.Socket[Any], parts: list[bytes]) -> None:
        raise NotImplementedError

    def _receive(self, socket: zmq.Socket[Any]) -> list[bytes]:
        """One multipart message from ``socket`` (non-blocking; raises ``zmq.Again``)."""
        return recv_parts(socket)

    def _on_command(self, command: Command) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        context = self._given_context
        try:
            if context is None:
                context = zmq.Context(io_threads=1)
            self._ctx = context
            self._open(context)
        except Exception as exc:
            self._start_error = exc
            self._shutdown(context)
            self._ready.set()
            return
        self._ident = _get_ident()
        # Running from here on (not only once start() returns): a guest's first sends,
        # from its actors' on_start, must not be dropped as sends to a stopped loop.
        self._running = True
        self._ready.set()
        guest = self._guest
        failure: Exception | None = None
        try:
            if guest is not None:
                guest.loop_started()
            self._loop()
        except Exception as exc:  # the loop catches per item: this is a bug or libzmq
            LOG.exception("%s: I/O loop failed", self._name)
            failure = exc
            with self._state_lock:  # what is sent or told from now on fails at once
                self._state = "stopped"
                self._running = False
        finally:
            if guest is not None:
                with self._state_lock:  # no call_soon appends after this (it is stopped)
                    pending = [c for c in list(self._outbox) if c[0] == RUN]
                try:
                    guest.loop_stopped(pending)
                except Exception:  # pragma: no cover - the host guards every on_stop
                    LOG.exception("%s: stopping the hosted actors failed", self._name)
            self._shutdown(context)
        if failure is not None and self.on_failure is not None:
            try:
                self.on_failure(failure)
            except Exception:
                LOG.exception("%s: the on_failure callback raised (ignored)", self._name)

    def _shutdown(self, context: zmq.Context[Any] | None) -> None:
        try:
            self._close()
        except Exception:  # pragma: no cover - close with linger 0 does not fail
            LOG.exception("%s: closing sockets failed", self._name)
        if context is not None and self._given_context is None:
            context.term()
        self._outbox.clear()
        with self._wake_lock:
            for fd in (self._wake_r, self._wake_w):
                if fd >= 0:
                    os.close(fd)
            self._wake_r = self._wake_w = -1

    def _loop(self) -> None:
        poller = zmq.Poller()
        receivers: list[zmq.Socket[Any]] = []
        # Callers that queued before the thread ran saw no pipe; their commands are in the
        # outbox (drained below because poll does not block while it is non-empty).
        self._wake_pending = False
        while not self._stopping:
            if self._poller_dirty:
                poller = zmq.Poller()
                poller.register(self._wake_r, zmq.POLLIN)
                receivers = self._receivers()
                for socket in receivers:
                    poller.register(socket, zmq.POLLIN)
                self._poller_dirty = False
            ready = dict(poller.poll(0 if self._outbox else None))
            if self._wake_r in ready:
                # Empty the pipe *before* clearing the flag: a byte written after the
                # clear must stay in the pipe, or its writer's frames could sit in the
                # outbox while this thread sleeps (every later caller sees the flag set).
                self._drain_wake()
                self._wake_pending = False
            guest = self._guest
            for socket in receivers:
                if socket in ready:
                    self._drain_socket(socket)
                    if guest is not None and guest.has_local():
                        guest.work_off()
            self._drain_outbox()

    def _drain_wake(self) -> None:
        # Wake-ups are coalesced (one byte per idle-to-busy transition), so one read
        # empties the pipe; a byte left over only makes the next poll return at once.
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 4096)

    def _drain_socket(self, socket: zmq.Socket[Any]) -> None:
        for n in range(BATCH):
            if self._stopping or socket.closed:
                return
            # Poll said readable for the first message; for the rest, ask ZMQ_EVENTS
            # rather than let a receive fail (a raised zmq.Again costs more).
            if n and not cast(int, socket.getsockopt(EVENTS)) & POLLIN:
                return
            try:
                parts = self._receive(socket)
            except zmq.Again:
                return
            try:
                self._on_message(socket, parts)
            except Exception:
                n = self._counters.bump("malformed")
                LOG.exception("%s: failed to handle a received message (%d so far)", self._name, n)

    def _drain_outbox(self) -> None:
        for _ in range(BATCH):
            if self._stopping:
                return
            try:
                command = self._outbox.popleft()
            except IndexError:
                return
            try:
                if command[0] == RUN:
                    command[1](command[2], command[3])
                else:
                    self._on_command(command)
            except Exception:
                LOG.exception("%s: failed to handle command %r", self._name, command[0])

    # -- helpers for subclasses (I/O thread) -------------------------------------------

    def _accept(self, frame: bytes) -> bool:
        """Size and validator checks for a received frame (counted when rejected)."""
        if len(frame) > self._max_frame_bytes:
            n = self._counters.bump("oversized")
            log_rate_limited(n, "%s: dropped a received %d-byte frame", self._name, len(frame))
            return False
        if self._validator is not None:
            try:
                self._validator(frame)
            except Exception as exc:
                n = self._counters.bump("decode_errors")
                log_rate_limited(n, "%s: rejected a received frame: %s", self._name, exc)
                return False
        return True

    def _malformed(self, what: str) -> None:
        n = self._counters.bump("malformed")
        log_rate_limited(n, "%s: dropped a malformed message: %s", self._name, what)

    def _handler_failed(self) -> None:
        n = self._counters.bump("handler_errors")
        LOG.exception("%s: frame handler raised (%d so far)", self._name, n)

    def _configure(self, socket: zmq.Socket[Any], *, receives: bool) -> None:
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.SNDHWM, self._hwm)
        socket.setsockopt(zmq.RCVHWM, self._hwm)
        socket.setsockopt(zmq.RECONNECT_IVL, 100)
        socket.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        if receives:
            socket.setsockopt(zmq.MAXMSGSIZE, self._max_frame_bytes + MAXMSGSIZE_SLACK)


def recv_parts(socket: zmq.Socket[Any]) -> list[bytes]:
    """One multipart message, non-blocking (``zmq.Again`` if none): ``recv_multipart``
    with int flags (a message arrives whole, so its later parts never block)."""
    parts: list[bytes] = [socket.recv(NOBLOCK)]
    while socket.getsockopt(RCVMORE):
        parts.append(socket.recv(NOBLOCK))
    return parts


def send_pair(socket: zmq.Socket[Any], first: bytes, second: bytes) -> None:
    """Send a two-part message, non-blocking (``zmq.ZMQError`` if it cannot go now):
    ``send_multipart`` with int flags. ZeroMQ takes a message's parts all or none."""
    socket.send(first, SNDMORE_NOBLOCK)
    socket.send(second, NOBLOCK)
