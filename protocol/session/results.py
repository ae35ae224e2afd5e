"""What :meth:`SessionStateMachine.apply` returns: typed results, never exceptions.

A client request ends in exactly one of: the response (the user's value, encoded to
``bytes`` by the user codec), :class:`ApplicationError` (user code raised; cached like a
response), :class:`ResponseEvicted` or :class:`UnknownSession`. Every result that ran user
code also carries the server requests it emitted, as :class:`ServerRequestEnvelope`\\ s
with their assigned ids, ready to send. The classes are registered with the codec
(tags 50-99) so a host may ship them across a process boundary unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from protocol.codec import message
from protocol.ids import RequestId, SessionId

__all__ = [
    "RESPONSE_EVICTED",
    "UNKNOWN_SESSION",
    "ApplicationError",
    "InternalApplied",
    "RequestResult",
    "Response",
    "ResponseEvicted",
    "RetryBatch",
    "ServerRequestEnvelope",
    "ServerRequestsAcked",
    "SessionCreated",
    "SessionRejected",
    "SessionRemoved",
    "SessionResult",
    "SessionStats",
    "UnknownSession",
]


@message(tag=50)
@dataclass(frozen=True, slots=True)
class ServerRequestEnvelope:
    """A server-initiated request to deliver to ``session_id``'s client (DESIGN rule 5)."""

    session_id: SessionId
    request_id: RequestId
    payload: bytes


@message(tag=51)
@dataclass(frozen=True, slots=True)
class ApplicationError:
    """User code raised (a bug, not a crash, rule 9); cached and replayed like a response."""

    message: str


@message(tag=52)
@dataclass(frozen=True, slots=True)
class ResponseEvicted:
    """The request is older than what the client said it still waits for and its response
    is gone (rule 3): the client must open a new session."""


@message(tag=53)
@dataclass(frozen=True, slots=True)
class UnknownSession:
    """The session expired or never existed (rule 1); user code was not called."""


#: The two field-less errors are values, shared instead of allocated per command.
RESPONSE_EVICTED = ResponseEvicted()
UNKNOWN_SESSION = UnknownSession()

#: The outcome of one client request: encoded response bytes or a typed error.
Response: TypeAlias = bytes | ApplicationError | ResponseEvicted | UnknownSession


@message(tag=54)
@dataclass(frozen=True, slots=True)
class RequestResult:
    """Result of ``ClientRequest``; ``from_cache`` tells a duplicate served from the cache."""

    session_id: SessionId
    request_id: RequestId
    response: Response
    server_requests: tuple[ServerRequestEnvelope, ...]
    from_cache: bool


@message(tag=55)
@dataclass(frozen=True, slots=True)
class SessionCreated:
    """Result of ``CreateSession``: the session exists; its creation may have emitted
    server requests to other sessions."""

    session_id: SessionId
    server_requests: tuple[ServerRequestEnvelope, ...]


@message(tag=56)
@dataclass(frozen=True, slots=True)
class SessionRejected:
    """Result of ``CreateSession``: no session (the user rejected it, its hook raised, or
    the id is already in use); nothing of it remains."""

    session_id: SessionId
    reason: str


@message(tag=57)
@dataclass(frozen=True, slots=True)
class SessionRemoved:
    """Result of ``SessionExpired``; ``existed`` is false for an unknown session.

    The session is removed even if ``on_session_expired`` raised (its state changes
    and sends are then discarded, like any raising user method's)."""

    session_id: SessionId
    existed: bool
    server_requests: tuple[ServerRequestEnvelope, ...]


@message(tag=58)
@dataclass(frozen=True, slots=True)
class ServerRequestsAcked:
    """Result of ``ServerRequestAck``: how many pending requests the ack removed."""

    session_id: SessionId
    acked_up_to: RequestId
    removed: int


@message(tag=59)
@dataclass(frozen=True, slots=True)
class RetryBatch:
    """Result of ``GetRequestsForRetry``: the requests to resend now, sorted by
    (session, id)."""

    server_requests: tuple[ServerRequestEnvelope, ...]


@message(tag=60)
@dataclass(frozen=True, slots=True)
class InternalApplied:
    """Result of ``InternalCommand``: ``error`` is set if ``apply_internal`` raised (or is
    missing); then its state changes and sends were discarded."""

    error: ApplicationError | None
    server_requests: tuple[ServerRequestEnvelope, ...]


@message(tag=61)
@dataclass(frozen=True, slots=True)
class SessionStats:
    """Small counters for a node's status page."""

    sessions: int
    pending_server_requests: int
    cached_responses: int
    last_applied: int


#: Everything :meth:`SessionStateMachine.apply` returns.
SessionResult: TypeAlias = (
    RequestResult
    | SessionCreated
    | SessionRejected
    | SessionRemoved
    | ServerRequestsAcked
    | RetryBatch
    | InternalApplied
)
