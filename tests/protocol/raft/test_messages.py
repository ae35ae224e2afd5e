"""Raft messages on the wire: pinned bytes, round trips, malformed frames."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.codec import ProtocolError, decode, encode
from protocol.ids import MemberId
from protocol.raft import (
    RAFT_MESSAGE_TYPES,
    AppendEntries,
    AppendEntriesResponse,
    Configuration,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    LogEntry,
    RaftOptions,
    ReadIndexRequest,
    ReadIndexResponse,
    Refusal,
    Refused,
    RequestVote,
    RequestVoteResponse,
    SnapshotMeta,
    TimeoutNow,
)
from protocol.raft.messages import RemovedNotice

A, B = MemberId("a"), MemberId("b")
CFG = Configuration((A, B))

GOLDEN = [
    (
        RequestVote(
            term=3,
            sender=A,
            receiver=B,
            last_log_index=7,
            last_log_term=2,
            pre_vote=True,
            transfer=False,
        ),
        "99016803a161a1620702c3c2",
    ),
    (
        RequestVoteResponse(term=3, sender=B, receiver=A, granted=True, pre_vote=True),
        "97016903a162a161c3c3",
    ),
    (
        AppendEntries(
            term=3,
            sender=A,
            receiver=B,
            prev_log_index=6,
            prev_log_term=2,
            entries=(LogEntry(index=7, term=3, kind=EntryKind.COMMAND, data=b"x"),),
            commit=5,
        ),
        "99016a03a161a1620602919564070301c4017805",
    ),
    (
        AppendEntriesResponse(
            term=3, sender=B, receiver=A, success=False, index=6, conflict_index=4, conflict_term=2
        ),
        "99016b03a162a161c2060402",
    ),
    (Heartbeat(term=3, sender=A, receiver=B, commit=5, read_round=9), "97016c03a161a1620509"),
    (HeartbeatResponse(term=3, sender=B, receiver=A, read_round=9), "96016d03a162a16109"),
    (
        InstallSnapshot(
            term=3,
            sender=A,
            receiver=B,
            meta=SnapshotMeta(index=10, term=2, configuration=CFG),
            offset=0,
            data=b"ab",
            done=True,
        ),
        "99016e03a161a16294670a02936592a161a1629000c4026162c3",
    ),
    (
        InstallSnapshotResponse(
            term=3,
            sender=B,
            receiver=A,
            snapshot_index=10,
            next_offset=2,
            done=True,
            match_index=10,
        ),
        "99016f03a162a1610a02c30a",
    ),
    (TimeoutNow(term=3, sender=A, receiver=B), "95017003a161a162"),
    (ReadIndexRequest(term=3, sender=B, receiver=A, context=b"q"), "96017103a162a161c40171"),
    (
        ReadIndexResponse(term=3, sender=A, receiver=B, context=b"q", index=5, ok=True),
        "98017203a161a162c4017105c3",
    ),
    (RemovedNotice(term=3, sender=A, receiver=B, config_index=7), "96017303a161a16207"),
]


@pytest.mark.parametrize(("msg", "hex_bytes"), GOLDEN, ids=lambda v: type(v).__name__)
def test_golden_bytes(msg: object, hex_bytes: str) -> None:
    assert encode(msg).hex() == hex_bytes
    assert decode(bytes.fromhex(hex_bytes), expected=RAFT_MESSAGE_TYPES) == msg


def test_every_raft_message_type_is_pinned() -> None:
    assert {type(m) for m, _ in GOLDEN} == set(RAFT_MESSAGE_TYPES)
    assert sorted(t.TAG for t in RAFT_MESSAGE_TYPES) == list(range(104, 116))  # type: ignore[attr-defined]


members = st.sampled_from([A, B, MemberId("c")])
terms = st.integers(0, 2**40)
entries = st.builds(
    LogEntry, terms, terms, st.sampled_from(list(EntryKind)), st.binary(max_size=20)
)


@given(
    st.one_of(
        st.builds(RequestVote, terms, members, members, terms, terms, st.booleans(), st.booleans()),
        st.builds(AppendEntries, terms, members, members, terms, terms,
                  st.lists(entries, max_size=4).map(tuple), terms),
        st.builds(AppendEntriesResponse, terms, members, members, st.booleans(), terms,
                  terms, terms),
        st.builds(InstallSnapshot, terms, members, members, st.just(SnapshotMeta(1, 1, CFG)),
                  terms, st.binary(max_size=20), st.booleans()),
        st.builds(ReadIndexResponse, terms, members, members, st.binary(max_size=8), terms,
                  st.booleans()),
    )
)  # fmt: skip
def test_round_trip(msg: object) -> None:
    assert decode(encode(msg), expected=RAFT_MESSAGE_TYPES) == msg


@pytest.mark.parametrize(
    "raw",
    [
        [1, 104, 3, "a", "b", 7, 2, True],  # missing a field
        [1, 104, "3", "a", "b", 7, 2, True, False],  # term not an int
        [1, 106, 3, "a", "b", 6, 2, [[100, 7, 3, 9, b"x"]], 5],  # bad entry kind
        [1, 106, 3, "a", "b", 6, 2, [[101, ["a"], []]], 5],  # wrong nested type
        [1, 110, 3, "a", "b", [103, 1, 1, [101, ["a"], ["a"]]], 0, b"", True],  # bad config
        [1, 199, 3],  # unknown tag
    ],
)
def test_malformed_frames_are_protocol_errors(raw: list[object]) -> None:
    with pytest.raises(ProtocolError):
        decode(msgpack.packb(raw), expected=RAFT_MESSAGE_TYPES)


@given(st.binary(max_size=64))
def test_garbage_never_raises_anything_else(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode(data, expected=RAFT_MESSAGE_TYPES)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"election_ticks": 0},
        {"heartbeat_ticks": 10, "election_ticks": 10},
        {"max_inflight_msgs": 0},
        {"compaction_tail": -1},
        {"snapshot_entries": -1},
    ],
)
def test_invalid_options_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        RaftOptions(**kwargs)


def test_refusals_say_whether_to_retry() -> None:
    assert Refused(Refusal.TOO_BUSY).retryable
    assert Refused(Refusal.TRANSFERRING).retryable
    assert Refused(Refusal.CHANGE_IN_PROGRESS).retryable
    assert not Refused(Refusal.NOT_LEADER, A).retryable
    assert not Refused(Refusal.INVALID).retryable


def test_heartbeat_types_exist() -> None:
    assert Heartbeat(1, A, B, 0, 0) != HeartbeatResponse(1, B, A, 0)
    assert TimeoutNow(1, A, B).term == 1
    assert ReadIndexRequest(1, A, B, b"").context == b""
    assert InstallSnapshotResponse(1, A, B, 0, 0, False).match_index == 0
    assert RequestVoteResponse(1, A, B, False).pre_vote is False
