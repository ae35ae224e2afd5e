"""The client core's errors, configuration, phases and effects batch."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields

from protocol.ids import RequestId
from protocol.wire import ClientMessage, ErrorReason, RejectReason, ServerRequest

__all__ = [
    "ClientClosedError",
    "ClientConfig",
    "ClientEffects",
    "ClientError",
    "ClientPhase",
    "Completion",
    "QueryCompletion",
    "RequestFailedError",
    "RequestTimeoutError",
    "ResponseDecodeError",
    "ResponseEvictedError",
    "SessionExpiredError",
    "SessionRejectedError",
]


class ClientError(Exception):
    """Base of every error a request, a query or a session can fail with."""


class SessionExpiredError(ClientError):
    """The session expired (or was closed) on the cluster; open a new client.

    Requests pending at that moment may or may not have been applied.
    """


class SessionRejectedError(ClientError):
    """The cluster refused to create the session (e.g. the application said no)."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"session rejected: {reason.name} {detail}".rstrip())
        self.reason = reason
        self.detail = detail


class ResponseEvictedError(ClientError):
    """The request's response was evicted from the session's cache: its outcome is lost."""


class RequestFailedError(ClientError):
    """The cluster answered the request with an error (application error, too large...).

    Not for ``NOT_LEADER``: that is retried elsewhere and never reaches the user.
    """

    def __init__(self, reason: ErrorReason, detail: str) -> None:
        super().__init__(f"{reason.name}: {detail}" if detail else reason.name)
        self.reason = reason
        self.detail = detail


class ResponseDecodeError(ClientError):
    """The cluster answered, but the user codec could not decode the answer.

    The command was applied (exactly once); only its response is unreadable here.
    """


class RequestTimeoutError(ClientError, TimeoutError):
    """The user's deadline passed; the request may or may not be applied later."""


class ClientClosedError(ClientError):
    """The client was closed before the request completed."""


class ClientPhase(enum.Enum):
    """Where the client is in its connection life cycle."""

    #: Not started.
    IDLE = "idle"
    #: Asked the shell to connect; waiting for ``on_connected``.
    CONNECTING = "connecting"
    #: Sent CreateSession/ContinueSession; waiting for the answer.
    HANDSHAKING = "handshaking"
    #: Session bound to the connection: requests flow.
    ACTIVE = "active"
    #: Every member failed in a row: waiting before trying again.
    BACKOFF = "backoff"
    #: The session is gone (expired or rejected). Terminal.
    FAILED = "failed"
    #: Closed by the user. Terminal.
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Where the cluster is and how patient the client is (all durations in ms).

    Keep ``keep_alive_interval_ms`` and ``handshake_timeout_ms`` well below the
    cluster's session timeout (10 s by default): a session must hear from its client
    within that time, across lost frames and failovers, or it expires.
    """

    #: Client addresses of the cluster's members (tried round robin).
    members: tuple[str, ...]
    #: Sent with CreateSession; handed to the application's ``on_session_created``.
    capabilities: dict[str, str] = field(default_factory=dict)
    #: A KeepAlive goes out this often while the session is active.
    keep_alive_interval_ms: int = 1_000
    #: A request or query unanswered this long on a live connection is sent again
    #: (with the same id: a frame may be lost without the connection breaking).
    resend_interval_ms: int = 2_000
    #: Nothing heard from the server this long while active: try another member.
    server_timeout_ms: int = 5_000
    #: No answer to connect + handshake this long: try another member.
    handshake_timeout_ms: int = 2_000
    #: Wait this long after a full round of failed attempts (or an overloaded server).
    retry_backoff_ms: int = 100
    #: Requests sent and unanswered at once; later ones wait for earlier ones to
    #: complete (keep it at or below the cluster's pending-requests-per-session limit).
    max_in_flight: int = 1000
    #: Larger payloads fail locally with ``RequestFailedError(TOO_LARGE)``; a node
    #: that takes less announces its own limit when a session opens, which then holds.
    max_payload_bytes: int = 1 << 20
    #: Out-of-order server requests kept while waiting for a gap to fill.
    max_buffered_server_requests: int = 10_000

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError("ClientConfig.members must name at least one member")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int) and value < 1:
                raise ValueError(f"ClientConfig.{f.name} must be >= 1")


@dataclass(frozen=True, slots=True)
class Completion:
    """A request finished: exactly one of ``response`` and ``error`` is set."""

    request_id: RequestId
    response: bytes | None
    error: ClientError | None


@dataclass(frozen=True, slots=True)
class QueryCompletion:
    """A query finished: exactly one of ``response`` and ``error`` is set."""

    correlation_id: int
    response: bytes | None
    error: ClientError | None


@dataclass(slots=True)
class ClientEffects:
    """What the shell must do after one input, in this order.

    1. ``connect``: if set, drop the current connection and open one to this address,
       then call ``on_connected`` (or ``on_disconnected`` if that fails).
    2. ``send``: messages for the (current or new) connection, in order.
    3. ``completed`` / ``queries_completed``: resolve the user's futures.
    4. ``deliver``: hand these server requests to the application's handler, in order
       (each id exactly once per session); when the handler has returned, report it
       with ``on_server_requests_handled(id)``: only then is the request acknowledged.
    """

    connect: str | None = None
    send: list[ClientMessage] = field(default_factory=list)
    completed: list[Completion] = field(default_factory=list)
    queries_completed: list[QueryCompletion] = field(default_factory=list)
    deliver: list[ServerRequest] = field(default_factory=list)
