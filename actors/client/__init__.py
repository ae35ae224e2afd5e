"""The client library: :class:`RaftClient` (a session with a cluster),
:class:`ClientLoop` (one thread hosting many clients' sessions),
:func:`fetch_status` (one node's status, no session) and :func:`admin_request`
(leadership transfer, membership changes).

The errors a request, a query or a session can fail with are re-exported from
:mod:`protocol.client`, where the client's pure core lives.
"""

from actors.client.admin import AdminError, add_member, admin_request, remove_member
from actors.client.host import ClientStats, ConnectionFactory
from actors.client.loop import ClientLoop
from actors.client.raft_client import (
    RaftClient,
    curve_client,
    curve_connection_factory,
    zmq_connection_factory,
)
from actors.client.status import fetch_status
from protocol.client import (
    ClientClosedError,
    ClientConfig,
    ClientError,
    ClientPhase,
    RequestFailedError,
    RequestTimeoutError,
    ResponseDecodeError,
    ResponseEvictedError,
    SessionExpiredError,
    SessionRejectedError,
)

__all__ = [
    "AdminError",
    "ClientClosedError",
    "ClientConfig",
    "ClientError",
    "ClientLoop",
    "ClientPhase",
    "ClientStats",
    "ConnectionFactory",
    "RaftClient",
    "RequestFailedError",
    "RequestTimeoutError",
    "ResponseDecodeError",
    "ResponseEvictedError",
    "SessionExpiredError",
    "SessionRejectedError",
    "add_member",
    "admin_request",
    "curve_client",
    "curve_connection_factory",
    "fetch_status",
    "remove_member",
    "zmq_connection_factory",
]
