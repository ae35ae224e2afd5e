"""The client connection table: sessions <-> connections, as a pure, deterministic core.

Inputs: client messages (with the connection's routing id), ticks, ``ServerAction``\\ s
(responses, server requests, session confirmations, role changes, the sessions loaded
on step-up). Output of every input: one :class:`RegistryEffects` batch (messages to
send, ``RaftAction``\\ s to propose, connections to close).

Rules (DESIGN.md, "RegistryActor"):

- Only the leader serves clients; a non-leader answers every message with
  ``NotLeader`` and the leader's client address, and keeps no client state.
- A session is bound to at most one connection and a connection to at most one session.
  ``CreateSession`` proposes a new session (pending by nonce until the session state
  machine confirms or rejects it); ``ContinueSession`` moves a session to this
  connection (the old one gets ``SessionClosed(MOVED)``).
- Any message on a bound connection refreshes the session's deadline. On the leader a
  session past its deadline gets one ``ExpireSessionAction``; the client learns of the
  expiry when it is committed (``SessionRemoved``), since a proposal can be lost with
  leadership. A ``ContinueSession`` of a session being expired, or (before the sessions
  are loaded on step-up) of an unknown one, waits for the outcome.
- On step-up the loaded sessions get fresh deadlines; on step-down every connection gets
  a ``NOT_LEADER`` answer with the new leader's hint and is closed.
- Server requests for a session without a connection are held (bounded) and sent when
  it is continued; beyond the bound the retry scheduler resends them later.
- A transport connection carries up to ``max_sessions_per_connection`` channels, each a
  connection in the sense above, keyed by :func:`~protocol.registry.frames.channel_key`
  (:meth:`Registry.on_routed`). A frame is one message (channel 0) or a
  ``ClientBatch``: a batch with too many items or a channel beyond 255 is a protocol
  error of the whole connection; a bad item costs only its channel, which gets
  ``SessionClosed(PROTOCOL_ERROR)`` and is forgotten; an item on a channel beyond
  ``max_sessions_per_connection`` gets ``SessionRejected(TOO_MANY_SESSIONS)`` (or
  ``SessionClosed(NO_SESSION)``) and leaves no state. The shell packs one turn's answers
  per routing id with :meth:`Registry.frames`.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from protocol.actions import (
    ClientRequestAction,
    CreateSessionAction,
    LeadershipChanged,
    NodeRole,
    QueryAction,
    RejectSession,
    SendQueryError,
    SendQueryResponse,
    SendRequestError,
    SendResponse,
    SendServerRequest,
    ServerAction,
    ServerRequestAckAction,
    SessionCreationConfirmed,
    SessionRemoved,
    SessionsSnapshot,
)
from protocol.codec import ProtocolError
from protocol.ids import RequestId, SessionId
from protocol.registry.frames import CHANNEL_BYTES, channel_key, pack_server_frames
from protocol.registry.table import ConnectionRecord, ConnectionTable, PendingCreation
from protocol.registry.types import RegistryEffects
from protocol.wire import (
    MAX_CHANNELS,
    ClientBatch,
    ClientMessage,
    ClientRequest,
    ClientResponse,
    CloseReason,
    CloseSession,
    ContinueSession,
    CreateSession,
    ErrorReason,
    KeepAlive,
    KeepAliveResponse,
    NotLeader,
    Query,
    QueryError,
    QueryResponse,
    RejectReason,
    RequestError,
    ServerMessage,
    ServerRequest,
    ServerRequestAck,
    SessionClosed,
    SessionContinued,
    SessionCreated,
    SessionRejected,
    decode_client_message,
)

__all__ = ["Registry"]

#: How often a colliding session id is redrawn before the creation is refused.
_ID_ATTEMPTS = 8


class Registry(ConnectionTable):
    """The connection table of one node. Not thread-safe: one actor owns it.

    ``Registry(config, new_session_id)``: ``new_session_id()`` draws a fresh session id
    (the shell passes random hex); every ``on_*`` method returns the effects to carry out.
    """

    # ------------------------------------------------------------------ inputs

    def on_routed(
        self, routing_id: bytes, msg: ClientMessage | ClientBatch, now_ms: int
    ) -> RegistryEffects:
        """Handle a decoded frame of the transport connection ``routing_id``: a single
        message belongs to channel 0; a batch's items to their channels, in order. (The
        shell decodes frames, within ``max_batch_frame_bytes`` and ``max_batch_items``;
        one that does not decode goes to :meth:`on_bad_connection`.)"""
        if not isinstance(msg, ClientBatch):
            return self.on_client_message(channel_key(routing_id, 0), msg, now_ms)
        items = msg.items
        if len(items) > self._config.max_batch_items or any(
            not 0 <= channel < MAX_CHANNELS for channel, _ in items
        ):
            return self.on_bad_connection(routing_id)
        channels = self._config.channels
        max_bytes = self._config.max_frame_bytes
        handle = self._handle
        for channel, data in items:
            key = routing_id + CHANNEL_BYTES[channel]  # channel_key (checked 0..255 above)
            try:
                item = decode_client_message(data, max_bytes=max_bytes)
            except ProtocolError:
                self._send(key, SessionClosed(CloseReason.PROTOCOL_ERROR, None))
                self._drop_connection(key)  # only this channel: the others are fine
                continue
            if channel < channels:
                handle(key, item, now_ms)
            else:
                self._beyond_limit(key, item)
        return self._take()

    def _beyond_limit(self, key: bytes, msg: ClientMessage) -> None:
        """A message on a channel beyond ``max_sessions_per_connection``: no state, a
        typed refusal (a client that shares connections more widely than this node
        allows backs off and takes a fresh connection)."""
        if not self.is_leader:
            self._send(key, NotLeader(self._hint))
        elif isinstance(msg, CreateSession | ContinueSession):
            detail = f"at most {self._config.channels} sessions per connection"
            self._reject(key, RejectReason.TOO_MANY_SESSIONS, msg.nonce, detail)
        else:
            self._send(key, SessionClosed(CloseReason.NO_SESSION, None))

    def on_bad_connection(self, routing_id: bytes) -> RegistryEffects:
        """The transport connection ``routing_id`` sent garbage: tell each of its channels
        (channel 0 always) why, forget them, and close the connection."""
        for channel in range(self._config.channels):
            key = channel_key(routing_id, channel)
            if channel == 0 or key in self._connections:
                self._send(key, SessionClosed(CloseReason.PROTOCOL_ERROR, None))
                self._drop_connection(key)
        self._fx.close.append(channel_key(routing_id, 0))
        return self._take()

    def frames(self, sends: Iterable[tuple[bytes, ServerMessage]]) -> list[tuple[bytes, bytes]]:
        """The ``(routing_id, frame)`` pairs that carry ``sends`` (keys made by
        :meth:`on_routed`): one frame per connection, within the batch bounds."""
        cfg = self._config
        return pack_server_frames(
            sends, max_items=cfg.max_batch_items, max_bytes=cfg.max_batch_bytes
        )

    def on_disconnect(self, connection: bytes) -> RegistryEffects:
        """The transport lost the connection: unbind its session (which may continue)."""
        self._drop_connection(connection)
        return self._take()

    def on_client_message(
        self, connection: bytes, msg: ClientMessage, now_ms: int
    ) -> RegistryEffects:
        """Handle one decoded client message from the connection ``connection``."""
        self._handle(connection, msg, now_ms)
        return self._take()

    def _handle(self, connection: bytes, msg: ClientMessage, now_ms: int) -> None:
        if self._role is not NodeRole.LEADER:
            self._send(connection, NotLeader(self._hint))
            return
        conn = self._connections.get(connection)
        if conn is None:
            conn = self._connections[connection] = ConnectionRecord(connection)
        sid = conn.session_id
        if sid is not None:
            # (``_touch``, inline: this runs for every message of every client)
            s = self._sessions[sid]
            deadline = now_ms + self._config.session_timeout_ms
            if deadline > s.deadline_ms:
                s.deadline_ms = deadline
            if sid and type(msg) is ClientRequest:  # nearly every message: commands
                self._client_request(conn, msg)
                return  # (a connection with a session is not idle: nothing to prune)
        match msg:
            case CreateSession():
                self._create(conn, msg)
            case ContinueSession():
                self._continue(conn, msg, now_ms)
            case KeepAlive():
                self._keep_alive(conn, msg)
            case ClientRequest():
                self._client_request(conn, msg)
            case Query():
                self._query(conn, msg)
            case ServerRequestAck():
                self._ack(conn, msg)
            case CloseSession():
                self._close_session(conn)
        self._prune(conn)

    def on_tick(self, now_ms: int) -> RegistryEffects:
        """Propose the expiry of every session past its deadline (leader only, once)."""
        if self.is_leader:
            heap = self._deadlines
            while heap and heap[0][0] <= now_ms:
                _, sid = heapq.heappop(heap)
                s = self._sessions.get(sid)
                if s is None or s.expiring:
                    continue
                if s.deadline_ms > now_ms:  # refreshed since: requeue at the new deadline
                    heapq.heappush(heap, (s.deadline_ms, sid))
                    continue
                self._expire(s)
        return self._take()

    def on_server_action(self, action: ServerAction, now_ms: int) -> RegistryEffects:
        """Handle an answer or notification from the session state machine or consensus."""
        self._server_action(action, now_ms)
        return self._take()

    def on_server_actions(self, actions: Iterable[ServerAction], now_ms: int) -> RegistryEffects:
        """Handle ``actions`` in order, exactly as one :meth:`on_server_action` each, and
        return their effects as one batch (in the order those calls would give them):
        the session actor answers a whole batch of commands in one message."""
        server_action = self._server_action
        for action in actions:
            server_action(action, now_ms)
        return self._take()

    def _server_action(self, action: ServerAction, now_ms: int) -> None:
        if type(action) is SendResponse:  # the answer to nearly every command
            if self._role is NodeRole.LEADER:
                self._respond(action.session_id, action.request_id, None, action)
            return
        if isinstance(action, LeadershipChanged):
            self._leadership(action)
        elif self.is_leader:
            match action:
                case SendResponse():
                    self._respond(action.session_id, action.request_id, None, action)
                case SendRequestError():
                    self._respond(action.session_id, action.request_id, action, None)
                case SendServerRequest():
                    self._server_request(action)
                case SessionCreationConfirmed():
                    self._confirmed(action, now_ms)
                case RejectSession():
                    self._rejected(action)
                case SendQueryResponse():
                    self._query_done(action.connection, action.correlation_id, action)
                case SendQueryError():
                    self._query_done(action.connection, action.correlation_id, action)
                case SessionsSnapshot():
                    self._load(action, now_ms)
                case SessionRemoved():
                    self._removed(action.session_id)

    # ------------------------------------------------------------------ client messages

    def _create(self, conn: ConnectionRecord, msg: CreateSession) -> None:
        self._stop_waiting(conn)
        if msg.nonce in conn.creating:
            return  # a resend: the first attempt's answer is on its way
        cfg = self._config
        reason: RejectReason | None = None
        if sum(len(k) + len(v) for k, v in msg.capabilities.items()) > cfg.max_payload_bytes:
            reason = RejectReason.INVALID
        elif conn.sessions_created >= cfg.max_sessions_per_connection:
            reason = RejectReason.TOO_MANY_SESSIONS
        elif not self._loaded or len(self._sessions) + len(self._pending) >= cfg.max_sessions:
            reason = RejectReason.OVERLOADED  # (not loaded: the session count is unknown)
        sid = self._draw_session_id() if reason is None else None
        if sid is None:
            self._reject(conn.routing_id, reason or RejectReason.OVERLOADED, msg.nonce)
            return
        conn.sessions_created += 1
        conn.creating[msg.nonce] = sid
        self._pending[sid] = PendingCreation(conn.routing_id, msg.nonce)
        self._fx.propose.append(CreateSessionAction(sid, dict(msg.capabilities)))

    def _draw_session_id(self) -> SessionId | None:
        for _ in range(_ID_ATTEMPTS):
            sid = self._new_session_id()
            if sid and sid not in self._sessions and sid not in self._pending:
                return sid
        return None

    def _continue(self, conn: ConnectionRecord, msg: ContinueSession, now_ms: int) -> None:
        self._stop_waiting(conn)
        s = self._sessions.get(msg.session_id)
        if s is None and self._loaded:
            self._reject(conn.routing_id, RejectReason.SESSION_EXPIRED, msg.nonce)
        elif s is None or s.expiring:  # the outcome is not known yet: wait for it
            conn.waiting = msg
            self._waiting.setdefault(msg.session_id, set()).add(conn.routing_id)
        else:
            self._bind(conn, s, SessionContinued(msg.nonce, self._config.max_payload_bytes), now_ms)

    def _keep_alive(self, conn: ConnectionRecord, msg: KeepAlive) -> None:
        if conn.session_id == msg.session_id:
            self._send(conn.routing_id, KeepAliveResponse(msg.sent_at_ms))
        else:
            self._send(conn.routing_id, SessionClosed(CloseReason.NO_SESSION, None))

    def _client_request(self, conn: ConnectionRecord, msg: ClientRequest) -> None:
        rid = msg.request_id
        lowest = msg.lowest_pending_request_id
        s = None if conn.session_id is None else self._sessions[conn.session_id]
        cfg = self._config
        reason: ErrorReason | None = None
        detail = ""
        if s is None:
            reason = ErrorReason.NO_SESSION
        elif len(msg.payload) > cfg.max_payload_bytes:
            reason = ErrorReason.TOO_LARGE
        elif not 1 <= lowest <= rid:
            reason = ErrorReason.INVALID
        elif rid in s.in_flight:
            return  # a resend of a request already proposed: its answer will come
        elif len(s.in_flight) >= cfg.max_pending_requests_per_session:
            reason = ErrorReason.TOO_MANY_PENDING
        elif rid - lowest >= cfg.max_cached_responses_per_session:
            reason, detail = ErrorReason.TOO_MANY_PENDING, "too many responses left cached"
        if reason is not None:
            self._send(conn.routing_id, RequestError(rid, reason, detail, None))
            return
        assert s is not None
        s.in_flight.add(rid)
        self._fx.propose.append(ClientRequestAction(s.session_id, rid, lowest, msg.payload))

    def _query(self, conn: ConnectionRecord, msg: Query) -> None:
        cid = msg.correlation_id
        reason: ErrorReason | None = None
        if len(msg.payload) > self._config.max_payload_bytes:
            reason = ErrorReason.TOO_LARGE
        elif cid in conn.queries:
            return  # a resend: the answer to the first one will come
        elif (
            len(conn.queries) >= self._config.max_pending_queries_per_connection
            or self._queries >= self._config.max_pending_queries
        ):
            reason = ErrorReason.OVERLOADED
        if reason is not None:
            self._send(conn.routing_id, QueryError(cid, reason, "", None))
            return
        conn.queries.add(cid)
        self._queries += 1
        self._fx.propose.append(QueryAction(conn.routing_id, cid, msg.payload))

    def _ack(self, conn: ConnectionRecord, msg: ServerRequestAck) -> None:
        if conn.session_id is None:
            self._send(conn.routing_id, SessionClosed(CloseReason.NO_SESSION, None))
            return
        s = self._sessions[conn.session_id]
        if msg.request_id > s.acked:  # acks are cumulative: only a higher one is news
            s.acked = msg.request_id
            self._fx.propose.append(ServerRequestAckAction(s.session_id, msg.request_id))

    def _close_session(self, conn: ConnectionRecord) -> None:
        self._stop_waiting(conn)
        if conn.session_id is None:
            self._send(conn.routing_id, SessionClosed(CloseReason.NO_SESSION, None))
            return
        s = self._sessions[conn.session_id]
        s.connection = conn.session_id = None
        self._send(conn.routing_id, SessionClosed(CloseReason.CLIENT_REQUESTED, None))
        self._expire(s)

    # ------------------------------------------------------------------ server actions

    def _respond(
        self,
        sid: SessionId,
        rid: RequestId,
        error: SendRequestError | None,
        ok: SendResponse | None,
    ) -> None:
        s = self._sessions.get(sid)
        if s is None:
            return
        s.in_flight.discard(rid)
        if s.connection is None:
            return  # the client resends after reconnecting and gets the cached answer
        out: ServerMessage
        if ok is not None:
            out = ClientResponse(rid, ok.payload)
        else:
            assert error is not None
            out = RequestError(rid, error.reason, error.detail, self._hint_for(error.reason))
        self._send(s.connection, out)

    def _server_request(self, action: SendServerRequest) -> None:
        s = self._sessions.get(action.session_id)
        if s is None or action.request_id <= s.acked:
            return
        if s.connection is not None:
            self._send(s.connection, ServerRequest(action.request_id, action.payload))
        elif action.request_id in s.held or len(s.held) < self._config.max_held_server_requests:
            s.held[action.request_id] = action.payload

    def _confirmed(self, action: SessionCreationConfirmed, now_ms: int) -> None:
        sid = action.session_id
        pending = self._pending.pop(sid, None)
        s = self._sessions.get(sid)
        if s is None:  # also sessions a predecessor proposed: track them so they expire
            s = self._add_session(sid, action.capabilities, now_ms)
        if pending is None:
            return
        conn = self._connections.get(pending.connection)
        if conn is not None and conn.creating.get(pending.nonce) == sid:
            del conn.creating[pending.nonce]
            self._bind(
                conn, s, SessionCreated(sid, pending.nonce, self._config.max_payload_bytes), now_ms
            )

    def _rejected(self, action: RejectSession) -> None:
        pending = self._pending.pop(action.session_id, None)
        if pending is None:
            return
        conn = self._connections.get(pending.connection)
        if conn is not None and conn.creating.get(pending.nonce) == action.session_id:
            del conn.creating[pending.nonce]
            self._reject(conn.routing_id, action.reason, pending.nonce, action.detail)
            self._prune(conn)

    def _query_done(
        self, connection: bytes, cid: int, action: SendQueryResponse | SendQueryError
    ) -> None:
        conn = self._connections.get(connection)
        if conn is None or cid not in conn.queries:
            return
        conn.queries.discard(cid)
        self._queries -= 1
        if isinstance(action, SendQueryResponse):
            self._send(connection, QueryResponse(cid, action.payload))
        else:
            hint = self._hint_for(action.reason)
            self._send(connection, QueryError(cid, action.reason, action.detail, hint))
        self._prune(conn)

    def _load(self, action: SessionsSnapshot, now_ms: int) -> None:
        if action.term != self._term or self._loaded:
            return
        for sid, caps in action.sessions.items():
            if sid not in self._sessions:
                self._add_session(sid, caps, now_ms)
        self._loaded = True
        for sid in list(self._waiting):
            self._resolve_waiting(sid, now_ms)

    def _removed(self, sid: SessionId) -> None:
        s = self._sessions.pop(sid, None)
        if s is not None and s.connection is not None:
            conn = self._connections[s.connection]
            conn.session_id = None
            self._send(conn.routing_id, SessionClosed(CloseReason.SESSION_EXPIRED, None))
            self._prune(conn)
        self._resolve_waiting(sid, 0)

    def _leadership(self, action: LeadershipChanged) -> None:
        same_term_leader = self.is_leader and action.term == self._term
        if self.is_leader and not (action.role is NodeRole.LEADER and same_term_leader):
            self._step_down(action.leader_client_address)
        self._hint = action.leader_client_address
        self._term = action.term
        if action.role is NodeRole.LEADER and not same_term_leader:
            self._loaded = False
        self._role = action.role

    def _step_down(self, hint: str | None) -> None:
        """Answer everything outstanding with NOT_LEADER, close every connection, forget."""
        for conn in self._connections.values():
            rid = conn.routing_id
            for nonce in conn.creating:
                self._send(rid, SessionRejected(RejectReason.NOT_LEADER, hint, nonce, ""))
            if conn.waiting is not None:
                nonce = conn.waiting.nonce
                self._send(rid, SessionRejected(RejectReason.NOT_LEADER, hint, nonce, ""))
            for cid in sorted(conn.queries):
                self._send(rid, QueryError(cid, ErrorReason.NOT_LEADER, "", hint))
            if conn.session_id is not None:
                self._send(rid, SessionClosed(CloseReason.NOT_LEADER, hint))
            self._fx.close.append(rid)
        self._sessions.clear()
        self._connections.clear()
        self._pending.clear()
        self._waiting.clear()
        self._deadlines.clear()
        self._queries = 0
        self._loaded = False
