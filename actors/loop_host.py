"""PROTOTYPE: host node actors on a ZeroMQ transport's I/O thread (``actor_threads =
"transport"``).

A :class:`LoopHost` plays the part of an :class:`~actors.host.ActorHost` for
:class:`~actors.host.HostedRef`, but its thread is a :class:`ZmqLoop`'s: a ``tell`` from
the loop thread appends to a local deque worked off after the current handler (or
after the current socket batch); from any other thread it is an outbox command plus a
wake-up. A frame received on the loop reaches the actor with no thread hop, and the
actor's sends on that transport go straight to the socket.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, cast

import pykka

from actors.host import ActorHost, Hosted, HostedRef, _Ask, _Call, _Stop
from actors.transport._zmq_loop import Command, ZmqLoop

__all__ = ["LoopHost", "start_on_loop"]

_log = logging.getLogger(__name__)


class _LoopRef:
    """What :class:`HostedRef` uses of a pykka ``ActorRef``: tell, ask, is_alive."""

    def __init__(self, host: LoopHost) -> None:
        self._host = host

    def tell(self, letter: Any) -> None:
        self._host.post(letter, None)

    def ask(self, letter: Any, block: bool = True, timeout: float | None = None) -> Any:
        future: pykka.ThreadingFuture[Any] = pykka.ThreadingFuture()
        self._host.post(letter, future)
        return future.get(timeout=timeout) if block else future

    def is_alive(self) -> bool:
        return not self._host.actor_stopped.is_set()


class LoopHost:
    """Runs ``actors`` on ``loop``'s I/O thread; see the module docstring."""

    def __init__(
        self, name: str, loop: ZmqLoop, actors: Sequence[Hosted], refs: list[HostedRef[Any]]
    ) -> None:
        self.name = name
        self._loop = loop
        self._local: deque[tuple[HostedRef[Any], Any]] = deque()
        self.ident: int | None = None
        self._live = len(actors)
        self.actor_stopped = threading.Event()
        self.actor_ref = _LoopRef(self)
        for actor in actors:
            ref: HostedRef[Any] = HostedRef(cast(ActorHost, self), actor)
            actor.bind(ref)
            refs.append(ref)
        self._refs = tuple(refs)
        loop.attach_guest(self)

    def idle(self) -> bool:
        return not self._local and not self._loop._outbox

    def post(self, letter: Any, future: pykka.ThreadingFuture[Any] | None) -> None:
        if self.actor_stopped.is_set() or not self._loop.call_soon(self._handle, letter, future):
            raise pykka.ActorDeadError(f"{self.name} stopped")

    # ------------------------------------------------------------------ loop thread

    def loop_started(self) -> None:
        self.ident = threading.get_ident()
        for ref in self._refs:
            self._guard(ref, ref.actor.on_start)
        self.work_off()

    def loop_stopped(self, pending: list[Command]) -> None:
        for ref in self._refs:
            if not ref.stopped:
                ref.stopped = True
                self._guard(ref, ref.actor.on_stop)
        self._local.clear()
        self.actor_stopped.set()
        for _, _, _, future in pending:
            if future is not None:
                exc = pykka.ActorDeadError(f"{self.name} stopped")
                future.set_exception((type(exc), exc, None))

    def _handle(self, letter: Any, future: pykka.ThreadingFuture[Any] | None) -> None:
        try:
            if type(letter) is tuple:
                ref, message = letter
                if not ref.stopped:
                    try:
                        ref.actor.on_receive(message)
                    except Exception:
                        self._failed(ref)
                result = None
            else:
                result = self._control(letter)
        except Exception:
            if future is not None:
                future.set_exception()
            else:
                _log.exception("%s: failed letter", self.name)
        else:
            if future is not None:
                future.set(result)
        finally:
            if self._local:
                self.work_off()

    def work_off(self) -> None:
        local = self._local
        while local:
            ref, message = local.popleft()
            if not ref.stopped:
                try:
                    ref.actor.on_receive(message)
                except Exception:
                    self._failed(ref)

    def _guard(self, ref: HostedRef[Any], fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            self._failed(ref)

    def _failed(self, ref: HostedRef[Any]) -> None:
        _log.exception("%s: unhandled error in %s", self.name, type(ref.actor).__name__)

    def _control(self, letter: Any) -> Any:
        if isinstance(letter, _Ask):
            if letter.ref.stopped:
                raise pykka.ActorDeadError(f"{letter.ref} stopped")
            return letter.ref.actor.on_receive(letter.message)
        if isinstance(letter, _Call):
            if letter.ref.stopped:
                raise pykka.ActorDeadError(f"{letter.ref} stopped")
            return letter.fn(letter.ref.actor)
        if isinstance(letter, _Stop):
            ref = letter.ref
            if ref.stopped:
                return False
            ref.stopped = True
            self._guard(ref, ref.actor.on_stop)
            self._live -= 1
            if self._live == 0:
                self.actor_stopped.set()
                return True
            return False
        raise TypeError(f"{self.name}: not a host letter: {type(letter).__name__}")


def start_on_loop(name: str, loop: ZmqLoop, actors: Sequence[Any]) -> list[HostedRef[Any]]:
    """Host ``actors`` on ``loop``'s thread (call before ``loop.start()``)."""
    refs: list[HostedRef[Any]] = []
    LoopHost(name, loop, actors, refs)
    return refs
