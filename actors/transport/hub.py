"""The in-memory network: a hub that schedules frame deliveries, with fault injection.

:class:`InMemoryHub` stands for the network of one process. Transports bind to
``inmem://NAME`` addresses on a hub (omit the address to get a fresh one, like port 0)
and implement the interfaces of :mod:`actors.transport.base` with the same semantics as
the ZeroMQ ones. Every frame goes through the hub's scheduler and is delivered on the
hub's own thread, so a handler that sends never re-enters another handler.

Faults are set by tests and drawn from one seeded :class:`random.Random`, so a run is
reproducible given the same sequence of sends:

* :class:`Faults` -- drop probability, duplication probability, a delay range in
  milliseconds, and reordering (a frame held back by up to ``reorder_ms`` extra so
  later frames overtake it);
* :meth:`InMemoryHub.partition` (symmetric or one-way between two sets of *nodes*),
  :meth:`InMemoryHub.isolate` and :meth:`InMemoryHub.heal`. A node is a label given to
  each transport (a peer transport's default is its member id), so one label can cover
  a node's peer and client transports. A partition also drops frames already in flight.

``manual=True`` makes the hub deterministic: no thread, a virtual clock, and the test
delivers frames itself with :meth:`InMemoryHub.step`, :meth:`InMemoryHub.advance` or
:meth:`InMemoryHub.run_until_idle`.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ._common import LOG, THREAD_PREFIX
from .base import TransportError

if TYPE_CHECKING:
    from .inmemory import InMemoryClientConnection, _Endpoint

__all__ = ["Faults", "HubStats", "InMemoryHub"]

STOP_TIMEOUT_S = 10.0


@dataclasses.dataclass(frozen=True, slots=True)
class Faults:
    """What the hub does to every frame (probabilities in [0, 1], times in ms)."""

    drop: float = 0.0
    """Probability that a frame is lost."""
    duplicate: float = 0.0
    """Probability that a frame is delivered twice (each copy with its own delay)."""
    delay_ms: tuple[float, float] = (0.0, 0.0)
    """Each delivery is delayed by a uniform draw from this range."""
    reorder: float = 0.0
    """Probability that a frame is held back by up to ``reorder_ms`` more."""
    reorder_ms: float = 10.0

    def __post_init__(self) -> None:
        for p in (self.drop, self.duplicate, self.reorder):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"probability out of [0, 1]: {p}")
        lo, hi = self.delay_ms
        if not 0.0 <= lo <= hi or self.reorder_ms < 0:
            raise ValueError(f"bad delay: {self.delay_ms}, reorder_ms={self.reorder_ms}")


@dataclasses.dataclass(frozen=True, slots=True)
class HubStats:
    """What the hub did with the frames handed to it."""

    scheduled: int = 0
    """Deliveries scheduled (duplicates count twice)."""
    delivered: int = 0
    """Deliveries made to a running endpoint."""
    dropped: int = 0
    """Frames lost to the ``drop`` fault."""
    duplicated: int = 0
    """Extra copies made by the ``duplicate`` fault."""
    partitioned: int = 0
    """Frames lost to a partition (at send time or in flight)."""
    undeliverable: int = 0
    """Deliveries whose endpoint had stopped (or the hub stopped) before they were due."""


@dataclasses.dataclass(order=True)
class _Delivery:
    due_ms: float
    seq: int
    src: str = dataclasses.field(compare=False)
    dst: str = dataclasses.field(compare=False)
    deliver: Callable[[], bool] = dataclasses.field(compare=False)


class InMemoryHub:
    """The simulated network of one process (see the module docstring).

    ``seed`` seeds the fault draws; ``manual`` selects the thread-less virtual-clock mode.
    """

    def __init__(self, *, seed: int = 0, faults: Faults | None = None, manual: bool = False):
        self._rng = random.Random(seed)
        self._faults = faults or Faults()
        self._manual = manual
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._queue: list[_Delivery] = []
        self._seq = itertools.count()
        self._names = itertools.count(1)
        self._routing_ids = itertools.count(1)
        self._endpoints: dict[str, _Endpoint] = {}
        self._connections: dict[bytes, InMemoryClientConnection] = {}
        self._blocked: set[tuple[str, str]] = set()
        self._isolated: set[str] = set()
        self._state = "new"
        self._thread: threading.Thread | None = None
        self._virtual_ms = 0.0
        self._stats = dict.fromkeys(
            ("scheduled", "delivered", "dropped", "duplicated", "partitioned", "undeliverable"), 0
        )

    # -- faults ----------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        with self._lock:
            return self._faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        with self._lock:
            self._faults = faults

    def partition(self, a: Iterable[str], b: Iterable[str], *, one_way: bool = False) -> None:
        """Cut every link from a node in ``a`` to a node in ``b`` (and back unless
        ``one_way``). Cumulative with earlier partitions until :meth:`heal`."""
        set_a, set_b = set(a), set(b)
        with self._lock:
            for x in set_a:
                for y in set_b:
                    if x != y:
                        self._blocked.add((x, y))
                        if not one_way:
                            self._blocked.add((y, x))

    def isolate(self, node: str) -> None:
        """Cut ``node`` off from every other node, both ways, until :meth:`heal`."""
        with self._lock:
            self._isolated.add(node)

    def heal(self) -> None:
        """Remove every partition and isolation."""
        with self._lock:
            self._blocked.clear()
            self._isolated.clear()

    def _cut(self, src: str, dst: str) -> bool:
        if src == dst:
            return False
        return (src, dst) in self._blocked or src in self._isolated or dst in self._isolated

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start the delivery thread (not in manual mode); idempotent. Transports call
        this from their own ``start()``; a stopped hub cannot restart."""
        with self._lock:
            if self._state == "running":
                return
            if self._state == "stopped":
                raise TransportError("a stopped hub cannot restart")
            self._state = "running"
            if not self._manual:
                self._thread = threading.Thread(
                    target=self._run, name=f"{THREAD_PREFIX}-hub", daemon=True
                )
                self._thread.start()

    def stop(self) -> None:
        """Stop delivering (pending frames are discarded) and join the thread; idempotent."""
        with self._lock:
            self._state = "stopped"
            self._stats["undeliverable"] += len(self._queue)
            self._queue.clear()
            self._wakeup.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(STOP_TIMEOUT_S)

    def stats(self) -> HubStats:
        with self._lock:
            return HubStats(**self._stats)

    def pending(self) -> int:
        """Deliveries scheduled and not yet made."""
        with self._lock:
            return len(self._queue)

    # -- manual mode -----------------------------------------------------------------

    @property
    def now_ms(self) -> float:
        """The hub's clock: virtual in manual mode, else monotonic milliseconds."""
        with self._lock:
            return self._now()

    def step(self) -> bool:
        """Manual mode: make the next delivery (advancing the virtual clock to it).

        Returns False when nothing is scheduled."""
        self._require_manual()
        with self._lock:
            if not self._queue:
                return False
            item = heapq.heappop(self._queue)
            self._virtual_ms = max(self._virtual_ms, item.due_ms)
        self._make(item)
        return True

    def advance(self, ms: float) -> int:
        """Manual mode: move the virtual clock ``ms`` forward, making every delivery due
        by then (including ones scheduled meanwhile). Returns how many were made."""
        self._require_manual()
        with self._lock:
            until = self._virtual_ms + ms
        made = 0
        while True:
            with self._lock:
                if not self._queue or self._queue[0].due_ms > until:
                    self._virtual_ms = until
                    return made
                item = heapq.heappop(self._queue)
                self._virtual_ms = max(self._virtual_ms, item.due_ms)
            self._make(item)
            made += 1

    def run_until_idle(self, max_steps: int = 100_000) -> int:
        """Manual mode: step until nothing is scheduled (at most ``max_steps``)."""
        made = 0
        while made < max_steps and self.step():
            made += 1
        return made

    def _require_manual(self) -> None:
        if not self._manual:
            raise TransportError("step/advance/run_until_idle need InMemoryHub(manual=True)")

    # -- internals -------------------------------------------------------------------

    def _now(self) -> float:
        return self._virtual_ms if self._manual else time.monotonic() * 1000.0

    def _bind(self, endpoint: _Endpoint, address: str | None, prefix: str) -> str:
        with self._lock:
            if address is None:
                address = f"inmem://{prefix}-{next(self._names)}"
                while address in self._endpoints:  # pragma: no cover - caller chose this name
                    address = f"inmem://{prefix}-{next(self._names)}"
            elif not address.startswith("inmem://"):
                raise TransportError(f"in-memory addresses look like inmem://NAME: {address!r}")
            elif address in self._endpoints:
                raise TransportError(f"address in use: {address}")
            self._endpoints[address] = endpoint
            return address

    def _unbind(self, address: str) -> None:
        with self._lock:
            self._endpoints.pop(address, None)

    def _lookup(self, address: str) -> _Endpoint | None:
        with self._lock:
            return self._endpoints.get(address)

    def _new_connection(self, connection: InMemoryClientConnection) -> bytes:
        with self._lock:
            routing_id = b"\x00" + next(self._routing_ids).to_bytes(4, "big")
            self._connections[routing_id] = connection
            return routing_id

    def _drop_connection(self, routing_id: bytes) -> None:
        with self._lock:
            self._connections.pop(routing_id, None)

    def _connection(self, routing_id: bytes) -> InMemoryClientConnection | None:
        with self._lock:
            return self._connections.get(routing_id)

    def _schedule(self, src: str, dst: str, deliver: Callable[[], bool]) -> None:
        """Hand a frame to the network: apply faults and queue its deliveries."""
        with self._lock:
            if self._state == "stopped":
                self._stats["undeliverable"] += 1
                return
            if self._cut(src, dst):
                self._stats["partitioned"] += 1
                return
            faults = self._faults
            rng = self._rng
            if faults.drop and rng.random() < faults.drop:
                self._stats["dropped"] += 1
                return
            copies = 1
            if faults.duplicate and rng.random() < faults.duplicate:
                copies = 2
                self._stats["duplicated"] += 1
            now = self._now()
            for _ in range(copies):
                lo, hi = faults.delay_ms
                delay = rng.uniform(lo, hi) if hi > 0 else 0.0
                if faults.reorder and rng.random() < faults.reorder:
                    delay += rng.uniform(0.0, faults.reorder_ms)
                heapq.heappush(
                    self._queue, _Delivery(now + delay, next(self._seq), src, dst, deliver)
                )
                self._stats["scheduled"] += 1
            self._wakeup.notify()

    def _make(self, item: _Delivery) -> None:
        with self._lock:
            if self._cut(item.src, item.dst):
                self._stats["partitioned"] += 1
                return
        try:
            made = item.deliver()
        except Exception:  # pragma: no cover - endpoints catch handler errors themselves
            LOG.exception("hub: delivery failed")
            made = False
        with self._lock:
            self._stats["delivered" if made else "undeliverable"] += 1

    def _run(self) -> None:
        while True:
            with self._lock:
                while True:
                    if self._state != "running":
                        return
                    if self._queue:
                        wait_ms = self._queue[0].due_ms - self._now()
                        if wait_ms <= 0:
                            item = heapq.heappop(self._queue)
                            break
                        self._wakeup.wait(wait_ms / 1000.0)
                    else:
                        self._wakeup.wait()
            self._make(item)
