"""The two cores together: a client core talking to two registries and a tiny session
state machine, through a lossy network and a leader failover.

This is the protocol the actor shells will carry; here it runs in one thread with
simulated time, so every interleaving is reproducible from its seed.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.actions import (
    ClientRequestAction,
    CreateSessionAction,
    ExpireSessionAction,
    LeadershipChanged,
    NodeRole,
    QueryAction,
    RaftAction,
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
from protocol.client import ClientConfig, ClientEffects, ClientPhase, ClientSessionCore
from protocol.ids import MemberId, RequestId, SessionId
from protocol.registry import Registry, RegistryEffects
from protocol.wire import ClientMessage, ErrorReason, ServerMessage
from tests.protocol.registry_helpers import make_registry

N1, N2 = "tcp://n1", "tcp://n2"


@dataclass
class _Session:
    caps: dict[str, str]
    cache: dict[int, bytes] = field(default_factory=dict)
    lowest: int = 0
    next_server_request: int = 0
    pending_server_requests: dict[int, bytes] = field(default_factory=dict)


class MiniStateMachine:
    """Just enough of the session state machine's contract (DESIGN.md) for a counter."""

    def __init__(self) -> None:
        self.sessions: dict[SessionId, _Session] = {}
        self.counter = 0
        self.applied: list[tuple[SessionId, int]] = []

    def apply(self, action: RaftAction) -> list[ServerAction]:
        out: list[ServerAction] = []
        match action:
            case CreateSessionAction(session_id=sid, capabilities=caps):
                self.sessions[sid] = _Session(caps)
                out.append(SessionCreationConfirmed(sid, caps))
            case ClientRequestAction(session_id=sid, request_id=rid, payload=payload):
                s = self.sessions.get(sid)
                if s is None:
                    return [SendRequestError(sid, rid, ErrorReason.SESSION_EXPIRED, "")]
                if rid in s.cache:
                    return [SendResponse(sid, rid, s.cache[rid])]
                if rid < s.lowest:
                    return [SendRequestError(sid, rid, ErrorReason.RESPONSE_EVICTED, "")]
                low = action.lowest_pending_request_id
                s.lowest = max(s.lowest, low)
                s.cache = {k: v for k, v in s.cache.items() if k >= low}
                self.counter += 1
                self.applied.append((sid, rid))
                s.cache[rid] = b"%d" % self.counter
                out.append(SendResponse(sid, rid, s.cache[rid]))
                if payload == b"notify":  # the command asks for a server request back
                    s.next_server_request += 1
                    srid = s.next_server_request
                    s.pending_server_requests[srid] = b"n%d" % srid
                    out.append(SendServerRequest(sid, RequestId(srid), b"n%d" % srid))
            case ServerRequestAckAction(session_id=sid, request_id=upto):
                s = self.sessions.get(sid)
                if s is not None:
                    s.pending_server_requests = {
                        k: v for k, v in s.pending_server_requests.items() if k > upto
                    }
            case ExpireSessionAction(session_id=sid):
                if self.sessions.pop(sid, None) is not None:
                    out.append(SessionRemoved(sid))
            case QueryAction(connection=conn, correlation_id=cid):
                out.append(SendQueryResponse(conn, cid, b"%d" % self.counter))
        return out

    def retry(self, sid: SessionId) -> list[ServerAction]:
        """What the retry scheduler would resend for ``sid``."""
        s = self.sessions.get(sid)
        if s is None:
            return []
        return [
            SendServerRequest(sid, RequestId(k), v)
            for k, v in sorted(s.pending_server_requests.items())
        ]


class Cluster:
    """Two registries (n1 leads first), one state machine, one client, a lossy network."""

    def __init__(self, rng: random.Random, loss: float, session_timeout_ms: int = 5000) -> None:
        self.rng = rng
        self.loss = loss
        self.now = 0
        self.sm = MiniStateMachine()
        self.regs: dict[str, Registry] = {
            addr: make_registry(session_timeout_ms=session_timeout_ms) for addr in (N1, N2)
        }
        self.leader = N1
        self.term = 1
        self._lead(N1)
        self._follow(N2, N1)
        config = ClientConfig(
            (N2, N1), keep_alive_interval_ms=100, server_timeout_ms=500, handshake_timeout_ms=300
        )
        self.client = ClientSessionCore(config)
        self.address: str | None = None
        self.conn = b""
        self.connections = 0
        self.to_server: deque[tuple[str, bytes, ClientMessage]] = deque()
        self.to_client: deque[tuple[bytes, ServerMessage]] = deque()
        self.results: dict[int, bytes | None] = {}
        self.errors: dict[int, Exception] = {}
        self.delivered: list[bytes] = []
        self.on_client(self.client.start(0))

    # --------------------------------------------------------------- leadership

    def _lead(self, addr: str) -> None:
        reg = self.regs[addr]
        self.on_registry(
            addr,
            reg.on_server_action(
                LeadershipChanged(NodeRole.LEADER, MemberId(addr), addr, self.term), self.now
            ),
        )
        snapshot = {sid: s.caps for sid, s in self.sm.sessions.items()}
        self.on_registry(
            addr, reg.on_server_action(SessionsSnapshot(self.term, snapshot), self.now)
        )

    def _follow(self, addr: str, leader: str) -> None:
        change = LeadershipChanged(NodeRole.FOLLOWER, MemberId(leader), leader, self.term)
        self.on_registry(addr, self.regs[addr].on_server_action(change, self.now))

    def failover(self) -> None:
        old, new = self.leader, (N2 if self.leader == N1 else N1)
        self.term += 1
        self.leader = new
        self._follow(old, new)
        self._lead(new)

    # --------------------------------------------------------------- plumbing

    def lost(self) -> bool:
        return self.rng.random() < self.loss

    def on_client(self, fx: ClientEffects) -> None:
        if fx.connect is not None:
            self.address = fx.connect
            self.connections += 1
            self.conn = b"c%d" % self.connections
            self.on_client(self.client.on_connected(self.now))
        for msg in fx.send:
            if self.address is not None and not self.lost():
                self.to_server.append((self.address, self.conn, msg))
        for c in fx.completed:
            assert c.request_id not in self.results and c.request_id not in self.errors
            if c.error is None:
                self.results[c.request_id] = c.response
            else:
                self.errors[c.request_id] = c.error
        self.delivered.extend(d.payload for d in fx.deliver)
        if fx.deliver:  # handled at once: the ack follows
            last = fx.deliver[-1].request_id
            self.on_client(self.client.on_server_requests_handled(last, self.now))

    def on_registry(self, addr: str, fx: RegistryEffects) -> None:
        for conn, msg in fx.send:
            if addr == self.address and conn == self.conn and not self.lost():
                self.to_client.append((conn, msg))
        for action in fx.propose:
            assert addr == self.leader, "a follower proposed"
            for out in self.sm.apply(action):
                self.on_registry(
                    self.leader, self.regs[self.leader].on_server_action(out, self.now)
                )

    def pump(self, steps: int = 1000) -> None:
        for _ in range(steps):
            if self.to_server:
                addr, conn, msg = self.to_server.popleft()
                self.on_registry(addr, self.regs[addr].on_client_message(conn, msg, self.now))
            elif self.to_client:
                conn, msg = self.to_client.popleft()
                if conn == self.conn:  # messages of a dropped connection never arrive
                    self.on_client(self.client.on_message(msg, self.now))
            else:
                return
        raise AssertionError("the network did not settle")

    def advance(self, ms: int) -> None:
        self.now += ms
        self.on_client(self.client.on_tick(self.now))
        for addr, reg in self.regs.items():
            self.on_registry(addr, reg.on_tick(self.now))
        for sid in list(self.sm.sessions):
            for out in self.sm.retry(sid):
                self.on_registry(
                    self.leader, self.regs[self.leader].on_server_action(out, self.now)
                )
        self.pump()


@settings(max_examples=30)
@given(seed=st.integers(0, 2**32 - 1), loss=st.sampled_from([0.0, 0.1, 0.3]))
def test_every_command_applies_exactly_once_through_losses_and_failovers(
    seed: int, loss: float
) -> None:
    rng = random.Random(seed)
    cluster = Cluster(rng, loss)
    submitted = []
    for step in range(60):
        payload = b"notify" if rng.random() < 0.3 else b"inc"
        rid, fx = cluster.client.submit(payload, cluster.now)
        submitted.append(rid)
        cluster.on_client(fx)
        cluster.pump()
        if step % 20 == 19:
            cluster.failover()
        cluster.advance(rng.choice([10, 50, 150]))
    for _ in range(200):  # let retries finish every pending request
        if not cluster.client.pending_request_ids:
            break
        cluster.advance(150)
    cluster.loss = 0.0
    for _ in range(20):
        cluster.advance(150)

    assert cluster.client.phase is ClientPhase.ACTIVE
    assert not cluster.errors, cluster.errors
    assert sorted(cluster.results) == submitted  # every request completed, once
    sid = cluster.client.session_id
    assert sid is not None
    applied = [rid for s, rid in cluster.sm.applied if s == sid]
    assert sorted(applied) == submitted and len(set(applied)) == len(applied)  # exactly once
    assert cluster.sm.counter == len(submitted)
    # responses are the counter values of the one application of each request
    assert sorted(int(v or b"0") for v in cluster.results.values()) == list(
        range(1, len(submitted) + 1)
    )
    # every server request was delivered exactly once, in order, and acked
    notified = cluster.sm.sessions[sid].next_server_request
    assert cluster.delivered == [b"n%d" % i for i in range(1, notified + 1)]
    assert cluster.sm.sessions[sid].pending_server_requests == {}


def test_an_idle_client_keeps_its_session_and_a_silent_one_loses_it() -> None:
    cluster = Cluster(random.Random(1), 0.0, session_timeout_ms=1000)
    cluster.pump()
    for _ in range(50):
        cluster.advance(100)  # keep-alives every 100 ms, session timeout 1000 ms
    sid = cluster.client.session_id
    assert sid is not None and sid in cluster.sm.sessions
    cluster.loss = 1.0  # the client goes silent
    for _ in range(15):
        cluster.advance(100)
    assert sid not in cluster.sm.sessions  # the leader expired it, through the log
    cluster.loss = 0.0
    for _ in range(20):
        cluster.advance(100)
    assert cluster.client.phase is ClientPhase.FAILED
    rid, fx = cluster.client.submit(b"inc", cluster.now)
    cluster.on_client(fx)
    assert type(cluster.errors[rid]).__name__ == "SessionExpiredError"


def test_queries_read_the_state_after_earlier_commands() -> None:
    cluster = Cluster(random.Random(2), 0.0)
    for _ in range(3):
        _, fx = cluster.client.submit(b"inc", cluster.now)
        cluster.on_client(fx)
    cluster.pump()
    _, fx = cluster.client.query(b"read", cluster.now)
    answers: list[bytes | None] = []
    original = cluster.on_client

    def capture(fx: ClientEffects) -> None:
        answers.extend(q.response for q in fx.queries_completed)
        original(fx)

    cluster.on_client = capture  # type: ignore[method-assign]
    cluster.on_client(fx)
    cluster.pump()
    assert answers == [b"3"]
