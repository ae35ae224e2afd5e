"""Coalescing hand-off from a transport thread to an actor: one actor message per burst.

A transport's I/O thread receives frames one by one. Telling the actor each frame costs
a pykka message per frame (an envelope, an inbox put, a wake-up, one turn of the
actor's loop); under load the actor then handles, and flushes, each frame alone. A
:class:`Coalescer` instead appends every item to a deque and tells the actor one
:class:`Drain` only when none is already on its way. The actor takes *everything* queued
when the ``Drain`` arrives (:meth:`Coalescer.take`), so a burst of frames costs one
message and is handled as one batch (e.g. all the acknowledgements that arrived
together advance the commit index once).

Ordering: items come out in the order they were put in. Thread-safety rests on two
atomic steps (``deque.append``/``popleft`` are atomic in CPython) and one rule: the
consumer clears the "scheduled" flag *before* it takes, and the producer appends
*before* it looks at the flag. So an item appended while a drain is running is either
taken by that drain or announced by a fresh ``Drain``; none is ever left behind.

A target that is gone (stopped: its ``tell`` raises ``pykka.ActorDeadError``, or its
``is_alive()`` says False while a ``Drain`` is on its way) will never take again: the
coalescer then drops what it holds and every later item, counting them in
:attr:`Coalescer.dropped`, instead of filling up to its bounds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import pykka

from actors.base import Mailbox

__all__ = ["Coalescer", "Drain"]

T = TypeVar("T")

#: Items one ``take`` returns at most; the rest get a new ``Drain`` (so the actor gets
#: to its other messages, e.g. ticks, in between).
MAX_TAKE = 4096
#: Items and bytes queued at most: the transport thread reads its socket as fast as it
#: can, so without a bound a flood (say, a client's keep-alives) would grow this queue
#: for as long as the actor is behind. Beyond it items are dropped, like on the network.
MAX_ITEMS = 100_000
MAX_BYTES = 256 * 1024 * 1024


class Drain:
    """The one message a :class:`Coalescer` tells its actor: "take my items"."""

    __slots__ = ("source",)

    def __init__(self, source: Coalescer[Any]) -> None:
        self.source = source


class Coalescer(Generic[T]):
    """Collects items from any thread for one actor; see the module docstring.

    ``target`` is the actor's mailbox (anything with ``tell``), set at construction or
    later through :attr:`target` (before the first item arrives; items put while it is
    ``None`` wait until the next :meth:`put` after it is set). A target with
    ``tell_later`` (a hosted actor's ref) gets the ``Drain`` for the rest of a bounded
    take that way, behind what its thread already has queued.
    """

    def __init__(
        self,
        target: Mailbox | None = None,
        *,
        max_take: int = MAX_TAKE,
        max_items: int = MAX_ITEMS,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        if max_take < 1 or max_items < 1 or max_bytes < 1:
            raise ValueError("max_take, max_items and max_bytes must be >= 1")
        self._target: Mailbox | None = None
        self._alive: Callable[[], bool] | None = None
        self._later: Callable[[Any], None] | None = None
        self.target = target
        self._max_take = max_take
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._items: deque[tuple[T, int]] = deque()
        # Bytes queued = _bytes_in - _bytes_out; each counter has one writer (the
        # producer, the consumer), so no lock is needed (exact with one producer
        # thread, as each transport has; approximate with several).
        self._bytes_in = 0
        self._bytes_out = 0
        #: Items refused because the queue was full.
        self.dropped = 0
        self._scheduled = False
        #: The target is gone: every item is dropped.
        self.closed = False
        self._drain = Drain(self)

    @property
    def target(self) -> Mailbox | None:
        return self._target

    @target.setter
    def target(self, target: Mailbox | None) -> None:
        self._alive = getattr(target, "is_alive", None)
        self._later = getattr(target, "tell_later", None)
        self._target = target

    def _close(self) -> None:
        """The target is gone: drop (and count) what is queued, and all that comes."""
        self.closed = True
        self.dropped += len(self._items)
        self._items.clear()

    def put(self, item: T, nbytes: int = 0) -> bool:
        """Queue ``item`` (weighing ``nbytes``) and make sure a ``Drain`` is on its way
        (any thread); False if the queue is full and ``item`` was dropped."""
        if (
            self.closed
            or len(self._items) >= self._max_items
            or self._bytes_in - self._bytes_out + nbytes > self._max_bytes
        ):
            self.dropped += 1
            return False
        self._bytes_in += nbytes
        self._items.append((item, nbytes))
        if not self._scheduled:
            target = self._target
            if target is None:
                return True
            self._scheduled = True
            try:
                target.tell(self._drain)
            except pykka.ActorDeadError:
                self._close()
                return False
            except Exception:
                self._scheduled = False
                raise
        elif self._alive is not None and not self._alive():
            # The Drain on its way will never be handled: nobody takes from here again.
            self._close()
            return False
        return True

    def take(self) -> list[T]:
        """Everything queued so far, oldest first (the actor's thread, on ``Drain``)."""
        self._scheduled = False
        items = self._items
        out: list[T] = []
        limit = self._max_take
        taken = 0
        while items and len(out) < limit:
            item, nbytes = items.popleft()
            out.append(item)
            taken += nbytes
        self._bytes_out += taken
        if items and not self._scheduled and self._target is not None:
            self._scheduled = True
            # Behind what the actor's thread has queued meanwhile (e.g. ticks).
            (self._later or self._target.tell)(self._drain)
        return out

    def __len__(self) -> int:
        return len(self._items)
