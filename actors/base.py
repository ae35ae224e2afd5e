"""What every actor of a node shares: a member-tagged logger, crash-proof handlers and the
wiring that lets the actors of one node find each other."""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import pykka

T = TypeVar("T")

__all__ = ["Mailbox", "MemberLogger", "NodeActor", "Wiring"]


class Mailbox(Protocol):
    """Anything a message can be told to: a pykka ``ActorRef`` or a link's ``RemoteRef``."""

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


class NodeActor(pykka.ThreadingActor):
    """A pykka actor whose handler errors are logged, never fatal.

    Subclasses implement :meth:`handle`; a bug in one message's handling must not take
    the node down (the message is logged and dropped, the actor keeps serving).
    """

    log: MemberLogger

    @staticmethod
    def _create_actor_inbox() -> Any:
        # pykka's default inbox is a ``queue.Queue`` (a Python-level lock and two
        # conditions per put/get); ``SimpleQueue`` offers the same put/get/empty in C,
        # which matters on the hot path, where every command crosses several inboxes.
        return queue.SimpleQueue()

    def inbox_empty(self) -> bool:
        """Nothing else is queued for this actor right now (a hint: another thread may
        tell it something a moment later)."""
        return bool(self.actor_inbox.empty())

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
