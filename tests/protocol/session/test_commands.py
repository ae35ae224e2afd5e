"""Session commands and results on the wire: pinned bytes, round trips, garbage."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.codec import ProtocolError, decode, encode, registered_messages
from protocol.ids import RequestId, SessionId
from protocol.session import (
    RESPONSE_EVICTED,
    SESSION_COMMAND_TYPES,
    UNKNOWN_SESSION,
    ApplicationError,
    ClientRequest,
    CreateSession,
    GetRequestsForRetry,
    InternalApplied,
    InternalCommand,
    RequestResult,
    RetryBatch,
    ServerRequestAck,
    ServerRequestEnvelope,
    ServerRequestsAcked,
    SessionCreated,
    SessionExpired,
    SessionRejected,
    SessionRemoved,
    SessionStats,
    decode_session_command,
    decodes_to_itself,
)

S1 = SessionId("s1")
GOLDEN = [
    (
        CreateSession(S1, {"v": "1"}, 1_700_000_000_000),
        "950101a2733181a176a131cf0000018bcfe56800",
    ),
    (
        ClientRequest(S1, RequestId(7), RequestId(5), b"\x91\x01", 1_700_000_000_001),
        "970102a273310705c4029101cf0000018bcfe56801",
    ),
    (ServerRequestAck(S1, RequestId(3), 2), "950103a273310302"),
    (SessionExpired(S1, 3), "940104a2733103"),
    (GetRequestsForRetry(1000, 2000), "940105cd03e8cd07d0"),
    (InternalCommand(b"\xc0", 4), "940106c401c004"),
]


@pytest.mark.parametrize("command, hex_bytes", GOLDEN, ids=lambda x: type(x).__name__)
def test_golden_bytes_pin_the_command_format(command: object, hex_bytes: str) -> None:
    assert encode(command).hex() == hex_bytes
    assert decode_session_command(bytes.fromhex(hex_bytes)) == command


def test_command_and_result_tags_stay_in_the_session_range() -> None:
    session_classes = {
        cls
        for cls in registered_messages().values()
        if cls.__module__.startswith("protocol.session")
    }
    assert set(SESSION_COMMAND_TYPES) <= session_classes
    for cls in session_classes:
        expected = range(1, 50) if cls in SESSION_COMMAND_TYPES else range(50, 100)
        assert cls.TAG in expected, cls


ENVELOPE = ServerRequestEnvelope(S1, RequestId(1), b"p")
RESULTS = [
    RequestResult(S1, RequestId(1), b"resp", (ENVELOPE,), False),
    RequestResult(S1, RequestId(1), ApplicationError("boom"), (), True),
    RequestResult(S1, RequestId(1), RESPONSE_EVICTED, (), False),
    RequestResult(S1, RequestId(1), UNKNOWN_SESSION, (), False),
    SessionCreated(S1, (ENVELOPE,)),
    SessionRejected(S1, "no"),
    SessionRemoved(S1, True, ()),
    ServerRequestsAcked(S1, RequestId(4), 2),
    RetryBatch((ENVELOPE, ENVELOPE)),
    InternalApplied(None, ()),
    InternalApplied(ApplicationError("x"), ()),
    SessionStats(1, 2, 3, 4),
]


@pytest.mark.parametrize("result", RESULTS, ids=lambda r: type(r).__name__)
def test_results_round_trip(result: object) -> None:
    assert decode(encode(result)) == result


def test_a_result_is_not_a_command() -> None:
    with pytest.raises(ProtocolError):
        decode_session_command(encode(RESULTS[0]))


def test_wrong_field_types_are_protocol_errors() -> None:
    bad = msgpack.packb([1, 2, "s1", "7", 5, b"", 0])  # request id as a str
    with pytest.raises(ProtocolError):
        decode_session_command(bad)
    bad_caps = msgpack.packb([1, 1, "s1", {"v": 1}, 0])  # capability value not a str
    with pytest.raises(ProtocolError):
        decode_session_command(bad_caps)


commands = st.one_of(
    st.builds(
        CreateSession,
        st.text(max_size=8),
        st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=3),
        st.integers(0, 2**63),
    ),
    st.builds(
        ClientRequest,
        st.text(max_size=8),
        st.integers(0, 2**40),
        st.integers(0, 2**40),
        st.binary(max_size=16),
        st.integers(-(2**63), 2**63),
    ),
    st.builds(ServerRequestAck, st.text(max_size=8), st.integers(0, 2**40), st.integers(0, 2**50)),
    st.builds(SessionExpired, st.text(max_size=8), st.integers(-(2**63), 2**64 - 1)),
    st.builds(GetRequestsForRetry, st.integers(0, 2**50), st.integers(0, 2**50)),
    st.builds(InternalCommand, st.binary(max_size=16), st.integers(0, 2**50)),
)


@given(commands)
def test_any_command_round_trips(command: object) -> None:
    assert decode_session_command(encode(command)) == command


@given(st.binary(max_size=256))
def test_garbage_bytes_raise_only_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_session_command(data)


@given(commands, st.data())
def test_mutated_commands_raise_only_protocol_error(command: object, data: st.DataObject) -> None:
    frame = bytearray(encode(command))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(frame) - 1))
        frame[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(frame)))
    with contextlib.suppress(ProtocolError):
        decode_session_command(bytes(frame[:cut]))


@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.text(max_size=4)
        | st.binary(max_size=4),
        lambda inner: st.lists(inner, max_size=5),
        max_leaves=12,
    )
)
def test_unknown_tags_and_shapes_raise_only_protocol_error(body: object) -> None:
    for frame in ([1, body], [1, 99, body], [1, 2, body, body], body):
        with contextlib.suppress(ProtocolError):
            decode_session_command(msgpack.packb(frame))


def test_oversized_frame_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        decode(encode(GOLDEN[1][0]), max_bytes=4)


# ------------------------------------------------------------------ decodes_to_itself

I64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@given(st.text(max_size=8), I64, I64, st.binary(max_size=8), I64)
def test_a_client_request_of_exact_typesdecodes_to_itself(
    sid: str, rid: int, low: int, command: bytes, at: int
) -> None:
    cmd = ClientRequest(SessionId(sid), RequestId(rid), RequestId(low), command, at)
    assert decodes_to_itself(cmd)
    assert decode_session_command(encode(cmd)) == cmd


class Sid(str):
    pass


@pytest.mark.parametrize(
    "cmd",
    [
        ClientRequest(SessionId("s"), True, RequestId(1), b"", 1),  # type: ignore[arg-type]
        ClientRequest(Sid("s"), RequestId(1), RequestId(1), b"", 1),  # type: ignore[arg-type]
        ClientRequest(SessionId("s"), RequestId(1), RequestId(1), bytearray(), 1),  # type: ignore[arg-type]
    ],
)
def test_a_command_of_other_types_is_left_to_the_decoder(cmd: ClientRequest) -> None:
    # (The leader then applies what decoding gives, as every follower does.)
    assert not decodes_to_itself(cmd)
