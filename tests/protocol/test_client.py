"""The client core's rules, one scenario at a time (see also the stateful test)."""

from __future__ import annotations

import pytest

from protocol.client import (
    ClientClosedError,
    ClientConfig,
    ClientEffects,
    ClientPhase,
    ClientSessionCore,
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
    ServerRequest,
    ServerRequestAck,
    SessionClosed,
    SessionContinued,
    SessionCreated,
    SessionRejected,
)

MEMBERS = ("tcp://a", "tcp://b", "tcp://c")
SID = SessionId("s1")
R = RequestId


def make(**overrides: int) -> ClientSessionCore:
    return ClientSessionCore(ClientConfig(MEMBERS, {"app": "test"}, **overrides))  # type: ignore[arg-type]


def handshake(core: ClientSessionCore, now: int = 0) -> ClientEffects:
    """Answer the handshake the core just sent; return the effects of the answer."""
    fx = core.on_connected(now)
    (msg,) = fx.send
    if isinstance(msg, CreateSession):
        return core.on_message(SessionCreated(SID, msg.nonce), now)
    assert isinstance(msg, ContinueSession) and msg.session_id == SID
    return core.on_message(SessionContinued(msg.nonce), now)


def active(**overrides: int) -> ClientSessionCore:
    core = make(**overrides)
    assert core.start(0).connect == MEMBERS[0]
    handshake(core)
    assert core.phase is ClientPhase.ACTIVE and core.session_id == SID
    return core


def test_start_connects_and_creates_a_session_with_the_capabilities() -> None:
    core = make()
    assert core.phase is ClientPhase.IDLE
    assert core.start(0) == ClientEffects(connect=MEMBERS[0])
    assert core.start(0) == ClientEffects()  # once only
    (msg,) = core.on_connected(0).send
    assert isinstance(msg, CreateSession) and msg.capabilities == {"app": "test"}
    assert core.on_message(SessionCreated(SID, msg.nonce), 0) == ClientEffects()
    assert core.session_id == SID and core.address == MEMBERS[0]


def test_requests_are_numbered_from_one_and_carry_the_lowest_pending_id() -> None:
    core = active()
    rid1, fx = core.submit(b"a", 0)
    assert rid1 == 1 and fx.send == [ClientRequest(R(1), R(1), b"a")]
    rid2, fx = core.submit(b"b", 0)
    assert rid2 == 2 and fx.send == [ClientRequest(R(2), R(1), b"b")]
    fx = core.on_message(ClientResponse(R(1), b"ok"), 0)
    assert fx.completed == [Completion(R(1), b"ok", None)]
    assert core.on_message(ClientResponse(R(1), b"again"), 0).completed == []
    _, fx = core.submit(b"c", 0)
    assert fx.send == [ClientRequest(R(3), R(2), b"c")]
    assert core.pending_request_ids == (2, 3) and core.lowest_pending_request_id == 2


def test_requests_submitted_before_the_session_exists_go_out_after_it_is_created() -> None:
    core = make()
    core.start(0)
    assert core.submit(b"a", 0)[1].send == []
    assert core.submit(b"b", 0)[1].send == []
    fx = handshake(core)
    assert fx.send == [ClientRequest(R(1), R(1), b"a"), ClientRequest(R(2), R(1), b"b")]


def test_not_leader_follows_the_hint_continues_and_resends_pending_with_same_ids() -> None:
    core = active()
    for p in (b"a", b"b", b"c"):
        core.submit(p, 0)
    core.on_message(ClientResponse(R(2), b""), 0)
    fx = core.on_message(NotLeader("tcp://c"), 0)
    assert fx.connect == "tcp://c" and fx.send == [] and fx.completed == []
    fx = handshake(core)
    assert fx.send == [ClientRequest(R(1), R(1), b"a"), ClientRequest(R(3), R(1), b"c")]


def test_without_a_hint_the_members_are_tried_round_robin() -> None:
    core = active()
    assert core.on_message(NotLeader(None), 0).connect == "tcp://b"
    core.on_connected(0)
    assert core.on_message(NotLeader("tcp://b"), 0).connect == "tcp://c"  # hint = here
    core.on_connected(0)
    assert core.on_message(NotLeader(None), 0).connect == "tcp://a"


def test_a_hint_outside_the_member_list_is_followed() -> None:
    core = active()
    assert core.on_message(NotLeader("tcp://new"), 0).connect == "tcp://new"


def test_after_a_whole_round_of_failures_the_client_backs_off() -> None:
    core = make(retry_backoff_ms=100)
    core.start(0)
    connects = []
    for _ in range(2 * len(MEMBERS)):
        connects.append(core.on_disconnected(0).connect)
    assert None not in connects
    fx = core.on_disconnected(0)
    assert fx.connect is None and core.phase is ClientPhase.BACKOFF
    assert core.on_tick(99).connect is None
    assert core.on_tick(100).connect == core.address


def test_answers_to_abandoned_handshakes_are_ignored() -> None:
    core = make()
    core.start(0)
    (first,) = core.on_connected(0).send
    assert isinstance(first, CreateSession)
    core.on_disconnected(0)
    (second,) = core.on_connected(0).send
    assert isinstance(second, CreateSession) and second.nonce != first.nonce
    assert core.on_message(SessionCreated(SessionId("old"), first.nonce), 0) == ClientEffects()
    assert core.on_message(SessionRejected(RejectReason.NOT_LEADER, "x", first.nonce, ""), 0) == (
        ClientEffects()
    )
    assert core.phase is ClientPhase.HANDSHAKING
    core.on_message(SessionCreated(SID, second.nonce), 0)
    assert core.session_id == SID


def test_a_creation_answer_to_a_continue_is_not_ours() -> None:
    core = active()
    core.on_message(NotLeader(None), 0)
    (msg,) = core.on_connected(0).send
    assert isinstance(msg, ContinueSession)
    core.on_message(SessionCreated(SessionId("other"), msg.nonce), 0)
    assert core.session_id == SID and core.phase is ClientPhase.HANDSHAKING


def test_session_expired_on_continue_fails_everything_and_is_terminal() -> None:
    core = active()
    core.submit(b"a", 0)
    core.query(b"q", 0)
    core.on_message(NotLeader(None), 0)
    (msg,) = core.on_connected(0).send
    assert isinstance(msg, ContinueSession)
    fx = core.on_message(SessionRejected(RejectReason.SESSION_EXPIRED, None, msg.nonce, ""), 0)
    assert [type(c.error) for c in fx.completed] == [SessionExpiredError]
    assert [type(c.error) for c in fx.queries_completed] == [SessionExpiredError]
    assert core.phase is ClientPhase.FAILED
    assert isinstance(core.failure, SessionExpiredError)
    rid, fx = core.submit(b"b", 0)
    assert rid == 2 and isinstance(fx.completed[0].error, SessionExpiredError)
    cid, fx = core.query(b"q", 0)
    assert cid == 2
    assert isinstance(fx.queries_completed[0].error, SessionExpiredError)
    assert core.on_message(ClientResponse(R(1), b""), 0) == ClientEffects()
    assert core.on_tick(10**9) == ClientEffects()
    assert core.close(0) == ClientEffects()


def test_application_rejection_of_the_session_is_terminal() -> None:
    core = make()
    core.start(0)
    core.submit(b"a", 0)
    (msg,) = core.on_connected(0).send
    assert isinstance(msg, CreateSession)
    reject = SessionRejected(RejectReason.REJECTED_BY_APPLICATION, None, msg.nonce, "nope")
    fx = core.on_message(reject, 0)
    error = fx.completed[0].error
    assert isinstance(error, SessionRejectedError) and error.detail == "nope"
    assert error.reason is RejectReason.REJECTED_BY_APPLICATION
    _, fx = core.submit(b"b", 0)
    assert isinstance(fx.completed[0].error, SessionRejectedError)


@pytest.mark.parametrize("reason", [RejectReason.OVERLOADED, RejectReason.TOO_MANY_SESSIONS])
def test_overloaded_rejection_backs_off_then_retries_the_same_member(
    reason: RejectReason,
) -> None:
    core = make(retry_backoff_ms=50)
    core.start(0)
    (msg,) = core.on_connected(0).send
    assert isinstance(msg, CreateSession)
    assert core.on_message(SessionRejected(reason, None, msg.nonce, ""), 10) == ClientEffects()
    assert core.phase is ClientPhase.BACKOFF
    assert core.on_tick(60).connect == MEMBERS[0]


def test_rejection_as_not_leader_follows_the_hint() -> None:
    core = make()
    core.start(0)
    (msg,) = core.on_connected(0).send
    assert isinstance(msg, CreateSession)
    fx = core.on_message(SessionRejected(RejectReason.NOT_LEADER, "tcp://b", msg.nonce, ""), 0)
    assert fx.connect == "tcp://b"


def test_session_closed_reasons() -> None:
    core = active()
    core.submit(b"a", 0)
    (msg,) = core.on_message(SessionClosed(CloseReason.NO_SESSION, None), 0).send
    assert isinstance(msg, ContinueSession)  # take the session back on this connection
    fx = core.on_message(SessionContinued(msg.nonce), 0)
    assert fx.send == [ClientRequest(R(1), R(1), b"a")]
    (msg,) = core.on_message(SessionClosed(CloseReason.MOVED, None), 0).send
    assert isinstance(msg, ContinueSession)
    core.on_message(SessionContinued(msg.nonce), 0)
    fx = core.on_message(SessionClosed(CloseReason.NOT_LEADER, "tcp://c"), 0)
    assert fx.connect == "tcp://c"
    handshake(core)
    assert core.on_message(SessionClosed(CloseReason.CLIENT_REQUESTED, None), 0) == (
        ClientEffects()
    )
    assert core.on_message(SessionClosed(CloseReason.SHUTDOWN, None), 0).connect is not None
    handshake(core)
    fx = core.on_message(SessionClosed(CloseReason.SESSION_EXPIRED, None), 0)
    assert isinstance(fx.completed[0].error, SessionExpiredError)


def test_request_errors_are_typed_and_not_leader_is_never_surfaced() -> None:
    core = active()
    for p in (b"1", b"2", b"3", b"4"):
        core.submit(p, 0)
    fx = core.on_message(RequestError(R(1), ErrorReason.NOT_LEADER, "", "tcp://b"), 0)
    assert fx.connect == "tcp://b" and fx.completed == []
    handshake(core)
    fx = core.on_message(RequestError(R(1), ErrorReason.RESPONSE_EVICTED, "gone", None), 0)
    assert isinstance(fx.completed[0].error, ResponseEvictedError)
    fx = core.on_message(RequestError(R(2), ErrorReason.APPLICATION_ERROR, "boom", None), 0)
    error = fx.completed[0].error
    assert isinstance(error, RequestFailedError) and error.reason is ErrorReason.APPLICATION_ERROR
    assert str(error) == "APPLICATION_ERROR: boom"
    fx = core.on_message(RequestError(R(3), ErrorReason.NO_SESSION, "", None), 0)
    assert isinstance(fx.send[0], ContinueSession) and fx.completed == []
    # NO_SESSION while handshaking changes nothing (the handshake is on its way)
    assert core.on_message(RequestError(R(3), ErrorReason.NO_SESSION, "", None), 0) == (
        ClientEffects()
    )
    fx = core.on_message(RequestError(R(3), ErrorReason.SESSION_EXPIRED, "", None), 0)
    assert [c.request_id for c in fx.completed] == [3, 4]
    assert all(isinstance(c.error, SessionExpiredError) for c in fx.completed)


def test_timeouts_fire_only_after_the_user_deadline() -> None:
    core = active()
    core.submit(b"a", 0, deadline_ms=100)
    core.submit(b"b", 0)
    core.query(b"q", 0, deadline_ms=50)
    assert core.on_tick(49).completed == []
    fx = core.on_tick(50)
    assert [type(q.error) for q in fx.queries_completed] == [RequestTimeoutError]
    assert core.on_tick(99).completed == []
    fx = core.on_tick(100)
    assert [(c.request_id, type(c.error)) for c in fx.completed] == [(1, RequestTimeoutError)]
    assert isinstance(fx.completed[0].error, TimeoutError)
    assert core.pending_request_ids == (2,)


def test_completed_requests_do_not_pile_up_deadlines() -> None:
    core = active()
    for i in range(1000):
        rid, _ = core.submit(b"x", 0, deadline_ms=10**6 + i)
        core.on_message(ClientResponse(rid, b""), 0)
    rid, _ = core.submit(b"late", 0, deadline_ms=10)
    assert len(core._deadlines) < 200  # internal: compacted
    assert core.on_tick(10).completed[0].request_id == rid


def test_keep_alives_flow_while_active_and_a_silent_server_is_left() -> None:
    core = active(keep_alive_interval_ms=100, server_timeout_ms=350)
    assert core.on_tick(99).send == []
    assert core.on_tick(100).send == [KeepAlive(SID, 100)]
    assert core.on_tick(150).send == []
    core.on_message(KeepAliveResponse(100), 150)
    assert core.on_tick(200).send == [KeepAlive(SID, 200)]
    assert core.on_tick(499).connect is None
    assert core.on_tick(500).connect == MEMBERS[1]


def test_handshake_and_connect_timeouts_move_on() -> None:
    core = make(handshake_timeout_ms=100)
    core.start(0)
    assert core.on_tick(100).connect == MEMBERS[1]  # never connected
    core.on_connected(100)
    assert core.on_tick(199).connect is None
    assert core.on_tick(200).connect == MEMBERS[2]  # no handshake answer


def test_on_connected_or_disconnected_out_of_phase_is_ignored() -> None:
    core = active()
    assert core.on_connected(0) == ClientEffects()
    idle = make()
    assert idle.on_disconnected(0) == ClientEffects()
    assert idle.on_message(NotLeader(None), 0) == ClientEffects()


def test_server_requests_are_delivered_in_order_once_and_acked_once_handled() -> None:
    core = active()
    fx = core.on_message(ServerRequest(R(2), b"two"), 0)
    assert fx.deliver == [] and fx.send == []
    fx = core.on_message(ServerRequest(R(1), b"one"), 0)
    assert fx.deliver == [ServerRequest(R(1), b"one"), ServerRequest(R(2), b"two")]
    assert fx.send == []  # delivered is not handled: no ack yet
    fx = core.on_message(ServerRequest(R(1), b"one"), 0)  # resent before it was handled
    assert fx.deliver == [] and fx.send == []
    assert core.on_server_requests_handled(R(1), 0).send == [ServerRequestAck(R(1))]
    assert core.on_server_requests_handled(R(1), 0).send == []  # old news
    assert core.on_server_requests_handled(R(9), 0).send == [ServerRequestAck(R(2))]  # capped
    assert core.delivered_server_request_id == 2 and core.handled_server_request_id == 2
    fx = core.on_message(ServerRequest(R(1), b"one"), 0)  # resent: our ack was lost
    assert fx.deliver == [] and fx.send == [ServerRequestAck(R(2))]
    # after a reconnect the last ack is repeated
    core.on_message(NotLeader(None), 0)
    assert handshake(core).send == [ServerRequestAck(R(2))]


def test_handling_reported_while_not_bound_is_acked_on_the_next_handshake() -> None:
    core = active()
    assert core.on_message(ServerRequest(R(1), b"one"), 0).deliver == [ServerRequest(R(1), b"one")]
    core.on_message(NotLeader(None), 0)  # the handler is still running elsewhere
    assert core.on_server_requests_handled(R(1), 0).send == []  # no session bound here
    assert handshake(core).send == [ServerRequestAck(R(1))]


def test_out_of_order_buffer_is_bounded() -> None:
    core = active(max_buffered_server_requests=2)
    for rid in (3, 4, 5):
        core.on_message(ServerRequest(R(rid), b"%d" % rid), 0)
    # 3 and 4 are held, 5 dropped; 2 is closer to delivery than 4 and takes its place
    assert core.on_message(ServerRequest(R(2), b"2"), 0).deliver == []
    fx = core.on_message(ServerRequest(R(1), b"1"), 0)
    assert [d.request_id for d in fx.deliver] == [1, 2, 3]
    assert core.on_server_requests_handled(R(3), 0).send == [ServerRequestAck(R(3))]
    # the retry scheduler resends what was dropped
    assert core.on_message(ServerRequest(R(5), b"5"), 0).deliver == []
    fx = core.on_message(ServerRequest(R(4), b"4"), 0)
    assert fx.deliver == [ServerRequest(R(4), b"4"), ServerRequest(R(5), b"5")]


def test_queries_are_sent_resent_and_completed_once() -> None:
    core = make()
    core.start(0)
    cid, fx = core.query(b"q1", 0)
    assert cid == 1 and fx.send == []
    fx = handshake(core)
    assert fx.send == [Query(1, b"q1")]
    cid2, fx = core.query(b"q2", 0)
    assert cid2 == 2
    assert fx.send == [Query(2, b"q2")]
    fx = core.on_message(QueryError(1, ErrorReason.NOT_LEADER, "", "tcp://b"), 0)
    assert fx.connect == "tcp://b"
    assert handshake(core).send == [Query(1, b"q1"), Query(2, b"q2")]
    fx = core.on_message(QueryResponse(1, b"r"), 0)
    assert fx.queries_completed == [QueryCompletion(1, b"r", None)]
    assert core.on_message(QueryResponse(1, b"r"), 0).queries_completed == []
    fx = core.on_message(QueryError(2, ErrorReason.OVERLOADED, "busy", None), 0)
    assert fx.queries_completed == []  # transient: resent later
    fx = core.on_message(QueryError(2, ErrorReason.APPLICATION_ERROR, "boom", None), 0)
    assert isinstance(fx.queries_completed[0].error, RequestFailedError)
    assert core.pending_query_ids == ()


def test_query_error_session_expired_is_terminal() -> None:
    core = active()
    core.query(b"q", 0)
    fx = core.on_message(QueryError(1, ErrorReason.SESSION_EXPIRED, "", None), 0)
    assert isinstance(fx.queries_completed[0].error, SessionExpiredError)
    assert core.phase is ClientPhase.FAILED


def test_oversized_payloads_fail_locally() -> None:
    core = active(max_payload_bytes=3)
    rid, fx = core.submit(b"1234", 0)
    error = fx.completed[0].error
    assert isinstance(error, RequestFailedError) and error.reason is ErrorReason.TOO_LARGE
    assert fx.send == [] and core.pending_request_ids == ()
    _, fx = core.query(b"1234", 0)
    assert isinstance(fx.queries_completed[0].error, RequestFailedError)
    assert core.submit(b"123", 0)[0] == rid + 1


def test_close_tells_the_server_and_fails_whatever_is_pending() -> None:
    core = active()
    assert core.failure is None
    core.submit(b"a", 0)
    fx = core.close(0)
    assert fx.send == [CloseSession()]
    assert isinstance(fx.completed[0].error, ClientClosedError)
    assert core.phase is ClientPhase.CLOSED and isinstance(core.failure, ClientClosedError)
    assert isinstance(core.submit(b"b", 0)[1].completed[0].error, ClientClosedError)
    idle = make()
    assert idle.close(0) == ClientEffects()  # nothing to tell anyone


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="members"):
        ClientConfig(())
    with pytest.raises(ValueError, match="keep_alive"):
        ClientConfig(MEMBERS, keep_alive_interval_ms=0)
    assert str(SessionRejectedError(RejectReason.INVALID, "")) == "session rejected: INVALID"


def test_requests_unanswered_on_a_live_connection_are_resent_with_their_ids() -> None:
    core = active(resend_interval_ms=100, keep_alive_interval_ms=10_000)
    core.submit(b"a", 0)
    core.query(b"q", 0)
    core.submit(b"b", 60)
    assert core.on_tick(99).send == []
    assert core.on_tick(100).send == [ClientRequest(R(1), R(1), b"a"), Query(1, b"q")]
    core.on_message(ClientResponse(R(1), b""), 150)
    assert core.on_tick(199).send == []
    assert core.on_tick(200).send == [ClientRequest(R(2), R(2), b"b"), Query(1, b"q")]


def test_at_most_the_window_is_in_flight_and_the_rest_follows_in_order() -> None:
    core = active(max_in_flight=2)
    sends = [core.submit(p, 0)[1].send for p in (b"1", b"2", b"3", b"4")]
    assert sends == [
        [ClientRequest(R(1), R(1), b"1")],
        [ClientRequest(R(2), R(1), b"2")],
        [],
        [],
    ]
    fx = core.on_message(ClientResponse(R(2), b""), 0)
    assert fx.send == [ClientRequest(R(3), R(1), b"3")]
    # after a reconnect the window restarts from the lowest pending id
    core.on_message(NotLeader(None), 0)
    assert handshake(core).send == [
        ClientRequest(R(1), R(1), b"1"),
        ClientRequest(R(3), R(1), b"3"),
    ]
    fx = core.on_message(ClientResponse(R(1), b""), 0)
    assert fx.send == [ClientRequest(R(4), R(3), b"4")]


def test_a_request_timing_out_before_it_was_sent_frees_no_window_slot() -> None:
    core = active(max_in_flight=1)
    core.submit(b"1", 0)
    core.submit(b"2", 0, deadline_ms=10)
    core.submit(b"3", 0)
    fx = core.on_tick(10)
    assert [c.request_id for c in fx.completed] == [2] and fx.send == []
    fx = core.on_message(ClientResponse(R(1), b""), 11)
    assert fx.send == [ClientRequest(R(3), R(3), b"3")]


@pytest.mark.parametrize("reason", [ErrorReason.OVERLOADED, ErrorReason.TOO_MANY_PENDING])
def test_busy_servers_make_requests_wait_not_fail(reason: ErrorReason) -> None:
    core = active(resend_interval_ms=100, keep_alive_interval_ms=10_000)
    core.submit(b"a", 0)
    assert core.on_message(RequestError(R(1), reason, "", None), 1) == ClientEffects()
    assert core.pending_request_ids == (1,)
    assert core.on_tick(100).send == [ClientRequest(R(1), R(1), b"a")]


def test_the_node_s_announced_payload_limit_lowers_the_client_s() -> None:
    """A node that takes less than the client's limit says so when the session opens:
    larger commands and queries then fail at once (TOO_LARGE), queued ones included,
    instead of being sent in frames the node drops unanswered."""
    core = make(max_payload_bytes=100)
    core.start(0)
    big, _ = core.submit(b"x" * 50, 0)
    small, _ = core.submit(b"x" * 10, 0)
    big_query, _ = core.query(b"q" * 50, 0)
    (msg,) = core.on_connected(0).send
    assert isinstance(msg, CreateSession)
    fx = core.on_message(SessionCreated(SID, msg.nonce, 20), 0)
    (done,) = fx.completed
    assert done.request_id == big and isinstance(done.error, RequestFailedError)
    assert done.error.reason is ErrorReason.TOO_LARGE and "limit 20" in str(done.error)
    (query_done,) = fx.queries_completed
    assert query_done.correlation_id == big_query
    assert isinstance(query_done.error, RequestFailedError)
    assert [m for m in fx.send if isinstance(m, ClientRequest)] == [
        ClientRequest(small, small, b"x" * 10)
    ]
    _, fx = core.submit(b"x" * 21, 0)
    assert isinstance(fx.completed[0].error, RequestFailedError) and not fx.send
    _, fx = core.query(b"x" * 21, 0)
    assert isinstance(fx.queries_completed[0].error, RequestFailedError) and not fx.send
    # A larger announcement later (another node) never raises the client's own limit.
    core.on_message(SessionClosed(CloseReason.NOT_LEADER, MEMBERS[1]), 0)
    (cont,) = core.on_connected(0).send
    assert isinstance(cont, ContinueSession)
    core.on_message(SessionContinued(cont.nonce, 1000), 0)
    _, fx = core.submit(b"x" * 21, 0)
    assert isinstance(fx.completed[0].error, RequestFailedError)
