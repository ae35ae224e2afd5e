"""The link between the client registry and the consensus/session side of a node.

:class:`RaftAction`\\ s go from the registry to consensus (things to propose or to read);
:class:`ServerAction`\\ s come back from the session state machine and consensus (things
to tell clients, and role changes). They are codec-registered (tags 300-399) so the link
can run over ZeroMQ and a registry can live in its own process; in one process they are
plain mailbox messages.

Payloads stay encoded bytes here: the session side decodes them before user code sees
them, and the registry never looks inside.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from protocol.codec import DEFAULT_MAX_FRAME_BYTES, decode, message
from protocol.ids import MemberId, RequestId, SessionId
from protocol.wire import ErrorReason, RejectReason

__all__ = [
    "RAFT_ACTION_TYPES",
    "SERVER_ACTION_TYPES",
    "ClientRequestAction",
    "CreateSessionAction",
    "ExpireSessionAction",
    "LeadershipChanged",
    "NodeRole",
    "QueryAction",
    "RaftAction",
    "RejectSession",
    "SendQueryError",
    "SendQueryResponse",
    "SendRequestError",
    "SendResponse",
    "SendServerRequest",
    "ServerAction",
    "ServerRequestAckAction",
    "SessionCreationConfirmed",
    "SessionRemoved",
    "SessionsSnapshot",
    "decode_raft_action",
    "decode_server_action",
]


class NodeRole(enum.IntEnum):
    """A node's Raft role as the registry needs to know it."""

    FOLLOWER = 0
    CANDIDATE = 1
    LEADER = 2
    LEARNER = 3


# ------------------------------------------------------------ registry -> consensus


@message(tag=300)
@dataclass(frozen=True, slots=True)
class CreateSessionAction:
    """Propose a session; the id was drawn by the registry's shell (random hex)."""

    session_id: SessionId
    capabilities: dict[str, str]


@message(tag=301)
@dataclass(frozen=True, slots=True)
class ClientRequestAction:
    """Propose a client command for exactly-once application."""

    session_id: SessionId
    request_id: RequestId
    lowest_pending_request_id: RequestId
    payload: bytes


@message(tag=302)
@dataclass(frozen=True, slots=True)
class ServerRequestAckAction:
    """Propose a cumulative acknowledgement of a session's server requests."""

    session_id: SessionId
    request_id: RequestId


@message(tag=303)
@dataclass(frozen=True, slots=True)
class ExpireSessionAction:
    """Propose the end of a session (deadline passed on the leader, or CloseSession)."""

    session_id: SessionId


@message(tag=304)
@dataclass(frozen=True, slots=True)
class QueryAction:
    """Run a linearizable read at a read index.

    Queries need no session, so the answer is routed by ``connection`` (the registry's
    routing id for the client connection, opaque to consensus and echoed back).
    """

    connection: bytes
    correlation_id: int
    payload: bytes


# ---------------------------------------------------- session/consensus -> registry


@message(tag=320)
@dataclass(frozen=True, slots=True)
class SendResponse:
    session_id: SessionId
    request_id: RequestId
    payload: bytes


@message(tag=321)
@dataclass(frozen=True, slots=True)
class SendServerRequest:
    session_id: SessionId
    request_id: RequestId
    payload: bytes


@message(tag=322)
@dataclass(frozen=True, slots=True)
class SendRequestError:
    """A request failed (session expired, response evicted, not leader, overloaded...)."""

    session_id: SessionId
    request_id: RequestId
    reason: ErrorReason
    detail: str


@message(tag=323)
@dataclass(frozen=True, slots=True)
class SessionCreationConfirmed:
    """A ``CreateSession`` command was applied and the application accepted it.

    Carries the capabilities so that a registry that did not propose the session (a new
    leader applying its predecessor's entries) can still track and expire it.
    """

    session_id: SessionId
    capabilities: dict[str, str]


@message(tag=324)
@dataclass(frozen=True, slots=True)
class RejectSession:
    """A session was not created (refused by the application, or the proposal failed)."""

    session_id: SessionId
    reason: RejectReason
    detail: str


@message(tag=325)
@dataclass(frozen=True, slots=True)
class SendQueryResponse:
    connection: bytes
    correlation_id: int
    payload: bytes


@message(tag=326)
@dataclass(frozen=True, slots=True)
class SendQueryError:
    """A query failed (not in DESIGN.md's list: a read index can be lost with leadership)."""

    connection: bytes
    correlation_id: int
    reason: ErrorReason
    detail: str


@message(tag=327)
@dataclass(frozen=True, slots=True)
class LeadershipChanged:
    """This node's role or its view of the leader changed.

    ``leader_client_address`` is where clients reach the leader (the hint the registry
    hands out); ``None`` when no leader is known.
    """

    role: NodeRole
    leader_id: MemberId | None
    leader_client_address: str | None
    term: int


@message(tag=328)
@dataclass(frozen=True, slots=True)
class SessionsSnapshot:
    """Every live session with its capabilities, read once a new leader has applied
    everything committed before its term (so nothing created earlier is missing).

    ``term`` is the leadership term it was taken for: a snapshot that arrives after the
    node stepped down (or up again in a later term) is ignored.
    """

    term: int
    sessions: dict[SessionId, dict[str, str]]


@message(tag=329)
@dataclass(frozen=True, slots=True)
class SessionRemoved:
    """A ``SessionExpired`` command was applied: the session is gone for good.

    Not in DESIGN.md's list: the registry needs it to tell a still-connected client that
    its session expired only once the expiry is committed (a proposal can be lost with
    leadership, and then the session lives on).
    """

    session_id: SessionId


RaftAction = (
    CreateSessionAction
    | ClientRequestAction
    | ServerRequestAckAction
    | ExpireSessionAction
    | QueryAction
)
ServerAction = (
    SendResponse
    | SendServerRequest
    | SendRequestError
    | SessionCreationConfirmed
    | RejectSession
    | SendQueryResponse
    | SendQueryError
    | LeadershipChanged
    | SessionsSnapshot
    | SessionRemoved
)
RAFT_ACTION_TYPES: tuple[type[Any], ...] = (
    CreateSessionAction,
    ClientRequestAction,
    ServerRequestAckAction,
    ExpireSessionAction,
    QueryAction,
)
SERVER_ACTION_TYPES: tuple[type[Any], ...] = (
    SendResponse,
    SendServerRequest,
    SendRequestError,
    SessionCreationConfirmed,
    RejectSession,
    SendQueryResponse,
    SendQueryError,
    LeadershipChanged,
    SessionsSnapshot,
    SessionRemoved,
)


def decode_raft_action(data: bytes, *, max_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> RaftAction:
    """Decode a RaftAction frame; anything else is a ProtocolError."""
    action: RaftAction = decode(data, RAFT_ACTION_TYPES, max_bytes=max_bytes)
    return action


def decode_server_action(data: bytes, *, max_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> ServerAction:
    """Decode a ServerAction frame; anything else is a ProtocolError."""
    action: ServerAction = decode(data, SERVER_ACTION_TYPES, max_bytes=max_bytes)
    return action
