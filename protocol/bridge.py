"""The translation between the registry's side and the session state machine's side.

A ``RaftAction`` the registry proposes becomes a ``SessionCommand`` in the log (stamped
with the leader's ``created_at``); a ``SessionResult`` of applying one becomes the
``ServerAction``\\ s the registry acts on. Pure functions, shared by the node's actors and
the test doubles, so both speak exactly the same mapping.
"""

from __future__ import annotations

from protocol.actions import (
    ClientRequestAction,
    CreateSessionAction,
    ExpireSessionAction,
    RaftAction,
    RejectSession,
    SendRequestError,
    SendResponse,
    SendServerRequest,
    ServerAction,
    ServerRequestAckAction,
    SessionCreationConfirmed,
    SessionRemoved,
)
from protocol.session import (
    ApplicationError,
    ClientRequest,
    CreateSession,
    InternalApplied,
    RequestResult,
    ResponseEvicted,
    RetryBatch,
    ServerRequestAck,
    ServerRequestEnvelope,
    ServerRequestsAcked,
    SessionCommand,
    SessionCreated,
    SessionExpired,
    SessionRejected,
    SessionResult,
)
from protocol.session import SessionRemoved as SessionRemovedResult
from protocol.wire import ErrorReason, RejectReason

__all__ = ["to_server_actions", "to_session_command"]


def to_session_command(action: RaftAction, created_at: int) -> SessionCommand | None:
    """The log entry a registry's proposal becomes (``None`` for queries: not logged)."""
    match action:
        case ClientRequestAction():
            return ClientRequest(
                action.session_id,
                action.request_id,
                action.lowest_pending_request_id,
                action.payload,
                created_at,
            )
        case CreateSessionAction():
            return CreateSession(action.session_id, action.capabilities, created_at)
        case ServerRequestAckAction():
            return ServerRequestAck(action.session_id, action.request_id, created_at)
        case ExpireSessionAction():
            return SessionExpired(action.session_id, created_at)
    return None


def to_server_actions(
    result: SessionResult, capabilities: dict[str, str] | None = None
) -> list[ServerAction]:
    """What the registry must hear after one command was applied (``capabilities``: the
    ``CreateSession`` command's, echoed in its confirmation)."""
    out: list[ServerAction]
    if type(result) is RequestResult:  # one per client request: plain attribute reads
        sid, rid, response = result.session_id, result.request_id, result.response
        if type(response) is bytes:
            out = [SendResponse(sid, rid, response)]
        elif isinstance(response, ApplicationError):
            failed = ErrorReason.APPLICATION_ERROR
            out = [SendRequestError(sid, rid, failed, response.message)]
        elif isinstance(response, ResponseEvicted):
            out = [SendRequestError(sid, rid, ErrorReason.RESPONSE_EVICTED, "")]
        else:
            out = [SendRequestError(sid, rid, ErrorReason.SESSION_EXPIRED, "")]
        if result.server_requests:
            out.extend(_sends(result.server_requests))
        return out
    envelopes: tuple[ServerRequestEnvelope, ...]
    match result:
        case SessionCreated(sid, envelopes):
            out = [SessionCreationConfirmed(sid, dict(capabilities or {}))]
        case SessionRejected(sid, reason):
            return [RejectSession(sid, RejectReason.REJECTED_BY_APPLICATION, reason)]
        case SessionRemovedResult(sid, _, envelopes):
            out = [SessionRemoved(sid)]
        case RetryBatch(envelopes) | InternalApplied(_, envelopes):
            out = []
        case ServerRequestsAcked():
            return []
    out.extend(_sends(envelopes))
    return out


def _sends(envelopes: tuple[ServerRequestEnvelope, ...]) -> list[ServerAction]:
    return [SendServerRequest(e.session_id, e.request_id, e.payload) for e in envelopes]
