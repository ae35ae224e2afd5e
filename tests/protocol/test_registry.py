"""The connection table's rules, one scenario at a time (see also the stateful test)."""

from __future__ import annotations

import pytest

from protocol.actions import (
    ClientRequestAction,
    CreateSessionAction,
    ExpireSessionAction,
    NodeRole,
    QueryAction,
    RejectSession,
    SendQueryError,
    SendQueryResponse,
    SendRequestError,
    SendResponse,
    SendServerRequest,
    ServerRequestAckAction,
    SessionCreationConfirmed,
    SessionRemoved,
    SessionsSnapshot,
)
from protocol.ids import RequestId, SessionId
from protocol.registry import Registry, RegistryConfig, channel_key
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
    ServerRequest,
    ServerRequestAck,
    SessionClosed,
    SessionContinued,
    SessionCreated,
    SessionRejected,
)
from tests.protocol.registry_helpers import HINT, SELF, follow, lead, make_registry

A, B = b"conn-a", b"conn-b"
#: The payload limit every session-open answer announces (the default config's).
LIMIT = RegistryConfig().max_payload_bytes
S1 = SessionId("s1")
R = RequestId


def created(reg: Registry, conn: bytes = A, now: int = 0, nonce: bytes = b"n") -> SessionId:
    fx = reg.on_client_message(conn, CreateSession({"k": "v"}, nonce), now)
    (action,) = fx.propose
    assert isinstance(action, CreateSessionAction)
    fx = reg.on_server_action(SessionCreationConfirmed(action.session_id, {"k": "v"}), now)
    assert fx.send == [
        (conn, SessionCreated(action.session_id, nonce, reg.config.max_payload_bytes))
    ]
    return action.session_id


ALL_CLIENT_MESSAGES: list[ClientMessage] = [
    CreateSession({}, b"n"),
    ContinueSession(S1, b"n"),
    KeepAlive(S1, 5),
    ClientRequest(R(1), R(1), b"x"),
    Query(1, b"q"),
    ServerRequestAck(R(1)),
    CloseSession(),
]


@pytest.mark.parametrize("msg", ALL_CLIENT_MESSAGES, ids=lambda m: type(m).__name__)
def test_a_follower_answers_everything_with_not_leader_and_keeps_nothing(
    msg: ClientMessage,
) -> None:
    reg = make_registry()
    follow(reg, term=2)
    fx = reg.on_client_message(A, msg, 0)
    assert fx.send == [(A, NotLeader(HINT))] and not fx.propose
    assert reg.status().connections == 0


def test_follower_without_a_known_leader_gives_no_hint() -> None:
    reg = make_registry()
    follow(reg, term=2, hint=None)
    assert reg.on_client_message(A, CloseSession(), 0).send == [(A, NotLeader(None))]


def test_create_session_is_proposed_once_per_nonce_and_bound_when_confirmed() -> None:
    reg = make_registry()
    lead(reg)
    fx = reg.on_client_message(A, CreateSession({"k": "v"}, b"n"), 0)
    assert fx.propose == [CreateSessionAction(S1, {"k": "v"})] and not fx.send
    assert reg.on_client_message(A, CreateSession({"k": "v"}, b"n"), 1).propose == []
    fx = reg.on_server_action(SessionCreationConfirmed(S1, {"k": "v"}), 2)
    assert fx.send == [(A, SessionCreated(S1, b"n", LIMIT))]
    assert reg.session_of(A) == S1 and reg.connection_of(S1) == A


def test_application_rejection_reaches_the_client_and_frees_the_connection() -> None:
    reg = make_registry()
    lead(reg)
    reg.on_client_message(A, CreateSession({}, b"n"), 0)
    fx = reg.on_server_action(RejectSession(S1, RejectReason.REJECTED_BY_APPLICATION, "no"), 0)
    assert fx.send == [(A, SessionRejected(RejectReason.REJECTED_BY_APPLICATION, None, b"n", "no"))]
    assert reg.status().connections == 0 and reg.sessions() == frozenset()
    assert reg.on_server_action(RejectSession(S1, RejectReason.INVALID, ""), 0).send == []


def test_a_second_create_on_a_connection_replaces_its_binding() -> None:
    reg = make_registry()
    lead(reg)
    first = created(reg, A, nonce=b"1")
    second = created(reg, A, nonce=b"2")
    assert reg.session_of(A) == second and reg.connection_of(first) is None


def test_client_requests_are_proposed_answered_and_deduplicated_while_in_flight() -> None:
    reg = make_registry()
    lead(reg)
    sid = created(reg)
    fx = reg.on_client_message(A, ClientRequest(R(1), R(1), b"x"), 0)
    assert fx.propose == [ClientRequestAction(sid, R(1), R(1), b"x")]
    assert reg.on_client_message(A, ClientRequest(R(1), R(1), b"x"), 0).propose == []
    fx = reg.on_server_action(SendResponse(sid, R(1), b"ok"), 0)
    assert fx.send == [(A, ClientResponse(R(1), b"ok"))]
    # answered: a resend is proposed again (the state machine answers from its cache)
    assert len(reg.on_client_message(A, ClientRequest(R(1), R(1), b"x"), 0).propose) == 1


@pytest.mark.parametrize(
    ("msg", "reason"),
    [
        (ClientRequest(R(1), R(1), b"x" * 11), ErrorReason.TOO_LARGE),
        (ClientRequest(R(1), R(2), b"x"), ErrorReason.INVALID),
        (ClientRequest(R(0), R(0), b"x"), ErrorReason.INVALID),
    ],
)
def test_bad_requests_get_typed_errors_and_are_not_proposed(
    msg: ClientRequest, reason: ErrorReason
) -> None:
    reg = make_registry(max_payload_bytes=10)
    lead(reg)
    created(reg)
    fx = reg.on_client_message(A, msg, 0)
    assert fx.send == [(A, RequestError(msg.request_id, reason, "", None))] and not fx.propose


def test_request_without_session_gets_no_session() -> None:
    reg = make_registry()
    lead(reg)
    fx = reg.on_client_message(A, ClientRequest(R(4), R(1), b""), 0)
    assert fx.send == [(A, RequestError(R(4), ErrorReason.NO_SESSION, "", None))]


def test_pending_requests_per_session_are_limited() -> None:
    reg = make_registry(max_pending_requests_per_session=2)
    lead(reg)
    sid = created(reg)
    for rid in (1, 2):
        assert reg.on_client_message(A, ClientRequest(R(rid), R(1), b""), 0).propose
    fx = reg.on_client_message(A, ClientRequest(R(3), R(1), b""), 0)
    assert fx.send == [(A, RequestError(R(3), ErrorReason.TOO_MANY_PENDING, "", None))]
    reg.on_server_action(SendRequestError(sid, R(1), ErrorReason.APPLICATION_ERROR, "e"), 0)
    assert reg.on_client_message(A, ClientRequest(R(3), R(1), b""), 0).propose


def test_request_errors_carry_the_hint_only_for_not_leader() -> None:
    reg = make_registry()
    lead(reg)
    sid = created(reg)
    fx = reg.on_server_action(SendRequestError(sid, R(1), ErrorReason.NOT_LEADER, ""), 0)
    assert fx.send == [(A, RequestError(R(1), ErrorReason.NOT_LEADER, "", SELF))]
    fx = reg.on_server_action(SendRequestError(sid, R(2), ErrorReason.RESPONSE_EVICTED, "d"), 0)
    assert fx.send == [(A, RequestError(R(2), ErrorReason.RESPONSE_EVICTED, "d", None))]


def test_answers_for_unknown_or_unbound_sessions_are_dropped() -> None:
    reg = make_registry()
    lead(reg)
    sid = created(reg)
    reg.on_disconnect(A)
    assert reg.on_server_action(SendResponse(sid, R(1), b""), 0).send == []
    assert reg.on_server_action(SendResponse(SessionId("zz"), R(1), b""), 0).send == []
    assert reg.on_server_action(SendServerRequest(SessionId("zz"), R(1), b""), 0).send == []


def test_keep_alive_refreshes_the_deadline_and_expiry_is_proposed_once() -> None:
    reg = make_registry(session_timeout_ms=1000)
    lead(reg)
    sid = created(reg, now=0)
    assert reg.on_tick(999).propose == []
    fx = reg.on_client_message(A, KeepAlive(sid, 77), 900)
    assert fx.send == [(A, KeepAliveResponse(77))]
    assert reg.on_tick(1500).propose == []
    assert reg.on_tick(1900).propose == [ExpireSessionAction(sid)]
    assert reg.on_tick(5000).propose == []
    assert reg.is_expiring(sid)
    fx = reg.on_server_action(SessionRemoved(sid), 5000)
    assert fx.send == [(A, SessionClosed(CloseReason.SESSION_EXPIRED, None))]
    assert reg.sessions() == frozenset() and reg.status().connections == 0


def test_closing_a_session_whose_expiry_is_proposed_does_not_propose_it_again() -> None:
    reg = make_registry(session_timeout_ms=10)
    lead(reg)
    sid = created(reg, now=0)
    assert reg.on_tick(10).propose == [ExpireSessionAction(sid)]
    fx = reg.on_client_message(A, CloseSession(), 11)
    assert fx.send == [(A, SessionClosed(CloseReason.CLIENT_REQUESTED, None))]
    assert fx.propose == []


def test_any_message_of_a_bound_connection_keeps_the_session_alive() -> None:
    reg = make_registry(session_timeout_ms=1000)
    lead(reg)
    sid = created(reg, now=0)
    reg.on_client_message(A, ClientRequest(R(1), R(1), b""), 800)
    assert reg.on_tick(1000).propose == []
    assert reg.on_tick(1800).propose == [ExpireSessionAction(sid)]


def test_keep_alive_for_another_session_asks_the_client_to_continue() -> None:
    reg = make_registry()
    lead(reg)
    created(reg)
    fx = reg.on_client_message(A, KeepAlive(SessionId("other"), 1), 0)
    assert fx.send == [(A, SessionClosed(CloseReason.NO_SESSION, None))]


def test_continue_moves_the_session_to_the_new_connection() -> None:
    reg = make_registry()
    lead(reg)
    sid = created(reg, A)
    fx = reg.on_client_message(B, ContinueSession(sid, b"c"), 0)
    assert fx.send == [
        (A, SessionClosed(CloseReason.MOVED, None)),
        (B, SessionContinued(b"c", LIMIT)),
    ]
    assert reg.connection_of(sid) == B and reg.session_of(A) is None
    assert reg.status().connections == 1  # A held nothing else and was forgotten
    # continuing again on the same connection is harmless
    assert reg.on_client_message(B, ContinueSession(sid, b"d"), 0).send == [
        (B, SessionContinued(b"d", LIMIT))
    ]


def test_continue_of_an_unknown_session_is_rejected_once_sessions_are_loaded() -> None:
    reg = make_registry()
    lead(reg)
    fx = reg.on_client_message(A, ContinueSession(SessionId("gone"), b"c"), 0)
    assert fx.send == [(A, SessionRejected(RejectReason.SESSION_EXPIRED, None, b"c", ""))]


def test_continues_wait_for_the_sessions_of_a_new_leader() -> None:
    reg = make_registry()
    lead(reg, term=3, load=False)
    known, gone = SessionId("known"), SessionId("gone")
    assert reg.on_client_message(A, ContinueSession(known, b"a"), 0).send == []
    assert reg.on_client_message(B, ContinueSession(gone, b"b"), 0).send == []
    # a snapshot of another term is ignored
    assert reg.on_server_action(SessionsSnapshot(2, {known: {}}), 0).send == []
    fx = reg.on_server_action(SessionsSnapshot(3, {known: {}}), 10)
    assert sorted(fx.send) == sorted(
        [
            (A, SessionContinued(b"a", LIMIT)),
            (B, SessionRejected(RejectReason.SESSION_EXPIRED, None, b"b", "")),
        ]
    )
    assert reg.connection_of(known) == A
    assert reg.on_server_action(SessionsSnapshot(3, {gone: {}}), 10).send == []  # once only


def test_continue_of_an_expiring_session_waits_for_the_outcome() -> None:
    reg = make_registry(session_timeout_ms=10)
    lead(reg)
    sid = created(reg, A)
    reg.on_disconnect(A)
    assert reg.on_tick(100).propose == [ExpireSessionAction(sid)]
    assert reg.on_client_message(B, ContinueSession(sid, b"c"), 100).send == []
    fx = reg.on_server_action(SessionRemoved(sid), 100)
    assert fx.send == [(B, SessionRejected(RejectReason.SESSION_EXPIRED, None, b"c", ""))]


def test_a_new_handshake_replaces_a_waiting_continue() -> None:
    reg = make_registry()
    lead(reg, load=False)
    reg.on_client_message(A, ContinueSession(SessionId("x"), b"c"), 0)
    fx = reg.on_client_message(A, CreateSession({}, b"n"), 0)
    # before the sessions are loaded the node cannot judge its session limit
    assert fx.send == [(A, SessionRejected(RejectReason.OVERLOADED, None, b"n", ""))]
    assert reg.on_server_action(SessionsSnapshot(1, {}), 0).send == []
    assert len(reg.on_client_message(A, CreateSession({}, b"n"), 0).propose) == 1


def test_server_requests_are_sent_or_held_until_the_session_is_continued() -> None:
    reg = make_registry(max_held_server_requests=2)
    lead(reg)
    sid = created(reg, A)
    fx = reg.on_server_action(SendServerRequest(sid, R(1), b"one"), 0)
    assert fx.send == [(A, ServerRequest(R(1), b"one"))]
    reg.on_disconnect(A)
    for rid in (3, 2, 4):  # 4 is over the bound: the retry scheduler will resend it
        assert reg.on_server_action(SendServerRequest(sid, R(rid), b"%d" % rid), 0).send == []
    reg.on_server_action(SendServerRequest(sid, R(2), b"2"), 0)  # a resend fits
    fx = reg.on_client_message(B, ContinueSession(sid, b"c"), 0)
    assert fx.send == [
        (B, SessionContinued(b"c", LIMIT)),
        (B, ServerRequest(R(2), b"2")),
        (B, ServerRequest(R(3), b"3")),
    ]


def test_acks_are_proposed_only_when_they_advance() -> None:
    reg = make_registry()
    lead(reg)
    sid = created(reg)
    assert reg.on_client_message(A, ServerRequestAck(R(2)), 0).propose == [
        ServerRequestAckAction(sid, R(2))
    ]
    assert reg.on_client_message(A, ServerRequestAck(R(2)), 0).propose == []
    assert reg.on_client_message(A, ServerRequestAck(R(1)), 0).propose == []
    # acknowledged server requests are not sent again
    assert reg.on_server_action(SendServerRequest(sid, R(2), b""), 0).send == []


def test_session_messages_without_a_session_get_no_session() -> None:
    reg = make_registry()
    lead(reg)
    for msg in (ServerRequestAck(R(1)), CloseSession(), KeepAlive(S1, 0)):
        fx = reg.on_client_message(A, msg, 0)
        assert fx.send == [(A, SessionClosed(CloseReason.NO_SESSION, None))]


def test_close_session_unbinds_answers_and_proposes_the_expiry() -> None:
    reg = make_registry()
    lead(reg)
    sid = created(reg)
    fx = reg.on_client_message(A, CloseSession(), 0)
    assert fx.send == [(A, SessionClosed(CloseReason.CLIENT_REQUESTED, None))]
    assert fx.propose == [ExpireSessionAction(sid)]
    assert reg.connection_of(sid) is None and reg.on_tick(10**9).propose == []


def test_queries_are_proposed_routed_by_connection_and_limited() -> None:
    reg = make_registry(max_pending_queries_per_connection=2, max_payload_bytes=4)
    lead(reg)
    assert reg.on_client_message(A, Query(1, b"q"), 0).propose == [QueryAction(A, 1, b"q")]
    assert reg.on_client_message(A, Query(1, b"q"), 0).propose == []
    assert reg.on_client_message(A, Query(2, b"q"), 0).propose
    assert reg.on_client_message(A, Query(3, b"q"), 0).send == [
        (A, QueryError(3, ErrorReason.OVERLOADED, "", None))
    ]
    assert reg.on_client_message(A, Query(4, b"12345"), 0).send == [
        (A, QueryError(4, ErrorReason.TOO_LARGE, "", None))
    ]
    assert reg.on_server_action(SendQueryResponse(A, 1, b"r"), 0).send == [
        (A, QueryResponse(1, b"r"))
    ]
    assert reg.on_server_action(SendQueryResponse(A, 1, b"r"), 0).send == []  # answered
    fx = reg.on_server_action(SendQueryError(A, 2, ErrorReason.NOT_LEADER, ""), 0)
    assert fx.send == [(A, QueryError(2, ErrorReason.NOT_LEADER, "", SELF))]
    assert reg.status().pending_queries == 0 and reg.status().connections == 0


def test_the_node_wide_query_limit_holds_across_connections() -> None:
    reg = make_registry(max_pending_queries=1)
    lead(reg)
    assert reg.on_client_message(A, Query(1, b""), 0).propose
    assert reg.on_client_message(B, Query(1, b""), 0).send == [
        (B, QueryError(1, ErrorReason.OVERLOADED, "", None))
    ]
    reg.on_disconnect(A)
    assert reg.status().pending_queries == 0
    assert reg.on_server_action(SendQueryResponse(A, 1, b""), 0).send == []


def test_sessions_per_connection_and_per_node_are_limited() -> None:
    reg = make_registry(max_sessions_per_connection=2, max_sessions=3)
    lead(reg)
    created(reg, A, nonce=b"1")
    created(reg, A, nonce=b"2")
    fx = reg.on_client_message(A, CreateSession({}, b"3"), 0)
    assert fx.send == [(A, SessionRejected(RejectReason.TOO_MANY_SESSIONS, None, b"3", ""))]
    created(reg, B, nonce=b"1")
    fx = reg.on_client_message(B, CreateSession({}, b"2"), 0)
    assert fx.send == [(B, SessionRejected(RejectReason.OVERLOADED, None, b"2", ""))]


def test_oversized_capabilities_are_invalid() -> None:
    reg = make_registry(max_payload_bytes=4)
    lead(reg)
    fx = reg.on_client_message(A, CreateSession({"key": "value"}, b"n"), 0)
    assert fx.send == [(A, SessionRejected(RejectReason.INVALID, None, b"n", ""))]


def test_colliding_session_ids_are_redrawn_or_refused() -> None:
    ids = iter(["s1", "s1", "", "s2"] + ["s2"] * 8)
    reg = Registry(RegistryConfig(), lambda: SessionId(next(ids)))
    lead(reg)
    assert reg.on_client_message(A, CreateSession({}, b"1"), 0).propose[0] == (
        CreateSessionAction(SessionId("s1"), {})
    )
    assert reg.on_client_message(A, CreateSession({}, b"2"), 0).propose[0] == (
        CreateSessionAction(SessionId("s2"), {})
    )
    fx = reg.on_client_message(A, CreateSession({}, b"3"), 0)
    assert fx.send == [(A, SessionRejected(RejectReason.OVERLOADED, None, b"3", ""))]


def test_confirmations_of_a_predecessor_s_sessions_are_tracked_and_expire() -> None:
    reg = make_registry(session_timeout_ms=100)
    lead(reg, now=0)
    sid = SessionId("old")
    assert reg.on_server_action(SessionCreationConfirmed(sid, {}), 0).send == []
    assert reg.sessions() == {sid}
    assert reg.on_tick(100).propose == [ExpireSessionAction(sid)]


def test_a_confirmation_after_the_client_left_leaves_an_unbound_session() -> None:
    reg = make_registry()
    lead(reg)
    reg.on_client_message(A, CreateSession({}, b"n"), 0)
    reg.on_disconnect(A)
    assert reg.on_server_action(SessionCreationConfirmed(S1, {}), 0).send == []
    assert reg.connection_of(S1) is None and reg.sessions() == {S1}
    assert reg.on_server_action(RejectSession(SessionId("nope"), RejectReason.INVALID, ""), 0)


def test_step_down_answers_everything_with_the_hint_and_closes_every_connection() -> None:
    reg = make_registry()
    lead(reg)
    sid = created(reg, A)
    reg.on_client_message(A, ClientRequest(R(1), R(1), b""), 0)
    reg.on_client_message(A, Query(9, b""), 0)
    reg.on_client_message(B, CreateSession({}, b"nb"), 0)
    fx = follow(reg, term=2)
    assert fx.send == [
        (A, QueryError(9, ErrorReason.NOT_LEADER, "", HINT)),
        (A, SessionClosed(CloseReason.NOT_LEADER, HINT)),
        (B, SessionRejected(RejectReason.NOT_LEADER, HINT, b"nb", "")),
    ]
    assert sorted(fx.close) == [A, B]
    status = reg.status()
    assert (status.role, status.sessions, status.connections) == (NodeRole.FOLLOWER, 0, 0)
    assert reg.on_server_action(SendResponse(sid, R(1), b""), 0).send == []
    assert reg.on_tick(10**9).propose == []


def test_step_down_answers_a_waiting_continue() -> None:
    reg = make_registry()
    lead(reg, load=False)
    reg.on_client_message(A, ContinueSession(S1, b"c"), 0)
    fx = follow(reg, term=2)
    assert fx.send == [(A, SessionRejected(RejectReason.NOT_LEADER, HINT, b"c", ""))]


def test_step_up_gives_every_loaded_session_a_fresh_deadline() -> None:
    reg = make_registry(session_timeout_ms=1000)
    follow(reg, term=1)
    sessions = {SessionId("a"): {}, SessionId("b"): {"x": "y"}}
    lead(reg, term=2, sessions=sessions, now=5000)
    assert reg.sessions() == set(sessions)
    assert reg.on_tick(5999).propose == []
    assert sorted(a.session_id for a in reg.on_tick(6000).propose) == ["a", "b"]  # type: ignore[union-attr]


def test_a_repeated_leader_notice_in_the_same_term_changes_nothing() -> None:
    reg = make_registry()
    lead(reg)
    sid = created(reg)
    fx = lead(reg, load=False)
    assert fx.send == [] and reg.connection_of(sid) == A and reg.status().sessions_loaded


def test_leader_of_a_new_term_starts_afresh() -> None:
    reg = make_registry()
    lead(reg, term=1)
    created(reg)
    fx = lead(reg, term=3, load=False)
    assert fx.close == [A] and reg.sessions() == frozenset()
    assert not reg.status().sessions_loaded


def test_a_connection_that_sent_garbage_is_closed_and_its_session_continues_elsewhere() -> None:
    reg = make_registry()
    lead(reg)
    a0, b0 = channel_key(A, 0), channel_key(B, 0)
    sid = created(reg, a0)
    fx = reg.on_bad_connection(A)  # (the shell could not decode A's frame)
    assert fx.send == [(a0, SessionClosed(CloseReason.PROTOCOL_ERROR, None))]
    assert fx.close == [a0] and reg.connection_of(sid) is None
    fx = reg.on_routed(B, ContinueSession(sid, b"c"), 0)
    assert fx.send == [(b0, SessionContinued(b"c", LIMIT))]


def test_status_counts_the_table() -> None:
    reg = make_registry()
    lead(reg, term=4)
    created(reg, A)
    reg.on_client_message(B, CreateSession({}, b"x"), 0)
    status = reg.status()
    assert status.role is NodeRole.LEADER and status.term == 4 and reg.is_leader
    assert (status.sessions, status.bound_sessions, status.pending_creations) == (1, 1, 1)
    assert (status.connections, status.expiring_sessions, status.leader_hint) == (2, 0, SELF)


def test_config_rejects_non_positive_limits() -> None:
    with pytest.raises(ValueError, match="max_sessions"):
        RegistryConfig(max_sessions=0)
    assert RegistryConfig(max_payload_bytes=10).max_frame_bytes > 10


def test_requests_far_above_the_lowest_pending_id_are_refused_bounding_the_cache() -> None:
    """The state machine caches a session's responses from its lowest pending id up; a
    client that never advances that id would grow the cache without end."""
    reg = make_registry(max_cached_responses_per_session=3)
    lead(reg)
    sid = created(reg)
    assert reg.on_client_message(A, ClientRequest(R(3), R(1), b""), 0).propose == [
        ClientRequestAction(sid, R(3), R(1), b"")
    ]
    fx = reg.on_client_message(A, ClientRequest(R(4), R(1), b""), 0)
    (sent,) = fx.send
    assert not fx.propose
    assert sent[1] == RequestError(
        R(4), ErrorReason.TOO_MANY_PENDING, "too many responses left cached", None
    )
    assert reg.on_client_message(A, ClientRequest(R(4), R(2), b""), 0).propose
