"""A test user state machine that records its calls, and a node that numbers log entries."""

from __future__ import annotations

from typing import Any

import msgpack

from protocol.ids import RequestId, SessionId
from protocol.session import (
    ClientRequest,
    CreateSession,
    GetRequestsForRetry,
    InternalCommand,
    Reject,
    ServerRequestAck,
    SessionCommand,
    SessionContext,
    SessionExpired,
    SessionResult,
    SessionStateMachine,
    UserCodec,
    UserState,
    UserStateMachine,
)

LIVE = "live/"


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


class RecordingSM(UserStateMachine):
    """Commands (msgpack arrays):

    ``["add", k]`` adds k to ``n`` and returns it; ``["send", [targets], payload]`` sends
    to each target; ``["err"]`` returns an error *value*; ``["boom"]`` writes, deletes,
    sends, then raises. Sessions are tracked under ``live/<id>``; capabilities
    ``reject``/``raise`` refuse or break creation, ``greet`` notifies the other live
    sessions; expiry notifies the others, and raises if ``raise_on_expiry`` is set.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str | None, Any]] = []

    def apply(self, ctx: SessionContext, state: UserState, command: Any) -> Any:
        self.calls.append((ctx.session_id, command))
        op = command[0]
        if op == "add":
            n = state.get("n", 0) + command[1]
            state["n"] = n
            return n
        if op == "send":
            for target in command[1]:
                ctx.send(SessionId(target), command[2])
            return len(command[1])
        if op == "err":
            return {"error": "bad input"}
        if op == "boom":
            state["n"] = -1
            state["junk"] = True
            state.pop("keep", None)
            ctx.send(SessionId(str(ctx.session_id)), "lost")
            raise RuntimeError("boom")
        raise ValueError(f"unknown op {op!r}")

    def _others(self, state: UserState, me: str) -> list[SessionId]:
        return [SessionId(k[len(LIVE) :]) for k in state if k.startswith(LIVE) and k[5:] != me]

    def on_session_created(
        self, ctx: SessionContext, state: UserState, session_id: SessionId, caps: dict[str, str]
    ) -> Reject | None:
        self.calls.append((session_id, "created"))
        state[LIVE + session_id] = ctx.created_at
        if "reject" in caps:
            return Reject(caps["reject"])
        if "raise" in caps:
            raise KeyError(caps["raise"])
        if "greet" in caps:
            for other in self._others(state, session_id):
                ctx.send(other, ["hello", session_id])
        return None

    def on_session_expired(
        self, ctx: SessionContext, state: UserState, session_id: SessionId, caps: dict[str, str]
    ) -> None:
        self.calls.append((session_id, "expired"))
        del state[LIVE + session_id]
        for other in self._others(state, session_id):
            ctx.send(other, ["gone", session_id])
        ctx.send(session_id, "to myself")  # dropped: the session is going away
        if "raise_on_expiry" in caps:
            raise RuntimeError("expiry hook broke")

    def apply_internal(self, ctx: SessionContext, state: UserState, command: Any) -> None:
        self.calls.append((None, command))
        if command == "tick":
            state["ticks"] = state.get("ticks", 0) + 1
            for other in self._others(state, ""):
                ctx.send(other, "tick")
            return
        state["ticks"] = -1
        raise RuntimeError("bad internal command")

    def query(self, state: UserState, query: Any) -> Any:
        if query == "n":
            return state.get("n", 0)
        if query == "write":
            state["n"] = 0
        if query == "keys":
            return list(state)
        raise LookupError(query)


class Node:
    """A session state machine fed with consecutive log indexes, as a replica would be."""

    def __init__(self, user: UserStateMachine | None = None, codec: UserCodec | None = None):
        self.user = user if user is not None else RecordingSM()
        self.sm = SessionStateMachine(self.user, codec)
        self.index = 0

    def apply(self, cmd: SessionCommand) -> SessionResult:
        self.index += 1
        return self.sm.apply(self.index, cmd)

    def create(self, sid: str, t: int = 0, **caps: str) -> SessionResult:
        return self.apply(CreateSession(SessionId(sid), caps, t))

    def request(
        self, sid: str, rid: int, command: Any, lowest: int | None = None, t: int = 0
    ) -> SessionResult:
        low = rid if lowest is None else lowest
        return self.apply(
            ClientRequest(SessionId(sid), RequestId(rid), RequestId(low), pack(command), t)
        )

    def ack(self, sid: str, rid: int, t: int = 0) -> SessionResult:
        return self.apply(ServerRequestAck(SessionId(sid), RequestId(rid), t))

    def expire(self, sid: str, t: int = 0) -> SessionResult:
        return self.apply(SessionExpired(SessionId(sid), t))

    def retry(self, before: int, t: int) -> SessionResult:
        return self.apply(GetRequestsForRetry(before, t))

    def internal(self, command: Any, t: int = 0) -> SessionResult:
        return self.apply(InternalCommand(pack(command), t))
