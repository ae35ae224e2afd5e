"""Snapshots in a running cluster (durable storage in ``tmp_path``, in-memory hub): nodes
take them past a small threshold, a restarted node catches up from its log, and a node
that was down while the others compacted their logs catches up by InstallSnapshot."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from actors.client import RaftClient
from examples.counter import get, increment
from tests.actors.node.cluster import WAIT, wait_for
from tests.actors.node.system import FAST_CLIENT, SystemCluster, system_cluster

pytestmark = pytest.mark.timeout(60)

#: A few dozen small commands pass this, so snapshots come quickly.
SNAPSHOT: dict[str, int] = {"snapshot_threshold_bytes": 2_000, "snapshot_trailing_entries": 5}


def increments(client: RaftClient, n: int) -> int:
    futures = [client.submit(increment(1)) for _ in range(n)]
    top: int = max(f.result(timeout=WAIT) for f in futures)
    return top


def snapshot_indexes(cluster: SystemCluster) -> dict[str, int]:
    return {m: n.status().snapshot_index for m, n in cluster.nodes.items()}


#: The defaults (log writes on the storage writer's thread, SQLite), and log writes on
#: the consensus actor's thread into the log file.
STORAGE = pytest.mark.parametrize(
    ("storage_writes", "durable_log"), [("thread", "sqlite"), ("inline", "file")]
)


@STORAGE
def test_a_restarted_node_catches_up_from_its_log(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    storage_writes: str,
    durable_log: str,
) -> None:
    caplog.set_level(logging.INFO, logger="actors.consensus")
    with system_cluster(
        data_dir=tmp_path, storage_writes=storage_writes, durable_log=durable_log, **SNAPSHOT
    ) as cluster:
        client = cluster.client()
        assert increments(client, 100) == 100
        wait_for(
            lambda: all(i > 0 for i in snapshot_indexes(cluster).values()),
            what="every node took a snapshot",
        )
        leader = cluster.leader()
        follower = next(m for m in cluster.nodes if m != leader.member_id)
        cluster.stop(follower)
        # Fewer entries than the trailing log kept after a snapshot: no InstallSnapshot.
        assert increments(client, 3) == 103
        cluster.start(follower)
        restarted = cluster.nodes[follower].status()
        # Restored from its own disk: its snapshot, then its log (it may already have
        # applied some of its log by the time status is read, hence >=).
        assert restarted.snapshot_index > 0
        assert restarted.applied_index >= restarted.snapshot_index
        assert restarted.last_log_index >= 100
        assert increments(client, 2) == 105
        cluster.wait_converged()
        assert set(cluster.replica_counters().values()) == {105}
        assert not [r for r in caplog.records if "installed a snapshot" in r.getMessage()]


@STORAGE
def test_a_node_down_during_compaction_catches_up_by_install_snapshot(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    storage_writes: str,
    durable_log: str,
) -> None:
    caplog.set_level(logging.INFO, logger="actors.consensus")
    with system_cluster(
        data_dir=tmp_path, storage_writes=storage_writes, durable_log=durable_log, **SNAPSHOT
    ) as cluster:
        client = cluster.client()
        assert increments(client, 5) == 5
        cluster.wait_converged()
        leader = cluster.leader()
        lagging = next(m for m in cluster.nodes if m != leader.member_id)
        cluster.stop(lagging)
        # Enough for several snapshots, so the others compact past the stopped node's log.
        assert increments(client, 300) == 305
        others = [n for n in cluster.nodes.values()]
        wait_for(
            lambda: all(n.status().snapshot_index > 50 for n in others),
            what="the running nodes took snapshots",
        )
        cluster.start(lagging)
        node = cluster.nodes[lagging]
        wait_for(lambda: node.status().snapshot_index > 0, what="a snapshot on the lagging node")
        assert client.call(increment(1), timeout=WAIT) == 306
        cluster.wait_converged()
        assert set(cluster.replica_counters().values()) == {306}
        assert client.query(get(), timeout=WAIT) == 306
        installed = [
            r
            for r in caplog.records
            if "installed a snapshot" in r.getMessage() and f"[{lagging}]" in r.getMessage()
        ]
        assert installed, "the lagging node did not install the leader's snapshot"
        # It still works after catching up: it can take over as leader.
        cluster.stop(cluster.leader().member_id)
        assert client.call(increment(1), timeout=WAIT) == 307
        cluster.wait_converged()
        assert set(cluster.replica_counters().values()) == {307}


def test_a_snapshot_larger_than_a_frame_is_sent_in_chunks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A follower must catch up even when the snapshot is many times the frame limit."""
    caplog.set_level(logging.INFO, logger="actors.consensus")
    frame = 32 * 1024
    with system_cluster(
        data_dir=tmp_path,
        max_frame_bytes=frame,
        max_payload_bytes=16 * 1024,
        snapshot_threshold_bytes=20_000,
        snapshot_trailing_entries=5,
    ) as cluster:
        client = cluster.client()
        lagging = next(m for m in cluster.nodes if m != cluster.leader().member_id)
        cluster.stop(lagging)
        # Sessions with big capabilities make a big snapshot (they live in the state).
        for i in range(12):
            blob = f"{i:02d}" * 6_000
            cluster.client(config=dataclasses.replace(FAST_CLIENT, capabilities={"blob": blob}))
        assert increments(client, 150) == 150
        wait_for(
            lambda: all(n.status().snapshot_index > 100 for n in cluster.nodes.values()),
            what="the running nodes took snapshots",
        )
        cluster.start(lagging)
        cluster.wait_converged()
        snapshots = cluster.replica_snapshots()
        assert len(snapshots[lagging]) > 4 * frame
        assert cluster.nodes[lagging].status().snapshot_index > 100
        assert cluster.nodes[lagging].status().sessions == 13
        assert any(
            "installed a snapshot" in r.getMessage() and f"[{lagging}]" in r.getMessage()
            for r in caplog.records
        )
