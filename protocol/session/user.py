"""The user's side of the contract: ``UserStateMachine``, its context, state view and codec.

User code is deterministic business logic. It receives

* a :class:`SessionContext`: ``created_at`` (leader time, integer ms), ``session_id``
  (the session the command belongs to; ``None`` for internal commands) and
  ``send(target_session_id, payload)`` to emit server requests;
* a :class:`UserState`: its view of the shared state dictionary. Keys are ``str``;
  the session layer's own ``session/...`` keys are invisible and refused.

If a user method raises, everything it did in that call is undone: writes to the state
view are rolled back (an undo log of top-level keys) and its sends are discarded. Values
stored in the state should therefore be treated as immutable -- replace them
(``state[k] = new``) rather than mutating them in place: an in-place mutation of a value
object is not rolled back (it is still deterministic, so replicas stay identical, but
it is a half-done change).
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import msgpack

from protocol.ids import SessionId
from protocol.packing import packb

__all__ = [
    "RESERVED_PREFIX",
    "MsgpackCodec",
    "ReadOnlyUserState",
    "Reject",
    "ReservedKeyError",
    "SessionContext",
    "UserCodec",
    "UserState",
    "UserStateMachine",
]

#: Keys of the shared state dictionary that belong to the session layer.
RESERVED_PREFIX: Final = "session/"


class ReservedKeyError(KeyError):
    """User code tried to write or delete a key under the reserved ``session/`` prefix."""


@dataclass(frozen=True, slots=True)
class Reject:
    """Returned by ``on_session_created`` to refuse a session, with a reason for the client."""

    reason: str


class UserCodec(Protocol):
    """Turns the user's values into bytes (wire, log) and msgpack-native data (snapshots).

    Every ``decode_*`` may raise anything on bad input; the session layer turns that into
    a typed error. ``encode_value``/``decode_value`` map a state value to and from
    msgpack-native data (``None``, bool, int, float, str, bytes, lists, dicts); they must
    be deterministic so replicas produce identical snapshots.
    """

    def encode_command(self, command: Any) -> bytes: ...
    def decode_command(self, data: bytes) -> Any: ...
    def encode_response(self, response: Any) -> bytes: ...
    def decode_response(self, data: bytes) -> Any: ...
    def encode_payload(self, payload: Any) -> bytes: ...
    def decode_payload(self, data: bytes) -> Any: ...
    def encode_query(self, query: Any) -> bytes: ...
    def decode_query(self, data: bytes) -> Any: ...
    def encode_value(self, value: Any) -> Any: ...
    def decode_value(self, data: Any) -> Any: ...


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


class MsgpackCodec:
    """The default :class:`UserCodec`: user values are plain msgpack values.

    Commands, responses, payloads and queries are msgpack-encoded (arrays decode as
    lists); state values are stored in snapshots as they are. Subclass and override what
    needs more (e.g. ``encode_value`` for sets or your own classes).
    """

    encode_command = staticmethod(packb)
    decode_command = staticmethod(_unpack)
    encode_response = staticmethod(packb)
    decode_response = staticmethod(_unpack)
    encode_payload = staticmethod(packb)
    decode_payload = staticmethod(_unpack)
    encode_query = staticmethod(packb)
    decode_query = staticmethod(_unpack)

    def encode_value(self, value: Any) -> Any:
        return value

    def decode_value(self, data: Any) -> Any:
        return data


class SessionContext:
    """What a user method may know and do besides touching state.

    One context object is reused for every call: it is valid only during the call it was
    passed to (do not keep it).
    """

    __slots__ = ("_encode_payload", "_outbox", "created_at", "session_id")

    def __init__(self, codec: UserCodec) -> None:
        #: Leader time of the command being applied, integer milliseconds.
        self.created_at: int = 0
        #: The session the command belongs to (the new/expiring one for the session
        #: hooks); ``None`` for internal commands.
        self.session_id: SessionId | None = None
        self._outbox: list[tuple[str, bytes]] = []
        self._encode_payload = codec.encode_payload

    def send(self, target_session_id: SessionId, payload: Any) -> None:
        """Emit a server request to ``target_session_id``'s client.

        It is assigned an id and returned for sending when the user method returns
        normally; it is dropped if the target session does not exist (rule 5) or if the
        method raises.
        """
        if type(target_session_id) is not str:
            raise TypeError("target_session_id must be a str")
        self._outbox.append((target_session_id, self._encode_payload(payload)))


_MISSING: Final[Any] = object()


class UserState(MutableMapping[str, Any]):
    """The user's view of the shared state dictionary.

    Hides every ``session/...`` key (reads say "absent"; writes and deletes raise
    :class:`ReservedKeyError`), records the first previous value of each written key so a
    raising user method can be rolled back, and iterates in sorted key order so that
    iteration is identical on every replica, restored from a snapshot or not.
    """

    __slots__ = ("_data", "_reserved", "_undo")

    def __init__(self, data: dict[str, Any], reserved: list[int]) -> None:
        self._data = data
        # A one-element list shared with the owner: how many keys of ``data`` are reserved.
        self._reserved = reserved
        self._undo: dict[str, Any] = {}

    # -- reads
    def __getitem__(self, key: str) -> Any:
        if type(key) is str and key.startswith(RESERVED_PREFIX):
            raise KeyError(key)
        return self._data[key]

    def get(self, key: str, default: Any = None) -> Any:
        if type(key) is str and key.startswith(RESERVED_PREFIX):
            return default
        return self._data.get(key, default)

    def __contains__(self, key: object) -> bool:
        if type(key) is str and key.startswith(RESERVED_PREFIX):
            return False
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(k for k in self._data if not k.startswith(RESERVED_PREFIX)))

    def __len__(self) -> int:
        return len(self._data) - self._reserved[0]

    # -- writes
    def _check(self, key: str) -> None:
        if type(key) is not str:
            raise TypeError(f"state keys must be str, not {type(key).__name__}")
        if key.startswith(RESERVED_PREFIX):
            raise ReservedKeyError(key)

    def __setitem__(self, key: str, value: Any) -> None:
        self._check(key)
        undo = self._undo
        if key not in undo:
            undo[key] = self._data.get(key, _MISSING)
        self._data[key] = value

    def __delitem__(self, key: str) -> None:
        self._check(key)
        old = self._data.pop(key)  # KeyError if absent, like a dict
        undo = self._undo
        if key not in undo:
            undo[key] = old

    # -- transaction support for the session layer
    def _commit(self) -> None:
        if self._undo:
            self._undo.clear()

    def _rollback(self) -> None:
        data = self._data
        for key, old in self._undo.items():
            if old is _MISSING:
                data.pop(key, None)
            else:
                data[key] = old
        self._undo.clear()


class ReadOnlyUserState(UserState):
    """The view given to ``query``: reads only."""

    __slots__ = ()

    def __setitem__(self, key: str, value: Any) -> None:
        raise TypeError("query must not modify the state")

    def __delitem__(self, key: str) -> None:
        raise TypeError("query must not modify the state")


class UserStateMachine(abc.ABC):
    """Your deterministic business logic, run exactly once per client request.

    Implement the three abstract methods; override ``apply_internal`` and ``query`` if
    you use internal commands or queries. Never read clocks, randomness, files or the
    network here: use ``ctx.created_at`` for time.
    """

    @abc.abstractmethod
    def apply(self, ctx: SessionContext, state: UserState, command: Any) -> Any:
        """Run one client command (already decoded) and return its response value."""

    @abc.abstractmethod
    def on_session_created(
        self,
        ctx: SessionContext,
        state: UserState,
        session_id: SessionId,
        capabilities: dict[str, str],
    ) -> Reject | None:
        """A session is being opened; return :class:`Reject` to refuse it."""

    @abc.abstractmethod
    def on_session_expired(
        self,
        ctx: SessionContext,
        state: UserState,
        session_id: SessionId,
        capabilities: dict[str, str],
    ) -> None:
        """A session is going away for good; clean up what you keep about it."""

    def apply_internal(self, ctx: SessionContext, state: UserState, command: Any) -> None:
        """Run a server-side internal command (optional)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement apply_internal")

    def query(self, state: UserState, query: Any) -> Any:
        """Answer a read-only query (optional)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement query")
