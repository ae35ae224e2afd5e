"""Leader failover under a running workload, in one process on the in-memory hub: the
``RaftClient`` continues its session on the new leader and every command is applied
exactly once, also when the network drops, duplicates and delays frames."""

from __future__ import annotations

import logging

import pytest

from actors.transport import Faults
from tests.actors.node.cluster import ACTOR_THREADS, transport_for
from tests.actors.node.system import FAST_CLIENT, Workload, check_exactly_once, system_cluster

pytestmark = pytest.mark.timeout(90)


@ACTOR_THREADS
def test_leader_stopped_mid_workload_client_continues_its_session(
    caplog: pytest.LogCaptureFixture, actor_threads: str
) -> None:
    caplog.set_level(logging.WARNING)
    with system_cluster(
        actor_threads=actor_threads, transport=transport_for(actor_threads)
    ) as cluster:
        old = cluster.leader()
        work = Workload(cluster, window=20, config=FAST_CLIENT).start()
        try:
            session = work.client.session_id
            work.wait_for_progress(100)
            cluster.stop(old.member_id)
            new = cluster.leader()
            assert new.member_id != old.member_id
            before = work.succeeded
            work.wait_for_progress(before + 100)
        finally:
            work.stop()
        assert work.client.session_id == session  # the same session, continued
        assert work.client.stats().connects >= 2
        check_exactly_once(cluster, work)
        assert {n.status().sessions for n in cluster.nodes.values()} == {1}
    # Stopping nodes under load (one mid-test, the rest at the end) logs no errors:
    # actors still telling an actor that stopped first is part of shutting down.
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


def test_failover_with_dropped_duplicated_and_delayed_frames() -> None:
    """Duplicate sends and lost responses: the session layer's cache answers resends."""
    with system_cluster() as cluster:
        hub = cluster.hub
        assert hub is not None
        old = cluster.leader()
        work = Workload(cluster, window=10, config=FAST_CLIENT).start()
        try:
            work.wait_for_progress(30)
            hub.faults = Faults(drop=0.03, duplicate=0.2, delay_ms=(0.0, 3.0), reorder=0.05)
            work.wait_for_progress(work.succeeded + 60)
            cluster.stop(old.member_id)
            cluster.leader()
            work.wait_for_progress(work.succeeded + 60)
        finally:
            work.stop()
            hub.faults = Faults()
        stats = hub.stats()
        assert stats.dropped > 0 and stats.duplicated > 0
        check_exactly_once(cluster, work)
