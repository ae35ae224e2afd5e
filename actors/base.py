"""What every actor of a node shares: a member-tagged logger, crash-proof handlers and the
wiring that lets the actors of one node find each other.

A :class:`NodeActor` is only the handler and its state; the thread it runs on is its
host's (:mod:`actors.host`): alone on a pykka thread of its own (:meth:`NodeActor.start`)
or together with the node's other actors on one (:func:`actors.host.start_host`). The
actor itself does not know which: it tells, asks whether anything else is waiting
(:meth:`NodeActor.inbox_empty`) and handles, the same either way."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import pykka

from actors.host import HostedRef, start_host
from actors.messages import Tick

T = TypeVar("T")
N = TypeVar("N", bound="NodeActor")

__all__ = ["Mailbox", "MemberLogger", "NodeActor", "Wiring"]


class Mailbox(Protocol):
    """Anything a message can be told to: a hosted actor's ``HostedRef``, a pykka
    ``ActorRef`` or a link's ``RemoteRef``."""

    def tell(self, message: Any) -> None: ...


class MemberLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every line with the member id: ``[n1] elected leader in term 3``."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return f"[{self.extra['member'] if self.extra else '?'}] {msg}", kwargs


def member_logger(name: str, member: str) -> MemberLogger:
    return MemberLogger(logging.getLogger(name), {"member": member})


@dataclass
class Wiring:
    """The actor refs of one node, filled in by :class:`~actors.node.Node` before any
    traffic starts (so no actor needs a lock to read them)."""

    consensus: Mailbox | None = None
    session: Mailbox | None = None
    registry: Mailbox | None = None
    retry: Mailbox | None = None


class NodeActor:
    """An actor of a node whose handler errors are logged, never fatal.

    Subclasses implement :meth:`handle`; a bug in one message's handling must not take
    the node down (the message is logged and dropped, the actor keeps serving). A host
    (:mod:`actors.host`) runs it and hands it its own ref (:attr:`actor_ref`).
    """

    log: MemberLogger
    _ref: HostedRef[Any] | None = None

    @classmethod
    def start(cls: type[N], *args: Any, **kwargs: Any) -> HostedRef[N]:
        """Construct the actor and run it alone on a pykka thread of its own."""
        (ref,) = start_host(cls.__name__, [cls(*args, **kwargs)])
        return ref

    def bind(self, ref: HostedRef[Any]) -> None:
        """Called by the host before the actor gets any message."""
        self._ref = ref

    @property
    def actor_ref(self) -> HostedRef[Any]:
        """This actor's own mailbox (once hosted)."""
        if self._ref is None:
            raise pykka.ActorDeadError(f"{type(self).__name__} is not hosted")
        return self._ref

    def on_start(self) -> None:
        """Hook: runs on the host's thread before the first message."""

    def on_stop(self) -> None:
        """Hook: runs on the host's thread once the actor is stopped."""

    def inbox_empty(self) -> bool:
        """Nothing else is queued for this actor's thread right now: on a shared host,
        for none of its actors (a hint: another thread may tell something a moment
        later). An actor not hosted (driven by hand, as in tests) has no queue."""
        ref = self._ref
        return ref is None or ref.idle()

    def tell_self_later(self, message: Any) -> None:
        """Queue ``message`` for this actor behind everything its thread has waiting
        (see :meth:`actors.host.HostedRef.tell_later`)."""
        self.actor_ref.tell_later(message)

    def on_receive(self, message: Any) -> Any:
        try:
            return self.handle(message)
        except pykka.ActorDeadError as exc:
            # Another actor of this node already stopped: the node is shutting down
            # (the actors tell each other things, so some order always leaves one late).
            self.log.debug("%s not delivered during shutdown: %s", type(message).__name__, exc)
            return None
        except Exception:
            self.log.exception("error handling %s", type(message).__name__)
            return None
        finally:
            if type(message) is Tick and message.handled is not None:
                message.handled()  # a gated ticker may queue the next tick

    def handle(self, message: Any) -> Any:
        raise NotImplementedError

    def handle_each(self, items: Iterable[T], handle_one: Callable[[T], object]) -> None:
        """``handle_one`` every item of a batch, each guarded like a message of its own:
        one item that raises is logged and the rest of the batch is still handled."""
        for item in items:
            try:
                handle_one(item)
            except pykka.ActorDeadError:
                raise
            except Exception:
                self.log.exception("error handling a batched %s", type(item).__name__)
