"""``SessionStateMachine``: exactly-once execution of a user state machine (DESIGN rules 1-10).

One dictionary holds everything: the user's keys and, under the reserved ``session/``
prefix, one record per session (``session/<id>``): capabilities, the highest
``lowest_pending_request_id`` seen, cached responses, the last server request id
assigned and the pending server requests. User code sees the dictionary through a
:class:`~protocol.session.user.UserState` view that hides the reserved keys.

Per-command cost is O(1) amortised in the number of sessions and cached responses:
responses are evicted through a per-session min-heap of request ids, pending server
requests sit in id order in a deque (a cumulative ack pops from its front), and a
count-per-time table with a lazy min-heap answers "anything last sent before T?"
without a scan. Only ``GetRequestsForRetry`` walks pending server requests (of the
sessions that have some). Those indexes are derived data, rebuilt by :meth:`restore`.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Final

import msgpack

from protocol.codec import ProtocolError
from protocol.ids import RequestId, SessionId
from protocol.session.commands import (
    ClientRequest,
    CreateSession,
    GetRequestsForRetry,
    InternalCommand,
    ServerRequestAck,
    SessionCommand,
    SessionExpired,
)
from protocol.session.results import (
    RESPONSE_EVICTED,
    UNKNOWN_SESSION,
    ApplicationError,
    InternalApplied,
    RequestResult,
    RetryBatch,
    ServerRequestEnvelope,
    ServerRequestsAcked,
    SessionCreated,
    SessionRejected,
    SessionRemoved,
    SessionResult,
    SessionStats,
)
from protocol.session.user import (
    RESERVED_PREFIX,
    MsgpackCodec,
    ReadOnlyUserState,
    Reject,
    SessionContext,
    UserCodec,
    UserState,
    UserStateMachine,
)

__all__ = ["SNAPSHOT_VERSION", "SessionStateMachine"]

#: Format version of :meth:`SessionStateMachine.snapshot` bytes.
SNAPSHOT_VERSION: Final = 1
_NO_ENVELOPES: Final[tuple[ServerRequestEnvelope, ...]] = ()
_ALREADY_EXISTS: Final = "session id already in use"


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Session:
    """One session's record, stored under ``session/<id>``."""

    __slots__ = ("cache", "capabilities", "evict_heap", "last_server_id", "lowest", "pending")

    def __init__(self, capabilities: dict[str, str]) -> None:
        self.capabilities = capabilities
        #: Highest ``lowest_pending_request_id`` seen (rule 3).
        self.lowest = 0
        #: request id -> response bytes or ApplicationError (rule 4).
        self.cache: dict[int, bytes | ApplicationError] = {}
        #: The keys of ``cache`` as a min-heap, so eviction never scans the cache.
        self.evict_heap: list[int] = []
        #: Last server request id assigned to this session; survives an empty list.
        self.last_server_id = 0
        #: Pending server requests in id order: ``[id, payload, last_sent_at]``. An empty
        #: tuple until the first one (an empty deque costs ~600 bytes per session).
        self.pending: deque[list[Any]] | tuple[()] = ()

    def to_native(self) -> list[Any]:
        return [
            dict(sorted(self.capabilities.items())),
            self.lowest,
            [
                [rid, r if type(r) is bytes else r.message]  # type: ignore[union-attr]
                for rid, r in sorted(self.cache.items())
            ]
            if self.cache
            else [],
            self.last_server_id,
            [list(p) for p in self.pending],
        ]

    @classmethod
    def from_native(cls, raw: Any) -> _Session:
        if type(raw) is not list or len(raw) != 5:
            raise ProtocolError("session record: expected an array of 5")
        caps, lowest, cache, last_server_id, pending = raw
        if type(caps) is not dict:
            raise ProtocolError("session record: bad capabilities")
        for k, v in caps.items():
            if type(k) is not str or type(v) is not str:
                raise ProtocolError("session record: bad capabilities")
        if type(lowest) is not int or type(last_server_id) is not int:
            raise ProtocolError("session record: bad ids")
        if type(cache) is not list or type(pending) is not list:
            raise ProtocolError("session record: bad cache or pending list")
        rec = cls(caps)
        rec.lowest = lowest
        rec.last_server_id = last_server_id
        responses = rec.cache
        for item in cache:
            if type(item) is not list or len(item) != 2 or type(item[0]) is not int:
                raise ProtocolError("session record: bad cache entry")
            response = item[1]
            if type(response) is bytes:
                responses[item[0]] = response
            elif type(response) is str:
                responses[item[0]] = ApplicationError(response)
            else:
                raise ProtocolError("session record: bad cached response")
        rec.evict_heap = sorted(responses)
        if pending:
            previous = 0
            for item in pending:
                if (
                    type(item) is not list
                    or len(item) != 3
                    or type(item[0]) is not int
                    or type(item[1]) is not bytes
                    or type(item[2]) is not int
                    or not previous < item[0] <= last_server_id
                ):
                    raise ProtocolError("session record: bad pending server request")
                previous = item[0]
            rec.pending = deque(pending)
        return rec


class _SentTimes:
    """Multiset of ``last_sent_at`` of all pending server requests, with a cheap minimum.

    A dict time -> count plus a min-heap of times with lazy deletion (rebuilt when stale
    entries dominate), so add/remove are O(log n) and "minimum < T?" is amortised O(1).
    """

    __slots__ = ("counts", "heap")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.heap: list[int] = []

    def add(self, t: int, n: int = 1) -> None:
        count = self.counts.get(t)
        if count is None:
            self.counts[t] = n
            heapq.heappush(self.heap, t)
            if len(self.heap) > 2 * len(self.counts) + 32:
                self.heap = sorted(self.counts)
        else:
            self.counts[t] = count + n

    def remove(self, t: int) -> None:
        count = self.counts[t]
        if count == 1:
            del self.counts[t]
        else:
            self.counts[t] = count - 1

    def any_before(self, t: int) -> bool:
        heap, counts = self.heap, self.counts
        while heap and heap[0] not in counts:
            heapq.heappop(heap)
        return bool(heap) and heap[0] < t


class SessionStateMachine:
    """Wraps a :class:`UserStateMachine` and gives every client command exactly-once
    semantics, cached responses and acknowledged server requests.

    Deterministic: the same commands in the same order give the same results and the
    same snapshot bytes on every replica. ``apply`` never raises for anything user code
    or command contents do; it raises only for host bugs (a non-increasing index, an
    object that is not a session command).
    """

    def __init__(self, user_sm: UserStateMachine, codec: UserCodec | None = None) -> None:
        self._user = user_sm
        self._codec: UserCodec = codec if codec is not None else MsgpackCodec()
        self._data: dict[str, Any] = {}
        self._reserved = [0]  # number of session records in _data, shared with the views
        self._view = UserState(self._data, self._reserved)
        self._ro_view = ReadOnlyUserState(self._data, self._reserved)
        self._ctx = SessionContext(self._codec)
        self._last_applied = 0
        self._cached = 0
        self._pending = 0
        self._sent = _SentTimes()
        self._with_pending: dict[str, _Session] = {}
        self._handlers: dict[type[Any], Callable[[Any], SessionResult]] = {
            ClientRequest: self._client_request,
            CreateSession: self._create_session,
            ServerRequestAck: self._ack,
            SessionExpired: self._expire,
            GetRequestsForRetry: self._retry,
            InternalCommand: self._internal,
        }

    # ------------------------------------------------------------------ public API

    @property
    def last_applied(self) -> int:
        """Index of the last log entry applied (0 before any)."""
        return self._last_applied

    def apply(self, index: int, cmd: SessionCommand) -> SessionResult:
        """Apply the committed log entry ``index`` holding ``cmd``; return its result."""
        if index <= self._last_applied:
            raise ValueError(f"index {index} already applied (last {self._last_applied})")
        handler = self._handlers.get(type(cmd))
        if handler is None:
            raise TypeError(f"not a session command: {type(cmd).__name__}")
        self._last_applied = index
        return handler(cmd)

    def query(self, query: bytes) -> bytes | ApplicationError:
        """Run the user's read-only ``query`` on the current state; typed error if it fails."""
        try:
            q = self._codec.decode_query(query)
            return self._codec.encode_response(self._user.query(self._ro_view, q))
        except Exception as exc:
            return ApplicationError(_describe(exc))

    def has_pending_requests_sent_before(self, t: int) -> bool:
        """Dirty read for the retry scheduler: is any pending server request last sent
        before ``t``? Amortised O(1)."""
        return self._sent.any_before(t)

    def sessions(self) -> dict[SessionId, dict[str, str]]:
        """Dirty read for a new leader's registry: every live session and its capabilities."""
        n = len(RESERVED_PREFIX)
        return {
            SessionId(k[n:]): dict(v.capabilities)
            for k, v in self._data.items()
            if k.startswith(RESERVED_PREFIX)
        }

    def stats(self) -> SessionStats:
        """Session count, pending server requests, cached responses, last applied index."""
        return SessionStats(self._reserved[0], self._pending, self._cached, self._last_applied)

    def snapshot(self) -> bytes:
        """The whole dictionary as msgpack: ``[version, last_applied, {key: value}]`` with
        keys sorted, so replicas that applied the same log give identical bytes."""
        encode_value = self._codec.encode_value
        state = {
            k: (v.to_native() if type(v) is _Session else encode_value(v))
            for k, v in sorted(self._data.items())
        }
        return msgpack.packb(  # type: ignore[no-any-return]
            [SNAPSHOT_VERSION, self._last_applied, state], use_bin_type=True
        )

    def restore(self, snapshot: bytes) -> None:
        """Replace the whole state with a snapshot's; ``ProtocolError`` if it is not one
        (then the current state is left untouched)."""
        try:
            raw = msgpack.unpackb(snapshot, raw=False, strict_map_key=False)
        except Exception as exc:
            raise ProtocolError(f"malformed snapshot: {exc}") from None
        if (
            not isinstance(raw, list)
            or len(raw) != 3
            or raw[0] != SNAPSHOT_VERSION
            or type(raw[0]) is not int
            or type(raw[1]) is not int
            or not isinstance(raw[2], dict)
        ):
            raise ProtocolError("snapshot is not [version, last_applied, state]")
        data: dict[str, Any] = {}
        decode_value = self._codec.decode_value
        for key, value in raw[2].items():
            if type(key) is not str:
                raise ProtocolError("snapshot state keys must be str")
            if key.startswith(RESERVED_PREFIX):
                data[key] = _Session.from_native(value)
            else:
                try:
                    data[key] = decode_value(value)
                except Exception as exc:
                    raise ProtocolError(f"snapshot value of {key!r}: {exc}") from None
        self._install(raw[1], data)

    # ------------------------------------------------------------------ commands

    def _client_request(self, cmd: ClientRequest) -> RequestResult:
        sid = cmd.session_id
        rid = cmd.request_id
        rec: _Session | None = self._data.get(RESERVED_PREFIX + sid)
        if rec is None:  # rule 1
            return RequestResult(sid, rid, UNKNOWN_SESSION, _NO_ENVELOPES, False)
        cache = rec.cache
        hit = cache.get(rid)
        if hit is not None:  # rule 2
            return RequestResult(sid, rid, hit, _NO_ENVELOPES, True)
        low = cmd.lowest_pending_request_id
        if rid < rec.lowest or rid < low:  # rule 3 (the command's own promise counts)
            return RequestResult(sid, rid, RESPONSE_EVICTED, _NO_ENVELOPES, False)
        if low > rec.lowest:  # rule 4: forget what the client already has
            rec.lowest = low
            heap = rec.evict_heap
            if heap and heap[0] < low:
                pop = heapq.heappop
                while heap and heap[0] < low:
                    del cache[pop(heap)]
                    self._cached -= 1
        ctx = self._ctx
        ctx.created_at = cmd.created_at
        ctx.session_id = sid
        view = self._view
        codec = self._codec
        response: bytes | ApplicationError
        try:
            response = codec.encode_response(
                self._user.apply(ctx, view, codec.decode_command(cmd.command))
            )
        except Exception as exc:  # rule 9
            view._rollback()
            ctx._outbox.clear()
            response = ApplicationError(_describe(exc))
        else:
            view._commit()
        cache[rid] = response
        heapq.heappush(rec.evict_heap, rid)
        self._cached += 1
        envelopes = self._assign(cmd.created_at, None) if ctx._outbox else _NO_ENVELOPES
        return RequestResult(sid, rid, response, envelopes, False)

    def _create_session(self, cmd: CreateSession) -> SessionCreated | SessionRejected:
        sid = cmd.session_id
        key = RESERVED_PREFIX + sid
        if key in self._data:
            return SessionRejected(sid, _ALREADY_EXISTS)
        self._data[key] = _Session(dict(cmd.capabilities))
        self._reserved[0] += 1
        outcome = self._run_hook(
            cmd.created_at, sid, self._user.on_session_created, cmd.capabilities
        )
        if isinstance(outcome, str):
            del self._data[key]
            self._reserved[0] -= 1
            return SessionRejected(sid, outcome)
        return SessionCreated(sid, outcome)

    def _expire(self, cmd: SessionExpired) -> SessionRemoved:
        sid = cmd.session_id
        key = RESERVED_PREFIX + sid
        rec: _Session | None = self._data.get(key)
        if rec is None:
            return SessionRemoved(sid, False, _NO_ENVELOPES)
        outcome = self._run_hook(cmd.created_at, sid, self._user.on_session_expired, None)
        envelopes = outcome if isinstance(outcome, tuple) else _NO_ENVELOPES
        # rule 7: every trace goes; sends to the expiring session itself were skipped.
        del self._data[key]
        self._reserved[0] -= 1
        self._cached -= len(rec.cache)
        if rec.pending:
            self._pending -= len(rec.pending)
            for item in rec.pending:
                self._sent.remove(item[2])
            del self._with_pending[sid]
        return SessionRemoved(sid, True, envelopes)

    def _ack(self, cmd: ServerRequestAck) -> ServerRequestsAcked:
        sid = cmd.session_id
        rec: _Session | None = self._data.get(RESERVED_PREFIX + sid)
        removed = 0
        if rec is not None and rec.pending:  # rule 6
            pending = rec.pending
            assert type(pending) is deque
            upto = cmd.request_id
            remove = self._sent.remove
            while pending and pending[0][0] <= upto:
                remove(pending.popleft()[2])
                removed += 1
            self._pending -= removed
            if not pending:
                del self._with_pending[sid]
        return ServerRequestsAcked(sid, cmd.request_id, removed)

    def _retry(self, cmd: GetRequestsForRetry) -> RetryBatch:
        before = cmd.last_sent_before
        now = cmd.created_at
        if not self._sent.any_before(before):
            return RetryBatch(_NO_ENVELOPES)
        envelopes: list[ServerRequestEnvelope] = []
        sent = self._sent
        for sid in sorted(self._with_pending):  # rule 8
            for item in self._with_pending[sid].pending:
                if item[2] < before:
                    sent.remove(item[2])
                    item[2] = now
                    envelopes.append(
                        ServerRequestEnvelope(SessionId(sid), RequestId(item[0]), item[1])
                    )
        if envelopes:
            sent.add(now, len(envelopes))
        return RetryBatch(tuple(envelopes))

    def _internal(self, cmd: InternalCommand) -> InternalApplied:
        ctx = self._ctx
        ctx.created_at = cmd.created_at
        ctx.session_id = None
        view = self._view
        try:
            self._user.apply_internal(ctx, view, self._codec.decode_command(cmd.command))
        except Exception as exc:
            view._rollback()
            ctx._outbox.clear()
            return InternalApplied(ApplicationError(_describe(exc)), _NO_ENVELOPES)
        view._commit()
        envelopes = self._assign(cmd.created_at, None) if ctx._outbox else _NO_ENVELOPES
        return InternalApplied(None, envelopes)

    # ------------------------------------------------------------------ helpers

    def _run_hook(
        self,
        created_at: int,
        sid: SessionId,
        hook: Callable[..., Reject | None],
        capabilities: dict[str, str] | None,
    ) -> tuple[ServerRequestEnvelope, ...] | str:
        """Run a session hook transactionally: its envelopes, or why it failed/rejected.

        On rejection or exception, its state changes and sends are discarded.
        """
        ctx = self._ctx
        ctx.created_at = created_at
        ctx.session_id = sid
        view = self._view
        if capabilities is None:
            capabilities = self._data[RESERVED_PREFIX + sid].capabilities
        try:
            outcome = hook(ctx, view, sid, dict(capabilities))
        except Exception as exc:
            view._rollback()
            ctx._outbox.clear()
            return f"application error: {_describe(exc)}"
        if isinstance(outcome, Reject):
            view._rollback()
            ctx._outbox.clear()
            return outcome.reason
        view._commit()
        return self._assign(created_at, sid) if ctx._outbox else _NO_ENVELOPES

    def _assign(self, now: int, skip: str | None) -> tuple[ServerRequestEnvelope, ...]:
        """Give the context's outbox ids (rule 5) and queue them as pending, sent ``now``."""
        outbox = self._ctx._outbox
        data = self._data
        with_pending = self._with_pending
        envelopes = []
        for target, payload in outbox:
            rec: _Session | None = data.get(RESERVED_PREFIX + target)
            if rec is None or target == skip:
                continue
            rec.last_server_id += 1
            rid = rec.last_server_id
            pending = rec.pending
            if not pending:
                with_pending[target] = rec
                if type(pending) is tuple:
                    pending = rec.pending = deque()
            pending.append([rid, payload, now])  # type: ignore[union-attr]
            envelopes.append(ServerRequestEnvelope(SessionId(target), RequestId(rid), payload))
        outbox.clear()
        if envelopes:
            self._pending += len(envelopes)
            self._sent.add(now, len(envelopes))
        return tuple(envelopes)

    def _install(self, last_applied: int, data: dict[str, Any]) -> None:
        """Replace the state with ``data`` and rebuild every derived index."""
        sessions = 0
        cached = 0
        pending = 0
        sent = _SentTimes()
        with_pending: dict[str, _Session] = {}
        n = len(RESERVED_PREFIX)
        for key, value in data.items():
            if type(value) is _Session:
                sessions += 1
                cached += len(value.cache)
                if value.pending:
                    pending += len(value.pending)
                    with_pending[key[n:]] = value
                    for item in value.pending:
                        sent.add(item[2])
        self._data.clear()
        self._data.update(data)
        self._reserved[0] = sessions
        self._cached = cached
        self._pending = pending
        self._sent = sent
        self._with_pending = with_pending
        self._last_applied = last_applied

    def _raw_state(self) -> Mapping[str, Any]:
        """The whole dictionary, for tests that check nothing of a session remains."""
        return self._data
