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
from .curve import (
    CurveClient,
    CurveError,
    CurveKeyPair,
    CurveServer,
    curve_available,
    generate_keys,
    load_key_pair,
    load_member_keys,
    load_public_key,
    load_public_keys,
)
from .fault_control import DropRules, FaultControlledPeerTransport, read_drop_rules, read_rules
from .hub import Faults, HubStats, InMemoryHub
from .inmemory import InMemoryClientConnection, InMemoryClientTransport, InMemoryPeerTransport
from .zmq_transport import ZmqClientConnection, ZmqClientTransport, ZmqOptions, ZmqPeerTransport

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "ClientConnection",
    "ClientFrameHandler",
    "ClientTransport",
    "ConnectionFrameHandler",
    "CurveClient",
    "CurveError",
    "CurveKeyPair",
    "CurveServer",
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
    "ZmqOptions",
    "ZmqPeerTransport",
    "curve_available",
    "generate_keys",
    "load_key_pair",
    "load_member_keys",
    "load_public_key",
    "load_public_keys",
    "read_drop_rules",
    "read_rules",
]
