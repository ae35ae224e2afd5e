"""The client core against a hostile network: duplicates, reordering, losses, failovers.

Invariants checked after every step:

- request ids strictly increase from 1; every ClientRequest carries the lowest pending
  id; a request completes at most once, and times out only after its deadline;
- after every handshake every pending request is resent, same id and payload, in order;
- server requests reach the application exactly once each and in id order, whatever
  the network duplicates, reorders or drops; acks are cumulative and never go back.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from protocol.client import (
    ClientConfig,
    ClientEffects,
    ClientPhase,
    ClientSessionCore,
    RequestTimeoutError,
)
from protocol.ids import RequestId, SessionId
from protocol.wire import (
    ClientRequest,
    ClientResponse,
    CloseReason,
    ContinueSession,
    CreateSession,
    ErrorReason,
    NotLeader,
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

MEMBERS = ("tcp://a", "tcp://b", "tcp://c")
SID = SessionId("s")
TERMINAL = (ClientPhase.FAILED, ClientPhase.CLOSED)
WINDOW = 2


class ClientMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        config = ClientConfig(
            MEMBERS,
            keep_alive_interval_ms=100,
            server_timeout_ms=1000,
            handshake_timeout_ms=300,
            retry_backoff_ms=50,
            max_buffered_server_requests=3,
            max_in_flight=WINDOW,
        )
        self.core = ClientSessionCore(config)
        self.now = 0
        self.next_id = 1
        self.pending: dict[int, bytes] = {}
        self.deadlines: dict[int, int] = {}
        self.completed: set[int] = set()
        self.sent: set[int] = set()
        self.sent_on_binding: set[int] = set()
        self.handshake: CreateSession | ContinueSession | None = None
        self.server_assigned = 0
        self.delivered: list[int] = []
        self.handled = 0  # what the model's application reported handled
        self.last_ack = 0
        self.queries_made: list[int] = []
        self.queries_done: set[int] = set()
        self.apply(self.core.start(0))

    # ------------------------------------------------------------------ checking effects

    def apply(self, fx: ClientEffects) -> None:
        for c in fx.completed:
            rid = c.request_id
            assert rid not in self.completed, f"request {rid} completed twice"
            assert (c.response is None) != (c.error is None)
            if isinstance(c.error, RequestTimeoutError):
                assert self.now >= self.deadlines[rid], "timed out before the deadline"
            if c.response is not None:
                assert c.response == b"r%d" % rid
            self.completed.add(rid)
            self.pending.pop(rid, None)
        for d in fx.deliver:
            assert d.request_id == len(self.delivered) + 1, "out of order or duplicate"
            assert d.payload == b"sr%d" % d.request_id
            self.delivered.append(d.request_id)
        for q in fx.queries_completed:
            assert q.correlation_id not in self.queries_done, "query completed twice"
            self.queries_done.add(q.correlation_id)
        if fx.connect is not None:
            assert fx.send == []
            self.handshake = None
        for msg in fx.send:
            if isinstance(msg, ClientRequest):
                rid = msg.request_id
                assert self.pending.get(rid) == msg.payload
                assert msg.lowest_pending_request_id == min(self.pending)
                self.sent.add(rid)
                self.sent_on_binding.add(rid)
            elif isinstance(msg, ServerRequestAck):
                assert msg.request_id >= self.last_ack, "ack went back"
                assert msg.request_id == self.handled, "ack is not what was handled"
                self.last_ack = msg.request_id
            elif isinstance(msg, CreateSession | ContinueSession):
                self.handshake = msg
                self.sent_on_binding.clear()
        if self.core.phase in TERMINAL:
            assert not self.pending
            assert self.queries_done == set(self.queries_made)

    def receive(self, msg: ServerMessage) -> ClientEffects:
        fx = self.core.on_message(msg, self.now)
        self.apply(fx)
        return fx

    # ------------------------------------------------------------------ user

    @rule(payload=st.binary(max_size=3), deadline=st.none() | st.sampled_from([0, 1, 50, 100, 200]))
    def submit(self, payload: bytes, deadline: int | None) -> None:
        absolute = None if deadline is None else self.now + deadline
        terminal = self.core.phase in TERMINAL
        rid, fx = self.core.submit(payload, self.now, absolute)
        assert rid == self.next_id, "request ids must increase by one from 1"
        self.next_id += 1
        if terminal:
            assert [c.request_id for c in fx.completed] == [rid]
        else:
            self.pending[rid] = payload
            if absolute is not None:
                self.deadlines[rid] = absolute
        self.apply(fx)

    @rule(dice=st.integers(0, 9))
    def close(self, dice: int) -> None:
        if dice == 0:
            self.apply(self.core.close(self.now))
            assert self.core.phase in TERMINAL

    # ------------------------------------------------------------------ connection

    @rule()
    def connected(self) -> None:
        self.apply(self.core.on_connected(self.now))

    @rule()
    def disconnected(self) -> None:
        self.apply(self.core.on_disconnected(self.now))

    @rule(advance=st.sampled_from([0, 1, 49, 50, 99, 100, 101, 199, 400]))
    def tick(self, advance: int) -> None:
        self.now += advance
        self.apply(self.core.on_tick(self.now))

    @rule()
    def accept_handshake(self) -> None:
        hs = self.handshake
        if self.core.phase is not ClientPhase.HANDSHAKING or hs is None:
            return
        answer: ServerMessage
        if isinstance(hs, CreateSession):
            answer = SessionCreated(SID, hs.nonce)
        else:
            assert hs.session_id == SID
            answer = SessionContinued(hs.nonce)
        fx = self.receive(answer)
        resent = [m.request_id for m in fx.send if isinstance(m, ClientRequest)]
        assert resent == sorted(self.pending)[:WINDOW], "pending not resent in order"
        assert self.core.phase is ClientPhase.ACTIVE

    @rule()
    def settle(self) -> None:
        """Connect and complete the handshake in one go (so the session is often active)."""
        if self.core.phase is ClientPhase.BACKOFF:
            self.tick(50)
        self.connected()
        self.accept_handshake()

    @rule(hint=st.sampled_from([None, *MEMBERS, "tcp://elsewhere"]))
    def not_leader(self, hint: str | None) -> None:
        fx = self.receive(NotLeader(hint))
        assert not fx.completed  # NotLeader never reaches the user

    @rule(reason=st.sampled_from(list(CloseReason)), dice=st.integers(0, 9))
    def session_closed(self, reason: CloseReason, dice: int) -> None:
        if reason is not CloseReason.SESSION_EXPIRED or dice == 0:  # terminal: rarer
            self.receive(SessionClosed(reason, MEMBERS[dice % 3]))

    @rule(reason=st.sampled_from(list(RejectReason)), dice=st.integers(0, 9))
    def reject_handshake(self, reason: RejectReason, dice: int) -> None:
        hs = self.handshake
        terminal = reason not in (RejectReason.NOT_LEADER, RejectReason.OVERLOADED)
        if hs is None or (terminal and dice):
            return
        fx = self.receive(SessionRejected(reason, MEMBERS[dice % 3], hs.nonce, ""))
        if not terminal:
            assert not fx.completed

    # ------------------------------------------------------------------ queries

    @rule(deadline=st.none() | st.sampled_from([0, 1, 50, 100, 200]))
    def query(self, deadline: int | None) -> None:
        absolute = None if deadline is None else self.now + deadline
        cid, fx = self.core.query(b"q", self.now, absolute)
        assert cid == len(self.queries_made) + 1
        self.queries_made.append(cid)
        self.apply(fx)

    @rule(data=st.data(), fail=st.booleans())
    def answer_query(self, data: st.DataObject, fail: bool) -> None:
        if not self.queries_made:
            return
        cid = data.draw(st.sampled_from(self.queries_made))
        if fail:
            self.receive(QueryError(cid, ErrorReason.NOT_LEADER, "", None))
        else:
            self.receive(QueryResponse(cid, b"a"))

    # ------------------------------------------------------------------ responses

    @rule(data=st.data())
    def respond(self, data: st.DataObject) -> None:
        """A response, possibly a duplicate or a late one for a completed request."""
        if not self.sent:
            return
        rid = data.draw(st.sampled_from(sorted(self.sent)))
        was_pending = rid in self.pending
        fx = self.receive(ClientResponse(RequestId(rid), b"r%d" % rid))
        completed = [c.request_id for c in fx.completed]
        if self.core.phase in (ClientPhase.HANDSHAKING, ClientPhase.ACTIVE):
            assert completed == ([rid] if was_pending else [])

    @rule(data=st.data(), reason=st.sampled_from(list(ErrorReason)))
    def request_error(self, data: st.DataObject, reason: ErrorReason) -> None:
        if not self.sent:
            return
        rid = data.draw(st.sampled_from(sorted(self.sent)))
        fx = self.receive(RequestError(RequestId(rid), reason, "", None))
        if reason in (
            ErrorReason.NOT_LEADER,
            ErrorReason.NO_SESSION,
            ErrorReason.OVERLOADED,
            ErrorReason.TOO_MANY_PENDING,
        ):
            assert not fx.completed  # retried, never the user's problem

    @rule(ahead=st.integers(0, 2), data=st.data())
    def server_request(self, ahead: int, data: st.DataObject) -> None:
        """The server sends a new request, skips ahead, or resends an old one."""
        if self.core.phase is not ClientPhase.ACTIVE:
            return
        top = self.server_assigned + ahead
        rid = data.draw(st.integers(1, top)) if top else 0
        if not rid:
            return
        self.server_assigned = max(self.server_assigned, rid)
        duplicate = rid <= len(self.delivered)
        fx = self.receive(ServerRequest(RequestId(rid), b"sr%d" % rid))
        if duplicate:
            assert fx.deliver == []
            if rid <= self.handled:  # handled and acked: the server missed our ack
                assert fx.send == [ServerRequestAck(RequestId(self.handled))]
            else:  # delivered, not handled yet: the ack comes when it is
                assert fx.send == []

    @rule(data=st.data())
    def handle(self, data: st.DataObject) -> None:
        """The application reports handling up to some id (maybe old, maybe too high)."""
        upto = data.draw(st.integers(0, len(self.delivered) + 2))
        was = self.handled
        self.handled = max(self.handled, min(upto, len(self.delivered)))
        fx = self.core.on_server_requests_handled(RequestId(upto), self.now)
        self.apply(fx)
        acked = self.handled > was and self.core.phase is ClientPhase.ACTIVE
        assert fx.send == ([ServerRequestAck(RequestId(self.handled))] if acked else [])

    # ------------------------------------------------------------------ invariants

    @invariant()
    def pending_matches_the_model(self) -> None:
        assert self.core.pending_request_ids == tuple(sorted(self.pending))
        expected = min(self.pending) if self.pending else None
        assert self.core.lowest_pending_request_id == expected

    @invariant()
    def the_window_is_respected_and_used(self) -> None:
        in_flight = self.sent_on_binding & set(self.pending)
        assert len(in_flight) <= WINDOW
        if self.core.phase is ClientPhase.ACTIVE and len(in_flight) < WINDOW:
            assert in_flight == set(self.pending), "room in the window, yet a request waits"
        if in_flight:  # the window holds the lowest ids
            assert max(in_flight) < min(set(self.pending) - in_flight, default=10**9)

    @invariant()
    def delivery_is_a_prefix(self) -> None:
        assert self.delivered == list(range(1, len(self.delivered) + 1))
        assert self.core.delivered_server_request_id == len(self.delivered)
        assert self.last_ack <= self.handled <= len(self.delivered)
        assert self.core.handled_server_request_id == self.handled


ClientMachine.TestCase.settings = settings(stateful_step_count=80)
TestClient = ClientMachine.TestCase
