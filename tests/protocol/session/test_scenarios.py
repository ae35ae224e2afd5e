"""The plan's acceptance scenarios at the session-state-machine level, and DESIGN rules 1-10."""

from __future__ import annotations

from typing import Any

import pytest

from protocol.ids import RequestId, SessionId
from protocol.session import (
    RESPONSE_EVICTED,
    UNKNOWN_SESSION,
    ApplicationError,
    ClientRequest,
    InternalApplied,
    RequestResult,
    RetryBatch,
    ServerRequestEnvelope,
    ServerRequestsAcked,
    SessionCreated,
    SessionRejected,
    SessionRemoved,
    SessionStats,
)
from tests.protocol.session.helpers import Node, RecordingSM, pack, unpack


def result(r: object) -> RequestResult:
    assert isinstance(r, RequestResult)
    return r


def env(sid: str, rid: int, payload: Any) -> ServerRequestEnvelope:
    return ServerRequestEnvelope(SessionId(sid), RequestId(rid), pack(payload))


@pytest.fixture
def node() -> Node:
    n = Node()
    for sid in ("a", "b", "c"):
        n.create(sid)
    return n


def calls(node: Node) -> list[Any]:
    assert isinstance(node.user, RecordingSM)
    return [c for c in node.user.calls if c[1] not in ("created", "expired")]


# ----------------------------------------------------------- acceptance scenarios


def test_new_request_runs_once_and_its_response_is_cached(node: Node) -> None:
    r = result(node.request("a", 1, ["add", 5]))
    assert (unpack(r.response), r.from_cache) == (5, False)  # type: ignore[arg-type]
    assert calls(node) == [("a", ["add", 5])]
    assert node.sm.stats().cached_responses == 1


def test_duplicate_request_returns_cached_response_without_calling_user_code(node: Node) -> None:
    first = result(node.request("a", 1, ["add", 5]))
    again = result(node.request("a", 1, ["add", 5]))
    assert again.response == first.response and again.from_cache
    assert again.server_requests == ()
    assert len(calls(node)) == 1
    assert node.sm.query(pack("n")) == pack(5)


def test_duplicate_request_emits_no_new_server_requests(node: Node) -> None:
    first = result(node.request("a", 1, ["send", ["b"], "x"]))
    assert first.server_requests == (env("b", 1, "x"),)
    assert result(node.request("a", 1, ["send", ["b"], "x"])).server_requests == ()
    assert node.sm.stats().pending_server_requests == 1


def test_error_response_is_cached_and_returned_on_retry_without_rerunning(node: Node) -> None:
    value_error = result(node.request("a", 1, ["err"]))
    raised = result(node.request("a", 2, ["boom"], lowest=1))
    assert unpack(value_error.response) == {"error": "bad input"}  # type: ignore[arg-type]
    assert raised.response == ApplicationError("RuntimeError: boom")
    assert result(node.request("a", 1, ["err"], lowest=1)).response == value_error.response
    assert result(node.request("a", 2, ["boom"], lowest=1)).response == raised.response
    assert len(calls(node)) == 2


def test_interleaved_requests_of_many_sessions_each_run_exactly_once() -> None:
    node = Node()
    sessions = [f"s{i}" for i in range(20)]
    for sid in sessions:
        node.create(sid)
    order = [(sid, rid) for rid in range(1, 6) for sid in sessions]
    for sid, rid in order + order[::3]:  # the second pass is all duplicates
        node.request(sid, rid, ["add", 1], lowest=1)
    assert sorted((c[0], c[1][1]) for c in calls(node)) == sorted((s, 1) for s, _ in order)
    assert node.sm.query(pack("n")) == pack(len(order))
    # each request's response is the value after it ran, in log order
    for k, (sid, rid) in enumerate(order, start=1):
        assert result(node.request(sid, rid, ["add", 1], lowest=1)).response == pack(k)


def test_server_requests_emitted_by_user_code_get_fresh_ids_and_are_returned(node: Node) -> None:
    r = result(node.request("a", 1, ["send", ["b", "c", "b", "nobody"], "p"], t=10))
    assert r.server_requests == (env("b", 1, "p"), env("c", 1, "p"), env("b", 2, "p"))
    r = result(node.request("c", 1, ["send", ["b"], "q"], t=11))
    assert r.server_requests == (env("b", 3, "q"),)
    assert node.sm.stats().pending_server_requests == 4


def test_ack_removes_every_pending_id_up_to_n_also_out_of_order(node: Node) -> None:
    node.request("a", 1, ["send", ["b"] * 6, "p"])
    assert node.ack("b", 4) == ServerRequestsAcked(SessionId("b"), RequestId(4), 4)
    assert node.ack("b", 2) == ServerRequestsAcked(SessionId("b"), RequestId(2), 0)  # late
    assert node.ack("b", 5) == ServerRequestsAcked(SessionId("b"), RequestId(5), 1)
    assert node.sm.stats().pending_server_requests == 1
    retried = node.retry(before=1, t=100)
    assert retried == RetryBatch((env("b", 6, "p"),))
    assert node.ack("b", 99) == ServerRequestsAcked(SessionId("b"), RequestId(99), 1)
    assert node.ack("nobody", 1) == ServerRequestsAcked(SessionId("nobody"), RequestId(1), 0)
    assert not node.sm.has_pending_requests_sent_before(10**9)


def test_get_requests_for_retry_returns_exactly_those_sent_before_t_and_bumps_them(
    node: Node,
) -> None:
    node.request("a", 1, ["send", ["b", "c"], "early"], t=100)
    node.request("a", 2, ["send", ["c"], "late"], lowest=1, t=200)
    assert node.sm.has_pending_requests_sent_before(101)
    assert not node.sm.has_pending_requests_sent_before(100)
    assert node.retry(before=150, t=300) == RetryBatch((env("b", 1, "early"), env("c", 1, "early")))
    # bumped to 300: only the one sent at 200 is older than 250 now
    assert node.retry(before=250, t=400) == RetryBatch((env("c", 2, "late"),))
    assert node.retry(before=300, t=500) == RetryBatch(())
    assert node.retry(before=301, t=600) == RetryBatch((env("b", 1, "early"), env("c", 1, "early")))
    assert not node.sm.has_pending_requests_sent_before(400)
    assert node.sm.has_pending_requests_sent_before(401)


def test_snapshot_holds_session_and_user_state_and_restores_identically(node: Node) -> None:
    node.request("a", 1, ["add", 3], t=5)
    node.request("a", 2, ["send", ["b", "c"], "p"], lowest=1, t=6)
    node.request("b", 7, ["boom"], lowest=7)
    node.ack("c", 1)
    snap = node.sm.snapshot()

    twin = Node()
    twin.sm.restore(snap)
    twin.index = node.index
    assert twin.sm.snapshot() == snap
    assert twin.sm.stats() == node.sm.stats() == SessionStats(3, 1, 3, node.index)
    assert twin.sm.sessions() == node.sm.sessions()
    # cache, lowest-pending, pending server requests and last ids all came along
    for n in (node, twin):
        assert result(n.request("a", 2, ["x"], lowest=1)).response == pack(2)
        assert result(n.request("a", 1, ["x"], lowest=1)).response == pack(3)
        assert result(n.request("b", 6, ["x"], lowest=6)).response is RESPONSE_EVICTED
        assert result(n.request("b", 7, ["x"], lowest=7)).from_cache
        assert n.retry(before=10, t=20) == RetryBatch((env("b", 1, "p"),))
        assert result(n.request("a", 3, ["send", ["c"], 0], lowest=3)).server_requests == (
            env("c", 2, 0),
        )
        assert n.sm.query(pack("n")) == pack(3)
    assert twin.sm.snapshot() == node.sm.snapshot()
    assert calls(twin) == [("a", ["send", ["c"], 0])]


# ----------------------------------------------------------- rules 1-10 one by one


def test_request_for_unknown_session_is_an_error_and_user_code_is_not_called(node: Node) -> None:
    r = result(node.request("zz", 1, ["add", 1]))
    assert r.response is UNKNOWN_SESSION and not r.from_cache
    assert calls(node) == []


def test_request_below_highest_lowest_pending_seen_is_response_evicted(node: Node) -> None:
    node.request("a", 5, ["add", 1], lowest=5)
    assert result(node.request("a", 4, ["add", 1], lowest=4)).response is RESPONSE_EVICTED
    assert result(node.request("a", 3, ["add", 1], lowest=3)).response is RESPONSE_EVICTED
    assert len(calls(node)) == 1


def test_request_below_its_own_lowest_pending_is_response_evicted(node: Node) -> None:
    assert result(node.request("a", 2, ["add", 1], lowest=3)).response is RESPONSE_EVICTED
    assert calls(node) == []
    # nothing changed: request 2 with an honest lowest still runs
    assert result(node.request("a", 2, ["add", 1], lowest=2)).response == pack(1)


def test_lowest_pending_drops_older_cached_responses_only(node: Node) -> None:
    for rid in (3, 1, 2, 5, 4):  # out of order, all pending
        node.request("a", rid, ["add", 1], lowest=1)
    assert node.sm.stats().cached_responses == 5
    node.request("a", 6, ["add", 1], lowest=4)
    assert node.sm.stats().cached_responses == 3  # 4, 5, 6
    assert result(node.request("a", 4, ["add", 1], lowest=4)).from_cache
    assert result(node.request("a", 3, ["add", 1], lowest=4)).response is RESPONSE_EVICTED
    # a stale, lower lowest_pending does not bring anything back or drop more
    node.request("a", 7, ["add", 1], lowest=2)
    assert node.sm.stats().cached_responses == 4
    assert result(node.request("a", 3, ["add", 1], lowest=2)).response is RESPONSE_EVICTED


def test_server_request_ids_are_never_reused_after_the_pending_list_empties(node: Node) -> None:
    node.request("a", 1, ["send", ["b", "b"], 1])
    node.ack("b", 2)
    assert node.sm.stats().pending_server_requests == 0
    r = result(node.request("a", 2, ["send", ["b"], 2], lowest=2))
    assert r.server_requests == (env("b", 3, 2),)


def test_expiry_runs_the_hook_assigns_its_sends_and_removes_every_trace(node: Node) -> None:
    node.request("b", 1, ["send", ["a", "a"], "for a"])
    node.request("a", 1, ["send", ["b"], "for b"], t=50)
    removed = node.expire("a", t=60)
    assert removed == SessionRemoved(
        SessionId("a"), True, (env("b", 2, ["gone", "a"]), env("c", 1, ["gone", "a"]))
    )
    assert not any("a" in key for key in node.sm._raw_state())
    assert "a" not in node.sm.sessions()
    assert node.sm.stats() == SessionStats(2, 3, 1, node.index)
    assert node.retry(before=10**6, t=70) == RetryBatch(
        (env("b", 1, "for b"), env("b", 2, ["gone", "a"]), env("c", 1, ["gone", "a"]))
    )


def test_an_expired_session_never_returns(node: Node) -> None:
    node.request("a", 1, ["add", 1])
    node.expire("a")
    assert result(node.request("a", 1, ["add", 1])).response is UNKNOWN_SESSION
    assert result(node.request("a", 2, ["add", 1], lowest=2)).response is UNKNOWN_SESSION
    assert node.ack("a", 1) == ServerRequestsAcked(SessionId("a"), RequestId(1), 0)
    assert node.expire("a") == SessionRemoved(SessionId("a"), False, ())


def test_failing_expiry_hook_still_removes_the_session_and_discards_its_work() -> None:
    node = Node()
    node.create("a", raise_on_expiry="yes")
    node.create("b")
    assert node.expire("a") == SessionRemoved(SessionId("a"), True, ())
    assert node.sm.sessions() == {"b": {}}
    assert node.sm.query(pack("keys")) == pack(["live/a", "live/b"])  # hook's delete undone
    assert node.sm.stats().pending_server_requests == 0  # its sends were discarded


def test_create_session_gives_fresh_session_and_greets_others(node: Node) -> None:
    created = node.create("d", t=9, greet="1")
    assert created == SessionCreated(
        SessionId("d"),
        (env("a", 1, ["hello", "d"]), env("b", 1, ["hello", "d"]), env("c", 1, ["hello", "d"])),
    )
    assert node.sm.sessions()["d"] == {"greet": "1"}


@pytest.mark.parametrize(
    "caps, reason",
    [({"reject": "full"}, "full"), ({"raise": "k"}, "application error: KeyError: 'k'")],
)
def test_rejected_or_failing_creation_leaves_nothing(
    node: Node, caps: dict[str, str], reason: str
) -> None:
    before = node.sm.snapshot()
    assert node.create("d", **caps) == SessionRejected(SessionId("d"), reason)
    assert node.sm.snapshot()[3:] == before[3:]  # only last_applied moved
    assert "d" not in node.sm.sessions()
    assert result(node.request("d", 1, ["add", 1])).response is UNKNOWN_SESSION


def test_create_session_with_an_id_in_use_is_rejected_and_changes_nothing(node: Node) -> None:
    node.request("a", 1, ["add", 1])
    assert node.create("a", other="caps") == SessionRejected(
        SessionId("a"), "session id already in use"
    )
    assert node.sm.sessions()["a"] == {}
    assert result(node.request("a", 1, ["add", 1])).from_cache


def test_raising_user_apply_is_a_cached_application_error_and_leaves_no_trace(
    node: Node,
) -> None:
    node.request("a", 1, ["add", 2])
    user_before = node.sm.query(pack("keys"))
    r = result(node.request("b", 1, ["boom"]))
    assert r.response == ApplicationError("RuntimeError: boom") and r.server_requests == ()
    assert node.sm.query(pack("keys")) == user_before
    assert node.sm.query(pack("n")) == pack(2)
    assert node.sm.stats().pending_server_requests == 0


def test_raising_user_methods_give_identical_state_on_two_replicas() -> None:
    replicas = [Node(), Node()]
    for n in replicas:
        n.create("a")
        n.create("b", raise_on_expiry="1")
        n.create("c", **{"raise": "x"})
        n.request("a", 1, ["add", 1])
        n.request("a", 2, ["boom"], lowest=1)
        n.request("a", 3, ["nonsense"], lowest=1)
        n.internal("bad")
        n.expire("b")
    assert replicas[0].sm.snapshot() == replicas[1].sm.snapshot()
    r = result(replicas[0].request("a", 3, ["x"], lowest=1))
    assert r.response == ApplicationError("ValueError: unknown op 'nonsense'")


def test_undecodable_command_or_unencodable_response_is_an_application_error(node: Node) -> None:
    bad_bytes = ClientRequest(SessionId("a"), RequestId(1), RequestId(1), b"\xc1", 0)
    node.index += 1
    r = result(node.sm.apply(node.index, bad_bytes))
    assert isinstance(r.response, ApplicationError)
    assert calls(node) == []

    class Unencodable(RecordingSM):
        def apply(self, ctx: Any, state: Any, command: Any) -> Any:
            state["n"] = 1
            return {1, 2}  # a set is not a msgpack value

    other = Node(Unencodable())
    other.create("a")
    r = result(other.request("a", 1, ["x"]))
    assert isinstance(r.response, ApplicationError) and "set" in r.response.message
    assert other.sm.query(pack("n")) == pack(0)  # the write was rolled back


def test_internal_commands_run_apply_internal_with_no_session(node: Node) -> None:
    assert node.internal("tick", t=3) == InternalApplied(
        None, (env("a", 1, "tick"), env("b", 1, "tick"), env("c", 1, "tick"))
    )
    assert calls(node) == [(None, "tick")]
    failed = node.internal("other")
    assert failed == InternalApplied(ApplicationError("RuntimeError: bad internal command"), ())
    assert node.sm.stats().pending_server_requests == 3


def test_optional_methods_missing_give_application_errors() -> None:
    class Minimal(RecordingSM):
        apply_internal = RecordingSM.__base__.apply_internal  # type: ignore[attr-defined]
        query = RecordingSM.__base__.query  # type: ignore[attr-defined]

    node = Node(Minimal())
    r = node.internal("tick")
    assert isinstance(r, InternalApplied) and r.error is not None
    assert "does not implement apply_internal" in r.error.message
    q = node.sm.query(pack("n"))
    assert isinstance(q, ApplicationError) and "does not implement query" in q.message


def test_query_is_read_only_and_failures_are_typed(node: Node) -> None:
    node.request("a", 1, ["add", 4])
    assert node.sm.query(pack("n")) == pack(4)
    assert node.sm.query(pack("write")) == ApplicationError(
        "TypeError: query must not modify the state"
    )
    assert node.sm.query(pack("nope")) == ApplicationError("LookupError: nope")
    assert isinstance(node.sm.query(b"\xc1"), ApplicationError)
    assert node.sm.query(pack("n")) == pack(4)


def test_apply_refuses_host_bugs(node: Node) -> None:
    with pytest.raises(ValueError):
        node.sm.apply(node.index, ClientRequest(SessionId("a"), RequestId(1), RequestId(1), b"", 0))
    with pytest.raises(TypeError):
        node.sm.apply(node.index + 1, "not a command")  # type: ignore[arg-type]
    assert node.sm.last_applied == node.index


def test_sessions_dirty_read_lists_capabilities_and_is_a_copy(node: Node) -> None:
    node.create("d", role="admin")
    seen = node.sm.sessions()
    assert seen == {"a": {}, "b": {}, "c": {}, "d": {"role": "admin"}}
    seen["d"]["role"] = "changed"
    assert node.sm.sessions()["d"] == {"role": "admin"}


def test_many_distinct_send_times_keep_the_retry_index_small(node: Node) -> None:
    for t in range(1, 400):
        node.request("a", t, ["send", ["b"], t], lowest=t, t=t)
        node.ack("b", t)
    assert len(node.sm._sent.heap) < 100
    assert not node.sm.has_pending_requests_sent_before(10**6)
    node.request("a", 400, ["send", ["b"], 0], lowest=400, t=400)
    assert node.sm.has_pending_requests_sent_before(401)
    assert not node.sm.has_pending_requests_sent_before(400)
