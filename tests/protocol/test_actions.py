"""The registry <-> consensus link: pinned bytes, round trips, only ProtocolError on garbage."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import protocol
from protocol import actions
from protocol.actions import (
    RAFT_ACTION_TYPES,
    SERVER_ACTION_TYPES,
    ClientRequestAction,
    CreateSessionAction,
    ExpireSessionAction,
    LeadershipChanged,
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
    decode_raft_action,
    decode_server_action,
)
from protocol.codec import ProtocolError, encode, registered_messages
from protocol.ids import MemberId, RequestId, SessionId
from protocol.wire import ErrorReason, RejectReason
from tests.protocol.message_strategies import (
    any_of,
    assert_only_protocol_errors,
    corrupted_and_truncated,
)

S = SessionId("5e55")
R3 = RequestId(3)

GOLDEN: list[tuple[Any, str]] = [
    (CreateSessionAction(S, {"v": "1"}), "9401cd012ca43565353581a176a131"),
    (ClientRequestAction(S, R3, RequestId(2), b"cmd"), "9601cd012da4356535350302c403636d64"),
    (ServerRequestAckAction(S, RequestId(4)), "9401cd012ea43565353504"),
    (ExpireSessionAction(S), "9301cd012fa435653535"),
    (QueryAction(b"c1", 7, b"q"), "9501cd0130c402633107c40171"),
    (SendResponse(S, R3, b"ok"), "9501cd0140a43565353503c4026f6b"),
    (SendServerRequest(S, RequestId(1), b"sr"), "9501cd0141a43565353501c4027372"),
    (
        SendRequestError(S, R3, ErrorReason.APPLICATION_ERROR, "boom"),
        "9601cd0142a4356535350304a4626f6f6d",
    ),
    (SessionCreationConfirmed(S, {}), "9401cd0143a43565353580"),
    (
        RejectSession(S, RejectReason.REJECTED_BY_APPLICATION, "no"),
        "9501cd0144a43565353503a26e6f",
    ),
    (SendQueryResponse(b"c1", 7, b"r"), "9501cd0145c402633107c40172"),
    (SendQueryError(b"c1", 7, ErrorReason.OVERLOADED, ""), "9601cd0146c40263310706a0"),
    (
        LeadershipChanged(NodeRole.LEADER, MemberId("n1"), "tcp://h:1", 5),
        "9601cd014702a26e31a97463703a2f2f683a3105",
    ),
    (SessionsSnapshot(5, {S: {"v": "1"}}), "9401cd01480581a43565353581a176a131"),
    (SessionRemoved(S), "9301cd0149a435653535"),
]


def test_golden_bytes_cover_every_action() -> None:
    assert {type(m) for m, _ in GOLDEN} == set(RAFT_ACTION_TYPES) | set(SERVER_ACTION_TYPES)


@pytest.mark.parametrize(("msg", "hexed"), GOLDEN, ids=lambda v: type(v).__name__)
def test_golden_bytes_pin_the_format(msg: Any, hexed: str) -> None:
    assert encode(msg).hex() == hexed
    decoder = decode_raft_action if type(msg) in RAFT_ACTION_TYPES else decode_server_action
    assert decoder(bytes.fromhex(hexed)) == msg


def test_tags_are_in_the_action_range_and_exported() -> None:
    for cls in RAFT_ACTION_TYPES + SERVER_ACTION_TYPES:
        assert 300 <= cls.TAG <= 399
        assert registered_messages()[cls.TAG] is cls
        assert cls.__name__ in actions.__all__
        assert getattr(protocol, cls.__name__) is cls


@given(any_of(RAFT_ACTION_TYPES))
def test_raft_actions_round_trip(msg: Any) -> None:
    assert decode_raft_action(encode(msg)) == msg


@given(any_of(SERVER_ACTION_TYPES))
def test_server_actions_round_trip(msg: Any) -> None:
    assert decode_server_action(encode(msg)) == msg


def test_directions_do_not_mix() -> None:
    with pytest.raises(ProtocolError):
        decode_raft_action(encode(SessionRemoved(S)))
    with pytest.raises(ProtocolError):
        decode_server_action(encode(ExpireSessionAction(S)))


def only_protocol_errors(data: bytes) -> None:
    assert_only_protocol_errors(
        data, (decode_raft_action, decode_server_action), RAFT_ACTION_TYPES + SERVER_ACTION_TYPES
    )


@given(st.binary(max_size=256))
def test_fuzz_random_bytes(data: bytes) -> None:
    only_protocol_errors(data)


@given(
    any_of(RAFT_ACTION_TYPES + SERVER_ACTION_TYPES),
    st.binary(min_size=1, max_size=16),
    st.integers(min_value=0, max_value=10_000),
)
def test_fuzz_corrupted_and_truncated_valid_frames(msg: Any, noise: bytes, at: int) -> None:
    for frame in corrupted_and_truncated(encode(msg), noise, at):
        only_protocol_errors(frame)
