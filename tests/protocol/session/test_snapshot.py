"""Snapshots: deterministic bytes, a codec hook for user types, garbage refused safely."""

from __future__ import annotations

import contextlib
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.codec import ProtocolError
from protocol.ids import RequestId, SessionId
from protocol.session import (
    ClientRequest,
    MsgpackCodec,
    Reject,
    SessionContext,
    SessionStateMachine,
    UserState,
    UserStateMachine,
)
from tests.protocol.session.helpers import Node, RecordingSM, pack


def busy_node() -> Node:
    node = Node()
    node.create("b", role="x")
    node.create("a")
    node.request("a", 1, ["add", 1], t=1)
    node.request("a", 2, ["send", ["b", "b"], "p"], lowest=1, t=2)
    node.request("b", 1, ["boom"])
    node.ack("b", 1)
    return node


def test_replicas_applying_the_same_log_give_identical_bytes() -> None:
    assert busy_node().sm.snapshot() == busy_node().sm.snapshot()


def test_snapshot_is_independent_of_insertion_order() -> None:
    one, two = Node(), Node()
    one.create("a")
    one.create("b")
    two.create("b")
    two.create("a")
    assert one.sm.snapshot() == two.sm.snapshot()


def test_restore_of_a_snapshot_is_identical() -> None:
    node = busy_node()
    fresh = SessionStateMachine(RecordingSM())
    fresh.restore(node.sm.snapshot())
    assert fresh.snapshot() == node.sm.snapshot()
    assert fresh.stats() == node.sm.stats()
    assert fresh.last_applied == node.sm.last_applied


class SetCodec(MsgpackCodec):
    """User values that are sets travel as ``{"set": sorted list}``."""

    def encode_value(self, value: Any) -> Any:
        return {"set": sorted(value)} if isinstance(value, set) else value

    def decode_value(self, data: Any) -> Any:
        if isinstance(data, dict) and set(data) == {"set"}:
            return set(data["set"])
        if data == "poison":
            raise ValueError("cannot decode")
        return data


class Tags(UserStateMachine):
    def apply(self, ctx: SessionContext, state: UserState, command: Any) -> Any:
        state[command[0]] = set(command[1])
        return len(state)

    def on_session_created(
        self, ctx: SessionContext, state: UserState, sid: Any, caps: Any
    ) -> Reject | None:
        return None

    def on_session_expired(
        self, ctx: SessionContext, state: UserState, sid: Any, caps: Any
    ) -> None:
        return None


def test_user_types_go_through_the_codec_hook() -> None:
    node = Node(Tags(), SetCodec())
    node.create("s")
    node.request("s", 1, ["tags", [3, 1, 2]])
    snap = node.sm.snapshot()
    assert msgpack.unpackb(snap)[2]["tags"] == {"set": [1, 2, 3]}
    twin = SessionStateMachine(Tags(), SetCodec())
    twin.restore(snap)
    assert twin._raw_state()["tags"] == {1, 2, 3}
    assert twin.snapshot() == snap


def valid_state() -> dict[str, Any]:
    return msgpack.unpackb(busy_node().sm.snapshot(), strict_map_key=False)[2]  # type: ignore[no-any-return]


def corrupt(path: tuple[Any, ...], value: Any) -> bytes:
    state = valid_state()
    target: Any = state
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return msgpack.packb([1, 9, state])  # type: ignore[no-any-return]


BAD_SNAPSHOTS = [
    b"",
    b"\xc1",
    msgpack.packb([2, 0, {}]),
    msgpack.packb([True, 0, {}]),
    msgpack.packb([1, "0", {}]),
    msgpack.packb([1, 0, []]),
    msgpack.packb({"a": 1}),
    msgpack.packb([1, 0, {1: 2}]),
    corrupt(("session/a",), [1, 2]),
    corrupt(("session/a", 0), {"k": 1}),
    corrupt(("session/a", 0), ["k"]),
    corrupt(("session/a", 1), "1"),
    corrupt(("session/a", 2), {}),
    corrupt(("session/a", 2), [[1]]),
    corrupt(("session/a", 2), [["1", b""]]),
    corrupt(("session/a", 2), [[1, 5]]),
    corrupt(("session/b", 4), [[1, b"", 0], [1, b"", 0]]),  # ids must increase
    corrupt(("session/b", 4), [[9, b"", 0]]),  # beyond the last id assigned
    corrupt(("session/b", 4), [[2, "p", 0]]),
]


@pytest.mark.parametrize("snapshot", BAD_SNAPSHOTS)
def test_bad_snapshots_are_protocol_errors_and_change_nothing(snapshot: bytes) -> None:
    node = busy_node()
    before = node.sm.snapshot()
    with pytest.raises(ProtocolError):
        node.sm.restore(snapshot)
    assert node.sm.snapshot() == before


def test_undecodable_user_value_is_a_protocol_error() -> None:
    sm = SessionStateMachine(Tags(), SetCodec())
    with pytest.raises(ProtocolError):
        sm.restore(msgpack.packb([1, 0, {"k": "poison"}]))


@given(st.binary(max_size=200))
def test_restore_of_garbage_raises_only_protocol_error(data: bytes) -> None:
    sm = SessionStateMachine(RecordingSM())
    with contextlib.suppress(ProtocolError):
        sm.restore(data)


SNAPSHOT = busy_node().sm.snapshot()


@given(st.data())
def test_restore_of_a_mutated_snapshot_raises_only_protocol_error(data: st.DataObject) -> None:
    frame = bytearray(SNAPSHOT)
    for _ in range(data.draw(st.integers(1, 3))):
        frame[data.draw(st.integers(0, len(frame) - 1))] = data.draw(st.integers(0, 255))
    sm = SessionStateMachine(RecordingSM())
    try:
        sm.restore(bytes(frame))
    except ProtocolError:
        return
    sm.snapshot()  # whatever was accepted is a usable state
    request = ClientRequest(SessionId("a"), RequestId(3), RequestId(1), pack(["add", 1]), 0)
    sm.apply(sm.last_applied + 1, request)
