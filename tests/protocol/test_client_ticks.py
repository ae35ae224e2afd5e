"""``ClientSessionCore.next_tick_ms``: a shell that ticks a session only when it says
does exactly what ticking every millisecond does, whatever the inputs (so an idle
session need not wake 50 times a second)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.client import ClientConfig, ClientEffects, ClientPhase, ClientSessionCore
from protocol.ids import RequestId, SessionId
from protocol.wire import (
    ClientRequest,
    ClientResponse,
    ContinueSession,
    CreateSession,
    KeepAliveResponse,
    NotLeader,
    Query,
    QueryResponse,
    ServerRequest,
    SessionContinued,
    SessionCreated,
)

MEMBERS = ("tcp://a", "tcp://b", "tcp://c")
SID = SessionId("s")
CONFIG = ClientConfig(
    MEMBERS,
    keep_alive_interval_ms=100,
    resend_interval_ms=170,
    server_timeout_ms=500,
    handshake_timeout_ms=150,
    retry_backoff_ms=40,
    max_in_flight=2,
)

ACTIONS = [
    "settle",
    "settle",
    "submit",
    "submit_with_deadline",
    "query_with_deadline",
    "connected",
    "disconnected",
    "accept_handshake",
    "respond",
    "answer_query",
    "keep_alive_response",
    "not_leader",
    "server_request",
    "handled",
    "close",
]


def _norm(fx: ClientEffects) -> tuple[Any, ...]:
    """Effects as comparable values (errors by type and text: exceptions compare by
    identity)."""
    return (
        fx.connect,
        tuple(fx.send),
        tuple((c.request_id, c.response, repr(c.error)) for c in fx.completed),
        tuple((q.correlation_id, q.response, repr(q.error)) for q in fx.queries_completed),
        tuple(fx.deliver),
    )


def _empty(fx: ClientEffects) -> bool:
    return not (fx.connect or fx.send or fx.completed or fx.queries_completed or fx.deliver)


class Pair:
    """Two cores fed the same inputs: ``every`` ticked each millisecond, ``due`` only
    when ``next_tick_ms`` has come; each keeps a log of (time, effects)."""

    def __init__(self) -> None:
        self.every, self.due = ClientSessionCore(CONFIG), ClientSessionCore(CONFIG)
        self.logs: tuple[list[Any], list[Any]] = ([], [])
        self.now = 0
        self.handshake: CreateSession | ContinueSession | None = None
        self.in_flight: list[RequestId] = []
        self.queries: list[int] = []
        self.server_requests = 0
        self.delivered = 0

    def both(self, call: Callable[[ClientSessionCore], ClientEffects]) -> None:
        for core, log in zip((self.every, self.due), self.logs, strict=True):
            fx = call(core)
            if not _empty(fx):
                log.append((self.now, _norm(fx)))
            if core is self.every:
                self._follow(fx)

    def _follow(self, fx: ClientEffects) -> None:
        """What the server side of this test knows, from ``every``'s effects."""
        if fx.connect is not None:
            self.handshake, self.in_flight, self.queries = None, [], []
        for msg in fx.send:
            if isinstance(msg, CreateSession | ContinueSession):
                self.handshake, self.in_flight, self.queries = msg, [], []
            elif isinstance(msg, ClientRequest) and msg.request_id not in self.in_flight:
                self.in_flight.append(msg.request_id)
            elif isinstance(msg, Query):
                self.queries.append(msg.correlation_id)
        self.delivered += len(fx.deliver)

    def advance(self, ms: int) -> None:
        for _ in range(ms):
            self.now += 1
            self.both(self._tick)

    def _tick(self, core: ClientSessionCore) -> ClientEffects:
        now = self.now
        if core is self.every or _is_due(core, now):
            return core.on_tick(now)
        return ClientEffects()

    def act(self, action: str, arg: int) -> None:
        now = self.now
        if action == "submit":
            self.both(lambda c: c.submit(b"p", now)[1])
        elif action == "submit_with_deadline":
            self.both(lambda c: c.submit(b"d", now, now + arg)[1])
        elif action == "query_with_deadline":
            self.both(lambda c: c.query(b"q", now, now + arg)[1])
        elif action == "connected":
            self.both(lambda c: c.on_connected(now))
        elif action == "disconnected":
            self.both(lambda c: c.on_disconnected(now))
        elif action == "settle":  # connect and open the session in one go
            self.act("connected", arg)
            self.act("accept_handshake", arg)
        elif action == "accept_handshake":
            hs = self.handshake
            if self.every.phase is ClientPhase.HANDSHAKING and hs is not None:
                answer = (
                    SessionCreated(SID, hs.nonce)
                    if isinstance(hs, CreateSession)
                    else SessionContinued(hs.nonce)
                )
                self.both(lambda c: c.on_message(answer, now))
        elif action == "respond" and self.in_flight:
            rid = self.in_flight.pop(arg % len(self.in_flight))
            self.both(lambda c: c.on_message(ClientResponse(rid, b"r"), now))
        elif action == "answer_query" and self.queries:
            cid = self.queries.pop(0)
            self.both(lambda c: c.on_message(QueryResponse(cid, b"a"), now))
        elif action == "keep_alive_response":
            self.both(lambda c: c.on_message(KeepAliveResponse(now), now))
        elif action == "not_leader" and arg % 4 == 0:
            self.both(lambda c: c.on_message(NotLeader(None), now))
        elif action == "server_request":
            self.server_requests += 1
            sr = ServerRequest(RequestId(self.server_requests), b"s")
            self.both(lambda c: c.on_message(sr, now))
        elif action == "handled" and self.delivered:
            upto = RequestId(self.delivered)
            self.both(lambda c: c.on_server_requests_handled(upto, now))
        elif action == "close" and arg % 10 == 0:
            self.both(lambda c: c.close(now))


def _is_due(core: ClientSessionCore, now: int) -> bool:
    due = core.next_tick_ms()
    return due is not None and now >= due


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 20) | st.integers(0, 700), st.sampled_from(ACTIONS), st.integers(0, 300)
        ),
        max_size=40,
    ),
    st.integers(0, 1000),
)
def test_ticking_when_due_does_what_ticking_every_millisecond_does(
    script: list[tuple[int, str, int]], tail: int
) -> None:
    pair = Pair()
    pair.both(lambda c: c.start(0))
    for gap, action, arg in script:
        pair.advance(gap)
        pair.act(action, arg)
        assert pair.logs[0] == pair.logs[1]
    pair.advance(tail)
    assert pair.logs[0] == pair.logs[1]
    assert pair.every.next_tick_ms() == pair.due.next_tick_ms()


def test_next_tick_by_phase() -> None:
    core = ClientSessionCore(CONFIG)
    assert core.next_tick_ms() is None  # not started, nothing timed
    core.submit(b"p", 0, 70)
    assert core.next_tick_ms() == 70  # a deadline counts before any connection
    core.start(10)
    assert core.next_tick_ms() == 70  # connect timeout 10 + 150 is later
    core.on_connected(20)  # handshake timeout at 170
    assert core.next_tick_ms() == 70
    core.on_tick(70)  # the request times out
    assert core.next_tick_ms() == 170
    core.on_message(SessionCreated(SID, (1).to_bytes(8, "big")), 100)
    assert core.phase is ClientPhase.ACTIVE
    assert core.next_tick_ms() == 200  # the keep-alive; resend 270, silence limit 600
    core.on_tick(200)
    assert core.next_tick_ms() == 270  # the resend check
    core.close(250)
    assert core.next_tick_ms() is None
