"""The coalescing hand-off from transport threads to actors (``actors.handoff``)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.base import NodeActor, member_logger
from actors.handoff import Coalescer, Drain
from protocol.ids import MemberId


class _Box:
    """A mailbox that records what it was told."""

    def __init__(self) -> None:
        self.told: list[Any] = []

    def tell(self, message: Any) -> None:
        self.told.append(message)


def test_one_drain_per_burst_and_items_in_order() -> None:
    box = _Box()
    c: Coalescer[int] = Coalescer(box)
    for i in range(5):
        c.put(i)
    assert len(box.told) == 1 and isinstance(box.told[0], Drain)
    assert box.told[0].source is c
    assert c.take() == [0, 1, 2, 3, 4]
    assert c.take() == []
    c.put(5)
    assert len(box.told) == 2  # the next burst announces itself again
    assert c.take() == [5]


def test_items_put_before_a_target_wait_for_the_next_put() -> None:
    c: Coalescer[int] = Coalescer()
    c.put(1)
    assert len(c) == 1
    box = _Box()
    c.target = box
    c.put(2)
    assert len(box.told) == 1
    assert c.take() == [1, 2]


def test_take_is_bounded_and_announces_the_rest() -> None:
    box = _Box()
    c: Coalescer[int] = Coalescer(box, max_take=3)
    for i in range(7):
        c.put(i)
    assert c.take() == [0, 1, 2]
    assert len(box.told) == 2  # the rest got a Drain of its own
    assert c.take() == [3, 4, 5]
    assert c.take() == [6]
    assert len(box.told) == 3
    with pytest.raises(ValueError):
        Coalescer(box, max_take=0)


def test_a_failing_tell_does_not_wedge_the_coalescer() -> None:
    class Flaky:
        def __init__(self) -> None:
            self.fail = True

        def tell(self, message: Any) -> None:
            if self.fail:
                raise RuntimeError("a transient failure")

    flaky = Flaky()
    c: Coalescer[int] = Coalescer(flaky)
    with pytest.raises(RuntimeError):
        c.put(1)
    flaky.fail = False
    c.put(2)  # announces again: the flag was not left set
    assert c.take() == [1, 2]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.integers(), max_size=5), max_size=10), st.integers(1, 4))
def test_interleaved_puts_and_takes_lose_nothing(bursts: list[list[int]], limit: int) -> None:
    box = _Box()
    c: Coalescer[int] = Coalescer(box, max_take=limit)
    got: list[int] = []
    for burst in bursts:
        for x in burst:
            c.put(x)
        # The actor handles at most one Drain per burst here; leftovers are announced.
        while box.told:
            box.told.pop()
            got.extend(c.take())
    assert got == [x for burst in bursts for x in burst]
    assert len(c) == 0


class _Collector(NodeActor):
    def __init__(self, done: threading.Event, expected: int) -> None:
        super().__init__()
        self.seen: dict[int, list[int]] = {}
        self.drains = 0
        self.done = done
        self.expected = expected
        self.count = 0

    def handle(self, message: Any) -> Any:
        if isinstance(message, Drain):
            self.drains += 1
            for producer, seq in message.source.take():
                self.seen.setdefault(producer, []).append(seq)
                self.count += 1
            if self.count >= self.expected:
                self.done.set()
        elif message == "report":
            return self.seen, self.drains
        return None


def test_concurrent_producers_deliver_everything_in_per_producer_order() -> None:
    producers, per = 4, 2000
    done = threading.Event()
    ref = _Collector.start(done, producers * per)
    try:
        c: Coalescer[tuple[int, int]] = Coalescer(ref, max_take=100)

        def produce(p: int) -> None:
            for i in range(per):
                c.put((p, i))

        threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert done.wait(30)
        seen, drains = ref.ask("report", timeout=10)
        assert {p: seen[p] for p in range(producers)} == {
            p: list(range(per)) for p in range(producers)
        }
        assert 1 <= drains <= producers * per
    finally:
        ref.stop(timeout=10)


def test_a_full_queue_drops_and_counts_instead_of_growing() -> None:
    box = _Box()
    c: Coalescer[int] = Coalescer(box, max_items=3, max_bytes=100)
    assert [c.put(i, 10) for i in range(4)] == [True, True, True, False]
    assert c.dropped == 1 and len(c) == 3
    assert c.take() == [0, 1, 2]
    assert c.put(9, 95) and not c.put(10, 10)  # the byte bound
    assert c.dropped == 2
    assert c.take() == [9]
    assert c.put(11, 100)  # bytes taken are free again


class _Each(NodeActor):
    def __init__(self) -> None:
        super().__init__()
        self.log = member_logger(__name__, MemberId("t"))
        self.handled: list[int] = []

    def handle(self, message: Any) -> Any:
        if message == "report":
            return self.handled
        self.handle_each(message, self._one)
        return None

    def _one(self, item: int) -> None:
        if item == 2:
            raise RuntimeError("a bug handling one item")
        self.handled.append(item)


def test_one_failing_item_does_not_lose_the_rest_of_its_batch() -> None:
    ref = _Each.start()
    try:
        ref.tell([1, 2, 3, 4])
        assert ref.ask("report", timeout=10) == [1, 3, 4]
    finally:
        ref.stop(timeout=10)


def test_a_coalescer_whose_drain_will_never_be_handled_stops_accepting() -> None:
    class Mortal(_Box):
        alive = True

        def is_alive(self) -> bool:
            return self.alive

    box = Mortal()
    c: Coalescer[int] = Coalescer(box)
    assert c.put(1) and c.put(2)  # one Drain on its way
    box.alive = False  # ... to a target that stopped before handling it
    assert not c.put(3)
    assert c.closed and c.dropped == 3 and len(c) == 0
    assert not c.put(4) and c.dropped == 4
    assert len(box.told) == 1  # no further Drain was announced
