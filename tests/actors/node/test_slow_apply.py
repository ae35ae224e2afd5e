"""A slow ``apply`` on the leader must not cost it its leadership where the user's code
runs on a thread of its own (``actor_threads`` "hybrid", the default, and "separate"):
consensus goes on answering and sending heartbeats meanwhile. ("shared" and
"transport" put ``apply`` on the consensus thread and document the opposite.)"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from examples.counter import CounterStateMachine, increment
from protocol.session import SessionContext, UserState
from tests.actors.node.cluster import WAIT
from tests.actors.node.system import FAST_NODE, SystemCluster

pytestmark = pytest.mark.timeout(60)

#: How long the leader's ``apply`` is held: five election timeouts (FAST_NODE: 200 ms).
HELD_S = 5 * FAST_NODE["election_timeout_ms"] / 1000


class HeldCounter(CounterStateMachine):
    """The counter, whose ``apply`` waits for ``release`` while ``hold`` is set."""

    def __init__(self) -> None:
        self.hold = threading.Event()
        self.entered = threading.Event()
        self.release = threading.Event()

    def apply(self, ctx: SessionContext, state: UserState, command: Any) -> int:
        if self.hold.is_set():
            self.entered.set()
            self.release.wait(WAIT)
        return super().apply(ctx, state, command)


@pytest.mark.parametrize("actor_threads", ["hybrid", "separate"])
def test_a_slow_apply_on_the_leader_does_not_cost_it_leadership(actor_threads: str) -> None:
    cluster = SystemCluster(HeldCounter, transport="zmq", actor_threads=actor_threads, **FAST_NODE)
    try:
        cluster.start()
        leader = cluster.leader()
        term = leader.status().term
        client = cluster.client()
        assert client.call(increment(1), timeout=WAIT) == 1
        machine = leader.state_machine
        assert isinstance(machine, HeldCounter)
        machine.hold.set()
        held = client.submit(increment(1))
        assert machine.entered.wait(WAIT), "the leader never applied the command"
        # While the leader's apply is stuck, nobody starts an election: every node keeps
        # the same term and leader for five election timeouts.
        until = time.monotonic() + HELD_S
        while time.monotonic() < until:
            views = {(n.status().term, n.status().leader) for n in cluster.nodes.values()}
            assert views == {(term, leader.member_id)}
            time.sleep(0.02)
        assert not held.done()
        machine.hold.clear()
        machine.release.set()
        assert held.result(timeout=WAIT) == 2
        assert leader.status().term == term and leader.status().role == "leader"
    finally:
        cluster.close()
