"""Random interleavings of every session command against a simple reference model.

Two replicas get the same commands; one of them is now and then replaced by a fresh
state machine restored from its own snapshot. After every step: results equal the
model's, both replicas' snapshots are byte-identical, user code ran exactly once per
executed (session, request), server request ids only grow, and expired sessions leave
nothing behind.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from protocol.ids import RequestId, SessionId
from protocol.session import (
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
    SessionStateMachine,
    SessionStats,
)
from tests.conftest import LONG
from tests.protocol.session.helpers import Node, RecordingSM, pack

POOL = ["s0", "s1", "s2", "s3"]
CAPS = [{}, {"greet": "1"}, {"reject": "no"}, {"raise_on_expiry": "1"}]


@dataclass
class MSession:
    caps: dict[str, str]
    highest: int = 0
    cache: dict[int, Any] = field(default_factory=dict)
    last_id: int = 0
    pending: dict[int, list[Any]] = field(default_factory=dict)  # id -> [payload, sent]


class Model:
    """The contract, written as plainly as possible (scans everywhere)."""

    def __init__(self) -> None:
        self.sessions: dict[str, MSession] = {}
        self.n = 0

    def send(self, target: str, payload: Any, now: int, skip: str | None = None) -> list[Any]:
        s = self.sessions.get(target)
        if s is None or target == skip:
            return []
        s.last_id += 1
        s.pending[s.last_id] = [pack(payload), now]
        return [ServerRequestEnvelope(SessionId(target), RequestId(s.last_id), pack(payload))]

    def others(self, me: str) -> list[str]:
        return sorted(k for k in self.sessions if k != me)

    def create(self, sid: str, caps: dict[str, str], now: int) -> SessionResult:
        if sid in self.sessions:
            return SessionRejected(SessionId(sid), "session id already in use")
        if "reject" in caps:
            return SessionRejected(SessionId(sid), caps["reject"])
        self.sessions[sid] = MSession(dict(caps))
        out: list[Any] = []
        if "greet" in caps:
            for other in self.others(sid):
                out += self.send(other, ["hello", sid], now)
        return SessionCreated(SessionId(sid), tuple(out))

    def request(self, sid: str, rid: int, low: int, cmd: list[Any], now: int) -> RequestResult:
        key = (SessionId(sid), RequestId(rid))
        s = self.sessions.get(sid)
        if s is None:
            return RequestResult(*key, UNKNOWN_SESSION, (), False)
        if rid in s.cache:
            return RequestResult(*key, s.cache[rid], (), True)
        if rid < s.highest or rid < low:
            return RequestResult(*key, RESPONSE_EVICTED, (), False)
        if low > s.highest:
            s.highest = low
            s.cache = {r: v for r, v in s.cache.items() if r >= low}
        out: list[Any] = []
        response: Any
        if cmd[0] == "add":
            self.n += cmd[1]
            response = pack(self.n)
        elif cmd[0] == "send":
            for target in cmd[1]:
                out += self.send(target, cmd[2], now)
            response = pack(len(cmd[1]))
        elif cmd[0] == "err":
            response = pack({"error": "bad input"})
        else:
            response = ApplicationError("RuntimeError: boom")
        s.cache[rid] = response
        return RequestResult(*key, response, tuple(out), False)

    def ack(self, sid: str, upto: int) -> SessionResult:
        s = self.sessions.get(sid)
        gone = [i for i in (s.pending if s else {}) if i <= upto]
        for i in gone:
            del s.pending[i]  # type: ignore[union-attr]
        return ServerRequestsAcked(SessionId(sid), RequestId(upto), len(gone))

    def expire(self, sid: str, now: int) -> SessionResult:
        s = self.sessions.get(sid)
        if s is None:
            return SessionRemoved(SessionId(sid), False, ())
        out: list[Any] = []
        if "raise_on_expiry" not in s.caps:
            for other in self.others(sid):
                out += self.send(other, ["gone", sid], now)
        del self.sessions[sid]
        return SessionRemoved(SessionId(sid), True, tuple(out))

    def retry(self, before: int, now: int) -> SessionResult:
        out = []
        for sid in sorted(self.sessions):
            for i, item in sorted(self.sessions[sid].pending.items()):
                if item[1] < before:
                    item[1] = now
                    out.append(ServerRequestEnvelope(SessionId(sid), RequestId(i), item[0]))
        return RetryBatch(tuple(out))

    def tick(self, now: int) -> SessionResult:
        out: list[Any] = []
        for other in self.others(""):
            out += self.send(other, "tick", now)
        return InternalApplied(None, tuple(out))

    def stats(self, index: int) -> SessionStats:
        return SessionStats(
            len(self.sessions),
            sum(len(s.pending) for s in self.sessions.values()),
            sum(len(s.cache) for s in self.sessions.values()),
            index,
        )

    def any_sent_before(self, t: int) -> bool:
        return any(p[1] < t for s in self.sessions.values() for p in s.pending.values())


class SessionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.a = Node()
        self.b = Node()
        self.now = 1000
        self.next_rid = dict.fromkeys(POOL, 1)
        self.sent: dict[tuple[str, int], list[Any]] = {}
        self.executed: set[tuple[str, int, int]] = set()
        self.incarnation = dict.fromkeys(POOL, 0)  # a re-created id is a new session
        self.max_server_id: dict[str, int] = {}
        self.calls_before_restore: list[Any] = []

    # -- helpers
    def both(self, apply: Any, expected: SessionResult) -> None:
        ra, rb = apply(self.a), apply(self.b)
        assert ra == expected, (ra, expected)
        assert rb == expected, (rb, expected)
        for envelope in getattr(ra, "server_requests", ()):
            if isinstance(ra, RetryBatch):
                continue
            sid = envelope.session_id
            assert envelope.request_id > self.max_server_id.get(sid, 0)  # never reused
            self.max_server_id[sid] = envelope.request_id

    def forget_client(self, sid: str) -> None:
        self.next_rid[sid] = 1
        self.sent = {k: v for k, v in self.sent.items() if k[0] != sid}
        self.incarnation[sid] += 1
        self.max_server_id.pop(sid, None)

    def do_request(self, sid: str, rid: int, low: int, cmd: list[Any]) -> None:
        before = sid in self.model.sessions and rid not in self.model.sessions[sid].cache
        expected = self.model.request(sid, rid, low, cmd, self.now)
        if before and expected.response is not RESPONSE_EVICTED:
            self.executed.add((sid, self.incarnation.get(sid, 0), rid))
        self.both(lambda n: n.request(sid, rid, cmd, lowest=low, t=self.now), expected)

    # -- rules
    @rule(sid=st.sampled_from(POOL), caps=st.sampled_from(CAPS))
    def create(self, sid: str, caps: dict[str, str]) -> None:
        existed = sid in self.model.sessions
        expected = self.model.create(sid, caps, self.now)
        if not existed and isinstance(expected, SessionCreated):
            self.forget_client(sid)
        self.both(lambda n: n.create(sid, t=self.now, **caps), expected)

    @rule(
        sid=st.sampled_from([*POOL, "zz"]),
        op=st.one_of(
            st.tuples(st.just("add"), st.integers(-3, 3)),
            st.tuples(st.just("send"), st.lists(st.sampled_from([*POOL, "zz"]), max_size=3)),
            st.sampled_from([("err",), ("boom",)]),
        ),
        back=st.integers(-1, 3),
    )
    def new_request(self, sid: str, op: tuple[Any, ...], back: int) -> None:
        rid = self.next_rid.get(sid, 1)
        self.next_rid[sid] = rid + 1
        cmd = [*op, "payload"] if op[0] == "send" else list(op)
        cmd.append([sid, self.incarnation.get(sid, 0), rid])  # which request the user saw
        self.sent[(sid, rid)] = cmd
        self.do_request(sid, rid, max(1, rid - back), cmd)

    @rule(data=st.data(), sid=st.sampled_from(POOL), back=st.integers(0, 3))
    def duplicate_request(self, data: st.DataObject, sid: str, back: int) -> None:
        sent = sorted(rid for s, rid in self.sent if s == sid)
        if not sent:
            return
        rid = data.draw(st.sampled_from(sent))
        self.do_request(sid, rid, max(1, rid - back), self.sent[(sid, rid)])

    @rule(sid=st.sampled_from([*POOL, "zz"]), extra=st.integers(-2, 2))
    def ack(self, sid: str, extra: int) -> None:
        s = self.model.sessions.get(sid)
        upto = max(0, (s.last_id if s else 0) + extra)
        self.both(lambda n: n.ack(sid, upto, t=self.now), self.model.ack(sid, upto))

    @rule(back=st.integers(0, 6))
    def retry(self, back: int) -> None:
        before = self.now - back
        self.both(lambda n: n.retry(before, self.now), self.model.retry(before, self.now))

    @rule(sid=st.sampled_from([*POOL, "zz"]))
    def expire(self, sid: str) -> None:
        s = self.model.sessions.get(sid)
        expected = self.model.expire(sid, self.now)
        self.both(lambda n: n.expire(sid, t=self.now), expected)
        if sid in POOL:
            self.forget_client(sid)
        for node in (self.a, self.b):
            raw = node.sm._raw_state()
            assert "session/" + sid not in raw
            if s is not None and "raise_on_expiry" not in s.caps:
                # the user's hook removed its own key; nothing else mentions the session
                assert not any(k.endswith("/" + sid) for k in raw)

    @rule()
    def internal_tick(self) -> None:
        self.both(lambda n: n.internal("tick", t=self.now), self.model.tick(self.now))

    @rule(delta=st.integers(0, 4))
    def advance_clock(self, delta: int) -> None:
        self.now += delta

    @rule()
    def snapshot_and_restore(self) -> None:
        old = self.b
        fresh = Node()
        assert isinstance(fresh.user, RecordingSM) and isinstance(old.user, RecordingSM)
        fresh.user.calls = old.user.calls  # the call log is a side channel, not state
        fresh.sm = SessionStateMachine(fresh.user)
        fresh.sm.restore(old.sm.snapshot())
        fresh.index = old.index
        self.b = fresh

    # -- invariants
    @invariant()
    def replicas_are_byte_identical(self) -> None:
        assert self.a.sm.snapshot() == self.b.sm.snapshot()

    @invariant()
    def user_code_ran_exactly_once_per_executed_request(self) -> None:
        for node in (self.a, self.b):
            assert isinstance(node.user, RecordingSM)
            seen = Counter(
                tuple(c[1][-1])
                for c in node.user.calls
                if isinstance(c[1], list) and c[0] is not None
            )
            # requests that got an error before running (unknown, evicted) never ran
            assert set(seen) == self.executed
            assert all(v == 1 for v in seen.values()), seen

    @invariant()
    def counters_and_dirty_reads_match_the_model(self) -> None:
        for node in (self.a, self.b):
            assert node.sm.stats() == self.model.stats(node.index)
            assert set(node.sm.sessions()) == set(self.model.sessions)
            for t in (self.now - 3, self.now, self.now + 1):
                assert node.sm.has_pending_requests_sent_before(t) == self.model.any_sent_before(t)

    @invariant()
    def cached_ids_are_never_below_the_highest_lowest_pending(self) -> None:
        for s in self.model.sessions.values():
            assert all(rid >= s.highest for rid in s.cache)


SessionMachine.TestCase.settings = settings(
    max_examples=2000 if LONG else 150, stateful_step_count=60 if LONG else 40
)
test_session_state_machine = SessionMachine.TestCase
