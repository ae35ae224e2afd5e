"""The counter example through the session state machine."""

from __future__ import annotations

import msgpack
import pytest

from examples.counter import CounterStateMachine, decrement, demo, get, increment
from protocol.ids import RequestId, SessionId
from protocol.session import (
    ApplicationError,
    ClientRequest,
    CreateSession,
    RequestResult,
    ServerRequestEnvelope,
    SessionCreated,
    SessionExpired,
    SessionRejected,
    SessionStateMachine,
)


class Counter:
    def __init__(self) -> None:
        self.sm = SessionStateMachine(CounterStateMachine())
        self.index = 0
        self.rid: dict[str, int] = {}

    def send(self, sid: str, command: object) -> RequestResult:
        rid = self.rid.get(sid, 0) + 1
        self.rid[sid] = rid
        self.index += 1
        r = self.sm.apply(
            self.index,
            ClientRequest(
                SessionId(sid), RequestId(rid), RequestId(rid), msgpack.packb(command), self.index
            ),
        )
        assert isinstance(r, RequestResult)
        return r

    def create(self, sid: str, **caps: str) -> object:
        self.index += 1
        return self.sm.apply(self.index, CreateSession(SessionId(sid), caps, self.index))


def test_increment_decrement_get() -> None:
    c = Counter()
    c.create("a")
    assert msgpack.unpackb(c.send("a", increment(5)).response) == 5
    assert msgpack.unpackb(c.send("a", decrement(2)).response) == 3
    assert msgpack.unpackb(c.send("a", get()).response) == 3
    assert c.sm.query(msgpack.packb(get())) == msgpack.packb(3)


def test_crossing_a_multiple_of_ten_notifies_every_other_session() -> None:
    c = Counter()
    for sid in ("a", "b", "c"):
        assert isinstance(c.create(sid), SessionCreated)
    assert c.send("a", increment(9)).server_requests == ()
    crossed = c.send("b", increment(1)).server_requests
    payload = msgpack.packb(["crossed", 10])
    assert crossed == (
        ServerRequestEnvelope(SessionId("a"), RequestId(1), payload),
        ServerRequestEnvelope(SessionId("c"), RequestId(1), payload),
    )
    down = c.send("c", decrement(1)).server_requests  # 10 -> 9 crosses back
    assert [e.session_id for e in down] == ["a", "b"]
    c.index += 1
    c.sm.apply(c.index, SessionExpired(SessionId("a"), c.index))
    assert [e.session_id for e in c.send("c", increment(1)).server_requests] == ["b"]


def test_sessions_with_another_counter_version_are_rejected() -> None:
    c = Counter()
    assert c.create("a", counter="v2") == SessionRejected(
        SessionId("a"), "this counter speaks v1 only"
    )
    assert c.sm.sessions() == {}


def test_bad_commands_and_queries_are_application_errors() -> None:
    c = Counter()
    c.create("a")
    assert isinstance(c.send("a", ["mul", 2]).response, ApplicationError)
    assert isinstance(c.sm.query(msgpack.packb(["nope"])), ApplicationError)


def test_the_scripts_run_demo_checks_out(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main() == 0
    assert "FAILED" not in capsys.readouterr().out
