"""The client-server protocol: the messages a client and a node's registry exchange.

Every message is a codec-registered frozen dataclass (tags 200-299), so a frame is the
versioned msgpack array of :mod:`protocol.codec` and decoding untrusted bytes gives a
well-typed message or :class:`~protocol.codec.ProtocolError`, nothing else.

A connection carries at most one session at a time: the session is bound to the
connection by ``CreateSession``/``ContinueSession``, so the messages that act within a
session (``ClientRequest``, ``ServerRequestAck``, ...) need not name it. Leader hints
are the leader's *client* address (what a client connects to), or ``None`` when the
node does not know a leader.

Client -> server: :class:`CreateSession`, :class:`ContinueSession`, :class:`KeepAlive`,
:class:`ClientRequest`, :class:`Query`, :class:`ServerRequestAck`, :class:`CloseSession`.

Server -> client: :class:`SessionCreated`, :class:`SessionContinued`,
:class:`SessionRejected`, :class:`SessionClosed`, :class:`KeepAliveResponse`,
:class:`ClientResponse`, :class:`QueryResponse`, :class:`QueryError`,
:class:`RequestError`, :class:`ServerRequest`, :class:`NotLeader`.

Shared connections and batches (tags 241-242): one transport connection carries up to
``max_sessions_per_connection`` *channels* (0, 1, ...), each a logical connection with
the rules above (one session at a time). A frame is either one message (channel 0, the
format of every message above, unchanged) or a :class:`ClientBatch` /
:class:`ServerBatch` whose items are ``(channel, frame)`` pairs, each frame one message
as it would be sent alone. Many sessions of one client process then share one socket,
and everything queued for one connection in one turn travels as one frame (one
transport-thread turn, one pair of system calls) instead of one frame per message.
:func:`pack_batches` splits a run of items into frames under an item and a byte bound.
A channel is never reused by a client for another session on the same connection, so
a late answer to a session that left cannot reach another one.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from protocol.codec import (
    DEFAULT_MAX_FRAME_BYTES,
    WIRE_VERSION,
    ProtocolError,
    decode,
    message,
    unpack_frame,
)
from protocol.ids import RequestId, SessionId
from protocol.packing import packb

__all__ = [
    "BATCH_ITEM_OVERHEAD_BYTES",
    "CLIENT_BATCH_HEAD",
    "CLIENT_FRAME_TYPES",
    "CLIENT_MESSAGE_TYPES",
    "MAX_CHANNELS",
    "SERVER_BATCH_HEAD",
    "SERVER_FRAME_TYPES",
    "SERVER_MESSAGE_TYPES",
    "ClientBatch",
    "ClientMessage",
    "ClientRequest",
    "ClientResponse",
    "CloseReason",
    "CloseSession",
    "ContinueSession",
    "CreateSession",
    "ErrorReason",
    "KeepAlive",
    "KeepAliveResponse",
    "NotLeader",
    "Query",
    "QueryError",
    "QueryResponse",
    "RejectReason",
    "RequestError",
    "ServerBatch",
    "ServerMessage",
    "ServerRequest",
    "ServerRequestAck",
    "SessionClosed",
    "SessionContinued",
    "SessionCreated",
    "SessionRejected",
    "decode_client_frame",
    "decode_client_message",
    "decode_server_frame",
    "decode_server_message",
    "pack_batches",
]

#: Channels one connection can carry at most (a channel number fits in a byte); a
#: server accepts channels below its ``max_sessions_per_connection``.
MAX_CHANNELS = 256
#: Bytes a batch adds around each item frame (array header, channel, bin header).
BATCH_ITEM_OVERHEAD_BYTES = 8
#: Bytes a batch frame adds around its items (version, tag, array headers).
_BATCH_OVERHEAD_BYTES = 16
_CLIENT_BATCH_TAG = 241
_SERVER_BATCH_TAG = 242


class RejectReason(enum.IntEnum):
    """Why a ``CreateSession`` or ``ContinueSession`` was refused."""

    #: The node lost leadership before the session could be created; see the hint.
    NOT_LEADER = 1
    #: ``ContinueSession`` of a session that expired or never existed. Terminal.
    SESSION_EXPIRED = 2
    #: The user state machine's ``on_session_created`` refused the session. Terminal.
    REJECTED_BY_APPLICATION = 3
    #: This connection created too many sessions (a limit against hostile clients).
    TOO_MANY_SESSIONS = 4
    #: The node holds as many sessions as it is configured for; try again later.
    OVERLOADED = 5
    #: The request was malformed (e.g. oversized capabilities).
    INVALID = 6


class CloseReason(enum.IntEnum):
    """Why the server ended a connection's session binding."""

    #: The client sent ``CloseSession``.
    CLIENT_REQUESTED = 1
    #: The node stepped down; reconnect to the hint and continue the session.
    NOT_LEADER = 2
    #: The session expired (committed through Raft). Terminal.
    SESSION_EXPIRED = 3
    #: The session was continued on another connection.
    MOVED = 4
    #: A session message arrived on a connection that has no session bound: continue it.
    NO_SESSION = 5
    #: The client sent a frame that is not a valid message; the connection is dropped.
    PROTOCOL_ERROR = 6
    #: The node is shutting down.
    SHUTDOWN = 7


class ErrorReason(enum.IntEnum):
    """Why a ``ClientRequest`` or ``Query`` failed."""

    #: The request's session does not exist (expired). Terminal for the session.
    SESSION_EXPIRED = 1
    #: The response was dropped from the cache (the request id is below the session's
    #: lowest pending id): the outcome is unknowable in this session.
    RESPONSE_EVICTED = 2
    #: The node is not (or no longer) the leader; retry at the hint. Never reaches users.
    NOT_LEADER = 3
    #: The user state machine failed on this command (the failure is cached like a
    #: response, so a retry gets the same error).
    APPLICATION_ERROR = 4
    #: The payload exceeds the node's size limit. Not proposed.
    TOO_LARGE = 5
    #: The node is overloaded. Not proposed.
    OVERLOADED = 6
    #: The session has too many requests in flight. Not proposed.
    TOO_MANY_PENDING = 7
    #: The connection has no session bound: continue the session, then resend.
    NO_SESSION = 8
    #: The request is malformed (e.g. lowest pending id above the request id). Not proposed.
    INVALID = 9


# ---------------------------------------------------------------- client -> server


@message(tag=200)
@dataclass(frozen=True, slots=True)
class CreateSession:
    """Open a new session on this connection.

    ``nonce`` identifies the attempt: a resend with the same nonce on the same
    connection does not create a second session, and the answer echoes it so the
    client can ignore answers to attempts it has given up on.
    """

    capabilities: dict[str, str]
    nonce: bytes


@message(tag=201)
@dataclass(frozen=True, slots=True)
class ContinueSession:
    """Bind an existing session to this connection (after a reconnect or failover)."""

    session_id: SessionId
    nonce: bytes


@message(tag=202)
@dataclass(frozen=True, slots=True)
class KeepAlive:
    """Keep the session alive while the client has nothing else to send.

    ``session_id`` lets the server notice a connection that lost its binding (it answers
    ``SessionClosed(NO_SESSION)``); ``sent_at_ms`` is the client's clock, echoed in the
    response so the client can measure round trips (the server never interprets it).
    """

    session_id: SessionId
    sent_at_ms: int


@message(tag=203)
@dataclass(frozen=True, slots=True)
class ClientRequest:
    """A command, numbered from 1 within the session, with the session's lowest pending id.

    ``lowest_pending_request_id`` lets the server drop cached responses below it.
    """

    request_id: RequestId
    lowest_pending_request_id: RequestId
    payload: bytes


@message(tag=204)
@dataclass(frozen=True, slots=True)
class Query:
    """A linearizable read, not logged; the answer echoes ``correlation_id``."""

    correlation_id: int
    payload: bytes


@message(tag=205)
@dataclass(frozen=True, slots=True)
class ServerRequestAck:
    """Cumulative acknowledgement: every server request with id <= ``request_id`` is done."""

    request_id: RequestId


@message(tag=206)
@dataclass(frozen=True, slots=True)
class CloseSession:
    """End the session for good (the server expires it through Raft)."""


# ---------------------------------------------------------------- server -> client


@message(tag=230)
@dataclass(frozen=True, slots=True)
class SessionCreated:
    """The session exists and is bound to this connection.

    ``max_payload_bytes``: the node's payload limit (0: not announced); the client
    fails larger commands and queries locally (``TOO_LARGE``) from then on, since a
    frame over the node's limit would be dropped unanswered.
    """

    session_id: SessionId
    nonce: bytes
    max_payload_bytes: int = 0


@message(tag=231)
@dataclass(frozen=True, slots=True)
class SessionContinued:
    """The session is bound to this connection (``max_payload_bytes`` as in
    :class:`SessionCreated`)."""

    nonce: bytes
    max_payload_bytes: int = 0


@message(tag=232)
@dataclass(frozen=True, slots=True)
class SessionRejected:
    """A refused ``CreateSession``/``ContinueSession``.

    Beyond reason and hint it carries the attempt's ``nonce`` (so a late rejection of an
    abandoned attempt is recognisable) and a human-readable ``detail`` (e.g. the
    application's reason for refusing a session).
    """

    reason: RejectReason
    leader_hint: str | None
    nonce: bytes
    detail: str


@message(tag=233)
@dataclass(frozen=True, slots=True)
class SessionClosed:
    """The server unbound the connection's session (see :class:`CloseReason`)."""

    reason: CloseReason
    leader_hint: str | None


@message(tag=234)
@dataclass(frozen=True, slots=True)
class KeepAliveResponse:
    """Answer to :class:`KeepAlive`, echoing its ``sent_at_ms``."""

    sent_at_ms: int


@message(tag=235)
@dataclass(frozen=True, slots=True)
class ClientResponse:
    request_id: RequestId
    payload: bytes


@message(tag=236)
@dataclass(frozen=True, slots=True)
class QueryResponse:
    correlation_id: int
    payload: bytes


@message(tag=237)
@dataclass(frozen=True, slots=True)
class RequestError:
    """A ``ClientRequest`` failed; ``leader_hint`` is set for ``NOT_LEADER``."""

    request_id: RequestId
    reason: ErrorReason
    detail: str
    leader_hint: str | None


@message(tag=238)
@dataclass(frozen=True, slots=True)
class ServerRequest:
    """A server-initiated request, numbered per session from 1; the client acks it."""

    request_id: RequestId
    payload: bytes


@message(tag=239)
@dataclass(frozen=True, slots=True)
class NotLeader:
    """The one answer a non-leader gives to any client message.

    Not in DESIGN.md's list: a follower's registry keeps no sessions, so instead of a
    per-message variant (reject, close, request error) it answers every message with
    this and the client reconnects to ``leader_hint`` (or the next member when ``None``).
    """

    leader_hint: str | None


@message(tag=240)
@dataclass(frozen=True, slots=True)
class QueryError:
    """A ``Query`` failed (not in DESIGN.md's list, which has no way to fail a query).

    Same reasons as :class:`RequestError`: ``NOT_LEADER`` (retry elsewhere),
    ``TOO_LARGE``, ``OVERLOADED``, ``APPLICATION_ERROR``...
    """

    correlation_id: int
    reason: ErrorReason
    detail: str
    leader_hint: str | None


# ---------------------------------------------------------------- batches


@message(tag=_CLIENT_BATCH_TAG)
@dataclass(frozen=True, slots=True)
class ClientBatch:
    """Several client messages in one frame: ``(channel, frame)`` pairs, in order.

    Each ``frame`` is one client message encoded as if sent alone; ``channel`` names
    the logical connection (0 <= channel < the server's ``max_sessions_per_connection``)
    it belongs to. The server handles the items in order, each exactly as if it had
    arrived alone on its channel; a bad item costs only its channel (a typed
    ``SessionClosed(PROTOCOL_ERROR)`` on it), a bad batch (too many items, a channel
    outside 0..255) the whole connection. An item on a channel beyond the server's
    limit is refused (``SessionRejected(TOO_MANY_SESSIONS)``, or
    ``SessionClosed(NO_SESSION)``): the client backs off and takes a fresh connection.
    A single message on channel 0 is sent alone.
    """

    items: tuple[tuple[int, bytes], ...]


@message(tag=_SERVER_BATCH_TAG)
@dataclass(frozen=True, slots=True)
class ServerBatch:
    """Several server messages in one frame, for the channels of one connection, in
    order (see :class:`ClientBatch`). A single message for channel 0 is sent alone."""

    items: tuple[tuple[int, bytes], ...]


ClientMessage = (
    CreateSession
    | ContinueSession
    | KeepAlive
    | ClientRequest
    | Query
    | ServerRequestAck
    | CloseSession
)
ServerMessage = (
    SessionCreated
    | SessionContinued
    | SessionRejected
    | SessionClosed
    | KeepAliveResponse
    | ClientResponse
    | QueryResponse
    | QueryError
    | RequestError
    | ServerRequest
    | NotLeader
)
CLIENT_MESSAGE_TYPES: tuple[type[Any], ...] = (
    CreateSession,
    ContinueSession,
    KeepAlive,
    ClientRequest,
    Query,
    ServerRequestAck,
    CloseSession,
)
SERVER_MESSAGE_TYPES: tuple[type[Any], ...] = (
    SessionCreated,
    SessionContinued,
    SessionRejected,
    SessionClosed,
    KeepAliveResponse,
    ClientResponse,
    QueryResponse,
    QueryError,
    RequestError,
    ServerRequest,
    NotLeader,
)


#: What a client frame may be: one message (channel 0) or a batch.
CLIENT_FRAME_TYPES: tuple[type[Any], ...] = (*CLIENT_MESSAGE_TYPES, ClientBatch)
#: What a server frame may be: one message (channel 0) or a batch.
SERVER_FRAME_TYPES: tuple[type[Any], ...] = (*SERVER_MESSAGE_TYPES, ServerBatch)


#: Arrays and maps in a frame from a client hold at most this many items by default
#: (batches hold at most ``max_batch_items`` of the registry; see ``codec.decode``).
MAX_CLIENT_FRAME_ITEMS = 1024


def decode_client_message(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    max_items: int = MAX_CLIENT_FRAME_ITEMS,
) -> ClientMessage:
    """Decode a frame a client sent; anything else (or any garbage) is a ProtocolError."""
    msg: ClientMessage = decode(
        data, CLIENT_MESSAGE_TYPES, max_bytes=max_bytes, max_items=max_items
    )
    return msg


def decode_server_message(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_FRAME_BYTES
) -> ServerMessage:
    """Decode a frame a server sent; anything else (or any garbage) is a ProtocolError."""
    msg: ServerMessage = decode(data, SERVER_MESSAGE_TYPES, max_bytes=max_bytes)
    return msg


def decode_client_frame(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    max_items: int = MAX_CLIENT_FRAME_ITEMS,
) -> ClientMessage | ClientBatch:
    """Decode a client frame: one message (for channel 0) or a batch (items not yet
    decoded: each is checked on its own, so a bad one costs only its channel). No
    array or map in it may hold more than ``max_items`` items (checked while
    unpacking, so a hostile frame is refused before it costs much)."""
    if data[:4] == CLIENT_BATCH_HEAD:
        return ClientBatch(_batch_items(data, max_bytes, max_items))
    msg: ClientMessage | ClientBatch = decode(
        data, CLIENT_FRAME_TYPES, max_bytes=max_bytes, max_items=max_items
    )
    return msg


def decode_server_frame(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_FRAME_BYTES
) -> ServerMessage | ServerBatch:
    """Decode a server frame: one message (for channel 0) or a batch of item frames."""
    if data[:4] == SERVER_BATCH_HEAD:
        return ServerBatch(_batch_items(data, max_bytes, None))
    msg: ServerMessage | ServerBatch = decode(data, SERVER_FRAME_TYPES, max_bytes=max_bytes)
    return msg


#: How a batch frame starts as this module encodes it (``[version, tag, items]``): such
#: frames take a direct path (the generic codec checks each item's fields one by one,
#: which cost as much as decoding the items); any other spelling takes the codec's.
#: A shell that decodes frames itself (with more types) tests for it first.
CLIENT_BATCH_HEAD = bytes((0x93, WIRE_VERSION, 0xCC, _CLIENT_BATCH_TAG))
SERVER_BATCH_HEAD = bytes((0x93, WIRE_VERSION, 0xCC, _SERVER_BATCH_TAG))


def _batch_items(
    data: bytes, max_bytes: int, max_items: int | None
) -> tuple[tuple[int, bytes], ...]:
    """The items of a batch frame, checked exactly as the codec would check them."""
    limit = None if max_items is None else max(max_items, 3)  # the frame is a 3-array
    raw = unpack_frame(data, max_bytes=max_bytes, max_items=limit)
    if type(raw) is not list or len(raw) != 3 or type(raw[2]) is not list:
        raise ProtocolError("a batch is [version, tag, [[channel, frame], ...]]")
    items = []
    for item in raw[2]:
        if type(item) is not list or len(item) != 2:
            raise ProtocolError("a batch item is [channel, frame]")
        channel, frame = item
        if type(channel) is not int or type(frame) is not bytes:
            raise ProtocolError("a batch item is [int, bytes]")
        items.append((channel, frame))
    return tuple(items)


def pack_batches(
    items: Sequence[tuple[int, bytes]],
    batch: type[ClientBatch] | type[ServerBatch],
    *,
    max_items: int,
    max_bytes: int,
) -> list[bytes]:
    """The frames that carry ``items`` (``(channel, encoded message)``) in order.

    Consecutive items share a ``batch`` frame while it holds at most ``max_items`` items
    and ``max_bytes`` bytes; an item that does not fit with others goes alone. A frame
    of a single item for channel 0 is that item itself (the unbatched format), so a
    connection with one session sends exactly the frames it always sent.
    """
    if max_items < 1:
        raise ValueError("max_items must be >= 1")
    frames: list[bytes] = []
    chunk: list[tuple[int, bytes]] = []
    size = _BATCH_OVERHEAD_BYTES
    for item in items:
        cost = len(item[1]) + BATCH_ITEM_OVERHEAD_BYTES
        if chunk and (len(chunk) >= max_items or size + cost > max_bytes):
            frames.append(_one_frame(chunk, batch))
            chunk, size = [], _BATCH_OVERHEAD_BYTES
        chunk.append(item)
        size += cost
    if chunk:
        frames.append(_one_frame(chunk, batch))
    return frames


def _one_frame(
    chunk: list[tuple[int, bytes]], batch: type[ClientBatch] | type[ServerBatch]
) -> bytes:
    if len(chunk) == 1 and chunk[0][0] == 0:
        return chunk[0][1]
    # what ``encode(batch(tuple(chunk)))`` gives (the golden bytes pin it), directly
    tag = _CLIENT_BATCH_TAG if batch is ClientBatch else _SERVER_BATCH_TAG
    return packb([WIRE_VERSION, tag, chunk])
