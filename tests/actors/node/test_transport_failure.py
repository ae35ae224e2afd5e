"""A transport's I/O thread that dies (a bug or a libzmq error outside its per-message
guards) fails its node loudly: ``Node.failed`` is set, ``Node.failure`` says which
transport and why, the log says so at CRITICAL, and the other members go on. With
``actor_threads = "hybrid"`` (the default) the peer loop also hosts consensus: a node
whose peer loop died must not look like a healthy member that merely went quiet."""

from __future__ import annotations

import logging

import pytest

from actors.transport._zmq_loop import ZmqLoop
from examples.counter import increment
from tests.actors.node.cluster import WAIT, wait_for
from tests.actors.node.system import system_cluster

pytestmark = pytest.mark.timeout(60)


def _break(loop: ZmqLoop) -> None:
    """Make ``loop``'s next wake-up raise out of the loop itself (not out of a handler,
    which the loop survives)."""

    def drain_wake() -> None:
        raise RuntimeError("injected: a bug in the I/O loop")

    loop._drain_wake = drain_wake  # type: ignore[method-assign]


def test_a_dead_peer_loop_fails_the_node_and_the_others_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.CRITICAL, logger="actors.node")
    with system_cluster(transport="zmq") as cluster:
        leader = cluster.leader()
        victim = next(n for n in cluster.nodes.values() if n is not leader)
        assert not victim.failed.is_set() and victim.failure is None
        loop = victim._peers
        assert isinstance(loop, ZmqLoop)
        _break(loop)
        wait_for(victim.failed.is_set, what="the node noticed its dead peer loop")
        assert victim.failure is not None
        assert "peer transport" in victim.failure and "injected" in victim.failure
        assert any(
            r.levelno == logging.CRITICAL and "NODE FAILED" in r.getMessage()
            for r in caplog.records
        )
        # The two others still make a majority: commands go on committing.
        client = cluster.client()
        assert client.call(increment(1), timeout=WAIT) == 1
        assert not leader.failed.is_set()
    # Leaving the block stopped every node, the failed one included (no hang, no raise).


def test_a_handler_error_does_not_fail_the_node() -> None:
    """The loop's per-message guards still hold: a frame handler that raises is logged
    and counted, and the node is not failed for it."""
    with system_cluster(transport="zmq", actor_threads="separate") as cluster:
        leader = cluster.leader()
        loop = leader._peers
        assert isinstance(loop, ZmqLoop)

        def on_message(socket: object, parts: object) -> None:
            raise RuntimeError("injected: a handler bug")

        loop._on_message = on_message  # type: ignore[method-assign]
        # Followers' acknowledgements now raise in the leader's handler, every one.
        wait_for(lambda: loop.stats().malformed > 0, what="a handler error counted")
        assert not leader.failed.is_set()
        assert loop._thread is not None and loop._thread.is_alive()
