"""``Registry.on_server_actions`` (a whole batch of answers at once) is exactly a run of
``on_server_action`` calls: two registries fed the same random traffic, one answered
action by action and one batch by batch, emit the same effects and end in the same
state."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.actions import (
    LeadershipChanged,
    NodeRole,
    RejectSession,
    SendRequestError,
    SendResponse,
    SendServerRequest,
    ServerAction,
    SessionCreationConfirmed,
    SessionRemoved,
)
from protocol.ids import MemberId, RequestId, SessionId
from protocol.registry import Registry, RegistryEffects
from protocol.wire import (
    ClientMessage,
    ClientRequest,
    CreateSession,
    ErrorReason,
    KeepAlive,
    RejectReason,
)
from tests.protocol.registry_helpers import SELF, lead, make_registry

CONNS = [b"c0", b"c1", b"c2"]
SIDS = [SessionId(f"s{i}") for i in range(1, 5)]


def _client(draw: st.DrawFn) -> tuple[bytes, ClientMessage]:
    conn = draw(st.sampled_from(CONNS))
    msg: ClientMessage = draw(
        st.one_of(
            st.builds(CreateSession, st.just({}), st.binary(min_size=1, max_size=2)),
            st.builds(
                ClientRequest,
                st.integers(1, 6).map(RequestId),
                st.integers(0, 3).map(RequestId),
                st.binary(max_size=3),
            ),
            st.builds(KeepAlive, st.sampled_from(SIDS), st.integers(0, 9)),
        )
    )
    return conn, msg


def _server(draw: st.DrawFn) -> ServerAction:
    sid = draw(st.sampled_from(SIDS))
    rid = RequestId(draw(st.integers(1, 6)))
    action: ServerAction = draw(
        st.sampled_from(
            [
                SendResponse(sid, rid, b"ok"),
                SendRequestError(sid, rid, ErrorReason.APPLICATION_ERROR, "boom"),
                SendServerRequest(sid, rid, b"sr"),
                SessionCreationConfirmed(sid, {}),
                RejectSession(sid, RejectReason.REJECTED_BY_APPLICATION, "no"),
                SessionRemoved(sid),
                LeadershipChanged(NodeRole.FOLLOWER, MemberId("n2"), "tcp://n2", 2),
                LeadershipChanged(NodeRole.LEADER, MemberId("n1"), SELF, 1),
            ]
        )
    )
    return action


@st.composite
def scripts(draw: st.DrawFn) -> list[tuple[bytes, ClientMessage] | list[ServerAction]]:
    steps: list[tuple[bytes, ClientMessage] | list[ServerAction]] = []
    for _ in range(draw(st.integers(1, 25))):
        if draw(st.booleans()):
            steps.append(_client(draw))
        else:
            steps.append([_server(draw) for _ in range(draw(st.integers(0, 6)))])
    return steps


def _state(reg: Registry) -> object:
    return (
        reg.status(),
        sorted(reg.sessions()),
        [reg.session_of(conn) for conn in CONNS],
        [(sid, reg.connection_of(sid), reg.is_expiring(sid)) for sid in SIDS],
    )


@settings(max_examples=200, deadline=None)
@given(scripts())
def test_a_batch_of_server_actions_is_a_run_of_single_ones(
    script: list[tuple[bytes, ClientMessage] | list[ServerAction]],
) -> None:
    one = make_registry(max_sessions_per_connection=3)
    many = make_registry(max_sessions_per_connection=3)
    lead(one)
    lead(many)
    for now, step in enumerate(script):
        if isinstance(step, tuple):
            conn, msg = step
            assert one.on_client_message(conn, msg, now) == many.on_client_message(conn, msg, now)
            continue
        joined = RegistryEffects()
        for action in step:
            fx = one.on_server_action(action, now)
            joined.send.extend(fx.send)
            joined.propose.extend(fx.propose)
            joined.close.extend(fx.close)
        assert many.on_server_actions(step, now) == joined
        assert _state(one) == _state(many)
