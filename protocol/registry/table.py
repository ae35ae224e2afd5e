"""The connection table's records and bookkeeping, shared by the registry's handlers.

:class:`ConnectionTable` holds the state (sessions, connections, pending creations,
waiting continues, expiry deadlines) and the operations that keep its invariants: a
session is bound to at most one connection and a connection to at most one session,
and connections that hold nothing are forgotten. :class:`~protocol.registry.Registry`
adds the input handlers on top.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from protocol.actions import ExpireSessionAction, NodeRole
from protocol.ids import RequestId, SessionId
from protocol.registry.types import (
    RegistryConfig,
    RegistryEffects,
    RegistryStatus,
    SessionIdSource,
)
from protocol.wire import (
    CloseReason,
    ContinueSession,
    ErrorReason,
    RejectReason,
    ServerMessage,
    ServerRequest,
    SessionClosed,
    SessionContinued,
    SessionRejected,
)

__all__ = ["ConnectionRecord", "ConnectionTable", "PendingCreation", "SessionRecord"]


@dataclass(slots=True)
class SessionRecord:
    """A live session: its binding, deadline, requests in flight, held server requests."""

    session_id: SessionId
    capabilities: dict[str, str]
    deadline_ms: int
    connection: bytes | None = None
    expiring: bool = False
    in_flight: set[RequestId] = field(default_factory=set)
    acked: int = 0
    held: dict[RequestId, bytes] = field(default_factory=dict)


@dataclass(slots=True)
class ConnectionRecord:
    """A client connection that holds something (a session, creations, queries)."""

    routing_id: bytes
    session_id: SessionId | None = None
    sessions_created: int = 0
    creating: dict[bytes, SessionId] = field(default_factory=dict)  # nonce -> session
    waiting: ContinueSession | None = None
    queries: set[int] = field(default_factory=set)

    def idle(self) -> bool:
        return not (self.session_id or self.creating or self.waiting or self.queries)


@dataclass(frozen=True, slots=True)
class PendingCreation:
    """A proposed session waiting for the state machine: who asked, with which nonce."""

    connection: bytes
    nonce: bytes


class ConnectionTable:
    """The state of one node's connection table and the operations that keep it sound."""

    def __init__(self, config: RegistryConfig, new_session_id: SessionIdSource) -> None:
        self._config = config
        self._new_session_id = new_session_id
        self._role = NodeRole.FOLLOWER
        self._term = 0
        self._hint: str | None = None
        self._loaded = False
        self._sessions: dict[SessionId, SessionRecord] = {}
        self._connections: dict[bytes, ConnectionRecord] = {}
        self._pending: dict[SessionId, PendingCreation] = {}
        self._waiting: dict[SessionId, set[bytes]] = {}
        self._deadlines: list[tuple[int, SessionId]] = []  # one entry per live session
        self._queries = 0
        self._fx = RegistryEffects()

    # ------------------------------------------------------------------ inspection

    @property
    def config(self) -> RegistryConfig:
        """The limits and timeouts this table enforces."""
        return self._config

    @property
    def is_leader(self) -> bool:
        return self._role is NodeRole.LEADER

    def session_of(self, connection: bytes) -> SessionId | None:
        """The session bound to ``connection``, if any."""
        conn = self._connections.get(connection)
        return None if conn is None else conn.session_id

    def connection_of(self, session_id: SessionId) -> bytes | None:
        """The connection ``session_id`` is bound to, if any."""
        s = self._sessions.get(session_id)
        return None if s is None else s.connection

    def sessions(self) -> frozenset[SessionId]:
        """Every session this registry tracks (live or being expired)."""
        return frozenset(self._sessions)

    def is_expiring(self, session_id: SessionId) -> bool:
        s = self._sessions.get(session_id)
        return s is not None and s.expiring

    def status(self) -> RegistryStatus:
        return RegistryStatus(
            role=self._role,
            term=self._term,
            leader_hint=self._hint,
            sessions_loaded=self._loaded,
            sessions=len(self._sessions),
            bound_sessions=sum(1 for s in self._sessions.values() if s.connection is not None),
            expiring_sessions=sum(1 for s in self._sessions.values() if s.expiring),
            pending_creations=len(self._pending),
            connections=len(self._connections),
            pending_queries=self._queries,
        )

    # ------------------------------------------------------------------ operations

    def _add_session(self, sid: SessionId, caps: dict[str, str], now_ms: int) -> SessionRecord:
        s = SessionRecord(sid, dict(caps), now_ms + self._config.session_timeout_ms)
        self._sessions[sid] = s
        heapq.heappush(self._deadlines, (s.deadline_ms, sid))
        return s

    def _touch(self, s: SessionRecord, now_ms: int) -> None:
        s.deadline_ms = max(s.deadline_ms, now_ms + self._config.session_timeout_ms)

    def _expire(self, s: SessionRecord) -> None:
        if not s.expiring:
            s.expiring = True
            self._fx.propose.append(ExpireSessionAction(s.session_id))

    def _bind(
        self, conn: ConnectionRecord, s: SessionRecord, reply: ServerMessage, now_ms: int
    ) -> None:
        """Bind ``s`` to ``conn`` (unbinding both sides' old partners), answer, flush held."""
        if conn.session_id is not None and conn.session_id != s.session_id:
            self._sessions[conn.session_id].connection = None
        if s.connection is not None and s.connection != conn.routing_id:
            other = self._connections[s.connection]
            other.session_id = None
            self._send(other.routing_id, SessionClosed(CloseReason.MOVED, None))
            self._prune(other)
        s.connection = conn.routing_id
        conn.session_id = s.session_id
        self._touch(s, now_ms)
        self._send(conn.routing_id, reply)
        for rid in sorted(s.held):
            self._send(conn.routing_id, ServerRequest(rid, s.held[rid]))
        s.held.clear()

    def _resolve_waiting(self, sid: SessionId, now_ms: int) -> None:
        """Answer the ContinueSessions that waited for ``sid``'s fate, if it is known."""
        s = self._sessions.get(sid)
        if s is not None and s.expiring:
            return
        for routing_id in sorted(self._waiting.pop(sid, ())):
            conn = self._connections[routing_id]
            msg = conn.waiting
            assert msg is not None
            conn.waiting = None
            if s is None:
                self._reject(routing_id, RejectReason.SESSION_EXPIRED, msg.nonce)
            else:
                self._bind(
                    conn, s, SessionContinued(msg.nonce, self._config.max_payload_bytes), now_ms
                )
            self._prune(conn)

    def _stop_waiting(self, conn: ConnectionRecord) -> None:
        if conn.waiting is not None:
            sid = conn.waiting.session_id
            waiters = self._waiting[sid]
            waiters.discard(conn.routing_id)
            if not waiters:
                del self._waiting[sid]
            conn.waiting = None

    def _drop_connection(self, connection: bytes) -> None:
        conn = self._connections.get(connection)
        if conn is None:
            return
        self._stop_waiting(conn)
        if conn.session_id is not None:
            self._sessions[conn.session_id].connection = None
        self._queries -= len(conn.queries)
        del self._connections[connection]

    def _prune(self, conn: ConnectionRecord) -> None:
        """Forget a connection that holds nothing (a hostile client gains no memory)."""
        if conn.idle() and self._connections.get(conn.routing_id) is conn:
            del self._connections[conn.routing_id]

    def _reject(
        self, connection: bytes, reason: RejectReason, nonce: bytes, detail: str = ""
    ) -> None:
        self._send(connection, SessionRejected(reason, self._hint_for(reason), nonce, detail))

    def _hint_for(self, reason: ErrorReason | RejectReason) -> str | None:
        return self._hint if reason.name == "NOT_LEADER" else None

    def _send(self, connection: bytes, msg: ServerMessage) -> None:
        self._fx.send.append((connection, msg))

    def _take(self) -> RegistryEffects:
        fx, self._fx = self._fx, RegistryEffects()
        return fx
