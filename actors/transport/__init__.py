"""Transports: opaque byte frames between nodes and between clients and nodes.

One interface (:mod:`.base`), two implementations: ZeroMQ for real links
(:mod:`.zmq_transport`) and in-process transports (:mod:`.inmemory`) on a hub with fault
injection (:mod:`.hub`) for tests and single-process clusters.
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
from .fault_control import DropRules, FaultControlledPeerTransport, read_drop_rules, read_rules
from .hub import Faults, HubStats, InMemoryHub
from .inmemory import InMemoryClientConnection, InMemoryClientTransport, InMemoryPeerTransport
from .zmq_transport import ZmqClientConnection, ZmqClientTransport, ZmqPeerTransport

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "ClientConnection",
    "ClientFrameHandler",
    "ClientTransport",
    "ConnectionFrameHandler",
    "DropRules",
    "FaultControlledPeerTransport",
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
    "read_drop_rules",
    "read_rules",
]
