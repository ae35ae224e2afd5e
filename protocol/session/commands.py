"""The session state machine's commands: what the leader proposes and the log holds.

Each command is a frozen, slotted dataclass registered with :mod:`protocol.codec`
(tags 1-49), so its bytes in the log are ``[version, tag, field...]``. ``created_at`` is
the leader's wall clock in integer milliseconds, stamped once when the command is
proposed: the state machine never reads a clock, so replaying the log is deterministic.
The user's own command travels as ``bytes`` (encoded by the user's codec), because that
is how it crosses the wire and sits in the log; the session layer decodes it only when
it actually runs user code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from protocol.codec import decode, message
from protocol.ids import RequestId, SessionId

__all__ = [
    "SESSION_COMMAND_TYPES",
    "ClientRequest",
    "CreateSession",
    "GetRequestsForRetry",
    "InternalCommand",
    "ServerRequestAck",
    "SessionCommand",
    "SessionExpired",
    "decode_session_command",
    "decodes_to_itself",
]


@message(tag=1)
@dataclass(frozen=True, slots=True)
class CreateSession:
    """Open ``session_id`` (chosen by the leader's registry) with the client's capabilities."""

    session_id: SessionId
    capabilities: dict[str, str]
    created_at: int


@message(tag=2)
@dataclass(frozen=True, slots=True)
class ClientRequest:
    """Run the user's ``command`` once for (``session_id``, ``request_id``).

    ``lowest_pending_request_id`` is the client's promise that it holds the responses of
    every request below it, so the session layer may forget them (DESIGN rule 4).
    """

    session_id: SessionId
    request_id: RequestId
    lowest_pending_request_id: RequestId
    command: bytes
    created_at: int


@message(tag=3)
@dataclass(frozen=True, slots=True)
class ServerRequestAck:
    """The client of ``session_id`` received every server request with id <= ``request_id``."""

    session_id: SessionId
    request_id: RequestId
    created_at: int


@message(tag=4)
@dataclass(frozen=True, slots=True)
class SessionExpired:
    """The leader's registry saw no keep-alive in time: remove every trace of the session."""

    session_id: SessionId
    created_at: int


@message(tag=5)
@dataclass(frozen=True, slots=True)
class GetRequestsForRetry:
    """Return every pending server request last sent before ``last_sent_before`` and mark
    it sent at ``created_at`` (one log entry, so the resend and the bump are atomic)."""

    last_sent_before: int
    created_at: int


@message(tag=6)
@dataclass(frozen=True, slots=True)
class InternalCommand:
    """A command from the server side itself (timers, admin), run by ``apply_internal``."""

    command: bytes
    created_at: int


#: Everything :meth:`SessionStateMachine.apply` accepts.
SessionCommand: TypeAlias = (
    CreateSession
    | ClientRequest
    | ServerRequestAck
    | SessionExpired
    | GetRequestsForRetry
    | InternalCommand
)

#: The command classes, for ``decode(data, expected=SESSION_COMMAND_TYPES)``.
SESSION_COMMAND_TYPES: tuple[type[SessionCommand], ...] = (
    CreateSession,
    ClientRequest,
    ServerRequestAck,
    SessionExpired,
    GetRequestsForRetry,
    InternalCommand,
)


def decode_session_command(data: bytes) -> SessionCommand:
    """Decode one log entry's bytes into a session command; only ``ProtocolError`` on garbage."""
    return decode(data, expected=SESSION_COMMAND_TYPES)


def decodes_to_itself(cmd: SessionCommand) -> bool:
    """Whether ``decode_session_command(encode(cmd)) == cmd``, checked the cheap way: a
    ``ClientRequest`` (the command of every client request) whose fields have exactly
    the types its decoder demands. ``False`` means "not known", not "differs". The leader
    applies such a command as it proposed it, exactly as every follower applies what it
    decodes."""
    return (
        type(cmd) is ClientRequest
        and type(cmd.session_id) is str
        and type(cmd.request_id) is int
        and type(cmd.lowest_pending_request_id) is int
        and type(cmd.command) is bytes
        and type(cmd.created_at) is int
    )
