"""Transports: opaque byte frames between nodes and between clients and nodes.

One interface (:mod:`.base`), two implementations: ZeroMQ for real links
(:mod:`.zmq_transport`) and an in-process hub with fault injection for tests and
single-process clusters (:mod:`.inmemory`).
"""

from .base import (
    DEFAULT_MAX_FRAME_BYTES,
    ClientConnection,
    ClientFrameHandler,
    ClientTransport,
    ConnectionFrameHandler,
    FrameValidator,
    PeerFrameHandler,
    PeerTransport,
    Transport,
    TransportError,
    TransportStats,
)
from .inmemory import (
    Faults,
    HubStats,
    InMemoryClientConnection,
    InMemoryClientTransport,
    InMemoryHub,
    InMemoryPeerTransport,
)
from .zmq_transport import ZmqClientConnection, ZmqClientTransport, ZmqPeerTransport

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "ClientConnection",
    "ClientFrameHandler",
    "ClientTransport",
    "ConnectionFrameHandler",
    "Faults",
    "FrameValidator",
    "HubStats",
    "InMemoryClientConnection",
    "InMemoryClientTransport",
    "InMemoryHub",
    "InMemoryPeerTransport",
    "PeerFrameHandler",
    "PeerTransport",
    "Transport",
    "TransportError",
    "TransportStats",
    "ZmqClientConnection",
    "ZmqClientTransport",
    "ZmqPeerTransport",
]
