"""The session state machine: exactly-once execution of a user's state machine.

Import everything from here::

    from protocol.session import SessionStateMachine, UserStateMachine, ClientRequest
"""

from protocol.session.commands import (
    SESSION_COMMAND_TYPES,
    ClientRequest,
    CreateSession,
    GetRequestsForRetry,
    InternalCommand,
    ServerRequestAck,
    SessionCommand,
    SessionExpired,
    decode_session_command,
    decodes_to_itself,
)
from protocol.session.results import (
    RESPONSE_EVICTED,
    UNKNOWN_SESSION,
    ApplicationError,
    InternalApplied,
    RequestResult,
    Response,
    ResponseEvicted,
    RetryBatch,
    ServerRequestEnvelope,
    ServerRequestsAcked,
    SessionCreated,
    SessionRejected,
    SessionRemoved,
    SessionResult,
    SessionStats,
    UnknownSession,
)
from protocol.session.state_machine import SNAPSHOT_VERSION, SessionStateMachine
from protocol.session.user import (
    RESERVED_PREFIX,
    MsgpackCodec,
    ReadOnlyUserState,
    Reject,
    ReservedKeyError,
    SessionContext,
    UserCodec,
    UserState,
    UserStateMachine,
)

__all__ = [
    "RESERVED_PREFIX",
    "RESPONSE_EVICTED",
    "SESSION_COMMAND_TYPES",
    "SNAPSHOT_VERSION",
    "UNKNOWN_SESSION",
    "ApplicationError",
    "ClientRequest",
    "CreateSession",
    "GetRequestsForRetry",
    "InternalApplied",
    "InternalCommand",
    "MsgpackCodec",
    "ReadOnlyUserState",
    "Reject",
    "RequestResult",
    "ReservedKeyError",
    "Response",
    "ResponseEvicted",
    "RetryBatch",
    "ServerRequestAck",
    "ServerRequestEnvelope",
    "ServerRequestsAcked",
    "SessionCommand",
    "SessionContext",
    "SessionCreated",
    "SessionExpired",
    "SessionRejected",
    "SessionRemoved",
    "SessionResult",
    "SessionStateMachine",
    "SessionStats",
    "UnknownSession",
    "UserCodec",
    "UserState",
    "UserStateMachine",
    "decode_session_command",
    "decodes_to_itself",
]
