"""The kv store example through the session state machine (deterministic, in process)."""

from __future__ import annotations

import math
from typing import Any, TypeVar

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from examples.kvstore import (
    KV_PREFIX,
    QUERY_TYPES,
    REVISION_KEY,
    WATCHERS_PREFIX,
    WATCHING_PREFIX,
    WRITE_TYPES,
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
    KvStateMachine,
    KvUnwatch,
    KvUnwatchResult,
    KvWatch,
    KvWatchResult,
    decode_event,
    demo,
    parse_event,
    parse_request,
    same_value,
)
from protocol.codec import ProtocolError
from protocol.ids import RequestId, SessionId
from protocol.session import (
    ApplicationError,
    ClientRequest,
    CreateSession,
    InternalCommand,
    MsgpackCodec,
    RequestResult,
    ServerRequestAck,
    ServerRequestEnvelope,
    SessionContext,
    SessionCreated,
    SessionExpired,
    SessionRejected,
    SessionRemoved,
    SessionStateMachine,
    UserState,
)

R = TypeVar("R")
A, B, C = SessionId("a"), SessionId("b"), SessionId("c")


class Kv:
    """One replica of the kv store with a tiny client for each session."""

    def __init__(self) -> None:
        self.sm = SessionStateMachine(KvStateMachine())
        self.index = 0
        self.rid: dict[str, int] = {}
        self.log: list[Any] = []  # every command applied, to replay on another replica

    def apply(self, cmd: Any) -> Any:
        self.index += 1
        self.log.append(cmd)
        return self.sm.apply(self.index, cmd)

    def create(self, sid: str, **caps: str) -> Any:
        return self.apply(CreateSession(SessionId(sid), caps, self.index + 1))

    def expire(self, sid: str) -> SessionRemoved:
        removed = self.apply(SessionExpired(SessionId(sid), self.index + 1))
        assert isinstance(removed, SessionRemoved)
        return removed

    def raw(self, sid: str, command: Any, rid: int | None = None) -> RequestResult:
        """Send a command value; ``rid`` resends an earlier request id (a duplicate)."""
        if rid is None:
            rid = self.rid.get(sid, 0) + 1
            self.rid[sid] = rid
        payload = msgpack.packb(command, use_bin_type=True)
        cmd = ClientRequest(SessionId(sid), RequestId(rid), RequestId(rid), payload, self.index + 1)
        result = self.apply(cmd)
        assert isinstance(result, RequestResult)
        return result

    def send(self, sid: str, request: KvRequest[R]) -> tuple[R, tuple[ServerRequestEnvelope, ...]]:
        result = self.raw(sid, request.to_native())
        assert isinstance(result.response, bytes), result.response
        return request.decode_result(result.response), result.server_requests

    def query(self, request: KvRequest[R]) -> R:
        response = self.sm.query(request.encode())
        assert isinstance(response, bytes), response
        return request.decode_result(response)

    def ack(self, sid: str, upto: int) -> Any:
        return self.apply(ServerRequestAck(SessionId(sid), RequestId(upto), self.index + 1))


def events(envelopes: tuple[ServerRequestEnvelope, ...]) -> list[tuple[str, int, KvEvent]]:
    return [(e.session_id, e.request_id, decode_event(e.payload)) for e in envelopes]


@pytest.fixture
def kv() -> Kv:
    store = Kv()
    for sid in (A, B, C):
        assert isinstance(store.create(sid), SessionCreated)
    return store


# ------------------------------------------------------------------ set / get / delete


def test_set_get_delete(kv: Kv) -> None:
    r, sent = kv.send(A, KvSet("k", "v1"))
    assert r == KvSetResult(1, KvEntry("k", "v1", 1, 1, 1), None)
    assert sent == ()
    r, _ = kv.send(B, KvSet("k", [1, {"x": b"y"}]))
    assert r == KvSetResult(2, KvEntry("k", [1, {"x": b"y"}], 2, 1, 2), KvEntry("k", "v1", 1, 1, 1))
    assert kv.query(KvGet("k")) == KvGetResult(2, KvEntry("k", [1, {"x": b"y"}], 2, 1, 2))
    got, _ = kv.send(C, KvGet("k"))  # through the log: the same answer, nothing changes
    assert got == kv.query(KvGet("k"))
    assert kv.query(KvGet("other")) == KvGetResult(2, None)

    d, _ = kv.send(A, KvDelete("k"))
    assert d.deleted and d == KvDeleteResult(3, KvEntry("k", [1, {"x": b"y"}], 2, 1, 2))
    assert kv.query(KvGet("k")).entry is None
    again, _ = kv.send(A, KvDelete("k"))
    assert again == KvDeleteResult(3, None) and not again.deleted  # no change, no revision

    r, _ = kv.send(A, KvSet("k", 7))  # recreated: version restarts, new create revision
    assert r.entry == KvEntry("k", 7, 1, 4, 4) and r.prev is None
    assert kv.sm.snapshot() == replay(kv).sm.snapshot()


def test_a_stored_none_is_a_value_not_an_absence(kv: Kv) -> None:
    kv.send(A, KvSet("n", None))
    got = kv.query(KvGet("n"))
    assert got.entry == KvEntry("n", None, 1, 1, 1) and got.value is None
    assert kv.query(KvGet("absent")).entry is None
    cas, _ = kv.send(A, KvCas("n", None, 1))  # expected None means "absent": n is present
    assert not cas.swapped and cas.entry == got.entry


def test_list_with_prefix_and_limit(kv: Kv) -> None:
    for key in ("app/b", "app/a", "apple", "b", "ap"):
        kv.send(A, KvSet(key, key.upper()))
    assert [e.key for e in kv.query(KvList("app/")).entries] == ["app/a", "app/b"]
    assert [e.key for e in kv.query(KvList("app")).entries] == ["app/a", "app/b", "apple"]
    everything = kv.query(KvList())
    assert [e.key for e in everything.entries] == ["ap", "app/a", "app/b", "apple", "b"]
    assert not everything.more and everything.revision == 5
    assert everything.entries[0] == KvEntry("ap", "AP", 1, 5, 5)
    limited = kv.query(KvList("a", limit=2))
    assert [e.key for e in limited.entries] == ["ap", "app/a"] and limited.more
    exact = kv.query(KvList("app/", limit=2))
    assert len(exact.entries) == 2 and not exact.more
    assert kv.query(KvList("zzz")) == KvListResult(5, (), False)


# ------------------------------------------------------------------ compare-and-set


def test_cas_semantics(kv: Kv) -> None:
    r, _ = kv.send(A, KvCas("k", "x", "y"))  # absent key, expected a value: no swap
    assert r == KvCasResult(0, False, None)
    r, _ = kv.send(A, KvCas("k", None, "v1"))  # absent key, expected absent: created
    assert r == KvCasResult(1, True, KvEntry("k", "v1", 1, 1, 1))
    r, _ = kv.send(B, KvCas("k", None, "v2"))  # now present: "create if absent" fails
    assert r == KvCasResult(1, False, KvEntry("k", "v1", 1, 1, 1))
    r, _ = kv.send(B, KvCas("k", "wrong", "v2"))  # mismatch: the current entry comes back
    assert r == KvCasResult(1, False, KvEntry("k", "v1", 1, 1, 1))
    r, _ = kv.send(B, KvCas("k", "v1", "v2"))  # match: swapped
    assert r == KvCasResult(2, True, KvEntry("k", "v2", 2, 1, 2))
    assert kv.query(KvGet("k")).value == "v2"
    r, _ = kv.send(B, KvCas("k", "v1", "v3"))  # the old value no longer matches
    assert not r.swapped and kv.query(KvGet("k")).value == "v2"


@pytest.mark.parametrize(
    ("stored", "expected", "swaps"),
    [
        (1, 1, True),
        (1, 1.0, False),
        (1, True, False),
        (True, 1, False),
        ("x", b"x", False),
        ([1, [2, {"a": 3}]], [1, [2, {"a": 3}]], True),
        ([1, [2, {"a": 3}]], [1, [2, {"a": 3.0}]], False),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}, True),
        ({1: "x"}, {True: "x"}, False),
        ({"a": 1}, {"b": 1}, False),
        ([1, 2], [1, 2, 3], False),
        (math.nan, math.nan, False),
    ],
)
def test_cas_compares_values_strictly(kv: Kv, stored: Any, expected: Any, swaps: bool) -> None:
    kv.send(A, KvSet("k", stored))
    r, _ = kv.send(A, KvCas("k", expected, "new"))
    assert r.swapped is swaps


def test_same_value_handles_deep_nesting_without_recursion() -> None:
    a: list[Any] = []
    b: list[Any] = []
    for _ in range(50_000):
        a, b = [a], [b]
    assert same_value(a, b)
    assert not same_value(a, [b])
    assert not same_value({"a": 1, "b": 2}, {"a": 1, "c": 2})
    assert not same_value({"a": 1}, {"a": 1, "c": 2})


# ------------------------------------------------------------------ watches


def test_every_watcher_gets_each_change_once_in_order_writer_included(kv: Kv) -> None:
    w, _ = kv.send(A, KvWatch("k"))
    assert w == KvWatchResult(0, True, None)
    kv.send(B, KvWatch("k"))
    kv.send(B, KvWatch("other"))

    _, sent = kv.send(C, KvSet("k", 1))  # C does not watch: A and B hear of it
    assert events(sent) == [
        (A, 1, KvEvent("set", "k", 1, 1, 1)),
        (B, 1, KvEvent("set", "k", 1, 1, 1)),
    ]
    _, sent = kv.send(A, KvSet("k", 2))  # the writer's own watch fires too (like etcd)
    assert events(sent) == [
        (A, 2, KvEvent("set", "k", 2, 2, 2)),
        (B, 2, KvEvent("set", "k", 2, 2, 2)),
    ]
    _, sent = kv.send(C, KvCas("k", 99, 3))  # a failed cas changes nothing: no event
    assert sent == ()
    _, sent = kv.send(C, KvCas("k", 2, 3))
    assert [(s, i, e.kind, e.revision) for s, i, e in events(sent)] == [
        (A, 3, "set", 3),
        (B, 3, "set", 3),
    ]
    _, sent = kv.send(C, KvSet("unwatched", 0))
    assert sent == ()
    _, sent = kv.send(C, KvDelete("k"))
    assert events(sent) == [
        (A, 4, KvEvent("delete", "k", None, 0, 5)),
        (B, 4, KvEvent("delete", "k", None, 0, 5)),
    ]
    _, sent = kv.send(C, KvDelete("k"))  # deleting an absent key is no change
    assert sent == ()
    _, sent = kv.send(C, KvSet("other", "o"))
    assert events(sent) == [(B, 5, KvEvent("set", "other", "o", 1, 6))]

    again, _ = kv.send(A, KvWatch("k"))  # already watching: reported, not doubled
    assert again == KvWatchResult(6, False, None)
    _, sent = kv.send(C, KvSet("k", "back"))
    assert [s for s, _, _ in events(sent)] == [A, B]
    assert kv.sm.stats().pending_server_requests == 11
    assert kv.query(KvListWatches()) == KvListWatchesResult(
        7, (("k", (A, B)), ("other", (B,))), False
    )
    assert kv.query(KvListWatches("o")).watches == (("other", (B,)),)
    assert kv.query(KvListWatches(limit=1)) == KvListWatchesResult(7, (("k", (A, B)),), True)
    assert kv.query(KvSessionWatches(B)) == KvSessionWatchesResult(7, ("k", "other"))


def test_watch_reports_the_current_entry_as_the_starting_point(kv: Kv) -> None:
    kv.send(A, KvSet("k", "v"))
    kv.send(A, KvSet("x", "y"))
    w, _ = kv.send(B, KvWatch("k"))
    assert w == KvWatchResult(2, True, KvEntry("k", "v", 1, 1, 1))
    _, sent = kv.send(A, KvSet("k", "w"))
    assert [e.revision for _, _, e in events(sent)] == [3]  # strictly after w.revision


def test_unwatch_stops_events(kv: Kv) -> None:
    kv.send(A, KvWatch("k"))
    kv.send(B, KvWatch("k"))
    u, _ = kv.send(A, KvUnwatch("k"))
    assert u == KvUnwatchResult(0, True)
    _, sent = kv.send(C, KvSet("k", 1))
    assert [s for s, _, _ in events(sent)] == [B]
    u, _ = kv.send(A, KvUnwatch("k"))
    assert u == KvUnwatchResult(1, False)
    kv.send(B, KvUnwatch("k"))
    _, sent = kv.send(C, KvSet("k", 2))
    assert sent == ()
    assert not any(k.startswith((WATCHERS_PREFIX, WATCHING_PREFIX)) for k in kv.sm._raw_state()), (
        "empty watch lists are dropped, not left behind"
    )
    assert kv.query(KvSessionWatches(A)).keys == ()


def test_expiry_removes_the_sessions_watches_and_only_those(kv: Kv) -> None:
    for key in ("k", "j"):
        kv.send(A, KvWatch(key))
        kv.send(B, KvWatch(key))
    kv.send(C, KvSet("k", 0))  # A has an unacknowledged event pending
    removed = kv.expire(A)
    assert removed == SessionRemoved(A, True, ())
    _, sent = kv.send(C, KvSet("k", 1))
    assert events(sent) == [(B, 2, KvEvent("set", "k", 1, 2, 2))]
    _, sent = kv.send(C, KvDelete("j"))
    assert sent == ()  # j never existed: no change
    _, sent = kv.send(C, KvSet("j", 1))
    assert [s for s, _, _ in events(sent)] == [B]
    assert kv.query(KvListWatches()).watches == (("j", (B,)), ("k", (B,)))
    assert kv.query(KvSessionWatches(A)).keys == ()
    raw = kv.sm._raw_state()
    assert WATCHING_PREFIX + A not in raw and "session/" + A not in raw
    assert all(A not in v for k, v in raw.items() if k.startswith(WATCHERS_PREFIX))
    assert kv.sm.stats().pending_server_requests == 3  # B's three events
    kv.expire(B)
    assert not any(k.startswith((WATCHERS_PREFIX, WATCHING_PREFIX)) for k in kv.sm._raw_state())
    assert kv.expire(B) == SessionRemoved(B, False, ())


def test_a_duplicate_write_emits_no_second_event(kv: Kv) -> None:
    kv.send(A, KvWatch("k"))
    first = kv.raw(B, KvSet("k", 1).to_native())
    assert [e.session_id for e in first.server_requests] == [A]
    dup = kv.raw(B, KvSet("k", 1).to_native(), rid=first.request_id)
    assert dup.from_cache and dup.response == first.response and dup.server_requests == ()
    assert kv.sm.stats().pending_server_requests == 1
    assert kv.query(KvGet("k")).entry == KvEntry("k", 1, 1, 1, 1)  # applied once
    _, sent = kv.send(B, KvSet("k", 2))
    assert events(sent) == [(A, 2, KvEvent("set", "k", 2, 2, 2))]


def test_acks_remove_delivered_events(kv: Kv) -> None:
    kv.send(A, KvWatch("k"))
    for value in range(3):
        kv.send(B, KvSet("k", value))
    assert kv.sm.stats().pending_server_requests == 3
    kv.ack(A, 2)
    assert kv.sm.stats().pending_server_requests == 1


def test_snapshot_restore_keeps_watches_and_revisions(kv: Kv) -> None:
    kv.send(A, KvWatch("k"))
    kv.send(B, KvWatch("k"))
    kv.send(C, KvSet("k", "v"))
    kv.send(C, KvSet("j", {"nested": [1, 2.5, None, b"\x00"]}))
    restored = Kv()
    restored.sm.restore(kv.sm.snapshot())
    restored.index = kv.index
    restored.rid = dict(kv.rid)
    assert restored.sm.snapshot() == kv.sm.snapshot()
    _, sent = restored.send(C, KvSet("k", "w"))
    assert events(sent) == [
        (A, 2, KvEvent("set", "k", "w", 2, 3)),
        (B, 2, KvEvent("set", "k", "w", 2, 3)),
    ]
    assert restored.query(KvGet("j")).value == {"nested": [1, 2.5, None, b"\x00"]}
    restored.expire(A)
    assert restored.query(KvListWatches()).watches == (("k", (B,)),)


def user_state(kv: Kv) -> dict[str, Any]:
    """The store's part of the state, as it would be snapshotted."""
    return {k: v for k, v in kv.sm._raw_state().items() if not k.startswith("session/")}


def replay(source: Kv) -> Kv:
    """A second replica that applied the same log."""
    other = Kv()
    for cmd in source.log:
        other.apply(cmd)
    return other


def test_replicas_and_restored_replicas_are_byte_identical(kv: Kv) -> None:
    half = None
    for i in range(40):
        sid = (A, B, C)[i % 3]
        key = f"k{i % 4}"
        if i % 5 == 0:
            kv.send(sid, KvWatch(key))
        elif i % 7 == 0:
            kv.send(sid, KvUnwatch(key))
        elif i % 3 == 0:
            kv.send(sid, KvDelete(key))
        elif i % 4 == 0:
            kv.send(sid, KvCas(key, i - 4, i))
        else:
            kv.send(sid, KvSet(key, {"i": i, "who": sid}))
        if i == 20:
            half = (kv.index, kv.sm.snapshot())
    kv.expire(B)
    kv.send(A, KvSet("k1", "end"))
    other = replay(kv)
    assert other.sm.snapshot() == kv.sm.snapshot()
    assert half is not None
    late = Kv()
    late.sm.restore(half[1])
    for index, cmd in enumerate(kv.log[half[0] :], start=half[0] + 1):
        late.sm.apply(index, cmd)
    assert late.sm.snapshot() == kv.sm.snapshot()


# ------------------------------------------------------------------ sessions and bad input


def test_sessions_with_an_unknown_kvstore_protocol_are_rejected() -> None:
    kv = Kv()
    assert isinstance(kv.create("v1", kvstore="v1"), SessionCreated)
    assert isinstance(kv.create("none"), SessionCreated)
    rejected = kv.create("v2", kvstore="v2")
    assert isinstance(rejected, SessionRejected) and "'v2' is not supported" in rejected.reason


@pytest.mark.parametrize(
    "command",
    [
        None,
        [],
        "set",
        ["nope", "k"],
        [1, "k"],
        ["set", "k"],
        ["set", "", 1],
        ["set", 5, 1],
        ["get"],
        ["cas", "k", 1],
        ["watch", b"k"],
        ["list", "", 0],  # a query is not a command
        ["watches", "", 0],
        ["session-watches", "a"],
    ],
)
def test_bad_commands_are_application_errors_and_change_nothing(kv: Kv, command: Any) -> None:
    kv.send(B, KvWatch("k"))
    kv.send(B, KvSet("k", 1))
    before = user_state(kv)
    result = kv.raw(A, command)
    assert isinstance(result.response, ApplicationError)
    assert result.server_requests == ()
    assert user_state(kv) == before


@pytest.mark.parametrize(
    "query",
    [
        KvSet("k", 1).to_native(),
        KvDelete("k").to_native(),
        KvCas("k", 1, 2).to_native(),
        KvWatch("k").to_native(),
        KvUnwatch("k").to_native(),
        ["list", "", -1],
        ["list", 1, 0],
        ["watches", "", True],
        ["session-watches", 1],
        {"get": "k"},
    ],
)
def test_bad_queries_are_application_errors(kv: Kv, query: Any) -> None:
    before = kv.sm.snapshot()
    assert isinstance(kv.sm.query(msgpack.packb(query)), ApplicationError)
    assert kv.sm.snapshot() == before


def test_internal_commands_are_not_supported(kv: Kv) -> None:
    result = kv.apply(InternalCommand(msgpack.packb(KvSet("k", 1).to_native()), kv.index + 1))
    assert result.error is not None


def test_watching_needs_a_session() -> None:
    ctx = SessionContext(MsgpackCodec())  # session_id None, as for internal commands
    state = UserState({}, [0])
    with pytest.raises(ValueError, match="need a client session"):
        KvStateMachine().apply(ctx, state, KvWatch("k").to_native())


def test_client_side_constructors_validate() -> None:
    for bad in (
        lambda: KvSet("", 1),
        lambda: KvGet(1),  # type: ignore[arg-type]
        lambda: KvList(prefix=None),  # type: ignore[arg-type]
        lambda: KvList(limit=-1),
        lambda: KvListWatches(prefix=1),  # type: ignore[arg-type]
        lambda: KvListWatches(limit=True),
        lambda: KvSessionWatches(None),  # type: ignore[arg-type]
    ):
        with pytest.raises(ValueError):
            bad()


def test_every_request_type_is_a_command_or_a_query() -> None:
    assert set(WRITE_TYPES) | set(QUERY_TYPES) == {
        KvSet,
        KvGet,
        KvDelete,
        KvCas,
        KvWatch,
        KvUnwatch,
        KvList,
        KvListWatches,
        KvSessionWatches,
    }


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=5)
    | st.binary(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)
keys = st.text(min_size=1, max_size=8)
entries = st.builds(
    KvEntry, keys, values, st.integers(0, 99), st.integers(0, 99), st.integers(0, 99)
)
maybe_entries = st.none() | entries
revisions = st.integers(0, 2**40)
requests = st.one_of(
    st.builds(KvSet, keys, values),
    st.builds(KvGet, keys),
    st.builds(KvDelete, keys),
    st.builds(KvCas, keys, values, values),
    st.builds(KvWatch, keys),
    st.builds(KvUnwatch, keys),
    st.builds(KvList, st.text(max_size=3), st.integers(0, 9)),
    st.builds(KvListWatches, st.text(max_size=3), st.integers(0, 9)),
    st.builds(KvSessionWatches, st.text(max_size=5).map(SessionId)),
)
results = st.one_of(
    st.builds(KvSetResult, revisions, entries, maybe_entries),
    st.builds(KvGetResult, revisions, maybe_entries),
    st.builds(KvDeleteResult, revisions, maybe_entries),
    st.builds(KvCasResult, revisions, st.booleans(), maybe_entries),
    st.builds(KvWatchResult, revisions, st.booleans(), maybe_entries),
    st.builds(KvUnwatchResult, revisions, st.booleans()),
    st.builds(KvListResult, revisions, st.lists(entries, max_size=3).map(tuple), st.booleans()),
    st.builds(
        KvListWatchesResult,
        revisions,
        st.lists(
            st.tuples(keys, st.lists(st.text(max_size=3).map(SessionId), max_size=3).map(tuple)),
            max_size=3,
        ).map(tuple),
        st.booleans(),
    ),
    st.builds(KvSessionWatchesResult, revisions, st.lists(keys, max_size=3).map(tuple)),
)
events_st = st.builds(
    KvEvent, st.sampled_from(["set", "delete"]), keys, values, st.integers(0, 9), revisions
)


@given(requests)
def test_requests_round_trip(request: KvRequest[Any]) -> None:
    parsed = parse_request(msgpack.unpackb(request.encode(), strict_map_key=False))
    assert type(parsed) is type(request)
    assert parsed.to_native() == request.to_native()
    assert same_value(parsed.to_native(), msgpack.unpackb(request.encode(), strict_map_key=False))


@given(results)
def test_results_round_trip(result: Any) -> None:
    data = msgpack.packb(result.to_native(), use_bin_type=True)
    assert same_value(
        type(result).from_native(msgpack.unpackb(data, strict_map_key=False)).to_native(),
        result.to_native(),
    )


@given(events_st)
def test_events_round_trip(event: KvEvent) -> None:
    data = msgpack.packb(event.to_native(), use_bin_type=True)
    back = decode_event(data)
    assert back.kind == event.kind and back.revision == event.revision
    assert same_value(back.to_native(), event.to_native())


@given(st.binary(max_size=40) | values.map(lambda v: msgpack.packb(v, use_bin_type=True)))
def test_decoding_garbage_raises_only_protocol_error(data: bytes) -> None:
    decoders = [
        decode_event,
        lambda d: parse_request(msgpack.unpackb(d, strict_map_key=False)),
        *(cls(*args).decode_result for cls, args in _SAMPLE_REQUESTS),
    ]
    for decode in decoders:
        try:
            decode(data)
        except ProtocolError:
            pass
        except (ValueError, TypeError, msgpack.ExtraData) as exc:  # msgpack itself, in the lambda
            assert decode is decoders[1], exc


_SAMPLE_REQUESTS: list[tuple[type[Any], tuple[Any, ...]]] = [
    (KvSet, ("k", 1)),
    (KvGet, ("k",)),
    (KvDelete, ("k",)),
    (KvCas, ("k", 1, 2)),
    (KvWatch, ("k",)),
    (KvUnwatch, ("k",)),
    (KvList, ()),
    (KvListWatches, ()),
    (KvSessionWatches, ("a",)),
]


@pytest.mark.parametrize(
    "raw",
    [
        None,
        ["event", "set", "k", 1, 1],
        ["other", "set", "k", 1, 1, 1],
        ["event", "put", "k", 1, 1, 1],
        ["event", "set", "", 1, 1, 1],
        ["event", "set", "k", 1, -1, 1],
        ["event", "set", "k", 1, 1, True],
    ],
)
def test_malformed_events_are_protocol_errors(raw: Any) -> None:
    with pytest.raises(ProtocolError):
        parse_event(raw)


def test_decode_result_wants_bytes() -> None:
    with pytest.raises(ProtocolError):
        KvGet("k").decode_result("not bytes")  # type: ignore[arg-type]
    with pytest.raises(ProtocolError):
        KvList().parse_result([1, "not a list", False])
    with pytest.raises(ProtocolError):
        KvListWatches().parse_result([1, None, False])
    with pytest.raises(ProtocolError):
        KvSessionWatches(A).parse_result([1, [1]])
    with pytest.raises(ProtocolError):
        KvCas("k", 1, 2).parse_result([1, "yes", None])


# ------------------------------------------------------------------ stateful model


SESSION_NAMES = [SessionId(f"s{i}") for i in range(6)]
KEYS = ["a", "b", "c"]
VALUES = [None, 0, 1, 1.0, True, "x", b"x", [1, "x"], {"k": [None]}]


class KvModel(RuleBasedStateMachine):
    """The kv store against a dict model, with every watch delivery counted.

    Each rule applies one command and checks the result against the model; every write
    checks the exact server requests it emitted: one per watcher of the key (sorted), the
    next id of each target session, the model's event. Invariants compare every key,
    every session's watches and the number of pending server requests.
    """

    sessions = Bundle("sessions")

    def __init__(self) -> None:
        super().__init__()
        self.kv = Kv()
        self.data: dict[str, tuple[Any, int, int, int]] = {}
        self.revision = 0
        self.live: set[str] = set()
        self.watching: dict[str, set[str]] = {}
        self.next_event: dict[str, int] = {}  # next server request id per session
        self.acked: dict[str, int] = {}
        self.last: dict[str, tuple[int, RequestResult]] = {}  # for duplicates
        self.created = 0

    # -- sessions
    @precondition(lambda self: self.created < len(SESSION_NAMES))
    @rule(target=sessions)
    def create(self) -> str:
        sid = SESSION_NAMES[self.created]
        self.created += 1
        assert isinstance(self.kv.create(sid), SessionCreated)
        self.live.add(sid)
        self.watching[sid] = set()
        self.next_event[sid] = 1
        self.acked[sid] = 0
        return sid

    @precondition(lambda self: len(self.live) > 1)  # someone is always left to act
    @rule(sid=consumes(sessions))
    def expire(self, sid: str) -> None:
        assert self.kv.expire(sid) == SessionRemoved(SessionId(sid), True, ())
        self.live.discard(sid)
        del self.watching[sid], self.next_event[sid], self.acked[sid]
        self.last.pop(sid, None)

    # -- helpers
    def expect_events(self, result: RequestResult, key: str, event: KvEvent | None) -> None:
        watchers = sorted(s for s in self.live if key in self.watching[s]) if event else []
        assert [e.session_id for e in result.server_requests] == watchers
        for envelope in result.server_requests:
            sid = envelope.session_id
            assert envelope.request_id == self.next_event[sid]
            self.next_event[sid] += 1
            assert decode_event(envelope.payload) == event

    def send(self, sid: str, request: KvRequest[Any]) -> tuple[Any, RequestResult]:
        result = self.kv.raw(sid, request.to_native())
        self.last[sid] = (result.request_id, result)
        assert isinstance(result.response, bytes)
        return request.decode_result(result.response), result

    def entry(self, key: str) -> KvEntry | None:
        raw = self.data.get(key)
        return None if raw is None else KvEntry(key, *raw)

    def put(self, key: str, value: Any) -> KvEntry:
        self.revision += 1
        old = self.data.get(key)
        version, created = (1, self.revision) if old is None else (old[1] + 1, old[2])
        self.data[key] = (value, version, created, self.revision)
        return KvEntry(key, value, version, created, self.revision)

    # -- commands
    @rule(sid=sessions, key=st.sampled_from(KEYS), value=st.sampled_from(VALUES))
    def set(self, sid: str, key: str, value: Any) -> None:
        prev = self.entry(key)
        got, result = self.send(sid, KvSet(key, value))
        entry = self.put(key, value)
        assert got == KvSetResult(self.revision, entry, prev)
        self.expect_events(result, key, KvEvent("set", key, value, entry.version, self.revision))

    @rule(sid=sessions, key=st.sampled_from(KEYS))
    def delete(self, sid: str, key: str) -> None:
        prev = self.entry(key)
        got, result = self.send(sid, KvDelete(key))
        event = None
        if prev is not None:
            self.revision += 1
            del self.data[key]
            event = KvEvent("delete", key, None, 0, self.revision)
        assert got == KvDeleteResult(self.revision, prev)
        self.expect_events(result, key, event)

    @rule(
        sid=sessions,
        key=st.sampled_from(KEYS),
        expected=st.sampled_from(VALUES),
        new=st.sampled_from(VALUES),
    )
    def cas(self, sid: str, key: str, expected: Any, new: Any) -> None:
        current = self.entry(key)
        got, result = self.send(sid, KvCas(key, expected, new))
        if expected is None:
            swap = current is None
        else:
            swap = current is not None and same_value(current.value, expected)
        if swap:
            entry = self.put(key, new)
            assert got == KvCasResult(self.revision, True, entry)
            event = KvEvent("set", key, new, entry.version, self.revision)
            self.expect_events(result, key, event)
        else:
            assert got == KvCasResult(self.revision, False, current)
            self.expect_events(result, key, None)

    @rule(sid=sessions, key=st.sampled_from(KEYS))
    def get_through_the_log(self, sid: str, key: str) -> None:
        got, result = self.send(sid, KvGet(key))
        assert got == KvGetResult(self.revision, self.entry(key))
        assert result.server_requests == ()

    @rule(sid=sessions, key=st.sampled_from(KEYS))
    def watch(self, sid: str, key: str) -> None:
        got, result = self.send(sid, KvWatch(key))
        added = key not in self.watching[sid]
        self.watching[sid].add(key)
        assert got == KvWatchResult(self.revision, added, self.entry(key))
        assert result.server_requests == ()

    @rule(sid=sessions, key=st.sampled_from(KEYS))
    def unwatch(self, sid: str, key: str) -> None:
        got, result = self.send(sid, KvUnwatch(key))
        removed = key in self.watching[sid]
        self.watching[sid].discard(key)
        assert got == KvUnwatchResult(self.revision, removed)
        assert result.server_requests == ()

    @rule(sid=sessions)
    def duplicate_of_the_last_request(self, sid: str) -> None:
        if sid not in self.last:
            return
        rid, first = self.last[sid]
        # a different payload on purpose: a cached request id never reaches user code
        again = self.kv.raw(sid, ["get", "ignored"], rid=rid)
        assert again.from_cache and again.response == first.response
        assert again.server_requests == ()

    @rule(sid=sessions, data=st.data())
    def ack(self, sid: str, data: st.DataObject) -> None:
        upto = data.draw(st.integers(self.acked[sid], self.next_event[sid] - 1))
        self.kv.ack(sid, upto)
        self.acked[sid] = upto

    # -- invariants
    @invariant()
    def the_store_matches_the_model(self) -> None:
        listed = self.kv.query(KvList())
        model = tuple(KvEntry(k, *self.data[k]) for k in sorted(self.data))
        assert listed == KvListResult(self.revision, model, False)
        for key in KEYS:
            assert self.kv.query(KvGet(key)) == KvGetResult(self.revision, self.entry(key))

    @invariant()
    def watches_and_pending_events_match_the_model(self) -> None:
        for sid in SESSION_NAMES:
            keys = tuple(sorted(self.watching.get(sid, ())))
            assert self.kv.query(KvSessionWatches(sid)).keys == keys
        expected = tuple(
            (k, tuple(SessionId(s) for s in sorted(self.live) if k in self.watching[s]))
            for k in KEYS
        )
        assert self.kv.query(KvListWatches()).watches == tuple(w for w in expected if w[1])
        pending = sum(self.next_event[s] - 1 - self.acked[s] for s in self.live)
        assert self.kv.sm.stats().pending_server_requests == pending

    def teardown(self) -> None:
        assert replay(self.kv).sm.snapshot() == self.kv.sm.snapshot()
        restored = Kv()
        restored.sm.restore(self.kv.sm.snapshot())
        assert restored.sm.snapshot() == self.kv.sm.snapshot()
        # State hygiene: only the store's own prefixes besides the session layer's.
        for key in self.kv.sm._raw_state():
            assert key.startswith((KV_PREFIX, WATCHERS_PREFIX, WATCHING_PREFIX, "session/")) or (
                key == REVISION_KEY
            )


KvModel.TestCase.settings = settings(max_examples=60, stateful_step_count=40)
TestKvModel = KvModel.TestCase


def test_the_demo_checks_out(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main() == 0
    out = capsys.readouterr().out
    assert "FAILED" not in out and "all checks passed" in out
