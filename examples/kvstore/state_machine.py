"""A replicated key-value store with watches, as a ``UserStateMachine``.

Requests and results are the typed classes of :mod:`examples.kvstore.codec` (on the
wire: plain msgpack arrays). Writes (``set``, ``delete``, ``cas``) and ``watch``/
``unwatch`` go through the log; reads are queries (``get``, ``list``, ``watches``,
``session-watches``), answered by the session layer at a read index without a log
entry. ``get`` is also accepted as a command, for clients that want a read ordered with
their writes in the log.

**Revisions** (as in etcd): the store has one revision counter, raised by every change
(a ``set``, a successful ``cas``, a ``delete`` of a present key) and by nothing else.
Each key remembers its ``version`` (sets since it was created), ``create_revision`` and
``mod_revision``. Every result carries the revision after the request.

**Watches**: a change to a watched key sends one server request, a
:class:`~examples.kvstore.codec.KvEvent`, to every session watching it -- the writer's
own session included if it watches the key, as etcd does -- in sorted session order.
The session layer numbers them per session, keeps them until acknowledged and retries
them, so a watcher sees each change exactly once and in revision order. A duplicate of
a write is answered from the session layer's cache without calling :meth:`apply`, so it
emits no second event. ``on_session_expired`` drops the session's watches.

**State layout** (keys of the shared dictionary; every value is replaced, never
mutated in place, so a failing request rolls back cleanly, and sets are kept as sorted
lists, so iteration order and snapshot bytes are the same on every replica):

* ``kv/<key>`` -> ``[value, version, create_revision, mod_revision]``
* ``watchers/<key>`` -> sorted list of the session ids watching ``<key>``
* ``watching/<session id>`` -> sorted list of the keys that session watches
* ``revision`` -> the store revision (absent = 0)

**Costs**: ``set``/``delete``/``cas`` are O(1) plus O(w) for the key's w watchers (one
send each); ``watch``/``unwatch`` copy the key's watcher list and the session's key
list (O(w + k)); expiry is O(sum of the watcher lists of the session's keys). Only the
``list`` and ``watches`` queries scan the store's keys.

Sessions whose capability ``"kvstore"`` names a version other than ``"v1"`` are
rejected, so a client that needs a newer protocol fails fast instead of misreading it.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from typing import Any, Final

from examples.kvstore.codec import (
    EventKind,
    KvCas,
    KvCasResult,
    KvDelete,
    KvDeleteResult,
    KvEntry,
    KvEvent,
    KvGet,
    KvGetResult,
    KvList,
    KvListResult,
    KvListWatches,
    KvListWatchesResult,
    KvRequest,
    KvSessionWatches,
    KvSessionWatchesResult,
    KvSet,
    KvSetResult,
    KvUnwatch,
    KvUnwatchResult,
    KvValue,
    KvWatch,
    KvWatchResult,
    parse_request,
    same_value,
)
from protocol.ids import SessionId
from protocol.session import Reject, SessionContext, UserState, UserStateMachine

__all__ = [
    "CAPABILITY",
    "KV_PREFIX",
    "REVISION_KEY",
    "SUPPORTED_VERSIONS",
    "WATCHERS_PREFIX",
    "WATCHING_PREFIX",
    "KvStateMachine",
]

#: The session capability naming the kv protocol version a client speaks.
CAPABILITY: Final = "kvstore"
#: The versions of that capability this store accepts (a missing capability means v1).
SUPPORTED_VERSIONS: Final = frozenset({"v1"})
#: State keys: entries, per-key watcher lists, per-session watched-key lists, revision.
KV_PREFIX: Final = "kv/"
WATCHERS_PREFIX: Final = "watchers/"
WATCHING_PREFIX: Final = "watching/"
REVISION_KEY: Final = "revision"

_NO_STRINGS: Final[list[str]] = []


def _entry(key: str, raw: list[Any] | None) -> KvEntry | None:
    return None if raw is None else KvEntry(key, raw[0], raw[1], raw[2], raw[3])


def _with(items: list[str], item: str) -> list[str] | None:
    """A copy of the sorted ``items`` with ``item`` inserted; ``None`` if already there."""
    i = bisect_left(items, item)
    if i < len(items) and items[i] == item:
        return None
    return [*items[:i], item, *items[i:]]


def _without(items: list[str], item: str) -> list[str] | None:
    """A copy of the sorted ``items`` without ``item``; ``None`` if it is not there."""
    i = bisect_left(items, item)
    if i == len(items) or items[i] != item:
        return None
    return items[:i] + items[i + 1 :]


def _scan(state: UserState, prefix: str, limit: int) -> tuple[list[str], bool]:
    """The state keys starting with ``prefix`` in sorted order, at most ``limit`` (0 = all),
    and whether more were left out. Sorting the keys makes this O(n log n) in the
    store's size: fine for a query, which is why listing is not a command."""
    keys = list(state)  # sorted
    i = bisect_left(keys, prefix)
    found: list[str] = []
    for key in keys[i:]:
        if not key.startswith(prefix):
            break
        if limit and len(found) == limit:
            return found, True
        found.append(key)
    return found, False


def _replace(state: UserState, key: str, items: list[str]) -> None:
    """Store a sorted list, or drop the key when it is empty (no litter in snapshots)."""
    if items:
        state[key] = items
    else:
        del state[key]


class KvStateMachine(UserStateMachine):
    """The kv store: ``set``/``get``/``delete``/``cas`` and per-session watches."""

    def __init__(self) -> None:
        self._writes: dict[type[Any], Callable[[SessionContext, UserState, Any], Any]] = {
            KvSet: self._set,
            KvGet: self._get_command,
            KvDelete: self._delete,
            KvCas: self._cas,
            KvWatch: self._watch,
            KvUnwatch: self._unwatch,
        }
        self._queries: dict[type[Any], Callable[[UserState, Any], Any]] = {
            KvGet: self._get,
            KvList: self._list,
            KvListWatches: self._list_watches,
            KvSessionWatches: self._session_watches,
        }

    # ------------------------------------------------------------ UserStateMachine

    def apply(self, ctx: SessionContext, state: UserState, command: Any) -> Any:
        request = parse_request(command)
        handler = self._writes.get(type(request))
        if handler is None:
            raise ValueError(f"{request.OP!r} is a query, not a command")
        return handler(ctx, state, request).to_native()

    def query(self, state: UserState, query: Any) -> Any:
        request: KvRequest[Any] = parse_request(query)
        handler = self._queries.get(type(request))
        if handler is None:
            raise ValueError(f"{request.OP!r} changes the store: send it as a command")
        return handler(state, request).to_native()

    def on_session_created(
        self,
        ctx: SessionContext,
        state: UserState,
        session_id: SessionId,
        capabilities: dict[str, str],
    ) -> Reject | None:
        version = capabilities.get(CAPABILITY, "v1")
        if version not in SUPPORTED_VERSIONS:
            supported = ", ".join(sorted(SUPPORTED_VERSIONS))
            return Reject(f"kvstore protocol {version!r} is not supported (only {supported})")
        return None

    def on_session_expired(
        self,
        ctx: SessionContext,
        state: UserState,
        session_id: SessionId,
        capabilities: dict[str, str],
    ) -> None:
        keys: list[str] | None = state.get(WATCHING_PREFIX + session_id)
        if keys is None:
            return
        for key in keys:
            wkey = WATCHERS_PREFIX + key
            remaining = _without(state.get(wkey, _NO_STRINGS), session_id)
            if remaining is not None:
                _replace(state, wkey, remaining)
        del state[WATCHING_PREFIX + session_id]

    # ------------------------------------------------------------ writes

    def _put(self, ctx: SessionContext, state: UserState, key: str, value: KvValue) -> KvEntry:
        """Store ``value`` at a new revision and notify the key's watchers."""
        revision: int = state.get(REVISION_KEY, 0) + 1
        old: list[Any] | None = state.get(KV_PREFIX + key)
        if old is None:
            raw = [value, 1, revision, revision]
        else:
            raw = [value, old[1] + 1, old[2], revision]
        state[KV_PREFIX + key] = raw
        state[REVISION_KEY] = revision
        self._notify(ctx, state, "set", key, value, raw[1], revision)
        return KvEntry(key, value, raw[1], raw[2], revision)

    @staticmethod
    def _notify(
        ctx: SessionContext,
        state: UserState,
        kind: EventKind,
        key: str,
        value: KvValue,
        version: int,
        revision: int,
    ) -> None:
        """Send the change to every session watching ``key``, in sorted session order."""
        watchers: list[str] | None = state.get(WATCHERS_PREFIX + key)
        if watchers:
            payload = KvEvent(kind, key, value, version, revision).to_native()
            for session_id in watchers:
                ctx.send(SessionId(session_id), payload)

    def _set(self, ctx: SessionContext, state: UserState, request: KvSet) -> KvSetResult:
        prev = _entry(request.key, state.get(KV_PREFIX + request.key))
        entry = self._put(ctx, state, request.key, request.value)
        return KvSetResult(entry.mod_revision, entry, prev)

    def _delete(self, ctx: SessionContext, state: UserState, request: KvDelete) -> KvDeleteResult:
        key = request.key
        prev = _entry(key, state.get(KV_PREFIX + key))
        if prev is None:
            return KvDeleteResult(state.get(REVISION_KEY, 0), None)
        revision: int = state.get(REVISION_KEY, 0) + 1
        del state[KV_PREFIX + key]
        state[REVISION_KEY] = revision
        self._notify(ctx, state, "delete", key, None, 0, revision)
        return KvDeleteResult(revision, prev)

    def _cas(self, ctx: SessionContext, state: UserState, request: KvCas) -> KvCasResult:
        key = request.key
        current: list[Any] | None = state.get(KV_PREFIX + key)
        if request.expected is None:
            matches = current is None
        else:
            matches = current is not None and same_value(current[0], request.expected)
        if not matches:
            return KvCasResult(state.get(REVISION_KEY, 0), False, _entry(key, current))
        entry = self._put(ctx, state, key, request.new)
        return KvCasResult(entry.mod_revision, True, entry)

    def _get_command(self, ctx: SessionContext, state: UserState, request: KvGet) -> KvGetResult:
        return self._get(state, request)

    def _watch(self, ctx: SessionContext, state: UserState, request: KvWatch) -> KvWatchResult:
        session_id = self._session(ctx)
        key = request.key
        entry = _entry(key, state.get(KV_PREFIX + key))
        revision: int = state.get(REVISION_KEY, 0)
        wkey = WATCHERS_PREFIX + key
        watchers = _with(state.get(wkey, _NO_STRINGS), session_id)
        if watchers is None:
            return KvWatchResult(revision, False, entry)
        skey = WATCHING_PREFIX + session_id
        keys = _with(state.get(skey, _NO_STRINGS), key)
        assert keys is not None, "watcher and watched-key lists disagree"
        state[wkey] = watchers
        state[skey] = keys
        return KvWatchResult(revision, True, entry)

    def _unwatch(
        self, ctx: SessionContext, state: UserState, request: KvUnwatch
    ) -> KvUnwatchResult:
        session_id = self._session(ctx)
        key = request.key
        revision: int = state.get(REVISION_KEY, 0)
        wkey = WATCHERS_PREFIX + key
        watchers = _without(state.get(wkey, _NO_STRINGS), session_id)
        if watchers is None:
            return KvUnwatchResult(revision, False)
        skey = WATCHING_PREFIX + session_id
        keys = _without(state.get(skey, _NO_STRINGS), key)
        assert keys is not None, "watcher and watched-key lists disagree"
        _replace(state, wkey, watchers)
        _replace(state, skey, keys)
        return KvUnwatchResult(revision, True)

    @staticmethod
    def _session(ctx: SessionContext) -> SessionId:
        if ctx.session_id is None:  # only internal commands have no session
            raise ValueError("watch and unwatch need a client session")
        return ctx.session_id

    # ------------------------------------------------------------ queries

    def _get(self, state: UserState, request: KvGet) -> KvGetResult:
        return KvGetResult(
            state.get(REVISION_KEY, 0), _entry(request.key, state.get(KV_PREFIX + request.key))
        )

    def _list(self, state: UserState, request: KvList) -> KvListResult:
        n = len(KV_PREFIX)
        keys, more = _scan(state, KV_PREFIX + request.prefix, request.limit)
        entries = tuple(KvEntry(k[n:], *state[k]) for k in keys)
        return KvListResult(state.get(REVISION_KEY, 0), entries, more)

    def _list_watches(self, state: UserState, request: KvListWatches) -> KvListWatchesResult:
        n = len(WATCHERS_PREFIX)
        keys, more = _scan(state, WATCHERS_PREFIX + request.prefix, request.limit)
        watches = tuple((k[n:], tuple(SessionId(s) for s in state[k])) for k in keys)
        return KvListWatchesResult(state.get(REVISION_KEY, 0), watches, more)

    def _session_watches(
        self, state: UserState, request: KvSessionWatches
    ) -> KvSessionWatchesResult:
        keys: list[str] = state.get(WATCHING_PREFIX + request.session_id, _NO_STRINGS)
        return KvSessionWatchesResult(state.get(REVISION_KEY, 0), tuple(keys))
