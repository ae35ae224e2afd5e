"""Actors hosted on a ZeroMQ transport's I/O thread (``"transport"``, ``"hybrid"``).

A :class:`LoopHost` is a host (:class:`~actors.host.HostCore`) whose thread is a
:class:`~actors.transport._zmq_loop.ZmqLoop`'s: the one thread that owns the
transport's sockets. Why: with one thread per actor, a peer frame crosses the I/O
thread, then the actor's thread, and each of the actor's sends crosses back (an
outbox, a wake-up pipe, a thread switch each way). On the loop's own thread a received
frame reaches the actor with no hand-off, and the actor's sends on that transport go
straight to the socket (:meth:`ZmqLoop._enqueue_frame` sends at once when called on
its thread with nothing older queued).

- A ``tell`` from the loop's thread appends to the host's local FIFO, worked off after
  the current letter, or after the current batch of received messages: the frames of
  one burst still reach their actor as one batch (:mod:`actors.handoff`).
- A ``tell`` from any other thread (the storage writer, a ticker, another actor) is an
  outbox command plus a wake-up of the loop, as a send would be.
- :meth:`~actors.host.HostedRef.tell_later` goes to the outbox even from the loop's
  thread: behind everything already waiting there.

The guarantees are :mod:`actors.host`'s (per sender order, per-message isolation, a
stopped actor takes nothing), with one difference in lifetime: the thread is the
transport's, so it runs until the transport stops, not until the last actor does. A
transport that stops first handles the letters already queued for its actors (as a
pykka actor handles what is in its inbox before a stop), then stops them (their
``on_stop`` runs on its thread); what is told after that raises
``pykka.ActorDeadError``. Their sends are dropped by then: the transport is stopping.

The cost: while an actor handles a message, its transport reads and sends nothing. A
slow handler (the user's ``apply``, a snapshot write) delays the transport's other
traffic as it would delay the actor's other messages on a thread of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pykka

from actors.host import HostCore, Hosted, HostedRef, HostInbox
from actors.transport._zmq_loop import Command, ZmqLoop

__all__ = ["LoopHost", "start_on_loop"]


class _LoopInbox:
    """A loop host's inbox: letters become outbox commands of its loop."""

    __slots__ = ("_host",)

    def __init__(self, host: LoopHost) -> None:
        self._host = host

    def tell(self, message: Any) -> None:
        self._host._post(message, None)

    def ask(self, message: Any, *, block: bool = True, timeout: float | None = None) -> Any:
        future: pykka.ThreadingFuture[Any] = pykka.ThreadingFuture()
        self._host._post(message, future)
        return future.get(timeout=timeout) if block else future

    def is_alive(self) -> bool:
        return not self._host.actor_stopped.is_set()


class LoopHost(HostCore):
    """Runs ``actors`` on ``loop``'s I/O thread; see the module docstring. Use
    :func:`start_on_loop`."""

    def __init__(
        self, name: str, loop: ZmqLoop, actors: Sequence[Hosted], refs: list[HostedRef[Any]]
    ) -> None:
        self._loop = loop
        self._inbox = _LoopInbox(self)
        self.actor_stopped = threading.Event()
        self._host(name, actors, refs)
        loop.attach_guest(self)

    def inbox(self) -> HostInbox:
        return self._inbox

    def idle(self) -> bool:
        return not self._local and self._loop.outbox_empty()

    def _last_stopped(self) -> None:
        self.actor_stopped.set()  # the loop runs on: it is the transport's

    def _post(self, letter: Any, future: pykka.ThreadingFuture[Any] | None) -> None:
        """Queue ``letter`` on the loop (any thread)."""
        if self.actor_stopped.is_set() or not self._loop.call_soon(self._run, letter, future):
            raise pykka.ActorDeadError(f"{self.name} stopped")

    # ------------------------------------------------------------------ loop thread
    # (the LoopGuest hooks ZmqLoop calls)

    def loop_started(self) -> None:
        self._started()

    def loop_stopped(self, pending: Sequence[Command]) -> None:
        for command in pending:  # the letters told before the stop, in order
            self._run(command[2], command[3])
        self._stopped()
        self.actor_stopped.set()

    def work_off(self) -> None:
        self._work_off()

    def has_local(self) -> bool:
        return bool(self._local)

    def _run(self, letter: Any, future: pykka.ThreadingFuture[Any] | None) -> None:
        """One letter from another thread (or a ``tell_later``); an ask's result or
        exception goes to its future."""
        if future is None:
            self._deliver(letter)
            return
        try:
            result = self._deliver(letter)
        except Exception:
            future.set_exception()
        else:
            future.set(result)


def start_on_loop(name: str, loop: ZmqLoop, actors: Sequence[Any]) -> list[HostedRef[Any]]:
    """Host ``actors`` on ``loop``'s I/O thread (before ``loop.start()``: they start
    with it); return their refs, in the same order."""
    if not actors:
        raise ValueError("a host needs at least one actor")
    refs: list[HostedRef[Any]] = []
    LoopHost(name, loop, actors, refs)
    return refs
