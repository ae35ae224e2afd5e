"""The client library's pure core (hosted by ``actors.client.RaftClient``)."""

from protocol.client.channels import ChannelTable, Placement
from protocol.client.core import ClientSessionCore
from protocol.client.types import (
    ClientClosedError,
    ClientConfig,
    ClientEffects,
    ClientError,
    ClientPhase,
    Completion,
    QueryCompletion,
    RequestFailedError,
    RequestTimeoutError,
    ResponseDecodeError,
    ResponseEvictedError,
    SessionExpiredError,
    SessionRejectedError,
)

__all__ = [
    "ChannelTable",
    "ClientClosedError",
    "ClientConfig",
    "ClientEffects",
    "ClientError",
    "ClientPhase",
    "ClientSessionCore",
    "Completion",
    "Placement",
    "QueryCompletion",
    "RequestFailedError",
    "RequestTimeoutError",
    "ResponseDecodeError",
    "ResponseEvictedError",
    "SessionExpiredError",
    "SessionRejectedError",
]
