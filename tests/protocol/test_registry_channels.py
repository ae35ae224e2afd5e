"""Shared client connections at the registry: channels, batches, bad items, packing."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.actions import (
    ClientRequestAction,
    CreateSessionAction,
    SendResponse,
    SessionCreationConfirmed,
)
from protocol.codec import decode, encode
from protocol.ids import RequestId, SessionId
from protocol.registry import Registry, channel_key, routing_ids, split_key
from protocol.wire import (
    SERVER_FRAME_TYPES,
    ClientBatch,
    ClientRequest,
    ClientResponse,
    CloseReason,
    ContinueSession,
    CreateSession,
    KeepAlive,
    KeepAliveResponse,
    NotLeader,
    RejectReason,
    ServerBatch,
    SessionClosed,
    SessionCreated,
    SessionRejected,
)
from tests.protocol.registry_helpers import HINT, follow, lead, make_registry

R = b"\x00\x00\x00\x00\x01"  # a routing id as the transports make them
OTHER = b"\x00\x00\x00\x00\x02"


def batch(*items: tuple[int, Any]) -> ClientBatch:
    return ClientBatch(tuple((c, m if isinstance(m, bytes) else encode(m)) for c, m in items))


def open_sessions(reg: Registry, channels: list[int], routing_id: bytes = R) -> list[SessionId]:
    """Create one session per channel with one batch; confirm them all."""
    fx = reg.on_routed(
        routing_id, batch(*((c, CreateSession({}, bytes([c]))) for c in channels)), 0
    )
    sids = []
    for action in fx.propose:
        assert isinstance(action, CreateSessionAction)
        reg.on_server_action(SessionCreationConfirmed(action.session_id, {}), 0)
        sids.append(action.session_id)
    return sids


def test_channel_keys_are_injective_and_split_back() -> None:
    assert split_key(channel_key(R, 7)) == (R, 7)
    # a routing id that ends like another's key still gets its own keys
    assert channel_key(R + b"\x01", 0) != channel_key(R, 1)
    assert routing_ids([channel_key(R, 0), channel_key(OTHER, 2), channel_key(R, 3)]) == [
        R,
        OTHER,
    ]


@given(
    st.binary(max_size=8),
    st.integers(0, 255),
    st.binary(max_size=8),
    st.integers(0, 255),
)
def test_channel_keys_never_collide(r1: bytes, c1: int, r2: bytes, c2: int) -> None:
    assert (channel_key(r1, c1) == channel_key(r2, c2)) == ((r1, c1) == (r2, c2))


def test_two_sessions_share_a_connection_and_each_gets_its_own_answers() -> None:
    reg = make_registry()
    lead(reg)
    s0, s1 = open_sessions(reg, [0, 1])
    assert reg.connection_of(s0) == channel_key(R, 0)
    assert reg.connection_of(s1) == channel_key(R, 1)
    fx = reg.on_routed(
        R,
        batch(
            (0, ClientRequest(RequestId(1), RequestId(1), b"a")),
            (1, ClientRequest(RequestId(1), RequestId(1), b"b")),
            (1, KeepAlive(s1, 5)),
        ),
        0,
    )
    assert fx.propose == [
        ClientRequestAction(s0, RequestId(1), RequestId(1), b"a"),
        ClientRequestAction(s1, RequestId(1), RequestId(1), b"b"),
    ]
    assert fx.send == [(channel_key(R, 1), KeepAliveResponse(5))]
    out = [*reg.on_server_action(SendResponse(s1, RequestId(1), b"B"), 0).send]
    out += reg.on_server_action(SendResponse(s0, RequestId(1), b"A"), 0).send
    (frame,) = reg.frames(out)
    assert frame[0] == R
    answer: Any = decode(frame[1], SERVER_FRAME_TYPES)
    assert answer == ServerBatch(
        (
            (1, encode(ClientResponse(RequestId(1), b"B"))),
            (0, encode(ClientResponse(RequestId(1), b"A"))),
        )
    )


def test_a_single_message_is_channel_zero_and_its_answer_goes_unbatched() -> None:
    reg = make_registry()
    lead(reg)
    fx = reg.on_routed(R, CreateSession({}, b"n"), 0)
    (action,) = fx.propose
    assert isinstance(action, CreateSessionAction)
    fx = reg.on_server_action(SessionCreationConfirmed(action.session_id, {}), 0)
    ((routing_id, frame),) = reg.frames(fx.send)
    assert routing_id == R
    assert frame == encode(SessionCreated(action.session_id, b"n", reg.config.max_payload_bytes))


def test_answers_for_channel_zero_alone_are_never_batched() -> None:
    """A connection that only uses channel 0 (a lone session, or a client from before
    batches, which cannot read a ServerBatch) gets plain frames, one per answer."""
    reg = make_registry()
    sends = [(channel_key(R, 0), KeepAliveResponse(i)) for i in range(3)]
    frames = reg.frames(sends)
    assert frames == [(R, encode(KeepAliveResponse(i))) for i in range(3)]
    # One item for another channel makes the turn's answers one batch again.
    frames = reg.frames([*sends, (channel_key(R, 1), KeepAliveResponse(9))])
    ((routing_id, frame),) = frames
    msg: Any = decode(frame, SERVER_FRAME_TYPES)
    assert routing_id == R and isinstance(msg, ServerBatch)
    assert [c for c, _ in msg.items] == [0, 0, 0, 1]


def test_a_bad_item_costs_only_its_channel() -> None:
    reg = make_registry()
    lead(reg)
    s0, s1 = open_sessions(reg, [0, 1])
    fx = reg.on_routed(
        R,
        batch((1, b"\xc1junk"), (0, ClientRequest(RequestId(1), RequestId(1), b"a"))),
        0,
    )
    assert fx.send == [(channel_key(R, 1), SessionClosed(CloseReason.PROTOCOL_ERROR, None))]
    assert fx.propose == [ClientRequestAction(s0, RequestId(1), RequestId(1), b"a")]
    assert fx.close == []
    assert reg.connection_of(s1) is None and reg.connection_of(s0) == channel_key(R, 0)
    # an item that is itself a batch is a bad item too
    fx = reg.on_routed(R, batch((0, batch((0, KeepAlive(s0, 1))))), 0)
    assert fx.send == [(channel_key(R, 0), SessionClosed(CloseReason.PROTOCOL_ERROR, None))]


def test_a_batch_beyond_the_bounds_drops_the_whole_connection_only() -> None:
    reg = make_registry(max_sessions_per_connection=2, max_batch_items=3)
    lead(reg)
    s0, s1 = open_sessions(reg, [0, 1])
    (other,) = open_sessions(reg, [0], OTHER)
    for bad in (
        batch((256, KeepAlive(s0, 1))),  # not a channel
        batch((-1, KeepAlive(s0, 1))),
        batch(*((0, KeepAlive(s0, i)) for i in range(4))),  # too many items
    ):
        fx = reg.on_routed(R, bad, 0)
        assert fx.close == [channel_key(R, 0)]
        assert routing_ids(fx.close) == [R]
        assert {k for k, _ in fx.send} <= {channel_key(R, 0), channel_key(R, 1)}
        assert reg.connection_of(s0) is None and reg.connection_of(s1) is None
    assert reg.connection_of(other) == channel_key(OTHER, 0)
    fx = reg.on_bad_connection(R)  # (a frame that did not decode)
    assert fx.send == [(channel_key(R, 0), SessionClosed(CloseReason.PROTOCOL_ERROR, None))]


def test_a_channel_beyond_the_limit_is_refused_without_state() -> None:
    reg = make_registry(max_sessions_per_connection=2)
    lead(reg)
    (s0,) = open_sessions(reg, [0])
    key = channel_key(R, 2)
    fx = reg.on_routed(
        R,
        batch(
            (2, CreateSession({}, b"c")),
            (2, ContinueSession(s0, b"d")),
            (2, ClientRequest(RequestId(1), RequestId(1), b"x")),
            (0, KeepAlive(s0, 9)),
        ),
        0,
    )
    detail = "at most 2 sessions per connection"
    assert fx.send == [
        (key, SessionRejected(RejectReason.TOO_MANY_SESSIONS, None, b"c", detail)),
        (key, SessionRejected(RejectReason.TOO_MANY_SESSIONS, None, b"d", detail)),
        (key, SessionClosed(CloseReason.NO_SESSION, None)),
        (channel_key(R, 0), KeepAliveResponse(9)),
    ]
    assert fx.propose == [] and fx.close == []
    assert reg.connection_of(s0) == channel_key(R, 0)
    assert reg.status().connections == 1
    follow(reg, 2)
    fx = reg.on_routed(R, batch((2, KeepAlive(s0, 1))), 0)
    assert fx.send == [(key, NotLeader(HINT))]


def test_a_follower_answers_each_item_on_its_channel_in_one_frame() -> None:
    reg = make_registry()
    follow(reg, 2)
    fx = reg.on_routed(
        R, batch((0, KeepAlive(SessionId("a"), 1)), (3, KeepAlive(SessionId("b"), 1))), 0
    )
    assert fx.send == [(channel_key(R, 0), NotLeader(HINT)), (channel_key(R, 3), NotLeader(HINT))]
    ((_, frame),) = reg.frames(fx.send)
    assert decode(frame, SERVER_FRAME_TYPES) == ServerBatch(
        ((0, encode(NotLeader(HINT))), (3, encode(NotLeader(HINT))))
    )


def test_step_down_closes_each_shared_connection_once() -> None:
    reg = make_registry()
    lead(reg)
    open_sessions(reg, [0, 1, 2])
    open_sessions(reg, [0], OTHER)
    fx = follow(reg, 2)
    assert sorted(routing_ids(fx.close)) == [R, OTHER]
    frames = reg.frames(fx.send)
    assert [r for r, _ in frames] == [R, OTHER]
    first: Any = decode(frames[0][1], SERVER_FRAME_TYPES)
    assert isinstance(first, ServerBatch) and [c for c, _ in first.items] == [0, 1, 2]


def test_server_batches_respect_the_item_bound() -> None:
    reg = make_registry(max_batch_items=2)
    sends = [(channel_key(R, 1), KeepAliveResponse(i)) for i in range(5)]
    frames = reg.frames(sends)
    items: list[tuple[int, bytes]] = []
    for routing_id, frame in frames:
        assert routing_id == R
        msg: Any = decode(frame, SERVER_FRAME_TYPES)
        assert isinstance(msg, ServerBatch) and len(msg.items) <= 2
        items.extend(msg.items)
    assert items == [(1, encode(KeepAliveResponse(i))) for i in range(5)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3)), max_size=12))
def test_a_batch_does_what_its_items_do_one_by_one(ops: list[tuple[int, int]]) -> None:
    """Handling a batch equals handling its items alone, in order, on their channels."""
    batched, single = make_registry(), make_registry()
    for reg in (batched, single):
        lead(reg)

    def item(kind: int, channel: int) -> Any:
        if kind == 0:
            return CreateSession({}, bytes([channel]))
        if kind == 1:
            return KeepAlive(SessionId("s1"), channel)
        if kind == 2:
            return ClientRequest(RequestId(channel + 1), RequestId(1), b"x")
        return b"\xc1"  # a bad item

    items = [(c, item(k, c)) for c, k in ops]
    fx = batched.on_routed(R, batch(*items), 0)
    sends, propose = [], []
    for channel, msg in items:
        key = channel_key(R, channel)
        if isinstance(msg, bytes):
            one = single.on_routed(R, ClientBatch(((channel, msg),)), 0)
        else:
            one = single.on_client_message(key, msg, 0)
        sends += one.send
        propose += one.propose
    assert fx.send == sends and fx.propose == propose
    assert batched.status() == single.status()
