"""The registry <-> session state machine translation, end to end through a real
SessionStateMachine, so every kind of result is covered."""

from __future__ import annotations

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from examples.counter import CounterStateMachine
from protocol.actions import (
    ClientRequestAction,
    CreateSessionAction,
    ExpireSessionAction,
    QueryAction,
    RejectSession,
    SendRequestError,
    SendResponse,
    SendServerRequest,
    ServerRequestAckAction,
    SessionCreationConfirmed,
    SessionRemoved,
)
from protocol.bridge import to_server_actions, to_session_command
from protocol.ids import RequestId, SessionId
from protocol.session import (
    RESPONSE_EVICTED,
    UNKNOWN_SESSION,
    ApplicationError,
    GetRequestsForRetry,
    InternalCommand,
    RequestResult,
    ResponseEvicted,
    ServerRequestEnvelope,
    SessionStateMachine,
)
from protocol.wire import ErrorReason, RejectReason

A, B = SessionId("a"), SessionId("b")


def run(machine: SessionStateMachine, index: int, action: object, at: int = 100) -> list[object]:
    cmd = to_session_command(action, at)  # type: ignore[arg-type]
    assert cmd is not None and cmd.created_at == at
    caps = getattr(action, "capabilities", None)
    return list(to_server_actions(machine.apply(index, cmd), caps))


def request(sid: SessionId, rid: int, payload: object, low: int | None = None) -> object:
    return ClientRequestAction(sid, RequestId(rid), RequestId(low or rid), msgpack.packb(payload))


def test_every_action_and_result_kind_maps() -> None:
    m = SessionStateMachine(CounterStateMachine())
    assert run(m, 1, CreateSessionAction(A, {"counter": "v1"})) == [
        SessionCreationConfirmed(A, {"counter": "v1"})
    ]
    assert run(m, 2, CreateSessionAction(B, {}))[0] == SessionCreationConfirmed(B, {})
    rejected = run(m, 3, CreateSessionAction(SessionId("c"), {"counter": "v2"}))
    assert rejected == [
        RejectSession(
            SessionId("c"), RejectReason.REJECTED_BY_APPLICATION, "this counter speaks v1 only"
        )
    ]
    # Crossing 10 sends a server request to the other session.
    out = run(m, 4, request(A, 1, ["inc", 12]))
    assert out[0] == SendResponse(A, RequestId(1), msgpack.packb(12))
    assert out[1:] == [SendServerRequest(B, RequestId(1), msgpack.packb(["crossed", 12]))]
    failed = run(m, 5, request(A, 2, ["bogus"]))
    assert isinstance(failed[0], SendRequestError)
    assert failed[0].reason == ErrorReason.APPLICATION_ERROR
    assert run(m, 6, request(A, 1, ["inc", 1], low=3)) == [
        SendRequestError(A, RequestId(1), ErrorReason.RESPONSE_EVICTED, "")
    ]
    assert run(m, 7, request(SessionId("zz"), 1, ["inc", 1])) == [
        SendRequestError(SessionId("zz"), RequestId(1), ErrorReason.SESSION_EXPIRED, "")
    ]
    # Not acked yet: a retry resends it; after the ack nothing is left to send.
    retried = to_server_actions(m.apply(8, GetRequestsForRetry(1000, 1000)))
    assert retried == [SendServerRequest(B, RequestId(1), msgpack.packb(["crossed", 12]))]
    assert run(m, 9, ServerRequestAckAction(B, RequestId(1))) == []
    assert to_server_actions(m.apply(10, InternalCommand(msgpack.packb(["x"]), 1))) == []
    assert run(m, 11, ExpireSessionAction(B)) == [SessionRemoved(B)]


def test_queries_are_not_logged() -> None:
    assert to_session_command(QueryAction(b"c", 1, b""), 5) is None


ENVELOPES = st.lists(
    st.builds(
        ServerRequestEnvelope,
        st.text(max_size=4).map(SessionId),
        st.integers(min_value=1).map(RequestId),
        st.binary(max_size=4),
    ),
    max_size=3,
).map(tuple)
RESULTS = st.builds(
    RequestResult,
    st.text(max_size=4).map(SessionId),
    st.integers(min_value=1).map(RequestId),
    st.one_of(
        st.binary(max_size=4),
        st.builds(ApplicationError, st.text(max_size=4)),
        st.just(RESPONSE_EVICTED),
        st.just(UNKNOWN_SESSION),
    ),
    ENVELOPES,
    st.booleans(),
)


@given(RESULTS)
def test_request_results_map_as_the_design_says(result: RequestResult) -> None:
    # The reference mapping, written out: one answer to the request, then the server
    # requests it emitted, in order.
    sid, rid, response = result.session_id, result.request_id, result.response
    answer: object
    if isinstance(response, bytes):
        answer = SendResponse(sid, rid, response)
    elif isinstance(response, ApplicationError):
        answer = SendRequestError(sid, rid, ErrorReason.APPLICATION_ERROR, response.message)
    elif isinstance(response, ResponseEvicted):
        answer = SendRequestError(sid, rid, ErrorReason.RESPONSE_EVICTED, "")
    else:
        answer = SendRequestError(sid, rid, ErrorReason.SESSION_EXPIRED, "")
    sends = [
        SendServerRequest(e.session_id, e.request_id, e.payload) for e in result.server_requests
    ]
    assert to_server_actions(result) == [answer, *sends]
