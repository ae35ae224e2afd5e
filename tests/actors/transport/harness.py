"""Test helpers for transports: inboxes, bounded waits, and one factory per implementation.

The conformance suite is written once against :class:`Harness`; each implementation
provides one. Every transport a harness makes is stopped by :meth:`Harness.close`.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from actors.transport import (
    ClientConnection,
    ClientTransport,
    CurveClient,
    CurveKeyPair,
    CurveServer,
    FrameValidator,
    InMemoryClientConnection,
    InMemoryClientTransport,
    InMemoryHub,
    InMemoryPeerTransport,
    PeerFrameHandler,
    PeerTransport,
    Transport,
    ZmqClientConnection,
    ZmqClientTransport,
    ZmqOptions,
    ZmqPeerTransport,
    curve_available,
)
from protocol.ids import MemberId

WAIT_S = 10.0
#: Link probes: sent until one arrives, because a ZeroMQ peer link drops frames until
#: its TCP connection is up (ZMQ_IMMEDIATE). Inboxes swallow them.
PROBE = b"\x00probe"


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT_S) -> None:
    """Poll ``predicate`` (for counters, which have no event) until true or fail."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        pause.wait(0.002)


class Inbox:
    """Collects what a handler receives, as tuples, in a thread-safe queue."""

    def __init__(self) -> None:
        self.items: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.probed = threading.Event()
        self.raise_on: bytes | None = None
        #: The ``admin`` argument each client frame came with, by frame.
        self.admin: dict[bytes, bool] = {}

    def _put(self, item: tuple[Any, ...], frame: bytes) -> None:
        if frame == PROBE:
            self.probed.set()
            return
        if self.raise_on is not None and frame == self.raise_on:
            raise RuntimeError("handler failure injected by the test")
        self.items.put(item)

    def peer(self, member: MemberId, frame: bytes) -> None:
        self._put((member, frame), frame)

    def client(self, routing_id: bytes, frame: bytes, admin: bool) -> None:
        self.admin[frame] = admin
        self._put((routing_id, frame), frame)

    def connection(self, frame: bytes) -> None:
        self._put((frame,), frame)

    def get(self, timeout: float = WAIT_S) -> tuple[Any, ...]:
        try:
            return self.items.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"nothing received within {timeout}s") from None

    def find(self, wanted: Callable[[tuple[Any, ...]], bool]) -> tuple[Any, ...]:
        """Skip items until one is ``wanted`` (e.g. past frames that garbage produced)."""
        deadline = time.monotonic() + WAIT_S
        while True:
            item = self.get(max(0.0, deadline - time.monotonic()))
            if wanted(item):
                return item

    def take(self, n: int, timeout: float = WAIT_S) -> list[tuple[Any, ...]]:
        deadline = time.monotonic() + timeout
        return [self.get(max(0.0, deadline - time.monotonic())) for _ in range(n)]

    def empty(self) -> bool:
        return self.items.empty()


#: A server and the clients of one identity case: (what it is, server, its inbox,
#: [(client, the admin flag the server must report for it)]).
IdentityCase = tuple[str, ClientTransport, Inbox, list[tuple[ClientConnection, bool]]]


class Harness:
    """Makes started transports of one implementation and stops them all at the end."""

    kind = "?"

    def __init__(self) -> None:
        self.made: list[Transport] = []

    def _keep(self, transport: Any, start: bool = True) -> Any:
        self.made.append(transport)
        if start:
            transport.start()
        return transport

    def peer(
        self,
        member: str,
        *,
        max_frame_bytes: int | None = None,
        validator: FrameValidator | None = None,
        inbox: Inbox | None = None,
        handler: PeerFrameHandler | None = None,
        bind: str | None = None,
        start: bool = True,
    ) -> tuple[PeerTransport, Inbox]:
        """A peer transport (started unless ``start=False``) delivering to an inbox, or
        to ``handler`` if given."""
        inbox = inbox or Inbox()
        kw = _limits(max_frame_bytes, validator)
        made = self._make_peer(MemberId(member), handler or inbox.peer, bind, kw)
        return self._keep(made, start), inbox

    def _make_peer(
        self, member: MemberId, handler: PeerFrameHandler, bind: str | None, kw: dict[str, Any]
    ) -> PeerTransport:
        raise NotImplementedError

    def server(
        self, *, max_frame_bytes: int | None = None, validator: FrameValidator | None = None
    ) -> tuple[ClientTransport, Inbox]:
        raise NotImplementedError

    def client(self) -> tuple[ClientConnection, Inbox]:
        raise NotImplementedError

    def identity_cases(self) -> list[IdentityCase]:
        """Servers with clients of known identity (see :data:`IdentityCase`)."""
        raise NotImplementedError

    def unreachable_address(self) -> str:
        raise NotImplementedError

    def link(self, a: PeerTransport, b: PeerTransport, inbox_b: Inbox) -> None:
        """Make ``a`` know ``b`` and wait until a frame from ``a`` reaches ``b``."""
        a.add_peer(b.member_id, b.address)
        inbox_b.probed.clear()
        deadline = time.monotonic() + WAIT_S
        while not inbox_b.probed.is_set():
            assert time.monotonic() < deadline, "peer link did not come up"
            a.send(b.member_id, PROBE)
            inbox_b.probed.wait(0.02)

    def close(self) -> None:
        for transport in reversed(self.made):
            transport.stop()


def _limits(max_frame_bytes: int | None, validator: FrameValidator | None) -> dict[str, Any]:
    kw: dict[str, Any] = {"validator": validator}
    if max_frame_bytes is not None:
        kw["max_frame_bytes"] = max_frame_bytes
    return kw


class ZmqHarness(Harness):
    kind = "zmq"

    def _make_peer(
        self, member: MemberId, handler: PeerFrameHandler, bind: str | None, kw: dict[str, Any]
    ) -> PeerTransport:
        return ZmqPeerTransport(
            member, handler, bind=bind or "tcp://127.0.0.1:0", options=ZmqOptions(**kw)
        )

    def server(
        self, *, max_frame_bytes: int | None = None, validator: FrameValidator | None = None
    ) -> tuple[ClientTransport, Inbox]:
        inbox = Inbox()
        kw = _limits(max_frame_bytes, validator)
        return self._keep(ZmqClientTransport(inbox.client, options=ZmqOptions(**kw))), inbox

    def client(self) -> tuple[ClientConnection, Inbox]:
        inbox = Inbox()
        return self._keep(ZmqClientConnection(inbox.connection)), inbox

    def identity_cases(self) -> list[IdentityCase]:
        """Without CURVE: everyone gets the configured default (True unless told
        otherwise); with CURVE: an admin key is an admin, another allowed key is not."""
        cases: list[IdentityCase] = []
        for default in (True, False):
            inbox = Inbox()
            # True: the constructor's default, False: configured.
            kw = {} if default else {"admin_without_curve": False}
            server = self._keep(ZmqClientTransport(inbox.client, **kw))
            client = self._keep(ZmqClientConnection(Inbox().connection))
            cases.append((f"no CURVE, default {default}", server, inbox, [(client, default)]))
        if curve_available():
            import zmq

            def pair() -> CurveKeyPair:
                return CurveKeyPair(*zmq.curve_keypair())

            server_keys, admin_keys, client_keys = pair(), pair(), pair()
            inbox = Inbox()
            curve = CurveServer(
                server_keys,
                frozenset({admin_keys.public, client_keys.public}),
                frozenset({admin_keys.public}),
            )
            server = self._keep(
                ZmqClientTransport(inbox.client, options=ZmqOptions(curve_server=curve))
            )
            clients = [
                (
                    self._keep(
                        ZmqClientConnection(
                            Inbox().connection,
                            options=ZmqOptions(curve_client=CurveClient(keys, server_keys.public)),
                        )
                    ),
                    keys is admin_keys,
                )
                for keys in (admin_keys, client_keys)
            ]
            cases.append(("CURVE", server, inbox, clients))
        return cases

    def unreachable_address(self) -> str:
        from actors.cluster import free_ports

        return f"tcp://127.0.0.1:{free_ports(1)[0]}"  # free a moment ago, closed now


class InMemoryHarness(Harness):
    kind = "inmemory"

    def __init__(self) -> None:
        super().__init__()
        self.hub = InMemoryHub(seed=1)

    def _make_peer(
        self, member: MemberId, handler: PeerFrameHandler, bind: str | None, kw: dict[str, Any]
    ) -> PeerTransport:
        return InMemoryPeerTransport(self.hub, member, handler, bind=bind, **kw)

    def server(
        self, *, max_frame_bytes: int | None = None, validator: FrameValidator | None = None
    ) -> tuple[ClientTransport, Inbox]:
        inbox = Inbox()
        kw = _limits(max_frame_bytes, validator)
        return self._keep(InMemoryClientTransport(self.hub, inbox.client, **kw)), inbox

    def client(self) -> tuple[ClientConnection, Inbox]:
        inbox = Inbox()
        return self._keep(InMemoryClientConnection(self.hub, inbox.connection)), inbox

    def identity_cases(self) -> list[IdentityCase]:
        """In memory a connection says who it is (``admin``; default: an admin)."""
        inbox = Inbox()
        server = self._keep(InMemoryClientTransport(self.hub, inbox.client))
        clients = [
            (self._keep(InMemoryClientConnection(self.hub, Inbox().connection)), True),
            (self._keep(InMemoryClientConnection(self.hub, Inbox().connection, admin=True)), True),
            (
                self._keep(InMemoryClientConnection(self.hub, Inbox().connection, admin=False)),
                False,
            ),
        ]
        return [("in memory", server, inbox, clients)]

    def unreachable_address(self) -> str:
        return "inmem://nobody-listens-here"

    def close(self) -> None:
        super().close()
        self.hub.stop()


def transport_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("raft-transport")]
