"""The persistent Raft vocabulary: round trips, pinned bytes, validation."""

from __future__ import annotations

import pytest

from protocol.codec import ProtocolError, decode, encode
from protocol.ids import MemberId
from protocol.raft import Configuration, EntryKind, HardState, LogEntry, SnapshotMeta

A, B, C = MemberId("a"), MemberId("b"), MemberId("c")


def test_log_entry_golden_bytes() -> None:
    entry = LogEntry(index=3, term=2, kind=EntryKind.COMMAND, data=b"x")
    assert encode(entry) == bytes.fromhex("96 01 64 03 02 01 c401 78".replace(" ", ""))
    assert decode(encode(entry)) == entry


@pytest.mark.parametrize(
    "value",
    [
        HardState(),
        HardState(term=4, voted_for=B, commit=9),
        SnapshotMeta(10, 3, Configuration((A, B), (C,))),
    ],
)
def test_round_trip(value: object) -> None:
    assert decode(encode(value)) == value


def test_configuration_members_and_overlap() -> None:
    assert Configuration((A, B), (C,)).members == (A, B, C)
    with pytest.raises(ValueError):
        Configuration((A, B), (B,))


def test_overlapping_configuration_on_the_wire_is_a_protocol_error() -> None:
    import msgpack

    with pytest.raises(ProtocolError):
        decode(msgpack.packb([1, 101, ["a"], ["a"]]))
