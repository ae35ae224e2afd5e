"""Ticks through a TickGate: at most one waits in an actor's inbox, however far behind."""

from __future__ import annotations

import threading
from typing import Any

import pykka
import pytest

from actors.base import NodeActor, member_logger
from actors.clock import Ticker, TickGate
from actors.messages import Tick

WAIT = 10.0


def test_a_gate_tells_one_tick_until_it_is_handled() -> None:
    told: list[Tick] = []
    skips: list[None] = []
    gate = TickGate(told.append, on_skip=lambda: skips.append(None))
    gate(1)
    gate(2)
    gate(3)
    assert [t.now_ms for t in told] == [1]
    assert gate.skipped == 2 == len(skips)
    handled = told[0].handled
    assert handled is not None
    handled()
    gate(4)
    assert [t.now_ms for t in told] == [1, 4]


def test_a_tick_that_could_not_be_told_does_not_close_the_gate() -> None:
    told: list[Tick] = []
    dead = True

    def tell(tick: Tick) -> None:
        if dead:
            raise pykka.ActorDeadError("stopped")
        told.append(tick)

    gate = TickGate(tell)
    with pytest.raises(pykka.ActorDeadError):
        gate(1)
    dead = False
    gate(2)
    assert [t.now_ms for t in told] == [2]


def test_a_gated_tick_equals_a_plain_one() -> None:
    assert Tick(5, lambda: None) == Tick(5)


class Sleeper(NodeActor):
    """Records ticks; the first one blocks the actor until ``release`` is set."""

    def __init__(self) -> None:
        self.log = member_logger(__name__, "t")
        self.ticks: list[int] = []
        self.blocked = threading.Event()
        self.release = threading.Event()
        self.second = threading.Event()
        self.fail = False

    def handle(self, message: Any) -> Any:
        if isinstance(message, Tick):
            self.ticks.append(message.now_ms)
            if len(self.ticks) == 1:
                self.blocked.set()
                assert self.release.wait(WAIT)
            else:
                self.second.set()
            if self.fail:
                raise RuntimeError("a bug in the tick handler")
            return None
        return list(self.ticks)  # an ask: answered after everything queued before it


def test_an_actor_marks_a_tick_handled_even_when_its_handler_raises() -> None:
    actor = Sleeper()
    actor.release.set()
    actor.fail = True
    done = threading.Event()
    actor.on_receive(Tick(1, done.set))  # logged, not raised
    assert done.is_set()


def test_an_actor_that_is_behind_finds_one_tick_not_a_pile() -> None:
    """While the actor is stuck in a tick, the ticker keeps ticking; once it catches up,
    nothing but that one tick had been queued for it, and ticking resumes."""
    ref = Sleeper.start()
    actor = ref.actor
    gate = TickGate(ref.tell)
    enough = threading.Event()

    def tick(now_ms: int) -> None:
        gate(now_ms)
        if gate.skipped >= 20:
            enough.set()

    try:
        ticker = Ticker("test-tick", 1, tick).start()
        try:
            assert actor.blocked.wait(WAIT)
            assert enough.wait(WAIT)  # 20 more ticks came while the actor was stuck
        finally:
            ticker.stop()  # joined: nothing more is told after this
            actor.release.set()
        assert len(ref.ask("ticks", timeout=WAIT)) == 1  # none had piled up behind it
        ticker = Ticker("test-tick", 1, tick).start()
        try:
            assert actor.second.wait(WAIT)  # the gate opened again once it was handled
        finally:
            ticker.stop()
    finally:
        actor.release.set()
        ref.stop(timeout=WAIT)
