"""Everything deterministic in raft-actors: messages, the codec and the pure cores.

Nothing in this package reads a clock, draws randomness it was not given, starts a
thread or touches a socket or a disk (``tests/test_boundary.py`` enforces it).

The client-server messages live in :mod:`protocol.wire`, the registry <-> consensus
link in :mod:`protocol.actions`; both are re-exported here, as are the connection
table (:mod:`protocol.registry`) and the client core (:mod:`protocol.client`).
"""

from protocol.actions import *  # noqa: F403
from protocol.actions import __all__ as _actions_all
from protocol.admin import (
    AdminOp,
    AdminRequest,
    AdminResponse,
    NodeStatus,
    StatusRequest,
    StatusResponse,
)
from protocol.client import *  # noqa: F403
from protocol.client import __all__ as _client_all
from protocol.codec import ProtocolError, decode, encode
from protocol.registry import *  # noqa: F403
from protocol.registry import __all__ as _registry_all
from protocol.wire import *  # noqa: F403
from protocol.wire import __all__ as _wire_all

__all__ = [
    "AdminOp",
    "AdminRequest",
    "AdminResponse",
    "NodeStatus",
    "ProtocolError",
    "StatusRequest",
    "StatusResponse",
    "decode",
    "encode",
    *_wire_all,
    *_actions_all,
    *_registry_all,
    *_client_all,
]
