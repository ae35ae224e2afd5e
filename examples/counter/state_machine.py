"""A replicated counter, the first ``UserStateMachine``.

Commands are plain msgpack values (the default codec): ``["inc", n]``, ``["dec", n]``
and ``["get"]``; the response is the counter's value after the command. Whenever the
value crosses a multiple of :data:`CROSSING_STEP`, every *other* live session gets a
server request ``["crossed", value]``, which is why the counter remembers the live
sessions (under ``client/<id>`` keys, maintained by the two session hooks). Sessions
whose capability ``"counter"`` is anything but ``"v1"`` are rejected.
"""

from __future__ import annotations

from typing import Any, Final

from protocol.ids import SessionId
from protocol.session import Reject, SessionContext, UserState, UserStateMachine

__all__ = ["CROSSING_STEP", "CounterStateMachine", "decrement", "get", "increment"]

#: Crossing a multiple of this notifies the other sessions.
CROSSING_STEP: Final = 10
_VALUE: Final = "counter"
_CLIENT: Final = "client/"


def increment(by: int = 1) -> list[Any]:
    """The command that adds ``by``."""
    return ["inc", by]


def decrement(by: int = 1) -> list[Any]:
    """The command that subtracts ``by``."""
    return ["dec", by]


def get() -> list[Any]:
    """The command (or query) that reads the value."""
    return ["get"]


class CounterStateMachine(UserStateMachine):
    """One integer, shared by every session."""

    def apply(self, ctx: SessionContext, state: UserState, command: Any) -> int:
        op = command[0]
        old: int = state.get(_VALUE, 0)
        if op == "get":
            return old
        if op == "inc":
            new = old + int(command[1])
        elif op == "dec":
            new = old - int(command[1])
        else:
            raise ValueError(f"unknown counter command {op!r}")
        state[_VALUE] = new
        if old // CROSSING_STEP != new // CROSSING_STEP:
            for key in state:
                if key.startswith(_CLIENT) and key[len(_CLIENT) :] != ctx.session_id:
                    ctx.send(SessionId(key[len(_CLIENT) :]), ["crossed", new])
        return new

    def on_session_created(
        self,
        ctx: SessionContext,
        state: UserState,
        session_id: SessionId,
        capabilities: dict[str, str],
    ) -> Reject | None:
        if capabilities.get("counter", "v1") != "v1":
            return Reject("this counter speaks v1 only")
        state[_CLIENT + session_id] = ctx.created_at
        return None

    def on_session_expired(
        self,
        ctx: SessionContext,
        state: UserState,
        session_id: SessionId,
        capabilities: dict[str, str],
    ) -> None:
        state.pop(_CLIENT + session_id, None)

    def query(self, state: UserState, query: Any) -> int:
        if query != get():
            raise ValueError(f"unknown counter query {query!r}")
        value: int = state.get(_VALUE, 0)
        return value
