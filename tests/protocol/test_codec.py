"""The generic message codec: round trips, pinned bytes, and only ProtocolError on garbage."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NewType

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.codec import (
    WIRE_VERSION,
    ProtocolError,
    decode,
    encode,
    message,
    registered_messages,
)

Name = NewType("Name", str)


class Colour(enum.IntEnum):
    RED = 1
    BLUE = 2


@message(tag=60001)
@dataclass(frozen=True, slots=True)
class Leaf:
    n: int
    name: Name


@message(tag=60002)
@dataclass(frozen=True, slots=True)
class Other:
    flag: bool


@message(tag=60003)
@dataclass(frozen=True, slots=True)
class Tree:
    leaves: tuple[Leaf, ...]
    child: Leaf | Other | None
    when: float | int
    blob: bytes
    colour: Colour
    pairs: dict[str, int]
    fixed: tuple[int, str]


SAMPLE = Tree(
    leaves=(Leaf(1, Name("a")), Leaf(2, Name("b"))),
    child=Other(True),
    when=1.5,
    blob=b"\x00\xff",
    colour=Colour.BLUE,
    pairs={"x": 1},
    fixed=(7, "s"),
)


def test_round_trip_of_nested_message() -> None:
    assert decode(encode(SAMPLE)) == SAMPLE


def test_golden_bytes_pin_the_format() -> None:
    assert encode(Leaf(5, Name("k"))) == bytes.fromhex("9401cdea6105a16b")
    assert msgpack.unpackb(encode(SAMPLE)) == [
        WIRE_VERSION, 60003, [[60001, 1, "a"], [60001, 2, "b"]], [60002, True], 1.5,
        b"\x00\xff", 2, {"x": 1}, [7, "s"],
    ]  # fmt: skip


def test_optional_nested_none_round_trips() -> None:
    t = Tree((), None, 3, b"", Colour.RED, {}, (0, ""))
    assert decode(encode(t)) == t


def test_expected_type_is_enforced() -> None:
    with pytest.raises(ProtocolError, match="unexpected message type"):
        decode(encode(Leaf(1, Name("a"))), Other)


@pytest.mark.parametrize(
    "raw",
    [
        [WIRE_VERSION + 1, 60001, 1, "a"],  # unknown version
        [WIRE_VERSION, 99999, 1, "a"],  # unknown tag
        [WIRE_VERSION, 60001, 1],  # missing field
        [WIRE_VERSION, 60001, 1, "a", 2],  # extra field
        [WIRE_VERSION, 60001, "1", "a"],  # wrong type
        [WIRE_VERSION, 60001, True, "a"],  # bool is not an int
        [WIRE_VERSION, 60002, 1],  # int is not a bool
        [WIRE_VERSION, 60003, [[60002, True]], None, 1.0, b"", 1, {}, [0, ""]],  # wrong nested
        [WIRE_VERSION, 60003, [], None, 1.0, b"", 9, {}, [0, ""]],  # bad enum value
        [WIRE_VERSION, 60003, [], None, 1.0, b"", 1, {}, [0]],  # short fixed tuple
        [WIRE_VERSION, 60003, [], "x", 1.0, b"", 1, {}, [0, ""]],  # union mismatch
        [WIRE_VERSION],
        {"not": "an array"},
    ],
)
def test_malformed_frames_raise_protocol_error(raw: object) -> None:
    with pytest.raises(ProtocolError):
        decode(msgpack.packb(raw))


def test_oversized_frame_is_refused_before_parsing() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        decode(encode(SAMPLE), max_bytes=4)


def test_non_bytes_input_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        decode("text")  # type: ignore[arg-type]


def decodes_cleanly(data: bytes) -> None:
    """Untrusted bytes give a registered message or ProtocolError, nothing else."""
    try:
        msg = decode(data)
    except ProtocolError:
        return
    assert type(msg) in registered_messages().values()


@given(st.binary(max_size=512))
def test_random_bytes_raise_only_protocol_error(data: bytes) -> None:
    decodes_cleanly(data)


@given(st.binary(min_size=1, max_size=64), st.integers(min_value=0, max_value=200))
def test_corrupted_valid_frames_raise_only_protocol_error(noise: bytes, at: int) -> None:
    frame = bytearray(encode(SAMPLE))
    at %= len(frame)
    frame[at : at + len(noise)] = noise
    decodes_cleanly(bytes(frame))
    for cut in range(len(frame)):
        decodes_cleanly(bytes(frame[:cut]))
