"""The client's pending-request logic as a pure, deterministic core.

The shell (``actors.client.RaftClient``) owns the socket and the clock; it feeds this
core with user calls, server messages, connection events and ticks, and carries out the
returned :class:`ClientEffects`.

What the core guarantees:

- Request ids strictly increase from 1; every ``ClientRequest`` carries the lowest id
  still pending; a request completes at most once (later duplicates are ignored).
- After every (re)connect it creates or continues the session, then resends every
  pending request with its original id, in id order, and every pending query; on a
  live connection, whatever waited longer than ``resend_interval_ms`` is resent too.
- ``NotLeader`` (in any form) is never surfaced: the core reconnects to the hint, or to
  the next member round robin; after a whole round of failures it backs off.
- Server requests are delivered in id order, each id once, whatever duplicates or
  reordering the network does. They are acknowledged only once the shell reports them
  *handled* (:meth:`ClientSessionCore.on_server_requests_handled`), so a request
  whose handler never ran (crash, close) is resent by the cluster, not lost. Acks are
  cumulative (the highest id handled), monotone, and repeated when a duplicate shows
  the server missed one, and after every (re)connect.
- Failures are typed (:class:`SessionExpiredError`, :class:`ResponseEvictedError`,
  :class:`RequestFailedError`, :class:`RequestTimeoutError` only after the user's
  deadline, :class:`ClientClosedError`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from protocol.client.inbox import DeadlineQueue, ServerRequestInbox
from protocol.client.types import (
    ClientClosedError,
    ClientConfig,
    ClientEffects,
    ClientError,
    ClientPhase,
    Completion,
    QueryCompletion,
    RequestFailedError,
    RequestTimeoutError,
    ResponseEvictedError,
    SessionExpiredError,
    SessionRejectedError,
)
from protocol.ids import RequestId, SessionId
from protocol.wire import (
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
)

__all__ = ["ClientSessionCore"]

_REQUEST, _QUERY = 0, 1
_CONNECTED = (ClientPhase.HANDSHAKING, ClientPhase.ACTIVE)
_TERMINAL = (ClientPhase.FAILED, ClientPhase.CLOSED)
#: Phases that end at ``_timer_ms`` (a connect or handshake timeout, a backoff).
_TIMED = (ClientPhase.CONNECTING, ClientPhase.HANDSHAKING, ClientPhase.BACKOFF)
#: Errors for requests the server did not propose because it is busy: retried later.
_TRANSIENT = (ErrorReason.OVERLOADED, ErrorReason.TOO_MANY_PENDING)


def _expired() -> ClientError:
    return SessionExpiredError("session expired")


@dataclass(slots=True)
class _Pending:
    payload: bytes
    deadline_ms: int | None
    sent_ms: int = 0
    #: Sent on the current session binding (so it counts against the window).
    sent: bool = False


class ClientSessionCore:
    """One client's session, pending requests, queries and server-request delivery."""

    def __init__(self, config: ClientConfig) -> None:
        self._config = config
        #: The client's payload limit, lowered to the node's once a node announces it.
        self._max_payload = config.max_payload_bytes
        self._phase = ClientPhase.IDLE
        self._session_id: SessionId | None = None
        self._member = 0
        self._address = config.members[0]
        self._attempts = 0  # connects since the session was last active
        self._nonce = b""
        self._attempt_no = 0
        self._timer_ms = 0  # connect/handshake deadline, or end of backoff
        self._next_keep_alive_ms = 0
        self._next_resend_ms = 0
        self._last_heard_ms = 0
        self._next_request = 1
        self._pending: dict[RequestId, _Pending] = {}  # ascending ids
        self._unsent: deque[RequestId] = deque()  # pending, not sent on this binding
        self._in_flight = 0  # pending and sent on this binding
        self._next_query = 1
        self._queries: dict[int, _Pending] = {}
        self._deadlines = DeadlineQueue()
        self._inbox = ServerRequestInbox(config.max_buffered_server_requests)
        self._handled = 0  # highest server request id the shell reported handled
        self._failure: Callable[[], ClientError] | None = None
        self._fx = ClientEffects()

    # ------------------------------------------------------------------ inspection

    @property
    def phase(self) -> ClientPhase:
        return self._phase

    @property
    def session_id(self) -> SessionId | None:
        return self._session_id

    @property
    def failure(self) -> ClientError | None:
        """Why the client is in a terminal phase (a fresh error object), else None."""
        return None if self._failure is None else self._failure()

    @property
    def address(self) -> str:
        """The member the client is connected (or connecting) to."""
        return self._address

    @property
    def max_payload_bytes(self) -> int:
        """The payload limit in force: the configured one, or the server's if lower
        (a shared connection packs its batches under it, so the server takes them)."""
        return self._max_payload

    @property
    def pending_request_ids(self) -> tuple[RequestId, ...]:
        return tuple(self._pending)

    @property
    def pending_query_ids(self) -> tuple[int, ...]:
        return tuple(self._queries)

    @property
    def lowest_pending_request_id(self) -> RequestId | None:
        return next(iter(self._pending), None)

    @property
    def delivered_server_request_id(self) -> int:
        """The highest server request id delivered (all lower ones were delivered too)."""
        return self._inbox.delivered

    @property
    def handled_server_request_id(self) -> int:
        """The highest server request id the shell reported handled (what is acked)."""
        return self._handled

    # ------------------------------------------------------------------ user calls

    def start(self, now_ms: int) -> ClientEffects:
        """Connect to the first member."""
        if self._phase is ClientPhase.IDLE:
            self._connect(self._address, now_ms)
        return self._take()

    def submit(
        self, payload: bytes, now_ms: int, deadline_ms: int | None = None
    ) -> tuple[RequestId, ClientEffects]:
        """Queue a command; it is sent now if the session is active, else once it is."""
        rid = RequestId(self._next_request)
        self._next_request += 1
        if self._phase in _TERMINAL:
            self._fx.completed.append(Completion(rid, None, self._terminal_error()))
        elif len(payload) > self._max_payload:
            error = _too_large(payload, self._max_payload)
            self._fx.completed.append(Completion(rid, None, error))
        else:
            self._pending[rid] = _Pending(payload, deadline_ms)
            if deadline_ms is not None:
                self._add_deadline(deadline_ms, _REQUEST, rid)
            self._unsent.append(rid)
            if self._phase is ClientPhase.ACTIVE:
                self._fill_window(now_ms)
        return rid, self._take()

    def query(
        self, payload: bytes, now_ms: int, deadline_ms: int | None = None
    ) -> tuple[int, ClientEffects]:
        """Queue a linearizable read (resent after reconnects until answered)."""
        cid = self._next_query
        self._next_query += 1
        if self._phase in _TERMINAL:
            self._fx.queries_completed.append(QueryCompletion(cid, None, self._terminal_error()))
        elif len(payload) > self._max_payload:
            error = _too_large(payload, self._max_payload)
            self._fx.queries_completed.append(QueryCompletion(cid, None, error))
        else:
            self._queries[cid] = _Pending(payload, deadline_ms)
            if deadline_ms is not None:
                self._add_deadline(deadline_ms, _QUERY, cid)
            if self._phase is ClientPhase.ACTIVE:
                self._send_query(cid, now_ms)
        return cid, self._take()

    def close(self, now_ms: int) -> ClientEffects:
        """End the session: tell the server, fail whatever is pending. Terminal."""
        if self._phase not in _TERMINAL:
            if self._phase in _CONNECTED and self._session_id is not None:
                self._send(CloseSession())
            self._finish(ClientPhase.CLOSED, lambda: ClientClosedError("client closed"))
        return self._take()

    # ------------------------------------------------------------------ shell events

    def on_connected(self, now_ms: int) -> ClientEffects:
        """The connection asked for by the last ``connect`` effect is open."""
        if self._phase is ClientPhase.CONNECTING:
            self._handshake(now_ms)
        return self._take()

    def on_disconnected(self, now_ms: int) -> ClientEffects:
        """The connection failed or was closed by the server: try the next member."""
        if self._phase in (ClientPhase.CONNECTING, *_CONNECTED):
            self._reconnect(None, now_ms)
        return self._take()

    def on_server_requests_handled(self, upto: RequestId, now_ms: int) -> ClientEffects:
        """The application finished handling every delivered server request with id
        ``<= upto``: acknowledge them (cumulatively) if the session is bound now, else on
        the next handshake. Ids beyond what was delivered are capped; lower ones are
        old news and ignored."""
        handled = min(upto, self._inbox.delivered)
        if handled > self._handled:
            self._handled = handled
            if self._phase is ClientPhase.ACTIVE:
                self._send(ServerRequestAck(RequestId(handled)))
        return self._take()

    def next_tick_ms(self) -> int | None:
        """When :meth:`on_tick` next has something to do: the earliest user deadline,
        connect or handshake timeout, end of a backoff, keep-alive, resend check or
        server silence limit; None if nothing is timed (not started, or ended). Ticking
        only then does exactly what ticking every millisecond does: at any other time
        ``on_tick`` changes nothing. Inputs can move it earlier (a deadline, a new
        connection), so a shell asks again after those."""
        phase = self._phase
        due: int | None = None
        if phase is ClientPhase.ACTIVE:
            due = min(
                self._last_heard_ms + self._config.server_timeout_ms,
                self._next_keep_alive_ms,
                self._next_resend_ms,
            )
        elif phase in _TIMED:
            due = self._timer_ms
        deadline = self._deadlines.next_ms()  # (in any phase, also before a connection)
        if deadline is None:
            return due
        return deadline if due is None or deadline < due else due

    def on_tick(self, now_ms: int) -> ClientEffects:
        """Time passed: deadlines, keep-alives, handshake and server timeouts, backoff."""
        self._expire_deadlines(now_ms)
        phase = self._phase
        if phase is ClientPhase.BACKOFF and now_ms >= self._timer_ms:
            self._connect(self._address, now_ms)
        elif (
            phase in (ClientPhase.CONNECTING, ClientPhase.HANDSHAKING) and now_ms >= self._timer_ms
        ):
            self._reconnect(None, now_ms)
        elif phase is ClientPhase.ACTIVE:
            if now_ms - self._last_heard_ms >= self._config.server_timeout_ms:
                self._reconnect(None, now_ms)
                return self._take()
            if now_ms >= self._next_keep_alive_ms and self._session_id is not None:
                self._send(KeepAlive(self._session_id, now_ms))
                self._next_keep_alive_ms = now_ms + self._config.keep_alive_interval_ms
            if now_ms >= self._next_resend_ms:
                # a frame lost on a live connection: resend what has waited too long
                # (the registry ignores requests still in flight; answered ones come
                # back from the response cache)
                resend_ms = self._config.resend_interval_ms
                self._resend_stale(now_ms, sent_before_ms=now_ms - resend_ms + 1)
                self._next_resend_ms = now_ms + resend_ms
            self._fill_window(now_ms)  # timeouts may have freed room
        return self._take()

    def on_message(self, msg: ServerMessage, now_ms: int) -> ClientEffects:
        """A message arrived on the current connection."""
        if self._phase not in _CONNECTED:
            return self._take()
        self._last_heard_ms = now_ms
        match msg:  # (the hot case first: the cases are disjoint types)
            case ClientResponse():
                self._complete(msg.request_id, msg.payload, None)
            case SessionCreated() | SessionContinued():
                self._handshake_done(msg, now_ms)
            case SessionRejected():
                self._handshake_rejected(msg, now_ms)
            case SessionClosed():
                self._session_closed(msg, now_ms)
            case NotLeader():
                self._reconnect(msg.leader_hint, now_ms)
            case RequestError():
                self._request_error(msg, now_ms)
            case QueryResponse():
                self._complete_query(msg.correlation_id, msg.payload, None)
            case QueryError():
                self._query_error(msg, now_ms)
            case ServerRequest():
                self._server_request(msg)
            case KeepAliveResponse():
                pass
        if self._phase is ClientPhase.ACTIVE:
            self._fill_window(now_ms)  # completions may have freed room
        return self._take()

    # ------------------------------------------------------------------ server messages

    def _handshake_done(self, msg: SessionCreated | SessionContinued, now_ms: int) -> None:
        if self._phase is not ClientPhase.HANDSHAKING or msg.nonce != self._nonce:
            return  # an answer to an attempt given up on
        if isinstance(msg, SessionCreated):
            if self._session_id is not None:
                return  # we asked to continue; a stale creation answer is not ours
            self._session_id = msg.session_id
        if 0 < msg.max_payload_bytes < self._max_payload:
            self._lower_payload_limit(msg.max_payload_bytes)
        self._phase = ClientPhase.ACTIVE
        self._attempts = 0
        self._next_keep_alive_ms = now_ms + self._config.keep_alive_interval_ms
        self._next_resend_ms = now_ms + self._config.resend_interval_ms
        if self._handled > 0:  # the server may have missed the last ack
            self._send(ServerRequestAck(RequestId(self._handled)))
        self._send_all(now_ms)

    def _handshake_rejected(self, msg: SessionRejected, now_ms: int) -> None:
        if self._phase is not ClientPhase.HANDSHAKING or msg.nonce != self._nonce:
            return
        if msg.reason is RejectReason.NOT_LEADER:
            self._reconnect(msg.leader_hint, now_ms)
        elif msg.reason in (RejectReason.OVERLOADED, RejectReason.TOO_MANY_SESSIONS):
            self._backoff(now_ms)  # a fresh connection to the same member, a bit later
        elif msg.reason is RejectReason.SESSION_EXPIRED:
            self._finish(ClientPhase.FAILED, _expired)
        else:
            reason, detail = msg.reason, msg.detail
            self._finish(ClientPhase.FAILED, lambda: SessionRejectedError(reason, detail))

    def _session_closed(self, msg: SessionClosed, now_ms: int) -> None:
        reason = msg.reason
        if reason is CloseReason.SESSION_EXPIRED:
            self._finish(ClientPhase.FAILED, _expired)
        elif reason in (CloseReason.NO_SESSION, CloseReason.MOVED):
            self._handshake(now_ms)  # take the session (back) on this connection
        elif reason is not CloseReason.CLIENT_REQUESTED:
            self._reconnect(msg.leader_hint, now_ms)

    def _request_error(self, msg: RequestError, now_ms: int) -> None:
        reason = msg.reason
        if reason is ErrorReason.NOT_LEADER:
            self._reconnect(msg.leader_hint, now_ms)
        elif reason is ErrorReason.NO_SESSION:
            if self._phase is ClientPhase.ACTIVE:
                self._handshake(now_ms)  # continue the session; pending ones are resent
        elif reason is ErrorReason.SESSION_EXPIRED:
            self._finish(ClientPhase.FAILED, _expired)
        elif reason is ErrorReason.RESPONSE_EVICTED:
            self._complete(msg.request_id, None, ResponseEvictedError(msg.detail))
        elif reason in _TRANSIENT:
            pass  # not proposed: the periodic resend tries again (the deadline still holds)
        else:
            self._complete(msg.request_id, None, RequestFailedError(reason, msg.detail))

    def _query_error(self, msg: QueryError, now_ms: int) -> None:
        if msg.reason is ErrorReason.NOT_LEADER:
            self._reconnect(msg.leader_hint, now_ms)
        elif msg.reason is ErrorReason.SESSION_EXPIRED:
            self._finish(ClientPhase.FAILED, _expired)
        elif msg.reason not in _TRANSIENT:
            error = RequestFailedError(msg.reason, msg.detail)
            self._complete_query(msg.correlation_id, None, error)

    def _server_request(self, msg: ServerRequest) -> None:
        if msg.request_id <= self._handled:
            # handled and acked, yet resent: the server missed the ack, say it again
            self._send(ServerRequestAck(RequestId(self._handled)))
        else:
            self._fx.deliver.extend(self._inbox.receive(msg))

    # ------------------------------------------------------------------ helpers

    def _complete(self, rid: RequestId, response: bytes | None, error: ClientError | None) -> None:
        pending = self._pending.pop(rid, None)
        if pending is not None:
            self._fx.completed.append(Completion(rid, response, error))
            if pending.sent:
                self._in_flight -= 1

    def _complete_query(self, cid: int, response: bytes | None, error: ClientError | None) -> None:
        if self._queries.pop(cid, None) is not None:
            self._fx.queries_completed.append(QueryCompletion(cid, response, error))

    def _add_deadline(self, deadline_ms: int, kind: int, ident: int) -> None:
        live = len(self._pending) + len(self._queries)
        self._deadlines.add(deadline_ms, kind, ident, live, self._is_live)

    def _is_live(self, kind: int, ident: int) -> bool:
        return ident in (self._pending if kind == _REQUEST else self._queries)

    def _expire_deadlines(self, now_ms: int) -> None:
        for kind, ident in self._deadlines.due(now_ms):
            error = RequestTimeoutError("deadline passed")
            if kind == _REQUEST:
                self._complete(RequestId(ident), None, error)
            else:
                self._complete_query(ident, None, error)

    def _send_request(self, rid: RequestId, now_ms: int) -> None:
        lowest = next(iter(self._pending))
        pending = self._pending[rid]
        pending.sent_ms = now_ms
        if not pending.sent:
            pending.sent = True
            self._in_flight += 1
        self._send(ClientRequest(rid, lowest, pending.payload))

    def _lower_payload_limit(self, limit: int) -> None:
        """The node takes at most ``limit`` bytes: fail what is queued above it."""
        self._max_payload = limit
        for rid in [r for r, p in self._pending.items() if len(p.payload) > limit]:
            pending = self._pending.pop(rid)  # (in-flight counts restart in _send_all)
            self._fx.completed.append(Completion(rid, None, _too_large(pending.payload, limit)))
        for cid in [c for c, q in self._queries.items() if len(q.payload) > limit]:
            query = self._queries.pop(cid)
            error = _too_large(query.payload, limit)
            self._fx.queries_completed.append(QueryCompletion(cid, None, error))

    def _fill_window(self, now_ms: int) -> None:
        """Send unsent requests, in id order, while fewer than the window are in flight."""
        unsent = self._unsent
        while unsent and self._in_flight < self._config.max_in_flight:
            rid = unsent.popleft()
            if rid in self._pending:  # (it may have timed out before it was sent)
                self._send_request(rid, now_ms)

    def _send_query(self, cid: int, now_ms: int) -> None:
        query = self._queries[cid]
        query.sent_ms = now_ms
        self._send(Query(cid, query.payload))

    def _send_all(self, now_ms: int) -> None:
        """On a new session binding: send pending requests in id order (up to the
        window; the rest follow as earlier ones complete), then every pending query."""
        for p in self._pending.values():
            p.sent = False
        self._in_flight = 0
        self._unsent = deque(self._pending)
        self._fill_window(now_ms)
        for cid in self._queries:
            self._send_query(cid, now_ms)

    def _resend_stale(self, now_ms: int, sent_before_ms: int) -> None:
        """Resend, in id order, what was sent on this binding before ``sent_before_ms``
        and is still unanswered."""
        for rid, p in self._pending.items():
            if p.sent and p.sent_ms < sent_before_ms:
                self._send_request(rid, now_ms)
        for cid, q in self._queries.items():
            if q.sent_ms < sent_before_ms:
                self._send_query(cid, now_ms)

    def _handshake(self, now_ms: int) -> None:
        """Create or continue the session on the current connection."""
        self._attempt_no += 1
        self._nonce = self._attempt_no.to_bytes(8, "big")
        self._phase = ClientPhase.HANDSHAKING
        self._timer_ms = now_ms + self._config.handshake_timeout_ms
        if self._session_id is None:
            self._send(CreateSession(dict(self._config.capabilities), self._nonce))
        else:
            self._send(ContinueSession(self._session_id, self._nonce))

    def _reconnect(self, hint: str | None, now_ms: int) -> None:
        """Leave this member: follow a (useful) hint, else the next member round robin."""
        members = self._config.members
        if hint is not None and hint != self._address:
            target = hint
            if hint in members:
                self._member = members.index(hint)
        else:
            self._member = (self._member + 1) % len(members)
            target = members[self._member]
        self._attempts += 1
        self._address = target
        if self._attempts > 2 * len(members):  # a whole round without luck: breathe
            self._backoff(now_ms)
        else:
            self._connect(target, now_ms)

    def _backoff(self, now_ms: int) -> None:
        self._attempts = 0
        self._phase = ClientPhase.BACKOFF
        self._timer_ms = now_ms + self._config.retry_backoff_ms
        self._fx.send.clear()

    def _connect(self, address: str, now_ms: int) -> None:
        self._phase = ClientPhase.CONNECTING
        self._address = address
        self._timer_ms = now_ms + self._config.handshake_timeout_ms
        self._last_heard_ms = now_ms
        self._fx.send.clear()  # whatever was queued was for the connection being dropped
        self._fx.connect = address

    def _finish(self, phase: ClientPhase, error: Callable[[], ClientError]) -> None:
        """Enter a terminal phase: fail everything pending (and later) with ``error()``."""
        self._phase = phase
        self._failure = error
        for rid in list(self._pending):
            self._complete(rid, None, error())
        for cid in list(self._queries):
            self._complete_query(cid, None, error())
        self._unsent.clear()
        self._deadlines.clear()
        self._inbox.clear()

    def _terminal_error(self) -> ClientError:
        assert self._failure is not None
        return self._failure()

    def _send(self, msg: ClientMessage) -> None:
        self._fx.send.append(msg)

    def _take(self) -> ClientEffects:
        fx, self._fx = self._fx, ClientEffects()
        return fx


def _too_large(payload: bytes, limit: int) -> RequestFailedError:
    return RequestFailedError(ErrorReason.TOO_LARGE, f"{len(payload)} bytes, limit {limit}")
