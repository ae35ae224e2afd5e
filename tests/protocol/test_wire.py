"""The client-server protocol: pinned bytes, round trips, and only ProtocolError on garbage."""

from __future__ import annotations

import contextlib
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

import protocol
from protocol import wire
from protocol.codec import WIRE_VERSION, ProtocolError, decode, encode, registered_messages
from protocol.ids import RequestId, SessionId
from protocol.wire import (
    CLIENT_FRAME_TYPES,
    CLIENT_MESSAGE_TYPES,
    SERVER_FRAME_TYPES,
    SERVER_MESSAGE_TYPES,
    ClientBatch,
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
    ServerBatch,
    ServerRequest,
    ServerRequestAck,
    SessionClosed,
    SessionContinued,
    SessionCreated,
    SessionRejected,
    decode_client_frame,
    decode_client_message,
    decode_server_frame,
    decode_server_message,
    pack_batches,
)
from tests.protocol.message_strategies import (
    any_of,
    assert_only_protocol_errors,
    corrupted_and_truncated,
)

S = SessionId("5e55")
HINT = "tcp://h:1"

GOLDEN: list[tuple[Any, str]] = [
    (CreateSession({"v": "1"}, b"\x01"), "9401ccc881a176a131c40101"),
    (ContinueSession(S, b"\x02"), "9401ccc9a435653535c40102"),
    (KeepAlive(S, 1000), "9401cccaa435653535cd03e8"),
    (ClientRequest(RequestId(3), RequestId(2), b"cmd"), "9501cccb0302c403636d64"),
    (Query(7, b"q"), "9401cccc07c40171"),
    (ServerRequestAck(RequestId(4)), "9301cccd04"),
    (CloseSession(), "9201ccce"),
    (SessionCreated(S, b"\x01", 1024), "9501cce6a435653535c40101cd0400"),
    (SessionContinued(b"\x02", 7), "9401cce7c4010207"),
    (
        SessionRejected(RejectReason.NOT_LEADER, HINT, b"\x03", ""),
        "9601cce801a97463703a2f2f683a31c40103a0",
    ),
    (SessionClosed(CloseReason.SESSION_EXPIRED, None), "9401cce903c0"),
    (KeepAliveResponse(1000), "9301cceacd03e8"),
    (ClientResponse(RequestId(3), b"ok"), "9401cceb03c4026f6b"),
    (QueryResponse(7, b"r"), "9401ccec07c40172"),
    (
        RequestError(RequestId(3), ErrorReason.RESPONSE_EVICTED, "gone", None),
        "9601cced0302a4676f6e65c0",
    ),
    (ServerRequest(RequestId(1), b"sr"), "9401ccee01c4027372"),
    (NotLeader(HINT), "9301ccefa97463703a2f2f683a31"),
    (QueryError(7, ErrorReason.NOT_LEADER, "", HINT), "9601ccf00703a0a97463703a2f2f683a31"),
]


def test_golden_bytes_cover_every_wire_message() -> None:
    assert {type(m) for m, _ in GOLDEN} == set(CLIENT_MESSAGE_TYPES) | set(SERVER_MESSAGE_TYPES)


@pytest.mark.parametrize(("msg", "hexed"), GOLDEN, ids=lambda v: type(v).__name__)
def test_golden_bytes_pin_the_format(msg: Any, hexed: str) -> None:
    assert encode(msg).hex() == hexed
    decoder = decode_client_message if type(msg) in CLIENT_MESSAGE_TYPES else decode_server_message
    assert decoder(bytes.fromhex(hexed)) == msg


def test_tags_are_in_the_wire_range_and_version_leads_every_frame() -> None:
    for cls in CLIENT_MESSAGE_TYPES + SERVER_MESSAGE_TYPES:
        assert 200 <= cls.TAG <= 299
        assert registered_messages()[cls.TAG] is cls
    assert all(bytes.fromhex(h)[1] == WIRE_VERSION for _, h in GOLDEN)


def test_every_message_class_is_exported() -> None:
    for cls in CLIENT_MESSAGE_TYPES + SERVER_MESSAGE_TYPES:
        assert cls.__name__ in wire.__all__
        assert getattr(protocol, cls.__name__) is cls


@given(any_of(CLIENT_MESSAGE_TYPES))
def test_client_messages_round_trip(msg: Any) -> None:
    assert decode_client_message(encode(msg)) == msg


@given(any_of(SERVER_MESSAGE_TYPES))
def test_server_messages_round_trip(msg: Any) -> None:
    assert decode_server_message(encode(msg)) == msg


def test_directions_do_not_mix() -> None:
    with pytest.raises(ProtocolError):
        decode_client_message(encode(NotLeader(None)))
    with pytest.raises(ProtocolError):
        decode_server_message(encode(CloseSession()))


@pytest.mark.parametrize(
    "raw",
    [
        [WIRE_VERSION + 1, 206],  # a future version
        [WIRE_VERSION, 203, 1, 1],  # missing payload
        [WIRE_VERSION, 203, 1, 1, "text"],  # str where bytes are due
        [WIRE_VERSION, 200, {"k": 1}, b""],  # non-str capability value
        [WIRE_VERSION, 200, {1: "v"}, b""],  # non-str capability key
        [WIRE_VERSION, 206, None],  # extra field
        [WIRE_VERSION, 300, "s", {}],  # a RaftAction is not a client message
    ],
)
def test_malformed_client_frames_are_protocol_errors(raw: object) -> None:
    with pytest.raises(ProtocolError):
        decode_client_message(msgpack.packb(raw))


def test_enum_values_outside_the_enum_are_protocol_errors() -> None:
    with pytest.raises(ProtocolError):
        decode_server_message(msgpack.packb([WIRE_VERSION, 233, 99, None]))


def test_size_limit_applies_before_parsing() -> None:
    frame = encode(ClientRequest(RequestId(1), RequestId(1), b"x" * 100))
    with pytest.raises(ProtocolError, match="exceeds"):
        decode_client_message(frame, max_bytes=50)
    assert decode_client_message(frame, max_bytes=len(frame)).payload == b"x" * 100


def only_protocol_errors(data: bytes) -> None:
    assert_only_protocol_errors(
        data,
        (decode_client_message, decode_server_message),
        CLIENT_MESSAGE_TYPES + SERVER_MESSAGE_TYPES,
    )


@given(st.binary(max_size=256))
def test_fuzz_random_bytes(data: bytes) -> None:
    only_protocol_errors(data)


@given(
    any_of(CLIENT_MESSAGE_TYPES + SERVER_MESSAGE_TYPES),
    st.binary(min_size=1, max_size=16),
    st.integers(min_value=0, max_value=10_000),
)
def test_fuzz_corrupted_and_truncated_valid_frames(msg: Any, noise: bytes, at: int) -> None:
    for frame in corrupted_and_truncated(encode(msg), noise, at):
        only_protocol_errors(frame)


@given(st.lists(st.integers(0, 300), min_size=1, max_size=8))
def test_fuzz_well_formed_msgpack_with_wire_tags(values: list[int]) -> None:
    """Valid msgpack arrays with a wire tag but arbitrary fields: still only ProtocolError."""
    only_protocol_errors(msgpack.packb([WIRE_VERSION, 200 + values[0] % 41, *values[1:]]))


# ------------------------------------------------------------------ batches

BATCH_GOLDEN: list[tuple[Any, str]] = [
    (
        ClientBatch(((0, encode(KeepAlive(S, 1))), (1, encode(CloseSession())))),
        "9301ccf1929200c40a9401cccaa435653535019201c4049201ccce",
    ),
    (
        ServerBatch(
            ((0, encode(ClientResponse(RequestId(3), b"ok"))), (2, encode(NotLeader(None))))
        ),
        "9301ccf2929200c4099401cceb03c4026f6b9202c4059301ccefc0",
    ),
]


@pytest.mark.parametrize(("msg", "hexed"), BATCH_GOLDEN, ids=lambda v: type(v).__name__)
def test_golden_bytes_pin_the_batch_format(msg: Any, hexed: str) -> None:
    assert encode(msg).hex() == hexed
    decoder = decode_client_frame if isinstance(msg, ClientBatch) else decode_server_frame
    assert decoder(bytes.fromhex(hexed)) == msg
    assert type(msg).TAG in range(241, 250)
    # the wire's own batch packer writes the very same bytes
    packed = pack_batches(list(msg.items), type(msg), max_items=len(msg.items), max_bytes=1 << 16)
    assert [frame.hex() for frame in packed] == [hexed]


def test_single_messages_are_frames_too_and_batches_are_not_items() -> None:
    frame = encode(KeepAlive(S, 1))
    assert decode_client_frame(frame) == KeepAlive(S, 1)
    assert decode_server_frame(encode(NotLeader(None))) == NotLeader(None)
    batch = encode(ClientBatch(((0, frame),)))
    with pytest.raises(ProtocolError):
        decode_client_message(batch)
    with pytest.raises(ProtocolError):
        decode_server_frame(batch)
    with pytest.raises(ProtocolError):  # an item must be (channel, bytes)
        decode_client_frame(encode(ClientBatch(((0, frame),)))[:-3] + b"\x91\x00")


ITEMS = st.lists(st.tuples(st.integers(0, 7), st.binary(max_size=40)), max_size=30)


@given(ITEMS, st.integers(1, 6), st.integers(1, 200))
def test_pack_batches_keeps_order_and_bounds(
    items: list[tuple[int, bytes]], max_items: int, max_bytes: int
) -> None:
    frames = pack_batches(items, ClientBatch, max_items=max_items, max_bytes=max_bytes)
    out: list[tuple[int, bytes]] = []
    for frame in frames:
        msg = (
            decode_client_frame(frame)
            if frame[:1] == b"\x93" and frame[2:4] == b"\xcc\xf1"
            else None
        )
        if isinstance(msg, ClientBatch):
            assert 1 <= len(msg.items) <= max_items
            assert len(msg.items) == 1 or len(frame) <= max_bytes
            assert not (len(msg.items) == 1 and msg.items[0][0] == 0)  # that goes alone
            out.extend(msg.items)
        else:
            out.append((0, frame))  # a lone channel-0 item is the frame itself
    assert out == items


def test_pack_batches_sends_one_channel_zero_message_alone() -> None:
    frame = encode(KeepAlive(S, 1))
    assert pack_batches([(0, frame)], ClientBatch, max_items=8, max_bytes=1 << 16) == [frame]
    (one,) = pack_batches([(3, frame)], ClientBatch, max_items=8, max_bytes=1 << 16)
    assert decode_client_frame(one) == ClientBatch(((3, frame),))
    assert pack_batches([], ServerBatch, max_items=8, max_bytes=100) == []
    with pytest.raises(ValueError, match="max_items"):
        pack_batches([], ServerBatch, max_items=0, max_bytes=100)


@given(st.binary(max_size=200))
def test_garbage_frames_decode_only_to_protocol_errors(data: bytes) -> None:
    for decoder in (decode_client_frame, decode_server_frame):
        with contextlib.suppress(ProtocolError):
            decoder(data)


_LEAF = st.one_of(
    st.integers(-3, 300), st.binary(max_size=6), st.text(max_size=3), st.booleans(), st.none()
)
_SHAPES = st.one_of(
    st.recursive(_LEAF, lambda inner: st.lists(inner, max_size=4), max_leaves=12),
    st.lists(st.tuples(st.integers(-1, 300), st.binary(max_size=6)).map(list), max_size=4),
)


@given(st.sampled_from([241, 242]), _SHAPES, st.booleans())
def test_the_direct_batch_decoding_agrees_with_the_codec(tag: int, items: Any, extra: bool) -> None:
    """Frames that start like a batch take a direct path: it accepts and refuses
    exactly what the generic codec does."""
    raw = [WIRE_VERSION, tag, items] + ([1] if extra else [])
    data = msgpack.packb(raw, use_bin_type=True)
    fast = decode_client_frame if tag == 241 else decode_server_frame
    types = CLIENT_FRAME_TYPES if tag == 241 else SERVER_FRAME_TYPES
    try:
        expected: Any = decode(data, types)
    except ProtocolError:
        expected = ProtocolError
    try:
        got: Any = fast(data)
    except ProtocolError:
        got = ProtocolError
    assert got == expected
    with pytest.raises(ProtocolError):
        fast(data, max_bytes=len(data) - 1)
    with pytest.raises(ProtocolError):
        fast(data[:4] + b"\xc1")


def test_client_frames_bound_their_arrays_and_maps_while_unpacking() -> None:
    """A hostile frame of many tiny containers is refused by the unpacker itself
    (before it is built), whichever way it is spelled."""
    many = [[0, b""]] * 1025
    batch = msgpack.packb([WIRE_VERSION, 241, many], use_bin_type=True)
    assert batch.startswith(wire.CLIENT_BATCH_HEAD)  # the direct batch path
    for frame in (
        batch,
        msgpack.packb([WIRE_VERSION, 241, many, "x"], use_bin_type=True),  # the codec path
        encode(CreateSession({f"k{i}": "v" for i in range(1025)}, b"n")),
    ):
        with pytest.raises(ProtocolError, match="exceeds max"):
            decode_client_frame(frame)
    with pytest.raises(ProtocolError, match="exceeds max"):
        decode_client_message(encode(CreateSession({f"k{i}": "v" for i in range(1025)}, b"n")))
    # Within the bound (and with a higher one) all is as before.
    ok = msgpack.packb([WIRE_VERSION, 241, many[:1024]], use_bin_type=True)
    assert len(decode_client_frame(ok).items) == 1024  # type: ignore[union-attr]
    assert len(decode_client_frame(batch, max_items=2000).items) == 1025  # type: ignore[union-attr]
