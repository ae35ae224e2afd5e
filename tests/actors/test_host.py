"""Actor hosts: several actors on one thread, still separate; on a pykka thread of
their own (``actors.host``) or on a ZeroMQ transport's I/O thread
(``actors.loop_host``), which must behave the same."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pykka
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.base import NodeActor, member_logger
from actors.handoff import Coalescer, Drain
from actors.host import HostedRef, start_host
from actors.loop_host import start_on_loop
from actors.transport._zmq_loop import Command, ZmqLoop
from protocol.ids import MemberId

WAIT = 10.0
#: The two kinds of host every test here runs on.
KINDS = ["thread", "loop"]


class BareLoop(ZmqLoop):
    """A ZeroMQ loop with no sockets: only its thread, outbox and wake-up pipe."""

    def __init__(self, name: str = "bare") -> None:
        super().__init__(
            name, context=None, max_frame_bytes=1024, hwm=10, queue_limit=100, validator=None
        )

    def _open(self, context: Any) -> None:
        pass

    def _receivers(self) -> list[Any]:
        return []

    def _on_message(self, socket: Any, parts: list[bytes]) -> None:  # pragma: no cover
        pass

    def _on_command(self, command: Command) -> None:  # pragma: no cover
        pass

    def _close(self) -> None:
        pass


def start(kind: str, name: str, actors: Sequence[Any]) -> tuple[list[HostedRef[Any]], Any]:
    """Host ``actors`` together on a pykka thread or a started :class:`BareLoop`; the
    refs and the loop (None for a thread), to stop with :func:`finish`."""
    if kind == "thread":
        return start_host(name, actors), None
    loop = BareLoop(name)
    refs = start_on_loop(name, loop, actors)
    loop.start()
    return refs, loop


def finish(refs: Sequence[HostedRef[Any]], loop: ZmqLoop | None) -> None:
    for ref in refs:
        ref.stop(timeout=WAIT)
    if loop is not None:
        loop.stop()


class Recorder(NodeActor):
    """Appends ``(name, message)`` to a log shared by every actor of a test; a few
    messages make it do things (each documented at its branch)."""

    def __init__(self, name: str, log: list[tuple[str, Any]]) -> None:
        self.name = name
        self.seen = log
        self.log = member_logger(__name__, MemberId(name))
        self.peers: dict[str, HostedRef[Any]] = {}
        self.threads: set[int] = set()
        self.started_on: int | None = None
        self.stopped_on: int | None = None
        self.empty: list[bool] = []

    def on_start(self) -> None:
        self.started_on = threading.get_ident()
        self.seen.append((self.name, "started"))

    def on_stop(self) -> None:
        self.stopped_on = threading.get_ident()

    def handle(self, message: Any) -> Any:
        self.threads.add(threading.get_ident())
        self.seen.append((self.name, message))
        match message:
            case ("wait", threading.Event() as gate):  # hold the host until released
                assert gate.wait(WAIT)
            case ("send", str(to), list(items)):  # tell each item to a peer
                for item in items:
                    self.peers[to].tell(item)
            case ("call", fn) if callable(fn):  # run fn on the host's thread
                return fn()
            case ("later", item):  # to itself, behind what the host has waiting
                self.tell_self_later(item)
            case "check":  # is anything else queued on this actor's thread?
                self.empty.append(self.inbox_empty())
            case "boom":
                raise RuntimeError("a bug in one handler")
            case "report":
                return list(self.seen)
        return None


@pytest.fixture(params=KINDS)
def pair(
    request: pytest.FixtureRequest,
) -> Iterator[tuple[HostedRef[Recorder], HostedRef[Recorder], list[tuple[str, Any]]]]:
    """Two recorders, a and b, on one shared host (each kind); stopped afterwards."""
    log: list[tuple[str, Any]] = []
    (a, b), loop = start(request.param, "test-host", [Recorder("a", log), Recorder("b", log)])
    a.actor.peers = b.actor.peers = {"a": a, "b": b}
    try:
        yield a, b, log
    finally:
        finish([a, b], loop)


def held(ref: HostedRef[Any]) -> threading.Event:
    """Block ``ref``'s host on a gate (so what is told next queues in its inbox)."""
    gate = threading.Event()
    ref.tell(("wait", gate))
    return gate


def test_actors_of_one_host_run_on_its_thread_and_start_first(
    pair: tuple[HostedRef[Recorder], HostedRef[Recorder], list[tuple[str, Any]]],
) -> None:
    a, b, log = pair
    a.ask("x", timeout=WAIT)
    b.ask("y", timeout=WAIT)
    threads = a.actor.threads | b.actor.threads
    assert len(threads) == 1 and threading.get_ident() not in threads
    assert a.actor.started_on == b.actor.started_on == next(iter(threads))
    assert log[:2] == [("a", "started"), ("b", "started")]
    assert a.host is b.host and a.host.name == "test-host"


def test_a_local_tell_is_handled_before_the_next_inbox_letter(
    pair: tuple[HostedRef[Recorder], HostedRef[Recorder], list[tuple[str, Any]]],
) -> None:
    a, b, log = pair
    gate = held(a)
    a.tell(("send", "b", ["x1", "x2"]))  # a tells b locally, on the host's thread
    b.tell("outside")  # queued in the inbox before a even handles its "send"
    gate.set()
    b.ask("sync", timeout=WAIT)
    assert [m for who, m in log if who == "b"][-4:] == ["x1", "x2", "outside", "sync"]


def test_tell_later_goes_behind_the_inbox(
    pair: tuple[HostedRef[Recorder], HostedRef[Recorder], list[tuple[str, Any]]],
) -> None:
    a, b, log = pair
    gate = held(a)
    a.tell(("later", "after"))
    a.tell(("send", "b", ["local"]))
    b.tell("outside")
    gate.set()
    a.ask("sync", timeout=WAIT)
    a.ask("sync", timeout=WAIT)  # "after" was told before the first sync was handled
    tail = [m for _, m in log if m != "sync"][-5:]
    assert tail == [("later", "after"), ("send", "b", ["local"]), "local", "outside", "after"]


def test_inbox_empty_means_nothing_queued_locally_or_in_the_inbox(
    pair: tuple[HostedRef[Recorder], HostedRef[Recorder], list[tuple[str, Any]]],
) -> None:
    a, b, _ = pair
    a.ask("check", timeout=WAIT)  # alone: empty
    a.ask(("send", "a", ["check"]), timeout=WAIT)  # told locally to itself, then alone
    a.ask(("send", "b", ["x", "y"]), timeout=WAIT)
    a.tell(("send", "a", ["check", "z"]))  # "z" waits locally behind "check"
    gate = held(b)
    a.tell("check")  # b's gate holds the host: this waits in the inbox ...
    b.tell("y")  # ... and so does this, behind it
    gate.set()
    a.ask("sync", timeout=WAIT)
    assert a.actor.empty == [True, True, False, False]
    b.ask("sync", timeout=WAIT)
    assert b.actor.inbox_empty()  # nothing queued: idle, seen from any thread


def test_an_actor_not_hosted_has_an_empty_inbox_and_no_ref() -> None:
    actor = Recorder("alone", [])
    assert actor.inbox_empty()
    with pytest.raises(pykka.ActorDeadError):
        actor.tell_self_later("x")
    actor.handle("check")  # driven by hand, as unit tests of actors do
    assert actor.empty == [True]


def test_a_raising_handler_is_logged_and_the_rest_continue(
    pair: tuple[HostedRef[Recorder], HostedRef[Recorder], list[tuple[str, Any]]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b, log = pair
    with caplog.at_level(logging.ERROR):
        a.tell("boom")  # from the inbox
        a.tell(("send", "b", ["boom", "after-local"]))  # locally
        assert b.ask("after", timeout=WAIT) is None
        assert a.ask("report", timeout=WAIT)[-1] == ("a", "report")
    assert [m for who, m in log if who == "b"][-3:] == ["boom", "after-local", "after"]
    assert sum("error handling str" in r.getMessage() for r in caplog.records) == 2


class Bare:
    """A hosted actor that is not a NodeActor: nothing guards its handler but the host."""

    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.ref: HostedRef[Any] | None = None

    def bind(self, ref: HostedRef[Any]) -> None:
        self.ref = ref

    def on_start(self) -> None:
        raise RuntimeError("a bug in on_start")

    def on_stop(self) -> None:
        pass

    def on_receive(self, message: Any) -> Any:
        if message == "boom":
            raise ValueError("a bug")
        self.seen.append(message)
        return len(self.seen)


@pytest.mark.parametrize("kind", KINDS)
def test_the_host_guards_any_hosted_actor(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        (ref,), loop = start(kind, "bare", [Bare()])
        try:
            assert ref.actor.ref is ref
            ref.tell("boom")
            ref.tell("one")
            with pytest.raises(ValueError):
                ref.ask("boom", timeout=WAIT)  # an ask gets the handler's exception
            assert ref.ask("two", timeout=WAIT) == 2
            assert ref.is_alive()
        finally:
            finish([ref], loop)
    assert sum("unhandled error in Bare" in r.getMessage() for r in caplog.records) == 2


def test_stopping_one_actor_leaves_the_other_and_the_last_ends_the_host(
    pair: tuple[HostedRef[Recorder], HostedRef[Recorder], list[tuple[str, Any]]],
) -> None:
    a, b, log = pair
    gate = held(b)
    a.tell("before-stop")
    stopped = threading.Thread(target=a.stop, kwargs={"timeout": WAIT})
    stopped.start()
    gate.set()
    stopped.join(WAIT)
    assert not a.is_alive() and b.is_alive()
    assert ("a", "before-stop") in log  # what was queued before the stop is handled
    assert a.actor.stopped_on == b.actor.started_on  # on_stop ran on the host's thread
    with pytest.raises(pykka.ActorDeadError):
        a.tell("x")
    with pytest.raises(pykka.ActorDeadError):
        a.ask("x", timeout=WAIT)
    b.ask(("send", "a", ["lost"]), timeout=WAIT)  # a local tell to a stopped actor
    assert ("a", "lost") not in log
    assert a.stop() is False  # already stopped
    assert b.host.inbox().is_alive()
    assert b.stop(timeout=WAIT) is True
    assert b.host.actor_stopped.is_set() and not b.is_alive()
    assert b.actor.stopped_on is not None


def test_node_actor_start_runs_one_actor_on_its_own_thread() -> None:
    log: list[tuple[str, Any]] = []
    ref = Recorder.start("solo", log)
    try:
        assert ref.ask("report", timeout=WAIT)[-1] == ("solo", "report")
        assert ref.call(lambda actor: actor.name, timeout=WAIT) == "solo"
        assert ref.host.name == "Recorder"
        assert "solo" in repr(ref) or "Recorder" in repr(ref)
    finally:
        ref.stop(timeout=WAIT)
    with pytest.raises(ValueError):
        start_host("empty", [])


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from("abc"), st.sampled_from("abc"), st.integers(1, 4)),
        min_size=1,
        max_size=12,
    ),
    st.booleans(),
    st.sampled_from(KINDS),
)
def test_messages_from_one_sender_to_one_actor_arrive_in_order(
    program: list[tuple[str, str, int]], shared: bool, kind: str
) -> None:
    """Each step: the test thread tells actor ``x`` to send ``n`` numbered messages to
    ``y`` (and tells ``y`` one directly): per (sender, receiver) the numbers must come
    in order and none may be lost, on one shared host or on a host each."""
    log: list[tuple[str, Any]] = []
    actors = [Recorder(name, log) for name in "abc"]
    loops: list[ZmqLoop | None] = []
    if shared:
        refs, loop = start(kind, "prop", actors)
        loops.append(loop)
    else:
        refs = []
        for a in actors:
            (ref,), loop = start(kind, f"prop-{a.name}", [a])
            refs.append(ref)
            loops.append(loop)
    by_name = {a.name: r for a, r in zip(actors, refs, strict=True)}
    for a in actors:
        a.peers = by_name
    try:
        counters: dict[tuple[str, str], int] = {}
        for x, y, n in program:
            items = []
            for _ in range(n):
                k = counters[(x, y)] = counters.get((x, y), 0) + 1
                items.append(("from", x, k))
            by_name[x].tell(("send", y, items))
            k = counters[("t", y)] = counters.get(("t", y), 0) + 1
            by_name[y].tell(("from", "t", k))
        for name in "abc":  # everything told so far was handled once these return
            by_name[name].ask("sync", timeout=WAIT)
        for name in "abc":
            by_name[name].ask("sync", timeout=WAIT)
        got: dict[tuple[str, str], list[int]] = {}
        for who, m in log:
            if isinstance(m, tuple) and m[0] == "from":
                got.setdefault((m[1], who), []).append(m[2])
        assert got == {pair: list(range(1, k + 1)) for pair, k in counters.items()}
    finally:
        finish(refs, None)
        for loop in loops:
            if loop is not None:
                loop.stop()


class _Drainer(NodeActor):
    def __init__(self, seen: list[tuple[str, Any]] | None = None) -> None:
        self.log = member_logger(__name__, MemberId("d"))
        self.taken: list[int] = []
        self.seen = seen if seen is not None else []

    def handle(self, message: Any) -> Any:
        if isinstance(message, Drain):
            items = message.source.take()
            self.taken.extend(items)
            self.seen.append(("d", items))
        return None


@pytest.mark.parametrize("kind", KINDS)
def test_a_coalescer_stops_accepting_once_its_hosted_target_stopped(kind: str) -> None:
    (ref,), loop = start(kind, "drainer", [_Drainer()])
    c: Coalescer[int] = Coalescer(ref)
    assert c.put(1)
    ref.ask("sync", timeout=WAIT)
    assert ref.actor.taken == [1]
    ref.stop(timeout=WAIT)
    assert not c.put(2) and c.closed  # tell raised ActorDeadError: closed, not raised
    assert not c.put(3)
    assert c.dropped == 2 and len(c) == 0
    finish([], loop)


@pytest.mark.parametrize("kind", KINDS)
def test_a_bounded_take_announces_the_rest_behind_the_hosts_inbox(kind: str) -> None:
    log: list[tuple[str, Any]] = []
    (drainer, recorder), loop = start(kind, "drain", [_Drainer(log), Recorder("r", log)])
    try:
        c: Coalescer[int] = Coalescer(drainer, max_take=2)
        gate = held(recorder)
        for i in range(5):
            c.put(i)  # one Drain in the inbox
        recorder.tell("queued")  # behind it
        gate.set()
        recorder.ask("sync", timeout=WAIT)
        drainer.ask("sync", timeout=WAIT)
        # The first take got 2; the rest was announced behind "queued" (not locally,
        # ahead of everything the host had waiting).
        order = [(who, m) for who, m in log if who == "d" or m == "queued"]
        assert order == [("d", [0, 1]), ("r", "queued"), ("d", [2, 3]), ("d", [4])]
    finally:
        finish([drainer, recorder], loop)
