"""Log compaction with snapshots, Raft dissertation §5 (§5.1, §5.3).

The host decides when to snapshot; the core then compacts its log, keeping a tail. A
follower that needs compacted entries gets the snapshot in chunks (resumable from the
offset it reports), installs it, and continues from the log; a restart starts from
the latest snapshot plus the entries after it.
"""

from __future__ import annotations

import pytest

from protocol.raft import (
    Configuration,
    InstallSnapshot,
    InstallSnapshotResponse,
    SnapshotMeta,
)
from tests.protocol.raft.support import A, B, cluster, core, drain, elect
from tests.simulation.cluster import Cluster


def _grown(n_entries: int = 30, **kw: object) -> Cluster:
    cl = cluster(3, compaction_tail=2, snapshot_chunk_bytes=8, **kw)
    elect(cl, "n1")
    cl.isolate("n3")
    for i in range(n_entries):
        cl.propose("n1", [b"v%d" % i])
    cl.stabilize()
    return cl


def test_snapshot_compacts_the_log_keeping_a_tail() -> None:
    cl = _grown()
    leader = cl.core("n1")
    meta = cl.take_snapshot("n1")
    assert meta is not None and meta.index == leader.commit_index
    assert meta.configuration == Configuration(tuple(cl.voters))
    assert leader.log.offset == meta.index - 2
    assert leader.snapshot == meta


@pytest.mark.eager_commit
def test_lagging_follower_receives_the_snapshot_in_chunks_and_catches_up() -> None:
    cl = _grown()
    cl.take_snapshot("n1")
    cl.heal()
    chunks: list[InstallSnapshot] = []
    original = cl._deliver

    def spy(msg: object) -> None:
        if isinstance(msg, InstallSnapshot):
            chunks.append(msg)
        original(msg)  # type: ignore[arg-type]

    cl._deliver = spy  # type: ignore[method-assign]
    cl.run(5)
    cl.stabilize()
    assert len(chunks) > 2 and chunks[-1].done
    assert [c.offset for c in chunks] == sorted(c.offset for c in chunks)
    n3 = cl.nodes[cl.voters[2]]
    assert n3.core is not None and n3.core.snapshot.index == chunks[0].meta.index
    assert n3.sm.index == cl.core("n1").commit_index  # snapshot, then the log tail
    cl.propose("n1", [b"after"])
    cl.stabilize()
    assert n3.sm.values[-1] == b"after"


def test_snapshot_transfer_resumes_from_the_reported_offset() -> None:
    meta = SnapshotMeta(10, 2, Configuration((A, B)))
    f = core(B, (A, B))
    f.step(InstallSnapshot(3, A, B, meta, 0, b"abcd", False))
    f.step(InstallSnapshot(3, A, B, meta, 8, b"ijkl", False))  # a chunk went missing
    f.step(InstallSnapshot(3, A, B, meta, 4, b"efgh", False))
    f.step(InstallSnapshot(3, A, B, meta, 8, b"ijkl", True))
    msgs, readys = drain(f)
    offsets = [(m.next_offset, m.done) for m in msgs if isinstance(m, InstallSnapshotResponse)]
    assert offsets == [(4, False), (4, False), (8, False), (0, True)]
    installed = [r.snapshot for r in readys if r.snapshot is not None]
    assert installed[0].data == b"abcdefghijkl" and installed[0].meta == meta
    assert f.commit_index == 10 and f.config == meta.configuration
    # the response that acknowledges the snapshot waits until it is durable
    assert readys[0].messages == []


def test_a_snapshot_the_follower_already_covers_is_acknowledged_at_once() -> None:
    f = core(B, (A, B))
    meta = SnapshotMeta(0, 0, Configuration((A, B)))
    f.step(InstallSnapshot(1, A, B, meta, 0, b"", True))
    msgs, readys = drain(f)
    assert msgs == [InstallSnapshotResponse(1, B, A, 0, 0, True, 0)]
    assert all(r.snapshot is None for r in readys)


def test_restart_from_snapshot_and_tail() -> None:
    cl = _grown()
    cl.take_snapshot("n1")
    before = cl.core("n1").commit_index
    cl.crash("n1")
    cl.restart("n1")
    leader = cl.core("n1")
    assert (
        leader.log.offset == leader.snapshot.index and leader.commit_index >= leader.snapshot.index
    )
    cl.heal()
    for _ in range(60):
        cl.tick()
    cl.stabilize()
    assert all(n.sm.index >= before for n in cl.live())


@pytest.mark.eager_commit
def test_the_core_suggests_snapshots_every_n_applied_entries() -> None:
    cl = cluster(3, snapshot_entries=10)
    elect(cl, "n1")
    for i in range(25):
        cl.propose("n1", [b"%d" % i])
    cl.stabilize()
    assert all(n.core is not None and n.core.snapshot.index >= 10 for n in cl.live())


def test_snapshot_meta_is_only_for_applied_indexes() -> None:
    cl = _grown(5)
    leader = cl.core("n1")
    with pytest.raises(ValueError):
        leader.snapshot_meta_for(leader.last_index + 1)
    meta = leader.snapshot_meta_for(leader.log.applied)
    with pytest.raises(ValueError):
        leader.on_snapshot_taken(SnapshotMeta(meta.index, meta.term + 1, meta.configuration), b"")
    leader.on_snapshot_taken(meta, b"data")
    leader.on_snapshot_taken(meta, b"ignored: not newer")
    assert leader.snapshot_data == b"data"
