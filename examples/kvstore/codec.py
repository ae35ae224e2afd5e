"""The kv store's typed API: requests, their results and watch events, and their encoding.

Everything that crosses the wire is a plain msgpack value (the session layer's default
:class:`~protocol.session.MsgpackCodec` turns it into bytes). This module is the one
place that knows those shapes, on both sides: the client builds a request object
(:class:`KvSet`, :class:`KvGet`, ...), sends ``request.encode()`` (or
``request.to_native()`` if its client packs values itself) as a command or a query, and
turns the response back into a typed result with ``request.decode_result(data)``; a
watching client turns each server request payload into a :class:`KvEvent` with
:func:`decode_event`. The state machine parses commands with :func:`parse_request` and
answers with the same result classes, so the two sides cannot drift apart.

Decoding untrusted data raises :class:`~protocol.codec.ProtocolError` and nothing else.

Wire shapes (all msgpack arrays)::

    request   ["set", key, value] | ["get", key] | ["delete", key]
              | ["cas", key, expected, new] | ["watch", key] | ["unwatch", key]
              | ["list", prefix, limit] | ["watches", prefix, limit]
              | ["session-watches", session_id]
    entry     [key, value, version, create_revision, mod_revision]
    event     ["event", kind, key, value, version, revision]

Results are arrays of their fields in declaration order, entries nested as above.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Generic, Literal, TypeAlias, TypeVar

import msgpack

from protocol.codec import ProtocolError
from protocol.ids import SessionId

__all__ = [
    "EVENT_TAG",
    "QUERY_TYPES",
    "WRITE_TYPES",
    "EventKind",
    "KvCas",
    "KvCasResult",
    "KvDelete",
    "KvDeleteResult",
    "KvEntry",
    "KvEvent",
    "KvGet",
    "KvGetResult",
    "KvList",
    "KvListResult",
    "KvListWatches",
    "KvListWatchesResult",
    "KvRequest",
    "KvSessionWatches",
    "KvSessionWatchesResult",
    "KvSet",
    "KvSetResult",
    "KvUnwatch",
    "KvUnwatchResult",
    "KvValue",
    "KvWatch",
    "KvWatchResult",
    "decode_event",
    "parse_event",
    "parse_request",
    "same_value",
]

#: A value the store holds: anything msgpack carries (``None``, bool, int, float, str,
#: bytes, lists and dicts of those). Tuples travel as lists.
KvValue: TypeAlias = Any
#: What happened to a watched key: a ``set`` (also a successful ``cas``) or a ``delete``.
EventKind: TypeAlias = Literal["set", "delete"]
#: First element of every watch event payload.
EVENT_TAG: Final = "event"

R = TypeVar("R")


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def _unpack(data: bytes) -> Any:
    if type(data) is not bytes:
        raise ProtocolError(f"expected bytes, not {type(data).__name__}")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises a zoo of types on garbage
        raise ProtocolError(f"malformed msgpack: {exc}") from None


# ---------------------------------------------------------------- field checks


def _array(raw: Any, n: int, what: str) -> list[Any]:
    if type(raw) is not list or len(raw) != n:
        raise ProtocolError(f"{what}: expected an array of {n}")
    return raw


def _key(raw: Any, what: str) -> str:
    if type(raw) is not str or not raw:
        raise ProtocolError(f"{what}: the key must be a non-empty string")
    return raw


def _str(raw: Any, what: str) -> str:
    if type(raw) is not str:
        raise ProtocolError(f"{what}: expected a string")
    return raw


def _nat(raw: Any, what: str) -> int:
    if type(raw) is not int or raw < 0:
        raise ProtocolError(f"{what}: expected a non-negative integer")
    return raw


def _bool(raw: Any, what: str) -> bool:
    if type(raw) is not bool:
        raise ProtocolError(f"{what}: expected a boolean")
    return raw


def _strings(raw: Any, what: str) -> tuple[str, ...]:
    if type(raw) is not list or any(type(s) is not str for s in raw):
        raise ProtocolError(f"{what}: expected an array of strings")
    return tuple(raw)


# ---------------------------------------------------------------- values


def same_value(a: KvValue, b: KvValue) -> bool:
    """Strict structural equality of two stored values, used by compare-and-set.

    Unlike ``==`` it tells ``1``, ``1.0`` and ``True`` apart, and ``"x"`` from ``b"x"``
    (they are different msgpack values); NaN equals nothing. Iterative, so deeply
    nested values cannot exhaust the stack.
    """
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        t = type(x)
        if t is not type(y):
            return False
        if t is list:
            if len(x) != len(y):
                return False
            stack.extend(zip(x, y, strict=True))
        elif t is dict:
            if len(x) != len(y):
                return False
            by_typed_key = {(type(k), k): v for k, v in y.items()}
            for k, v in x.items():
                other = by_typed_key.get((type(k), k), _ABSENT)
                if other is _ABSENT:
                    return False
                stack.append((v, other))
        elif x != y:
            return False
    return True


_ABSENT: Final[Any] = object()


@dataclass(frozen=True, slots=True)
class KvEntry:
    """A key and its value with etcd-style revisions.

    ``version`` counts the sets since the key was (re)created (1 after the first);
    ``create_revision`` and ``mod_revision`` are the store revisions of its creation and
    of its last change.
    """

    key: str
    value: KvValue
    version: int
    create_revision: int
    mod_revision: int

    def to_native(self) -> list[Any]:
        return [self.key, self.value, self.version, self.create_revision, self.mod_revision]

    @classmethod
    def from_native(cls, raw: Any) -> KvEntry:
        key, value, version, created, modified = _array(raw, 5, "entry")
        return cls(
            _key(key, "entry"),
            value,
            _nat(version, "entry version"),
            _nat(created, "entry create_revision"),
            _nat(modified, "entry mod_revision"),
        )


def _entry_or_none(raw: Any) -> KvEntry | None:
    return None if raw is None else KvEntry.from_native(raw)


def _native_or_none(entry: KvEntry | None) -> list[Any] | None:
    return None if entry is None else entry.to_native()


# ---------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class KvSetResult:
    """``set`` stored ``entry``; ``prev`` is what it replaced (``None`` if it created the
    key). ``revision`` is the store's revision after the request, as in every result."""

    revision: int
    entry: KvEntry
    prev: KvEntry | None

    def to_native(self) -> list[Any]:
        return [self.revision, self.entry.to_native(), _native_or_none(self.prev)]

    @classmethod
    def from_native(cls, raw: Any) -> KvSetResult:
        rev, entry, prev = _array(raw, 3, "set result")
        return cls(_nat(rev, "revision"), KvEntry.from_native(entry), _entry_or_none(prev))


@dataclass(frozen=True, slots=True)
class KvGetResult:
    """The key's entry, or ``None`` if it is absent."""

    revision: int
    entry: KvEntry | None

    @property
    def value(self) -> KvValue:
        """The value, ``None`` if the key is absent (check ``entry`` to tell apart a
        stored ``None``)."""
        return None if self.entry is None else self.entry.value

    def to_native(self) -> list[Any]:
        return [self.revision, _native_or_none(self.entry)]

    @classmethod
    def from_native(cls, raw: Any) -> KvGetResult:
        rev, entry = _array(raw, 2, "get result")
        return cls(_nat(rev, "revision"), _entry_or_none(entry))


@dataclass(frozen=True, slots=True)
class KvDeleteResult:
    """``prev`` is the entry that was deleted, ``None`` if the key was already absent (then
    nothing changed: no new revision, no watch event)."""

    revision: int
    prev: KvEntry | None

    @property
    def deleted(self) -> bool:
        return self.prev is not None

    def to_native(self) -> list[Any]:
        return [self.revision, _native_or_none(self.prev)]

    @classmethod
    def from_native(cls, raw: Any) -> KvDeleteResult:
        rev, prev = _array(raw, 2, "delete result")
        return cls(_nat(rev, "revision"), _entry_or_none(prev))


@dataclass(frozen=True, slots=True)
class KvCasResult:
    """Whether compare-and-set swapped, and the key's entry after it: the new one if it
    swapped, else the current one that did not match (``None`` if the key is absent)."""

    revision: int
    swapped: bool
    entry: KvEntry | None

    def to_native(self) -> list[Any]:
        return [self.revision, self.swapped, _native_or_none(self.entry)]

    @classmethod
    def from_native(cls, raw: Any) -> KvCasResult:
        rev, swapped, entry = _array(raw, 3, "cas result")
        return cls(_nat(rev, "revision"), _bool(swapped, "swapped"), _entry_or_none(entry))


@dataclass(frozen=True, slots=True)
class KvWatchResult:
    """``added`` is false if the session already watched the key. ``entry`` is the key's
    entry now: every change after ``revision`` arrives as a :class:`KvEvent`."""

    revision: int
    added: bool
    entry: KvEntry | None

    def to_native(self) -> list[Any]:
        return [self.revision, self.added, _native_or_none(self.entry)]

    @classmethod
    def from_native(cls, raw: Any) -> KvWatchResult:
        rev, added, entry = _array(raw, 3, "watch result")
        return cls(_nat(rev, "revision"), _bool(added, "added"), _entry_or_none(entry))


@dataclass(frozen=True, slots=True)
class KvUnwatchResult:
    """``removed`` is false if the session did not watch the key."""

    revision: int
    removed: bool

    def to_native(self) -> list[Any]:
        return [self.revision, self.removed]

    @classmethod
    def from_native(cls, raw: Any) -> KvUnwatchResult:
        rev, removed = _array(raw, 2, "unwatch result")
        return cls(_nat(rev, "revision"), _bool(removed, "removed"))


@dataclass(frozen=True, slots=True)
class KvListResult:
    """Entries whose key starts with the prefix, in key order; ``more`` says the limit
    cut the list short."""

    revision: int
    entries: tuple[KvEntry, ...]
    more: bool

    def to_native(self) -> list[Any]:
        return [self.revision, [e.to_native() for e in self.entries], self.more]

    @classmethod
    def from_native(cls, raw: Any) -> KvListResult:
        rev, entries, more = _array(raw, 3, "list result")
        if type(entries) is not list:
            raise ProtocolError("list result: entries must be an array")
        return cls(
            _nat(rev, "revision"),
            tuple(KvEntry.from_native(e) for e in entries),
            _bool(more, "more"),
        )


@dataclass(frozen=True, slots=True)
class KvListWatchesResult:
    """Watched keys starting with the prefix, in key order, each with its watching
    sessions (sorted); ``more`` says the limit cut the list short."""

    revision: int
    watches: tuple[tuple[str, tuple[SessionId, ...]], ...]
    more: bool

    def to_native(self) -> list[Any]:
        return [self.revision, [[k, list(s)] for k, s in self.watches], self.more]

    @classmethod
    def from_native(cls, raw: Any) -> KvListWatchesResult:
        rev, watches, more = _array(raw, 3, "watches result")
        if type(watches) is not list:
            raise ProtocolError("watches result: watches must be an array")
        items = []
        for item in watches:
            key, sessions = _array(item, 2, "watches result item")
            ids = tuple(SessionId(s) for s in _strings(sessions, "watching sessions"))
            items.append((_key(key, "watches result item"), ids))
        return cls(_nat(rev, "revision"), tuple(items), _bool(more, "more"))


@dataclass(frozen=True, slots=True)
class KvSessionWatchesResult:
    """The keys one session watches, sorted (empty for an unknown session)."""

    revision: int
    keys: tuple[str, ...]

    def to_native(self) -> list[Any]:
        return [self.revision, list(self.keys)]

    @classmethod
    def from_native(cls, raw: Any) -> KvSessionWatchesResult:
        rev, keys = _array(raw, 2, "session watches result")
        return cls(_nat(rev, "revision"), _strings(keys, "keys"))


# ---------------------------------------------------------------- requests

#: How each request field is checked, when built and when parsed (others: any value).
_FIELD_CHECKS: Final[dict[str, Callable[[Any, str], Any]]] = {
    "key": _key,
    "prefix": _str,
    "limit": _nat,
    "session_id": _str,
}


_FIELD_NAMES: Final[dict[type, tuple[str, ...]]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


class KvRequest(Generic[R]):
    """A kv store request; ``R`` is its result type.

    ``to_native()``/``encode()`` give the command or query to send;
    ``parse_result(native)``/``decode_result(bytes)`` read its response.
    """

    __slots__ = ()
    #: The request's name, the first element of its wire array.
    OP: ClassVar[str]
    _RESULT: ClassVar[Callable[[Any], Any]]

    def __post_init__(self) -> None:
        # The same checks as parsing, so a request built here always parses there.
        for name in _field_names(type(self)):
            check = _FIELD_CHECKS.get(name)
            if check is not None:
                try:
                    check(getattr(self, name), f"{self.OP} {name}")
                except ProtocolError as exc:
                    raise ValueError(str(exc)) from None

    def to_native(self) -> list[Any]:
        """The msgpack-able command/query value: ``[OP, *fields]`` in declaration order."""
        return [self.OP, *(getattr(self, name) for name in _field_names(type(self)))]

    def encode(self) -> bytes:
        """The command/query as msgpack bytes (what the default codec produces)."""
        return _pack(self.to_native())

    def parse_result(self, raw: Any) -> R:
        """The typed result from the decoded response value; ``ProtocolError`` if it is
        not one."""
        result: R = type(self)._RESULT(raw)
        return result

    def decode_result(self, data: bytes) -> R:
        """The typed result from the response bytes; ``ProtocolError`` if it is not one."""
        return self.parse_result(_unpack(data))


@dataclass(frozen=True, slots=True)
class KvSet(KvRequest[KvSetResult]):
    """Store ``value`` under ``key`` (creating or replacing it)."""

    OP: ClassVar[str] = "set"
    _RESULT: ClassVar[Callable[[Any], Any]] = KvSetResult.from_native
    key: str
    value: KvValue


@dataclass(frozen=True, slots=True)
class KvGet(KvRequest[KvGetResult]):
    """Read ``key``: as a query (linearizable, no log entry: the normal way) or as a
    command through the log."""

    OP: ClassVar[str] = "get"
    _RESULT: ClassVar[Callable[[Any], Any]] = KvGetResult.from_native
    key: str


@dataclass(frozen=True, slots=True)
class KvDelete(KvRequest[KvDeleteResult]):
    """Remove ``key`` (nothing happens if it is absent)."""

    OP: ClassVar[str] = "delete"
    _RESULT: ClassVar[Callable[[Any], Any]] = KvDeleteResult.from_native
    key: str


@dataclass(frozen=True, slots=True)
class KvCas(KvRequest[KvCasResult]):
    """Compare-and-set: store ``new`` under ``key`` only if its current value is
    ``expected`` (compared with :func:`same_value`), or, when ``expected`` is ``None``,
    only if the key is absent ("create if absent"; a stored ``None`` is not absent)."""

    OP: ClassVar[str] = "cas"
    _RESULT: ClassVar[Callable[[Any], Any]] = KvCasResult.from_native
    key: str
    expected: KvValue
    new: KvValue


@dataclass(frozen=True, slots=True)
class KvWatch(KvRequest[KvWatchResult]):
    """Watch ``key`` with this session: every later change arrives as a server request
    carrying a :class:`KvEvent` (exactly once, in order) until unwatched or expired."""

    OP: ClassVar[str] = "watch"
    _RESULT: ClassVar[Callable[[Any], Any]] = KvWatchResult.from_native
    key: str


@dataclass(frozen=True, slots=True)
class KvUnwatch(KvRequest[KvUnwatchResult]):
    """Stop this session's watch on ``key``."""

    OP: ClassVar[str] = "unwatch"
    _RESULT: ClassVar[Callable[[Any], Any]] = KvUnwatchResult.from_native
    key: str


@dataclass(frozen=True, slots=True)
class KvList(KvRequest[KvListResult]):
    """Query: the entries whose key starts with ``prefix`` (all for ``""``), at most
    ``limit`` of them (0 = no limit). Costs a scan of the store's keys."""

    OP: ClassVar[str] = "list"
    _RESULT: ClassVar[Callable[[Any], Any]] = KvListResult.from_native
    prefix: str = ""
    limit: int = 0


@dataclass(frozen=True, slots=True)
class KvListWatches(KvRequest[KvListWatchesResult]):
    """Query: the watched keys starting with ``prefix`` and who watches them, at most
    ``limit`` keys (0 = no limit). Costs a scan of the store's keys."""

    OP: ClassVar[str] = "watches"
    _RESULT: ClassVar[Callable[[Any], Any]] = KvListWatchesResult.from_native
    prefix: str = ""
    limit: int = 0


@dataclass(frozen=True, slots=True)
class KvSessionWatches(KvRequest[KvSessionWatchesResult]):
    """Query: the keys ``session_id`` watches."""

    OP: ClassVar[str] = "session-watches"
    _RESULT: ClassVar[Callable[[Any], Any]] = KvSessionWatchesResult.from_native
    session_id: SessionId


_REQUEST_TYPES: Final[tuple[type[KvRequest[Any]], ...]] = (
    KvSet,
    KvGet,
    KvDelete,
    KvCas,
    KvWatch,
    KvUnwatch,
    KvList,
    KvListWatches,
    KvSessionWatches,
)
_BY_OP: Final[dict[str, type[KvRequest[Any]]]] = {t.OP: t for t in _REQUEST_TYPES}

#: Requests the log accepts as commands (``get`` included, though queries are cheaper).
WRITE_TYPES: Final = (KvSet, KvGet, KvDelete, KvCas, KvWatch, KvUnwatch)
#: Requests :meth:`~examples.kvstore.KvStateMachine.query` accepts.
QUERY_TYPES: Final = (KvGet, KvList, KvListWatches, KvSessionWatches)


def parse_request(raw: Any) -> KvRequest[Any]:
    """The typed request from a decoded command/query value; ``ProtocolError`` if it is
    not one."""
    if type(raw) is not list or not raw or type(raw[0]) is not str:
        raise ProtocolError("a kv request is an array starting with its name")
    request_type = _BY_OP.get(raw[0])
    if request_type is None:
        raise ProtocolError(f"unknown kv request {raw[0]!r}")
    names = _field_names(request_type)
    values = _array(raw, 1 + len(names), request_type.OP)[1:]
    for name, value in zip(names, values, strict=True):
        check = _FIELD_CHECKS.get(name)
        if check is not None:
            check(value, f"{request_type.OP} {name}")
    return request_type(*values)


# ---------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class KvEvent:
    """A change to a watched key, the payload of a server request.

    ``revision`` is the store revision of the change (strictly increasing across all
    events of the store, so it orders and dedupes events even across sessions);
    ``version`` is the key's version after it (0 after a delete). ``value`` is the new
    value (``None`` for a delete).
    """

    kind: EventKind
    key: str
    value: KvValue
    version: int
    revision: int

    def to_native(self) -> list[Any]:
        return [EVENT_TAG, self.kind, self.key, self.value, self.version, self.revision]

    @classmethod
    def from_native(cls, raw: Any) -> KvEvent:
        tag, kind, key, value, version, revision = _array(raw, 6, "event")
        if tag != EVENT_TAG:
            raise ProtocolError("event: not a kv watch event")
        if kind == "set":
            k: EventKind = "set"
        elif kind == "delete":
            k = "delete"
        else:
            raise ProtocolError(f"event: unknown kind {kind!r}")
        return cls(k, _key(key, "event"), value, _nat(version, "version"), _nat(revision, "rev"))


def parse_event(raw: Any) -> KvEvent:
    """The :class:`KvEvent` from a decoded server request payload; ``ProtocolError`` if
    it is not one."""
    return KvEvent.from_native(raw)


def decode_event(data: bytes) -> KvEvent:
    """The :class:`KvEvent` from server request payload bytes; ``ProtocolError`` if it is
    not one."""
    return KvEvent.from_native(_unpack(data))
