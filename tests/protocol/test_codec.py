"""The generic message codec: round trips, pinned bytes, and only ProtocolError on garbage."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import NewType

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.codec import (
    WIRE_VERSION,
    ProtocolError,
    _decode_tagged,
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


# ---------------------------------------------------------------- fast paths == checked paths

INTS = st.integers(min_value=-(2**63), max_value=2**64 - 1)
LEAVES = st.builds(Leaf, INTS, st.text(max_size=5).map(Name))
TREES = st.builds(
    Tree,
    leaves=st.lists(LEAVES, max_size=3).map(tuple),
    child=st.one_of(st.none(), LEAVES, st.builds(Other, st.booleans())),
    when=st.one_of(st.floats(allow_nan=False), INTS),
    blob=st.binary(max_size=8),
    colour=st.sampled_from(Colour),
    pairs=st.dictionaries(st.text(max_size=3), INTS, max_size=3),
    fixed=st.tuples(INTS, st.text(max_size=3)),
)
#: What may replace a field: wrong scalars, arrays of junk, arrays tagged (wrongly) as
#: messages, enum values in and out of range.
JUNK = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(-3, 60004), st.floats(allow_nan=False),
        st.text(max_size=3), st.binary(max_size=3),
    ),
    lambda inner: st.lists(inner, max_size=4)
    | st.tuples(st.sampled_from([60001, 60002, 60003, True, 60001.0]), INTS, st.text(max_size=2))
    .map(list),
    max_leaves=8,
)  # fmt: skip


def outcome(decode_it: Callable[[], object]) -> object:
    try:
        return ("decoded", decode_it())
    except ProtocolError:
        return ("refused",)


@given(st.one_of(TREES, LEAVES), st.data())
def test_frame_decoder_agrees_with_the_nested_decoder(msg: object, data: st.DataObject) -> None:
    # decode() runs a whole-frame decoder (no slicing, inline enum lookups, the tuple of
    # one message class without a call per item); _decode_tagged the nested one. On any
    # body, valid or with one field replaced by junk, both give the same message or both
    # refuse.
    body = msgpack.unpackb(encode(msg), raw=False, strict_map_key=False)[1:]
    if data.draw(st.booleans()):
        at = data.draw(st.integers(min_value=1, max_value=len(body)))
        body[at : at + 1] = data.draw(st.lists(JUNK, min_size=0, max_size=2))
    frame = msgpack.packb([WIRE_VERSION, *body], use_bin_type=True)
    assert outcome(lambda: decode(frame)) == outcome(lambda: _decode_tagged(body, "frame"))


@pytest.mark.parametrize(
    "leaves",
    [
        [[60001, 1, "a"], [60002, True]],  # another class's tag
        [[60001, 1, "a"], [True, 1, "a"]],  # a bool is not a tag
        [[60001.0, 1, "a"]],  # nor is a float
        [[]],  # an empty array
        [[60001, 1]],  # short
        [7],  # not an array
        [[99999, 1, "a"]],  # unknown tag
    ],
)
def test_bad_items_of_a_message_tuple_are_refused(leaves: list[object]) -> None:
    frame = msgpack.packb([WIRE_VERSION, 60003, leaves, None, 1.0, b"", 1, {}, [0, ""]])
    with pytest.raises(ProtocolError):
        decode(frame)


def nested(msg: object) -> list[object]:
    body: list[object] = msgpack.unpackb(encode(msg), raw=False, strict_map_key=False)[1:]
    return body


@given(st.lists(st.one_of(LEAVES.map(nested), JUNK), max_size=4))
def test_message_tuple_items_decode_like_single_nested_messages(items: list[object]) -> None:
    frame = msgpack.packb([WIRE_VERSION, 60003, items, None, 1.0, b"", 1, {}, [0, ""]])

    def one_by_one() -> Tree:
        for item in items:
            if not isinstance(item, list) or not item:
                raise ProtocolError("not a nested message")
        leaves = tuple(_decode_tagged(item, "leaf", (Leaf,)) for item in items)  # type: ignore[arg-type]
        return Tree(leaves, None, 1.0, b"", Colour.RED, {}, (0, ""))

    assert outcome(lambda: decode(frame)) == outcome(one_by_one)


@given(JUNK)
def test_enum_fields_decode_like_the_enum_constructor(value: object) -> None:
    frame = msgpack.packb([WIRE_VERSION, 60003, [], None, 1.0, b"", value, {}, [0, ""]])

    def by_constructor() -> Tree:
        if type(value) is not int or value not in {c.value for c in Colour}:
            raise ProtocolError("not a Colour")
        return Tree((), None, 1.0, b"", Colour(value), {}, (0, ""))

    assert outcome(lambda: decode(frame)) == outcome(by_constructor)


@message(tag=60004)
@dataclass(frozen=True, slots=True)
class Containers:
    """Enums and messages inside containers: the generic (non-inline) paths."""

    colours: tuple[Colour, ...]
    mixed: tuple[Leaf | Other, ...]
    by_name: dict[str, Leaf]
    by_colour: dict[Colour, int]
    pair: tuple[Leaf, Colour]


CONTAINERS = Containers(
    colours=(Colour.RED, Colour.BLUE),
    mixed=(Leaf(1, Name("a")), Other(False)),
    by_name={"x": Leaf(2, Name("b"))},
    by_colour={Colour.BLUE: 3},
    pair=(Leaf(3, Name("c")), Colour.RED),
)


def test_enums_and_messages_inside_containers_round_trip() -> None:
    decoded = decode(encode(CONTAINERS))
    assert decoded == CONTAINERS
    assert type(decoded.colours[0]) is Colour and type(decoded.pair[1]) is Colour
    assert msgpack.unpackb(encode(CONTAINERS), strict_map_key=False)[2:5] == [
        [1, 2], [[60001, 1, "a"], [60002, False]], {"x": [60001, 2, "b"]},
    ]  # fmt: skip


@pytest.mark.parametrize("colours", [[3], ["red"], [True]])
def test_bad_enum_inside_a_container_is_refused(colours: list[object]) -> None:
    body = msgpack.unpackb(encode(CONTAINERS), strict_map_key=False)
    body[2] = colours
    with pytest.raises(ProtocolError, match="Colour"):
        decode(msgpack.packb(body))


# ---------------------------------------------------------------- extensible messages


@message(tag=60005, extensible=True)
@dataclass(frozen=True, slots=True)
class Grows:
    """Release 2 of a message: ``colours`` and ``leaf`` were added with defaults."""

    n: int
    colours: tuple[Colour, ...] = (Colour.RED,)
    leaf: Leaf | None = None


@message(tag=60006)
@dataclass(frozen=True, slots=True)
class Holder:
    inner: Grows


def test_an_extensible_message_reads_an_older_writer_with_defaults() -> None:
    assert decode(msgpack.packb([WIRE_VERSION, 60005, 7])) == Grows(7)
    older = msgpack.packb([WIRE_VERSION, 60005, 7, [2]])
    assert decode(older) == Grows(7, (Colour.BLUE,), None)
    with pytest.raises(ProtocolError, match="Grows"):
        decode(msgpack.packb([WIRE_VERSION, 60005]))  # a required field is missing


@given(st.lists(st.integers(-(2**63), 2**64 - 1) | st.text() | st.binary() | st.none(), max_size=5))
def test_an_extensible_message_ignores_a_newer_writers_fields(extra: list[object]) -> None:
    msg = Grows(3, (Colour.BLUE, Colour.RED), Leaf(1, Name("x")))
    newer = msgpack.packb(msgpack.unpackb(encode(msg)) + extra, use_bin_type=True)
    assert decode(newer) == msg
    nested = msgpack.packb([WIRE_VERSION, 60006, [60005, 3, [2, 1], [60001, 1, "x"], *extra]])
    assert decode(nested) == Holder(msg)


def test_known_fields_of_an_extensible_message_are_still_checked() -> None:
    with pytest.raises(ProtocolError, match="Grows"):
        decode(msgpack.packb([WIRE_VERSION, 60005, 7, [9]]))  # no such colour
    with pytest.raises(ProtocolError, match="Grows"):
        decode(msgpack.packb([WIRE_VERSION, 60005, "7", [1], None, "extra"]))


def test_other_messages_still_refuse_a_different_field_count() -> None:
    with pytest.raises(ProtocolError, match="expected 1 fields"):
        decode(msgpack.packb([WIRE_VERSION, 60002, True, "extra"]))


def test_node_status_crosses_one_release_each_way() -> None:
    from protocol.admin import NodeStatus, StatusResponse
    from protocol.ids import MemberId

    status = NodeStatus(
        MemberId("n1"), "leader", 3, MemberId("n1"), 9, 9, 9, 0, (MemberId("n1"),), (),
        1, 0, "tcp://c", "tcp://p", 42, 1000, ((MemberId("n2"), 5),),
    )  # fmt: skip
    frame: list[object] = msgpack.unpackb(encode(StatusResponse(1, status)))
    inner = frame[3]
    assert isinstance(inner, list)
    newer = msgpack.packb([*frame[:3], [*inner, "a field from the future"]], use_bin_type=True)
    assert decode(newer, StatusResponse) == StatusResponse(1, status)
    older = msgpack.packb([*frame[:3], inner[:-1]], use_bin_type=True)  # before last_contact_ms
    assert decode(older, StatusResponse).status.last_contact_ms == ()
