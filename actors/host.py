"""Actor hosts: which thread runs which actors of a node (like Akka's dispatchers).

An actor of a node (:class:`~actors.base.NodeActor`) is a handler with its own state;
it talks to other actors only by ``tell``. *Where* it runs is a separate choice: an
:class:`ActorHost` is one pykka ``ThreadingActor`` (one thread, one inbox, pykka's
lifecycle) that runs one or several hosted actors, each reached through its own
:class:`HostedRef`. (:class:`HostCore` is what every kind of host shares; the other
kind, :class:`actors.loop_host.LoopHost`, runs actors on a ZeroMQ transport's I/O
thread.)

Why several on one thread: with CPython's GIL a node's actors never run Python in
parallel anyway, so giving each its own thread buys nothing and costs a wake-up and a
GIL hand-off for every message from one actor to the next (a command crosses registry,
consensus, session and registry again). On a shared host:

- a ``tell`` from the host's own thread (one hosted actor to another) appends to a
  local FIFO queue that the host works off right after the current handler: no inbox
  put, no lock, no wake-up;
- a ``tell`` from any other thread (a transport's hand-off, the storage writer, a
  ticker, a node API call) goes through the pykka inbox, as with any pykka actor;
- :meth:`HostedRef.tell_later` queues behind everything the host already has waiting
  (its inbox): an actor's "come back to me after the rest" (the consensus actor's
  batched flush, a hand-off's next bounded take) so local chains cannot starve the
  inbox.

Guarantees, as with one pykka actor per handler: messages from one sender thread to one
actor arrive in the order they were told (each sender uses one path, each path is
FIFO); a handler that raises is logged and the next message is handled (per-message
isolation; ``NodeActor`` adds per-item isolation for batches); a stopped actor takes no
further messages (``tell`` raises ``pykka.ActorDeadError``, letters already queued for
it are dropped); the host's thread ends once its last actor stopped.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

import pykka

__all__ = ["ActorHost", "HostCore", "HostInbox", "Hosted", "HostedRef", "start_host"]

A = TypeVar("A", bound="Hosted")
R = TypeVar("R")

_log = logging.getLogger(__name__)
_get_ident = threading.get_ident


class Hosted(Protocol):
    """What a host runs: a handler with optional start/stop hooks, all called on the
    host's thread. ``bind`` hands the actor its own ref (before anything else)."""

    def bind(self, ref: HostedRef[Any]) -> None: ...

    def on_start(self) -> None: ...

    def on_stop(self) -> None: ...

    def on_receive(self, message: Any) -> Any: ...


class _Ask:
    """A letter whose handler's result (or exception) goes back to the asker."""

    __slots__ = ("message", "ref")

    def __init__(self, ref: HostedRef[Any], message: Any) -> None:
        self.ref = ref
        self.message = message


class _Call:
    """A letter that runs ``fn(actor)`` on the host's thread (tests, introspection)."""

    __slots__ = ("fn", "ref")

    def __init__(self, ref: HostedRef[Any], fn: Callable[[Any], Any]) -> None:
        self.ref = ref
        self.fn = fn


class _Stop:
    """A letter that stops one hosted actor; answers whether it was the host's last."""

    __slots__ = ("ref",)

    def __init__(self, ref: HostedRef[Any]) -> None:
        self.ref = ref


class HostInbox(Protocol):
    """What a :class:`HostedRef` uses of its host's inbox (a pykka ``ActorRef`` has it)."""

    def tell(self, message: Any) -> None: ...

    def ask(self, message: Any, *, block: bool = True, timeout: float | None = None) -> Any: ...

    def is_alive(self) -> bool: ...


class HostCore:
    """What every host shares: its hosted actors, the local FIFO of letters told from
    its own thread, and the handling of one letter (all on the host's thread). A host
    kind supplies the thread and the inbox: :class:`ActorHost` (a pykka thread) or
    :class:`actors.loop_host.LoopHost` (a ZeroMQ transport's I/O thread)."""

    name: str
    #: The host thread's id once it runs (tells compare it with their own).
    ident: int | None
    #: Set once the host's last actor stopped.
    actor_stopped: threading.Event
    #: Letters told from this host's own thread, worked off after each handler.
    _local: deque[tuple[HostedRef[Any], Any]]
    _live: int
    _refs: tuple[HostedRef[Any], ...]

    def _host(self, name: str, actors: Sequence[Hosted], refs: list[HostedRef[Any]]) -> None:
        """Make (and bind) the refs before the thread starts, so no letter can reach
        an actor before it knows its ref."""
        self.name = name
        self._local = deque()
        self.ident = None
        self._live = len(actors)
        for actor in actors:
            ref: HostedRef[Any] = HostedRef(self, actor)
            actor.bind(ref)
            refs.append(ref)
        self._refs = tuple(refs)

    def inbox(self) -> HostInbox:
        """Where letters from other threads go."""
        raise NotImplementedError

    def idle(self) -> bool:
        """Nothing is queued on this host right now, locally or in its inbox (a hint:
        another thread may tell it something a moment later)."""
        raise NotImplementedError

    def _last_stopped(self) -> None:
        """The host's last actor stopped (on the host's thread)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ host thread

    def _started(self) -> None:
        """The host's thread runs: start every actor, then what they told."""
        self.ident = _get_ident()
        for ref in self._refs:
            self._guard(ref, ref.actor.on_start)
        self._work_off()

    def _stopped(self) -> None:
        """The host's thread ends: stop every actor still running."""
        for ref in self._refs:
            if not ref.stopped:
                ref.stopped = True
                self._guard(ref, ref.actor.on_stop)
        self._local.clear()

    def _deliver(self, letter: Any) -> Any:
        """Handle one letter from the inbox, then everything told locally meanwhile;
        an ask's or call's result is returned (its exception raised)."""
        try:
            if type(letter) is tuple:  # (ref, message): a plain tell, the hot path
                ref, message = letter
                if not ref.stopped:
                    try:
                        ref.actor.on_receive(message)
                    except Exception:
                        self._failed(ref)
                return None
            return self._control(letter)
        finally:
            if self._local:
                self._work_off()

    def _work_off(self) -> None:
        """Handle every locally told letter, including those told while doing so."""
        local = self._local
        while local:
            ref, message = local.popleft()
            if not ref.stopped:
                try:
                    ref.actor.on_receive(message)
                except Exception:
                    self._failed(ref)

    def _guard(self, ref: HostedRef[Any], fn: Callable[..., Any], *args: Any) -> None:
        """Call ``fn``; an exception is logged, never fatal to the host or its other
        actors (``NodeActor`` already guards its handler; this guards any ``Hosted``)."""
        try:
            fn(*args)
        except Exception:
            self._failed(ref)

    def _failed(self, ref: HostedRef[Any]) -> None:
        """Log the exception being handled (a bug in ``ref``'s actor)."""
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
                self._last_stopped()
                return True
            return False
        raise TypeError(f"{self.name}: not a host letter: {type(letter).__name__}")


class ActorHost(HostCore, pykka.ThreadingActor):
    """One pykka thread running the actors it was started with; see the module
    docstring. Start it with :func:`start_host`."""

    def __init__(self, name: str, actors: Sequence[Hosted], refs: list[HostedRef[Any]]) -> None:
        pykka.ThreadingActor.__init__(self)
        self._host(name, actors, refs)

    @staticmethod
    def _create_actor_inbox() -> Any:
        # pykka's default inbox is a ``queue.Queue`` (a Python-level lock and two
        # conditions per put/get); ``SimpleQueue`` offers the same put/get/empty in C.
        return queue.SimpleQueue()

    def inbox(self) -> HostInbox:
        return self.actor_ref

    def idle(self) -> bool:
        return not self._local and bool(self.actor_inbox.empty())

    def _last_stopped(self) -> None:
        self.stop()  # pykka: after what is queued now (letters for stopped actors)

    # ------------------------------------------------------------------ pykka hooks

    def on_start(self) -> None:
        threading.current_thread().name = self.name
        self._started()

    def on_stop(self) -> None:
        self._stopped()

    def on_receive(self, letter: Any) -> Any:
        return self._deliver(letter)


class HostedRef(Generic[A]):
    """The mailbox of one hosted actor: ``tell`` (and ``ask``, ``stop``, ``is_alive``
    like a pykka ``ActorRef``). Thread-safe."""

    __slots__ = ("_host", "_host_ref", "actor", "stopped")

    def __init__(self, host: HostCore, actor: A) -> None:
        self._host = host
        self._host_ref = host.inbox()
        #: The hosted actor (use it only on the host's thread: see :meth:`call`).
        self.actor = actor
        #: Set (on the host's thread) once the actor stopped.
        self.stopped = False

    def __repr__(self) -> str:
        return f"<{type(self.actor).__name__} on {self._host.name}>"

    @property
    def host(self) -> HostCore:
        return self._host

    def tell(self, message: Any) -> None:
        """Queue ``message`` for the actor; never blocks. Raises
        ``pykka.ActorDeadError`` if the actor stopped."""
        if self.stopped:
            raise pykka.ActorDeadError(f"{self!r} stopped")
        host = self._host
        if host.ident == _get_ident():
            host._local.append((self, message))
        else:
            self._host_ref.tell((self, message))

    def tell_later(self, message: Any) -> None:
        """Like :meth:`tell`, but queued behind everything the host already has
        waiting in its inbox, even when told from the host's own thread (an actor's
        "after the rest": it neither jumps the inbox nor starves it)."""
        if self.stopped:
            raise pykka.ActorDeadError(f"{self!r} stopped")
        self._host_ref.tell((self, message))

    def idle(self) -> bool:
        """Nothing is queued on this actor's host (see :meth:`ActorHost.idle`)."""
        return self._host.idle()

    def is_alive(self) -> bool:
        return not self.stopped and self._host_ref.is_alive()

    def ask(self, message: Any, *, timeout: float | None = None) -> Any:
        """Tell ``message`` and wait for the handler's result (not from the host's own
        thread: it would wait for itself)."""
        return self._host_ref.ask(_Ask(self, message), timeout=timeout)

    def call(self, fn: Callable[[A], R], *, timeout: float | None = None) -> R:
        """Run ``fn(actor)`` on the host's thread, between two messages, and return its
        result (for tests and introspection: a consistent view of the actor's state)."""
        result: R = self._host_ref.ask(_Call(self, fn), block=False).get(timeout=timeout)
        return result

    def stop(self, block: bool = True, timeout: float | None = None) -> bool:
        """Stop the actor after what is queued before this request (its ``on_stop``
        runs on the host's thread); the host's thread ends with its last actor. False
        if it was already stopped. With ``block``, waits (up to ``timeout`` seconds,
        else ``pykka.Timeout``) until the actor stopped and, if it was the last, until
        the host did."""
        if self.stopped:
            return False
        try:
            future = self._host_ref.ask(_Stop(self), block=False)
        except pykka.ActorDeadError:
            return False
        if block:
            last = future.get(timeout=timeout)
            if last and not self._host.actor_stopped.wait(timeout):
                raise pykka.Timeout(f"{self._host.name} did not stop within {timeout}s")
        return True


def start_host(name: str, actors: Sequence[A]) -> list[HostedRef[A]]:
    """Start one :class:`ActorHost` thread named ``name`` running ``actors``; return
    their refs, in the same order."""
    if not actors:
        raise ValueError("a host needs at least one actor")
    refs: list[HostedRef[Any]] = []
    ActorHost.start(name, actors, refs)
    return refs
