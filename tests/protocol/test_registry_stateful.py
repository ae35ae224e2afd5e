"""The connection table under random traffic, a simulated consensus and leadership churn.

Invariants checked after every step:

- a session is bound to at most one connection, and bindings agree both ways;
- only the leader proposes anything, and it proposes each session's expiry at most once
  per term;
- every client message gets an answer or a proposal, unless it is a recognised
  duplicate (a pending nonce, a request or query in flight, an ack not above the last
  proposed one) or a ContinueSession that must wait (sessions not loaded yet, or the
  session's expiry is being committed);
- limits hold (sessions, in-flight requests, queries); a follower keeps no client state.
"""

from __future__ import annotations

from collections import defaultdict

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from protocol.actions import (
    ClientRequestAction,
    CreateSessionAction,
    ExpireSessionAction,
    LeadershipChanged,
    NodeRole,
    QueryAction,
    RaftAction,
    RejectSession,
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
from protocol.codec import decode, encode
from protocol.ids import MemberId, RequestId, SessionId
from protocol.registry import RegistryEffects, channel_key, split_key
from protocol.wire import (
    ClientMessage,
    ClientRequest,
    ClientResponse,
    CloseSession,
    ContinueSession,
    CreateSession,
    ErrorReason,
    KeepAlive,
    Query,
    RejectReason,
    ServerRequestAck,
    SessionCreated,
    SessionRejected,
)
from tests.protocol.registry_helpers import HINT, SELF, make_registry

CONNS = [channel_key(b"c%d" % i, 0) for i in range(3)]  # channel 0 of 3 connections
LIMITS = {
    "session_timeout_ms": 50,
    "max_sessions": 5,
    "max_sessions_per_connection": 3,
    "max_pending_requests_per_session": 3,
    "max_pending_queries_per_connection": 2,
    "max_pending_queries": 3,
    "max_held_server_requests": 2,
    "max_payload_bytes": 8,
}
GHOST = SessionId("ghost")


class RegistryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.reg = make_registry(**LIMITS)
        self.now = 0
        self.term = 0
        self.log: list[RaftAction] = []  # proposed, not yet committed
        self.live: dict[SessionId, dict[str, str]] = {}  # the state machine's sessions
        self.known: list[SessionId] = [GHOST]
        self.next_server_request: dict[SessionId, int] = defaultdict(int)
        self.expiries: set[tuple[int, SessionId]] = set()
        # what the registry was observed to hold (for the "answer or proposal" rule)
        self.nonces: dict[bytes, set[bytes]] = defaultdict(set)
        self.in_flight: dict[SessionId, set[int]] = defaultdict(set)
        self.acked: dict[SessionId, int] = defaultdict(int)
        self.queries: dict[bytes, set[int]] = defaultdict(set)

    @initialize()
    def start_as_leader(self) -> None:
        self.step_up()
        self.load_sessions()

    # ------------------------------------------------------------------ bookkeeping

    def observe(self, fx: RegistryEffects, was_leader: bool) -> None:
        if not was_leader:
            assert not fx.propose, "only the leader proposes"
        for action in fx.propose:
            self.log.append(action)
            if isinstance(action, ExpireSessionAction):
                key = (self.term, action.session_id)
                assert key not in self.expiries, "expiry proposed twice in one term"
                self.expiries.add(key)
            elif isinstance(action, CreateSessionAction):
                self.known.append(action.session_id)
            elif isinstance(action, ClientRequestAction):
                self.in_flight[action.session_id].add(action.request_id)
            elif isinstance(action, ServerRequestAckAction):
                self.acked[action.session_id] = action.request_id
            elif isinstance(action, QueryAction):
                self.queries[action.connection].add(action.correlation_id)
        for item in [*fx.propose, *(msg for _, msg in fx.send)]:
            assert decode(encode(item)) == item  # everything the registry emits is wire-ready
        for conn, msg in fx.send:
            if isinstance(msg, SessionCreated | SessionRejected):
                self.nonces[conn].discard(msg.nonce)
            elif isinstance(msg, ClientResponse):
                assert self.reg.connection_of(self.reg.session_of(conn) or GHOST) == conn
        for conn in fx.close:
            self.forget_connection(conn)

    def forget_connection(self, conn: bytes) -> None:
        self.nonces.pop(conn, None)
        self.queries.pop(conn, None)

    def feed(self, action: ServerAction) -> None:
        if isinstance(action, SendResponse | SendRequestError):
            self.in_flight[action.session_id].discard(action.request_id)
        elif isinstance(action, SessionRemoved):
            self.in_flight.pop(action.session_id, None)
        elif isinstance(action, SendQueryResponse):
            self.queries[action.connection].discard(action.correlation_id)
        was_leader = self.reg.is_leader
        self.observe(self.reg.on_server_action(action, self.now), was_leader)

    # ------------------------------------------------------------------ client traffic

    @rule(
        conn=st.sampled_from(CONNS),
        kind=st.sampled_from(["create", "continue", "keep", "req", "query", "ack", "close"]),
        n=st.integers(min_value=0, max_value=5),
        m=st.integers(min_value=0, max_value=5),
        big=st.booleans(),
        data=st.data(),
    )
    def client_message(
        self, conn: bytes, kind: str, n: int, m: int, big: bool, data: st.DataObject
    ) -> None:
        payload = b"x" * (9 if big else 1)
        bound = self.reg.session_of(conn)
        sid = data.draw(st.sampled_from(self.known))
        msg: ClientMessage
        if kind == "create":
            caps = {"reject": "1"} if big and n == 5 else {}
            msg = CreateSession(caps, b"n%d" % (n % 2))
        elif kind == "continue":
            msg = ContinueSession(sid, b"c%d" % n)
        elif kind == "keep":
            msg = KeepAlive(bound if bound and n else sid, self.now)
        elif kind == "req":
            msg = ClientRequest(RequestId(n), RequestId(m), payload)
        elif kind == "query":
            msg = Query(n % 3, payload)
        elif kind == "ack":
            msg = ServerRequestAck(RequestId(n))
        else:
            msg = CloseSession()
        was_leader = self.reg.is_leader
        loaded = self.reg.status().sessions_loaded
        silent_ok = was_leader and (
            (isinstance(msg, CreateSession) and msg.nonce in self.nonces[conn])
            or (
                isinstance(msg, ClientRequest)
                and bound is not None
                and not big
                and 1 <= msg.lowest_pending_request_id <= msg.request_id
                and msg.request_id in self.in_flight[bound]
            )
            or (isinstance(msg, Query) and not big and msg.correlation_id in self.queries[conn])
            or (
                isinstance(msg, ServerRequestAck)
                and bound is not None
                and msg.request_id <= self.acked[bound]
            )
            or (
                isinstance(msg, ContinueSession)
                and (not loaded or self.reg.is_expiring(msg.session_id))
            )
        )
        fx = self.reg.on_client_message(conn, msg, self.now)
        if isinstance(msg, CreateSession) and fx.propose:
            self.nonces[conn].add(msg.nonce)
        self.observe(fx, was_leader)
        answered = any(c == conn for c, _ in fx.send)
        assert answered or fx.propose or silent_ok, f"{msg} got no answer and no proposal"
        if any(isinstance(a, CreateSessionAction) for a in fx.propose):
            status = self.reg.status()
            assert status.sessions + status.pending_creations <= LIMITS["max_sessions"]
        if isinstance(msg, ClientRequest) and was_leader and fx.propose:
            limit = LIMITS["max_pending_requests_per_session"]
            assert bound is not None and len(self.in_flight[bound]) <= limit

    @rule(conn=st.sampled_from(CONNS))
    def disconnect(self, conn: bytes) -> None:
        self.forget_connection(conn)
        fx = self.reg.on_disconnect(conn)
        assert not fx.send and not fx.propose
        assert self.reg.session_of(conn) is None

    @rule(conn=st.sampled_from(CONNS))
    def bad_frame(self, conn: bytes) -> None:
        was_leader = self.reg.is_leader
        fx = self.reg.on_bad_connection(split_key(conn)[0])
        assert fx.close == [conn]
        self.observe(fx, was_leader)

    # ------------------------------------------------------------------ simulated cluster

    @rule(advance=st.integers(min_value=0, max_value=40))
    def tick(self, advance: int) -> None:
        self.now += advance
        was_leader = self.reg.is_leader
        fx = self.reg.on_tick(self.now)
        assert all(isinstance(a, ExpireSessionAction) for a in fx.propose)
        self.observe(fx, was_leader)

    @rule(lose=st.booleans())
    def commit(self, lose: bool) -> None:
        """Apply the oldest proposal like the session state machine would (or lose it)."""
        if not self.log:
            return
        action = self.log.pop(0)
        if lose:
            return
        if isinstance(action, CreateSessionAction):
            if action.capabilities.get("reject"):
                reason = RejectReason.REJECTED_BY_APPLICATION
                self.feed(RejectSession(action.session_id, reason, "no"))
            else:
                self.live[action.session_id] = action.capabilities
                self.feed(SessionCreationConfirmed(action.session_id, action.capabilities))
        elif isinstance(action, ClientRequestAction):
            sid, rid = action.session_id, action.request_id
            if sid in self.live:
                self.feed(SendResponse(sid, rid, b"ok"))
            else:
                self.feed(SendRequestError(sid, rid, ErrorReason.SESSION_EXPIRED, ""))
        elif isinstance(action, ExpireSessionAction):
            if self.live.pop(action.session_id, None) is not None:
                self.feed(SessionRemoved(action.session_id))
        elif isinstance(action, QueryAction):
            self.feed(SendQueryResponse(action.connection, action.correlation_id, b"r"))

    @rule(conn=st.sampled_from(CONNS), nonce=st.binary(min_size=1, max_size=2))
    def open_session(self, conn: bytes, nonce: bytes) -> None:
        """A create that consensus commits at once (so bound sessions are common)."""
        was_leader = self.reg.is_leader
        fx = self.reg.on_client_message(conn, CreateSession({}, b"o" + nonce), self.now)
        if fx.propose:
            self.nonces[conn].add(b"o" + nonce)
        self.observe(fx, was_leader)
        self.commit_all()

    @rule(conn=st.sampled_from(CONNS), first=st.integers(min_value=1, max_value=4))
    def burst(self, conn: bytes, first: int) -> None:
        """Several requests at once, so the in-flight limit is reached."""
        for rid in range(first, first + 5):
            was_leader = self.reg.is_leader
            bound = self.reg.session_of(conn)
            msg = ClientRequest(RequestId(rid), RequestId(first), b"b")
            fx = self.reg.on_client_message(conn, msg, self.now)
            self.observe(fx, was_leader)
            if bound is not None and was_leader:
                limit = LIMITS["max_pending_requests_per_session"]
                assert len(self.in_flight[bound]) <= limit

    @rule()
    def commit_all(self) -> None:
        while self.log:
            self.commit(lose=False)

    @rule(data=st.data())
    def server_request(self, data: st.DataObject) -> None:
        if not self.live:
            return
        sid = data.draw(st.sampled_from(sorted(self.live)))
        self.next_server_request[sid] += 1
        rid = RequestId(self.next_server_request[sid])
        self.feed(SendServerRequest(sid, rid, b"sr"))

    @rule(leader_known=st.booleans(), dice=st.integers(min_value=0, max_value=3))
    def step_down(self, leader_known: bool, dice: int) -> None:
        if dice:  # rarer than the other rules, so sessions get to live a while
            return
        was_leader = self.reg.is_leader
        self.term += 1
        hint = HINT if leader_known else None
        leader = MemberId("n2") if leader_known else None
        fx = self.reg.on_server_action(
            LeadershipChanged(NodeRole.FOLLOWER, leader, hint, self.term), self.now
        )
        assert not fx.propose
        if was_leader:
            assert all(msg.leader_hint == hint for _, msg in fx.send)  # type: ignore[union-attr]
        self.observe(fx, was_leader)
        self.nonces.clear()
        self.queries.clear()
        self.in_flight.clear()
        self.acked.clear()

    @rule()
    def step_up(self) -> None:
        if self.reg.is_leader:
            return
        self.term += 1
        fx = self.reg.on_server_action(
            LeadershipChanged(NodeRole.LEADER, MemberId("n1"), SELF, self.term), self.now
        )
        assert fx == RegistryEffects()

    @rule()
    def load_sessions(self) -> None:
        self.feed(SessionsSnapshot(self.term, dict(self.live)))

    # ------------------------------------------------------------------ invariants

    @invariant()
    def bindings_agree_both_ways(self) -> None:
        for conn in CONNS:
            sid = self.reg.session_of(conn)
            if sid is not None:
                assert self.reg.connection_of(sid) == conn
        bound = [self.reg.connection_of(s) for s in self.reg.sessions()]
        bound = [c for c in bound if c is not None]
        assert len(bound) == len(set(bound)), "two sessions on one connection"
        for conn in bound:
            assert self.reg.connection_of(self.reg.session_of(conn) or GHOST) == conn

    @invariant()
    def limits_hold(self) -> None:
        status = self.reg.status()
        assert status.pending_queries <= LIMITS["max_pending_queries"]
        assert status.pending_queries >= 0

    @invariant()
    def followers_keep_no_client_state(self) -> None:
        if not self.reg.is_leader:
            status = self.reg.status()
            assert (status.sessions, status.connections, status.pending_creations) == (0, 0, 0)


RegistryMachine.TestCase.settings = settings(stateful_step_count=60)
TestRegistry = RegistryMachine.TestCase
