"""The client library's pure core (hosted by ``actors.client.RaftClient``)."""

from protocol.client.core import ClientSessionCore
from protocol.client.types import (
    ClientClosedError,
    ClientConfig,
    ClientEffects,
    ClientError,
    Completion,
    Phase,
    QueryCompletion,
    RequestFailedError,
    RequestTimeoutError,
    ResponseEvictedError,
    SessionExpiredError,
    SessionRejectedError,
)

__all__ = [
    "ClientClosedError",
    "ClientConfig",
    "ClientEffects",
    "ClientError",
    "ClientSessionCore",
    "Completion",
    "Phase",
    "QueryCompletion",
    "RequestFailedError",
    "RequestTimeoutError",
    "ResponseEvictedError",
    "SessionExpiredError",
    "SessionRejectedError",
]
