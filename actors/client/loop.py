"""The client event loop: one thread that hosts any number of client sessions.

A :class:`ClientLoop` owns one thread, one ZeroMQ context and an OS poller. Every
session hosted on it (one :class:`~actors.client.host.SessionHost` per
:class:`~actors.client.RaftClient`) runs its pure core, encodes, sends and receives on
that thread: the loop's DEALER sockets (one per member connection, shared by the
sessions talking to that member) are created, polled, read, written and closed there
and nowhere else, so "each ZeroMQ socket is used by exactly one thread" holds without
any hand-off. A message to or from the cluster crosses no thread on the client
side; only the user's own thread hands a submission over (and is woken by its future).

Other threads reach the loop through :meth:`ClientLoop.post`: an item goes into a
lock-free deque, and a byte on an OS pipe (polled next to the sockets) wakes the thread.
Wake-ups are coalesced (a byte is written only when none is pending) and skipped
altogether on the loop thread itself, so a done-callback that submits the next command
costs no system call. Ticks come from the poll timeout: the loop sleeps until the next
host's tick is due.

Readiness: ``zmq.Poller`` asks every socket for its state on every call, which costs
microseconds per socket and made a loop with many sessions spend most of its time
polling idle sockets. The loop instead polls each socket's ``ZMQ_FD`` with
``select.epoll`` (``select.poll`` elsewhere), which reports only the sockets whose
state changed. That descriptor is edge-like: it is reset whenever libzmq processes the
socket's commands, which a *send* may do, so a message can be waiting while it is
quiet. Hence the rule: a host that sent, or that stopped reading before ``EAGAIN``,
is put on the loop's *check* list and reads (until ``EAGAIN`` and ``ZMQ_EVENTS`` says
nothing is waiting) before the loop sleeps again.

Connections are the loop's, not the sessions' (:mod:`actors.client.connections`):
sessions that talk to the same member share a connection (up to
``sessions_per_connection`` of them, each on its own channel), and everything they
queued for it in one turn of the loop goes out as one frame at the turn's end (a
``ClientBatch``; a single message alone, as always). Connections that are not ZeroMQ
(a ``connection_factory`` such as the in-memory transport's) keep their own I/O thread
and post received frames to the loop.

Every RaftClient made without a ``loop`` gets a private loop (thread ``raft-client-N``)
closed with it; applications with many sessions can share one loop between them.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import zmq

from actors.client.connections import (
    DEFAULT_MAX_BATCH_ITEMS,
    DEFAULT_SESSIONS_PER_CONNECTION,
    ConnectionPool,
)
from actors.transport._zmq_loop import DEFAULT_HWM
from protocol.client import ClientClosedError
from protocol.codec import DEFAULT_MAX_FRAME_BYTES

if TYPE_CHECKING:
    from actors.client.host import SessionHost

__all__ = ["ClientLoop"]

LOG = logging.getLogger("actors.client")

_numbers = itertools.count(1)
#: Longest sleep when no session is hosted (a tick of a new session comes sooner).
_IDLE_MS = 1_000
#: Queued items handled per turn before the loop reads its sockets and timers again.
_MAX_ITEMS = 4096
#: Seconds to wait for the thread to end on close, beyond the sessions' close timeout.
_JOIN_SLACK_S = 2.0

Item = tuple[Callable[..., None], tuple[Any, ...]]


class Readable(Protocol):
    """What the loop watches a descriptor for: a connection that reads its socket."""

    def readable(self, signalled: bool = False) -> None: ...


class ClientLoop:
    """One thread hosting many client sessions (see the module docstring).

    ``context``: a ZeroMQ context to make the sockets in (not terminated by the loop);
    default: the loop makes and terminates its own. ``max_frame_bytes`` and ``hwm``
    bound received frames and each socket's queues, as for the ZeroMQ transports.
    ``sessions_per_connection``: how many sessions share one connection to a member
    at most (8 by default); a node that takes fewer (its ``max_sessions_per_connection``)
    refuses the sessions beyond them, which back off and take a fresh connection, and
    the loop uses that node's number from then on;
    ``max_batch_items``: messages in one batch frame (at most the nodes' bound).

    Share one among many clients with ``RaftClient(members, loop=loop)``; the loop
    starts with the first client's ``connect`` (or :meth:`start`). :meth:`close` closes
    every session still hosted (their pending futures fail with ``ClientClosedError``)
    and stops the thread. The futures of every hosted client are resolved on this
    thread, so their done-callbacks hold up all of its sessions: keep them short
    (``submit`` is fine there; a blocking ``call``/``query`` is refused). Use it as a
    context manager::

        with ClientLoop() as loop:
            clients = [RaftClient(members, loop=loop).connect() for _ in range(100)]
            ...
    """

    def __init__(
        self,
        *,
        name: str | None = None,
        context: zmq.Context[Any] | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        hwm: int = DEFAULT_HWM,
        sessions_per_connection: int = DEFAULT_SESSIONS_PER_CONNECTION,
        max_batch_items: int = DEFAULT_MAX_BATCH_ITEMS,
    ) -> None:
        if max_frame_bytes <= 0 or hwm <= 0:
            raise ValueError("max_frame_bytes and hwm must be positive")
        #: The loop's connections, shared by its sessions (loop thread only).
        self.connections = ConnectionPool(self, sessions_per_connection, max_batch_items)
        self.name = name if name is not None else f"raft-client-loop-{next(_numbers)}"
        self.max_frame_bytes = max_frame_bytes
        self.hwm = hwm
        self._given_context = context
        self._t0 = time.monotonic()
        self._inbox: deque[Item] = deque()
        self._lock = threading.Lock()  # guards _state and the last drain
        self._state = "new"  # new -> running -> closing -> stopped (or new -> stopped)
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._wake_lock = threading.Lock()  # the pipe's fds are closed under it
        self._wake_r = self._wake_w = -1  # the pipe is made by start
        self._wake_pending = False
        # loop thread only:
        self._context: zmq.Context[Any] | None = None
        self._poller: _Poller | None = None  # made on the thread
        self._fds: dict[int, Readable] = {}
        #: Connections whose socket may hold messages its descriptor does not signal.
        self._check: set[Readable] = set()
        self._hosts: list[SessionHost] = []
        self._next_sweep = 0
        self._closing = False
        self._close_deadline = 0

    # ------------------------------------------------------------------ any thread

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def start(self) -> ClientLoop:
        """Start the thread (idempotent); ``ClientClosedError`` once closed."""
        with self._lock:
            self._start_locked()
        return self

    def _start_locked(self) -> None:
        if self._state == "new":
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
            self._state = "running"
            self._thread.start()
        elif self._state != "running":
            raise ClientClosedError(f"{self.name} is closed")

    def close(self, timeout: float = 5.0) -> None:
        """Close every hosted session (waiting up to ``timeout`` s in all for the
        cluster to confirm) and stop the thread; idempotent. From the loop thread
        itself (a done-callback) it cannot wait: the thread ends right after."""
        with self._lock:
            state = self._state
            if state == "new":
                self._state = "stopped"
                return
            if state == "running":
                self._state = "closing"
                self.post(self._begin_close, max(timeout, 0.0))
        if not self.in_loop_thread():
            self._thread.join(max(timeout, 0.0) + _JOIN_SLACK_S)
            if self._thread.is_alive():  # pragma: no cover - a wedged session
                LOG.error("%s: the client loop did not stop in time", self.name)

    def __enter__(self) -> ClientLoop:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def now_ms(self) -> int:
        """The loop's clock (monotonic, ms since the loop was made)."""
        return int((time.monotonic() - self._t0) * 1000)

    def deadline_ms(self, timeout_s: float) -> int:
        """The loop clock's time ``timeout_s`` from now, rounded up."""
        return math.ceil((time.monotonic() - self._t0 + timeout_s) * 1000)

    def post(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop thread, in posting order. Items posted after the
        loop stopped are dropped: callers check their own state (see SessionHost)."""
        self._inbox.append((fn, args))
        if not self._wake_pending and threading.current_thread() is not self._thread:
            self._wake()

    def attach(self, host: SessionHost) -> None:
        """Host ``host`` (called by ``RaftClient.connect``); starts the loop if needed."""
        with self._lock:
            self._start_locked()
            self.post(self._begin, host)

    # ------------------------------------------------------------------ loop thread: for hosts

    @property
    def context(self) -> zmq.Context[Any]:
        assert self._context is not None
        return self._context

    def register(self, fd: int, conn: Readable) -> None:
        """Watch a socket's ``ZMQ_FD`` for ``conn`` (and check it once now)."""
        assert self._poller is not None
        self._fds[fd] = conn
        self._poller.register(fd)
        self._check.add(conn)

    def unregister(self, fd: int) -> None:
        if self._fds.pop(fd, None) is not None and self._poller is not None:
            self._poller.unregister(fd)

    def check(self, conn: Readable) -> None:
        """``conn`` sent (or left messages unread): read its socket before sleeping."""
        self._check.add(conn)

    def detach(self, host: SessionHost) -> None:
        """The host ended (called from its shutdown)."""
        if host in self._hosts:
            self._hosts.remove(host)

    def schedule_tick(self, at_ms: int) -> None:
        """A host's next tick moved earlier than the loop may know."""
        if at_ms < self._next_sweep:
            self._next_sweep = at_ms

    # ------------------------------------------------------------------ loop thread

    def _wake(self) -> None:
        self._wake_pending = True
        with self._wake_lock:
            if self._wake_w >= 0:
                with contextlib.suppress(BlockingIOError):  # full: awake anyway
                    os.write(self._wake_w, b"\x00")

    def _drain_wake(self) -> None:
        while True:
            try:
                if not os.read(self._wake_r, 4096):
                    return  # pragma: no cover - the write end is closed only here
            except BlockingIOError:
                return

    def _close_pipe(self) -> None:
        with self._wake_lock:
            for fd in (self._wake_r, self._wake_w):
                if fd >= 0:
                    os.close(fd)
            self._wake_r = self._wake_w = -1

    def _begin(self, host: SessionHost) -> None:
        if self._closing or self._state == "stopped":
            host.shutdown()  # attached while the loop was closing
            return
        self._hosts.append(host)
        host.begin()

    def _begin_close(self, timeout_s: float) -> None:
        self._closing = True
        self._close_deadline = self.now_ms() + int(timeout_s * 1000)
        for host in list(self._hosts):
            host.close(timeout_s)

    def _run(self) -> None:
        context = self._given_context
        try:
            if context is None:
                context = zmq.Context(io_threads=1)
            self._context = context
            self._poller = _Poller()
            self._poller.register(self._wake_r)
            self._loop()
        except Exception:  # pragma: no cover - every item is guarded
            LOG.exception("%s: the client loop failed", self.name)
        finally:
            self._stop(context)

    def _loop(self) -> None:
        inbox = self._inbox
        assert self._poller is not None
        poll = self._poller.poll
        wake_r = self._wake_r
        fds = self._fds
        self._wake_pending = False
        connections = self.connections
        while True:
            if connections.dirty:  # what reads and ticks queued, one frame per connection
                connections.flush()
            now = self.now_ms()
            if self._closing and (not self._hosts or now >= self._close_deadline):
                return
            if inbox or self._check:
                timeout = 0
            else:
                timeout = max(self._next_sweep - now, 0)
                if self._closing:
                    timeout = min(timeout, max(self._close_deadline - now, 0))
            for fd in poll(timeout):
                if fd == wake_r:
                    # empty the pipe *before* clearing the flag: a byte written after
                    # the clear stays in the pipe, so its writer's item is seen
                    self._drain_wake()
                    self._wake_pending = False
                else:
                    conn = fds.get(fd)
                    if conn is not None:
                        self._read(conn, signalled=True)
            # everything queued, also what arrives meanwhile (bounded: a done-callback
            # may submit again and again), so timers fire after the I/O that is in
            for _ in range(_MAX_ITEMS):
                if not inbox:
                    break
                fn, args = inbox.popleft()
                try:
                    fn(*args)
                except Exception:
                    LOG.exception("%s: handling an event failed", self.name)
            if connections.dirty:  # now, so that the check below reads after the sends
                connections.flush()
            if self._check:
                check, self._check = self._check, set()
                for conn in check:
                    self._read(conn)  # (what it sends now puts it back on the list)
            now = self.now_ms()
            if now >= self._next_sweep:
                self._sweep(now)

    def _read(self, conn: Readable, signalled: bool = False) -> None:
        """``conn.readable``, guarded: one broken socket must not end the loop (and
        with it every other session on it); the sessions' own ticks and timeouts deal
        with a connection that stays broken."""
        try:
            conn.readable(signalled=signalled)
        except Exception:
            LOG.exception("%s: reading a connection's socket failed", self.name)

    def _sweep(self, now: int) -> None:
        """Tick every host whose tick is due; remember when the next one is."""
        nearest = now + _IDLE_MS
        for host in list(self._hosts):
            if now >= host.next_tick_ms:
                host.tick(now)
            if host.next_tick_ms < nearest:
                nearest = host.next_tick_ms
        self._next_sweep = nearest

    def _stop(self, context: zmq.Context[Any] | None) -> None:
        """End every host (failing what waits), run the items still queued (their
        hosts are done now, so submissions fail at once), close everything."""
        self._closing = True
        for host in list(self._hosts):
            try:
                host.shutdown()
            except Exception:  # pragma: no cover - shutdown guards itself
                LOG.exception("%s: shutting a session down failed", self.name)
        with self._lock:
            self._state = "stopped"
            leftovers = list(self._inbox)
            self._inbox.clear()
        for fn, args in leftovers:
            try:
                fn(*args)
            except Exception:  # pragma: no cover - hosts are done: items only fail futures
                LOG.exception("%s: handling a late event failed", self.name)
        self.connections.close_all()
        if self._poller is not None:
            self._poller.close()
        if context is not None and self._given_context is None:
            context.term()
        self._close_pipe()


class _Poller:
    """Level-triggered readiness of file descriptors: ``select.epoll`` where there is
    one (cost independent of the number watched), else ``select.poll``."""

    def __init__(self) -> None:
        self._epoll = select.epoll() if hasattr(select, "epoll") else None
        self._poll = select.poll() if self._epoll is None else None

    def register(self, fd: int) -> None:
        if self._epoll is not None:
            self._epoll.register(fd, select.EPOLLIN)
        else:  # pragma: no cover - not Linux
            assert self._poll is not None
            self._poll.register(fd, select.POLLIN)

    def unregister(self, fd: int) -> None:
        if self._epoll is not None:
            self._epoll.unregister(fd)
        else:  # pragma: no cover - not Linux
            assert self._poll is not None
            self._poll.unregister(fd)

    def poll(self, timeout_ms: int) -> list[int]:
        """The descriptors ready within ``timeout_ms`` (0: do not wait)."""
        if self._epoll is not None:
            return [fd for fd, _ in self._epoll.poll(timeout_ms / 1000)]
        assert self._poll is not None  # pragma: no cover - not Linux
        return [fd for fd, _ in self._poll.poll(timeout_ms)]  # pragma: no cover

    def close(self) -> None:
        if self._epoll is not None:
            self._epoll.close()
