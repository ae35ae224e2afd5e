"""In-process transports on a shared hub, with fault injection for tests.

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
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable

from protocol.codec import DEFAULT_MAX_FRAME_BYTES
from protocol.ids import MemberId

from ._zmq_loop import THREAD_PREFIX, log_rate_limited
from .base import (
    ClientFrameHandler,
    ConnectionFrameHandler,
    Counters,
    FrameValidator,
    PeerFrameHandler,
    TransportError,
    TransportStats,
)

__all__ = [
    "Faults",
    "HubStats",
    "InMemoryClientConnection",
    "InMemoryClientTransport",
    "InMemoryHub",
    "InMemoryPeerTransport",
]

LOG = logging.getLogger("actors.transport")
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


class _Endpoint:
    """Lifecycle, counters and receive-side checks shared by the in-memory transports."""

    _prefix = "endpoint"
    _binds = True  # whether start() takes an address on the hub

    def __init__(
        self,
        hub: InMemoryHub,
        *,
        bind: str | None,
        node: str | None,
        max_frame_bytes: int,
        validator: FrameValidator | None,
    ) -> None:
        if max_frame_bytes <= 0:
            raise ValueError("max_frame_bytes must be positive")
        self._hub = hub
        self._bind_to = bind
        self._address = bind or ""
        self._node = node
        self._max_frame_bytes = max_frame_bytes
        self._validator = validator
        self._counters = Counters()
        self._state_lock = threading.Lock()
        self._state = "new"
        self._running = False

    @property
    def node(self) -> str:
        """The label partitions refer to."""
        return self._node or self._address

    def start(self) -> None:
        with self._state_lock:
            if self._state == "running":
                return
            if self._state == "stopped":
                raise TransportError(f"{self._address}: a stopped transport cannot restart")
            self._hub.start()
            if self._binds:
                self._address = self._hub._bind(self, self._bind_to, self._prefix)
            self._state = "running"
            self._running = True

    def stop(self) -> None:
        with self._state_lock:
            was_running = self._state == "running"
            self._state = "stopped"
            self._running = False
        if was_running:
            self._stopped()

    def _stopped(self) -> None:
        self._hub._unbind(self._address)

    def stats(self) -> TransportStats:
        return self._counters.snapshot()

    def _may_send(self, size: int) -> bool:
        if size > self._max_frame_bytes:
            n = self._counters.bump("oversized")
            log_rate_limited(n, "%s: dropped an outgoing %d-byte frame", self._address, size)
            return False
        if not self._running:
            self._counters.bump("dropped")
            return False
        return True

    def _accept(self, frame: bytes) -> bool:
        """Receive-side checks; False when the frame must not reach the handler."""
        if not self._running:
            return False
        if len(frame) > self._max_frame_bytes:
            n = self._counters.bump("oversized")
            log_rate_limited(n, "%s: dropped a received %d-byte frame", self._address, len(frame))
            return False
        if self._validator is not None:
            try:
                self._validator(frame)
            except Exception as exc:
                n = self._counters.bump("decode_errors")
                log_rate_limited(n, "%s: rejected a received frame: %s", self._address, exc)
                return False
        self._counters.received(len(frame))
        return True

    def _handler_failed(self) -> None:
        n = self._counters.bump("handler_errors")
        LOG.exception("%s: frame handler raised (%d so far)", self._address, n)


class InMemoryPeerTransport(_Endpoint):
    """:class:`~actors.transport.base.PeerTransport` on an :class:`InMemoryHub`.

    ``node`` (default: the member id) is the label partitions use.
    """

    _prefix = "peer"

    def __init__(
        self,
        hub: InMemoryHub,
        member_id: MemberId,
        on_frame: PeerFrameHandler,
        *,
        bind: str | None = None,
        node: str | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        validator: FrameValidator | None = None,
    ) -> None:
        super().__init__(
            hub,
            bind=bind,
            node=node or member_id,
            max_frame_bytes=max_frame_bytes,
            validator=validator,
        )
        if not member_id:
            raise ValueError("member id must not be empty")
        self._member_id = member_id
        self._on_frame = on_frame
        self._peers_lock = threading.Lock()
        self._peers: dict[MemberId, str] = {}

    @property
    def member_id(self) -> MemberId:
        return self._member_id

    @property
    def address(self) -> str:
        return self._address

    def add_peer(self, member: MemberId, address: str) -> None:
        if not member:
            raise ValueError("member id must not be empty")
        with self._peers_lock:
            self._peers[member] = address

    def remove_peer(self, member: MemberId) -> None:
        with self._peers_lock:
            self._peers.pop(member, None)

    def peers(self) -> dict[MemberId, str]:
        with self._peers_lock:
            return dict(self._peers)

    def send(self, to: MemberId, frame: bytes) -> bool:
        if not self._may_send(len(frame)):
            return False
        with self._peers_lock:
            address = self._peers.get(to)
        target = None if address is None else self._hub._lookup(address)
        if not isinstance(target, InMemoryPeerTransport):
            self._counters.bump("dropped")  # unknown peer, or nobody listening there
            return True  # like ZeroMQ: accepted, then found unroutable
        frame = bytes(frame)
        sender = self._member_id
        self._counters.sent(len(frame))
        self._hub._schedule(self.node, target.node, lambda: target._receive(sender, frame))
        return True

    def _receive(self, sender: MemberId, frame: bytes) -> bool:
        if not self._accept(frame):
            return self._running
        try:
            self._on_frame(sender, frame)
        except Exception:
            self._handler_failed()
        return True


class InMemoryClientTransport(_Endpoint):
    """:class:`~actors.transport.base.ClientTransport` on an :class:`InMemoryHub`.

    ``node`` (default: the address) is the label partitions use; give a node's client
    and peer transports the same label to partition the node as a whole.
    """

    _prefix = "clients"

    def __init__(
        self,
        hub: InMemoryHub,
        on_frame: ClientFrameHandler,
        *,
        bind: str | None = None,
        node: str | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        validator: FrameValidator | None = None,
    ) -> None:
        super().__init__(
            hub, bind=bind, node=node, max_frame_bytes=max_frame_bytes, validator=validator
        )
        self._on_frame = on_frame
        self._banned_lock = threading.Lock()
        self._banned: set[bytes] = set()

    @property
    def address(self) -> str:
        return self._address

    def send(self, routing_id: bytes, frame: bytes) -> bool:
        if not self._may_send(len(frame)):
            return False
        with self._banned_lock:
            banned = routing_id in self._banned
        connection = None if banned else self._hub._connection(routing_id)
        if connection is None or connection._server_address != self._address:
            self._counters.bump("dropped")
            return True
        frame = bytes(frame)
        self._counters.sent(len(frame))
        self._hub._schedule(
            self.node, connection.node, lambda: connection._receive(routing_id, frame)
        )
        return True

    def disconnect(self, routing_id: bytes) -> None:
        with self._banned_lock:
            self._banned.add(routing_id)

    def _receive(self, routing_id: bytes, frame: bytes) -> bool:
        with self._banned_lock:
            banned = routing_id in self._banned
        if banned:
            self._counters.bump("dropped")
            return True
        if not frame:
            n = self._counters.bump("malformed")
            log_rate_limited(n, "%s: dropped an empty client frame", self._address)
            return True
        if not self._accept(frame):
            return self._running
        try:
            self._on_frame(routing_id, frame)
        except Exception:
            self._handler_failed()
        return True


class InMemoryClientConnection(_Endpoint):
    """:class:`~actors.transport.base.ClientConnection` on an :class:`InMemoryHub`.

    Frames sent while no server is bound at the address are dropped (counted).
    """

    _prefix = "client"
    _binds = False

    def __init__(
        self,
        hub: InMemoryHub,
        on_frame: ConnectionFrameHandler,
        *,
        node: str | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        validator: FrameValidator | None = None,
    ) -> None:
        super().__init__(
            hub, bind=None, node=node, max_frame_bytes=max_frame_bytes, validator=validator
        )
        self._on_frame = on_frame
        self._conn_lock = threading.Lock()
        self._server_address: str | None = None
        self._routing_id: bytes | None = None
        if node is None:
            self._node = f"client-{next(hub._names)}"

    @property
    def address(self) -> str | None:
        with self._conn_lock:
            return self._server_address

    @property
    def routing_id(self) -> bytes | None:
        """The routing id the server sees for the current connection (tests use it)."""
        with self._conn_lock:
            return self._routing_id

    def connect(self, address: str) -> None:
        self.close()
        routing_id = self._hub._new_connection(self)
        with self._conn_lock:
            self._server_address = address
            self._routing_id = routing_id

    def close(self) -> None:
        with self._conn_lock:
            routing_id = self._routing_id
            self._server_address = self._routing_id = None
        if routing_id is not None:
            self._hub._drop_connection(routing_id)

    def _stopped(self) -> None:
        self.close()

    def send(self, frame: bytes) -> bool:
        with self._conn_lock:
            address, routing_id = self._server_address, self._routing_id
        if address is None and len(frame) <= self._max_frame_bytes:
            self._counters.bump("dropped")
            return False
        if not self._may_send(len(frame)):
            return False
        assert address is not None and routing_id is not None
        server = self._hub._lookup(address)
        if not isinstance(server, InMemoryClientTransport):
            self._counters.bump("dropped")
            return True
        frame = bytes(frame)
        self._counters.sent(len(frame))
        self._hub._schedule(self.node, server.node, lambda: server._receive(routing_id, frame))
        return True

    def _receive(self, routing_id: bytes, frame: bytes) -> bool:
        with self._conn_lock:
            current = self._routing_id
        if routing_id != current:
            return False  # sent to a connection that has since been closed
        if not self._accept(frame):
            return self._running
        try:
            self._on_frame(frame)
        except Exception:
            self._handler_failed()
        return True
