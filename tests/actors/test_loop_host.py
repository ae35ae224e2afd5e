"""Actors on a ZeroMQ transport's I/O thread (``actors.loop_host``): what differs from
a pykka host. (What must not differ runs in ``test_host.py`` on both kinds.)"""

from __future__ import annotations

import threading
from typing import Any

import pykka
import pytest

from actors.base import NodeActor, member_logger
from actors.handoff import Coalescer, Drain
from actors.host import _Ask
from actors.loop_host import start_on_loop
from actors.transport import TransportError, ZmqPeerTransport
from actors.transport._zmq_loop import Command
from protocol.ids import MemberId
from tests.actors.test_host import WAIT, BareLoop, Recorder, held
from tests.actors.transport.harness import wait_until

A, B = MemberId("a"), MemberId("b")


class Echo(NodeActor):
    """Takes the frames a Coalescer collected and sends each back to its sender."""

    def __init__(self, transport: ZmqPeerTransport) -> None:
        self.log = member_logger(__name__, A)
        self.transport = transport
        self.threads: set[int] = set()
        #: Per send: whether the frame had left the outbox once ``send`` returned.
        self.direct: list[bool] = []

    def handle(self, message: Any) -> Any:
        self.threads.add(threading.get_ident())
        if isinstance(message, Drain):
            for sender, frame in message.source.take():
                self.transport.send(sender, b"echo:" + frame)
                self.direct.append(self.transport.outbox_empty())
        return None


def test_a_peer_frame_reaches_its_actor_on_the_io_thread_and_the_reply_goes_straight_out() -> None:
    frames: Coalescer[tuple[MemberId, bytes]] = Coalescer()
    a = ZmqPeerTransport(A, lambda sender, frame: frames.put((sender, frame)))
    echoes: list[bytes] = []
    got, pinged = threading.Event(), threading.Event()

    def on_echo(sender: MemberId, frame: bytes) -> None:
        if frame == b"echo:ping":
            pinged.set()
        else:
            echoes.append(frame)
            if len(echoes) == 3:
                got.set()

    b = ZmqPeerTransport(B, on_echo)
    (echo,) = start_on_loop("echo", a, [Echo(a)])
    frames.target = echo
    try:
        a.start()
        b.start()
        a.add_peer(B, b.address)
        b.add_peer(A, a.address)
        # PUSH with ZMQ_IMMEDIATE drops frames until connected (both ways): ping
        # until an answer came back.
        for _ in range(int(WAIT / 0.1)):
            b.send(A, b"ping")
            if pinged.wait(0.1):
                break
        for i in range(3):
            b.send(A, b"%d" % i)
        assert got.wait(WAIT)
        assert echoes[:3] == [b"echo:0", b"echo:1", b"echo:2"]
        assert echo.actor.threads == {a._ident}  # the transport's own I/O thread
        assert echo.actor.direct and all(echo.actor.direct)  # never queued in the outbox
    finally:
        b.stop()
        a.stop()
    assert not echo.is_alive()  # the transport's end stopped its actors


def test_a_stopping_transport_handles_what_was_queued_then_stops_its_actors() -> None:
    # As a pykka actor handles its inbox before a stop: letters told before the stop
    # (a committed batch for the session actor, an admin reply) are not dropped.
    log: list[tuple[str, Any]] = []
    loop = BareLoop()
    (ref,) = start_on_loop("held", loop, [Recorder("r", log)])
    loop.start()
    gate = held(ref)
    ref.tell("queued tell")
    future = ref.host.inbox().ask(_Ask(ref, "queued ask"), block=False)  # as ref.ask does
    stopper = threading.Thread(target=loop.stop)
    stopper.start()
    wait_until(lambda: loop._stopping)  # the stop began while the letters wait
    gate.set()
    stopper.join(WAIT)
    assert not stopper.is_alive()
    future.get(timeout=WAIT)  # answered, not failed
    assert log[-2:] == [("r", "queued tell"), ("r", "queued ask")]
    assert not ref.is_alive() and ref.host.actor_stopped.is_set()
    assert ref.actor.stopped_on == ref.actor.started_on  # on_stop on the loop's thread
    with pytest.raises(pykka.ActorDeadError):
        ref.tell("late")
    assert ref.stop(timeout=WAIT) is False
    assert ("r", "late") not in log


class RecordingLoop(BareLoop):
    """A bare loop that records the frames it sends, in order."""

    def __init__(self) -> None:
        super().__init__("recording")
        self.sent: list[bytes] = []

    def _on_command(self, command: Command) -> None:
        self.sent.append(command[1])


def test_a_send_on_the_loop_thread_never_overtakes_a_frame_queued_before_it() -> None:
    loop = RecordingLoop()
    log: list[tuple[str, Any]] = []
    (ref,) = start_on_loop("sender", loop, [Recorder("r", log)])
    loop.start()
    try:
        inside, go = threading.Event(), threading.Event()

        def send_f2() -> None:
            inside.set()
            assert go.wait(WAIT)
            loop._enqueue_frame(("frame", b"F2"), 2)

        # The actor, on the loop's thread, is about to send F2 when another thread (the
        # storage writer, say) queues F1: F2 must go out after F1, not straight away.
        ref.tell(("call", send_f2))
        assert inside.wait(WAIT)
        assert loop._enqueue_frame(("frame", b"F1"), 2)
        go.set()
        wait_until(lambda: len(loop.sent) == 2)
        assert loop.sent == [b"F1", b"F2"]
        # With nothing queued the actor's send goes out at once, before its handler ends.
        ref.ask(("call", lambda: loop._enqueue_frame(("frame", b"F3"), 2)), timeout=WAIT)
        assert loop.sent[-1] == b"F3"
    finally:
        loop.stop()


def test_work_queued_on_the_loop_thread_needs_no_wake_up_and_still_runs() -> None:
    """The loop does not sleep while its outbox holds work, so what its own thread
    queues costs no wake-up byte (a write now, a read on the next turn)."""
    loop = RecordingLoop()
    (ref,) = start_on_loop("queuer", loop, [Recorder("r", [])])
    wakes: list[int] = []
    wake = loop._wake

    def counted_wake() -> None:
        wakes.append(threading.get_ident())
        wake()

    loop._wake = counted_wake  # type: ignore[method-assign]
    loop.start()
    try:

        def queue_on_the_loop() -> None:
            loop._wake_pending = False  # as right after the loop emptied its pipe
            loop._enqueue_control(("frame", b"C"))  # a control command always queues
            loop.call_soon(lambda a, b: loop._enqueue_frame(("frame", b"F"), 1), None, None)

        ref.ask(("call", queue_on_the_loop), timeout=WAIT)
        wait_until(lambda: loop.sent == [b"C", b"F"])
        assert loop._ident not in wakes
    finally:
        loop.stop()


def test_a_guest_joins_only_a_new_loop_and_only_one() -> None:
    loop = BareLoop()
    start_on_loop("first", loop, [Recorder("r", [])])
    with pytest.raises(TransportError):
        start_on_loop("second", loop, [Recorder("s", [])])
    late = BareLoop()
    late.start()
    try:
        with pytest.raises(TransportError):
            start_on_loop("late", late, [Recorder("t", [])])
    finally:
        late.stop()
    with pytest.raises(ValueError):
        start_on_loop("empty", BareLoop(), [])
