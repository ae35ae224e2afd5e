"""A seeded nemesis against a durable 3-node counter cluster in one process: leader
stops and restarts, peer partitions that leave clients connected to a deposed leader,
and a lossy, duplicating, reordering network, all while a writer increments, a reader
runs linearizable queries and a listener receives server requests.

Checked at the end: every successful increment applied exactly once (responses are
distinct and the counter equals their number on every replica, byte-identical), no
query ever read less than what was acknowledged before it started, and every server
request reached the listener once, in order. ``--long`` runs more seeds and rounds.
"""

from __future__ import annotations

import logging
import random
import threading
from pathlib import Path
from typing import Any

import pytest

from actors.transport import Faults
from examples.counter import CROSSING_STEP, get
from tests.actors.node.cluster import WAIT, wait_for
from tests.actors.node.system import SystemCluster, Workload, check_exactly_once, system_cluster
from tests.conftest import LONG

pytestmark = pytest.mark.timeout(240 if LONG else 60)


class Reader:
    """Queries in a loop; records any answer below what was acknowledged before it."""

    def __init__(self, cluster: SystemCluster, work: Workload) -> None:
        self.client = cluster.client()
        self.work = work
        self.count = 0
        self.stale: list[tuple[int, int]] = []
        self.failures: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="raft-test-reader")

    def start(self) -> Reader:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(WAIT * 2)
        assert not self._thread.is_alive(), "reader did not finish"

    def _run(self) -> None:
        while not self._stop.is_set():
            floor = self.work.succeeded
            try:
                value = self.client.query(get(), timeout=WAIT)
            except Exception as exc:
                self.failures.append(exc)
                return
            self.count += 1
            if value < floor:
                self.stale.append((value, floor))


ACTIONS = ("restart", "partition", "follower")


def nemesis_round(cluster: SystemCluster, rng: random.Random, work: Workload, action: str) -> None:
    hub = cluster.hub
    assert hub is not None
    leader = cluster.leader()
    others = [m for m in cluster.nodes if m != leader.member_id]
    if action == "restart":
        cluster.stop(leader.member_id)
        work.wait_for_progress(work.succeeded + 20)
        cluster.start(leader.member_id)
    elif action == "partition":
        # Peers cut off; its clients can still reach the deposed leader.
        hub.partition([leader.member_id], others)
        work.wait_for_progress(work.succeeded + 20)
        hub.heal()
    else:
        victim = rng.choice(others)
        cluster.stop(victim)
        work.wait_for_progress(work.succeeded + 20)
        cluster.start(victim)
    work.wait_for_progress(work.succeeded + 20)


@pytest.mark.parametrize(
    "seed",
    [1, 2, 3, 4, 5] if LONG else [1],
)
def test_nemesis(seed: int, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    rng = random.Random(seed)
    rounds = 12 if LONG else 3
    order = rng.sample(ACTIONS, len(ACTIONS))  # every kind of trouble, in a seeded order
    actions = [order[i % len(order)] for i in range(rounds)]
    with system_cluster(
        data_dir=tmp_path,
        snapshot_threshold_bytes=4_000,
        snapshot_trailing_entries=20,
        retry_interval_ms=100,
        retry_age_ms=300,
    ) as cluster:
        hub = cluster.hub
        assert hub is not None
        got: list[Any] = []
        lock = threading.Lock()

        def listen(payload: Any) -> None:
            with lock:
                got.append(payload)

        cluster.client(on_server_request=listen)
        work = Workload(cluster, window=5).start()
        reader = Reader(cluster, work).start()
        try:
            work.wait_for_progress(20)
            hub.faults = Faults(drop=0.02, duplicate=0.1, delay_ms=(0.0, 2.0), reorder=0.05)
            for action in actions:
                nemesis_round(cluster, rng, work, action)
        finally:
            reader.stop()
            work.stop()
            hub.faults = Faults()
            hub.heal()
        assert not reader.failures, reader.failures
        assert reader.stale == [], f"stale reads (value, acknowledged before): {reader.stale}"
        assert reader.count > 0
        check_exactly_once(cluster, work)
        want = [["crossed", v] for v in range(CROSSING_STEP, work.succeeded + 1, CROSSING_STEP)]

        def all_delivered() -> bool:
            with lock:
                return len(got) >= len(want)

        wait_for(all_delivered, what=f"server requests after {actions}")
        wait_for(
            lambda: all(n.status().pending_server_requests == 0 for n in cluster.nodes.values()),
            what="every server request acknowledged",
        )
        with lock:
            assert got == want, actions
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
