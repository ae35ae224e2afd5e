"""Fault runs: real node processes, concurrent clients, a seeded nemesis, checked histories.

* kv runs: 6 clients doing get (query) / set / cas on 3 keys of the kv store while the
  nemesis kills (``kill -9``) and restarts nodes, pauses them (SIGSTOP/SIGCONT) and cuts
  one off from the others (a partition; clients still reach it), the leader more often;
  the whole history must be linearizable
  (:func:`tests.checker.linearizability.check_history`).
* counter runs: 4 clients each keeping increments in flight under the same nemesis;
  exactly-once: every acknowledged increment saw a distinct value, and the final value
  is the number of acknowledged increments plus at most the number whose outcome
  stayed unknown.

A failing run saves its history, the nemesis schedule that ran and the node log tails
to a JSON file (``$RAFT_FAULTS_DIR``, default ``<tmp>/raft-actors-faults``) and prints
its path. The default suite runs one short run of each; ``scripts/test --long`` runs
more seeds, longer.
"""

from __future__ import annotations

import dataclasses
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.client import RaftClient
from actors.cluster import create_cluster
from examples.kvstore import KvGet, KvSet
from tests.checker.linearizability import UNKNOWN, Operation, check_history
from tests.conftest import LONG
from tests.faults.harness import (
    ARTIFACTS_ENV,
    KvClients,
    Nemesis,
    client_config,
    enable_partitions,
    events_to_json,
    heal,
    operation_to_json,
    save_failure,
    set_partition,
)
from tests.faults.history import check_kv_history, resolve_unknowns
from tests.integration.test_multiprocess import WAIT, ProcessCluster, Workload, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800 if LONG else 180)]

MakeCluster = Callable[[str], ProcessCluster]
#: Relative odds of the nemesis' faults.
FAULTS = {"kill": 1.0, "pause": 1.0, "partition": 1.0}


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[MakeCluster]:
    """Builds started 3-node durable clusters of ``app`` whose nodes can be partitioned;
    SIGKILLs every process after."""
    made: list[ProcessCluster] = []

    def make(app: str) -> ProcessCluster:
        directory, manifest = create_cluster(
            tmp_path / f"cluster{len(made)}", nodes=3, app=app, storage="durable"
        )
        cluster = ProcessCluster(directory, manifest)
        made.append(cluster)
        enable_partitions(cluster)
        for member in cluster.members():
            cluster.start(member)
        cluster.leader()
        return cluster

    try:
        yield make
    finally:
        for cluster in made:
            cluster.kill_all()


def run_for(seconds: float) -> None:
    """Let the workload and the nemesis run: the run's length, not a synchronisation."""
    threading.Event().wait(seconds)


def kv_run(
    make_cluster: MakeCluster, seed: int, seconds: float, clients: int = 6, op_timeout: float = 4.0
) -> None:
    cluster = make_cluster("kvstore")
    workload = KvClients(cluster.addresses, clients, ["a", "b", "c"], seed, op_timeout=op_timeout)
    nemesis = Nemesis(cluster, random.Random(seed), weights=FAULTS)
    started = time.monotonic()
    try:
        workload.start()
        nemesis.start()
        run_for(seconds)
    finally:
        nemesis.stop()
        workload.stop()
    history = workload.history()
    counts = workload.counts()
    checked = time.monotonic()
    verdict = check_kv_history(history)
    check_s = time.monotonic() - checked
    report: dict[str, Any] = {
        "workload": "kv",
        "seed": seed,
        "seconds": seconds,
        "started": started,
        "counts": counts,
        "check_seconds": check_s,
        "checked_by": verdict.by,
        "schedule": events_to_json(nemesis.events),
        "history": [operation_to_json(op) for op in sorted(history, key=lambda o: o.call)],
        "failed": [f for log in workload.logs for f in log.failed],
        "errors": [repr(e) for e in workload.errors + nemesis.errors],
    }
    problems = []
    if workload.errors or nemesis.errors:
        problems.append(f"errors: {report['errors']}")
    if verdict.ok is None:
        problems.append(
            f"key {verdict.key!r} is not linearizable with unseen unknown writes left out, "
            "and the full search (which may place them) ran out of time"
        )
    elif not verdict.ok:
        problems.append(f"not linearizable on key {verdict.key!r} (checked by {verdict.by})")
    if min(counts.get(k, 0) for k in ("get_ok", "set_ok", "cas_ok")) == 0:
        problems.append(f"no progress of some kind: {counts}")
    if {e.action for e in nemesis.events} < {"kill", "pause", "partition"}:
        problems.append("the nemesis did not inject every kind of fault")
    if verdict.ok and not _catches_a_bad_read(history):
        problems.append("the checker accepted this history with a read of a never-written value")
    if problems:
        report["problems"] = problems
        path = save_failure(f"kv-seed{seed}", report, cluster)
        raise AssertionError(f"{'; '.join(problems)}; saved to {path}")
    print(
        f"kv seed {seed}: {len(history)} ops {counts}, {len(nemesis.events)} fault events, "
        f"checked ({verdict.by}) in {check_s:.2f}s"
    )


def _catches_a_bad_read(history: list[Operation]) -> bool:
    """The check is not vacuous for this very history: one successful read changed to a
    value nobody wrote must make it fail."""
    reads = [op for op in history if op.kind == "get" and op.output is not UNKNOWN]
    if not reads:
        return True
    bad = max(reads, key=lambda op: op.call)
    tampered = [
        dataclasses.replace(op, output="never-written") if op is bad else op for op in history
    ]
    return not check_history(resolve_unknowns(tampered)).ok


def counter_run(
    make_cluster: MakeCluster, seed: int, seconds: float, clients: int = 4, op_timeout: float = 6.0
) -> None:
    cluster = make_cluster("counter")
    nemesis = Nemesis(cluster, random.Random(seed), weights=FAULTS)
    sessions: list[RaftClient] = []
    works: list[Workload] = []
    try:
        for _ in range(clients):
            config = client_config(cluster.addresses)
            sessions.append(RaftClient(cluster.addresses, config=config, tick_ms=10).connect(WAIT))
        works = [Workload(client, window=4, timeout=op_timeout).start() for client in sessions]
        nemesis.start()
        run_for(seconds)
        nemesis.stop()
        heal(cluster)
        for work in works:
            work.stop()
        final = sessions[0].query(["get"], timeout=WAIT)
    finally:
        nemesis.stop()
        for client in sessions:
            client.close(2.0)
    ok_values = [v for w in works for v in w.ok_values]
    ok = len(ok_values)
    unknown = sum(w.timeouts for w in works)
    errors = [repr(e) for w in works for e in w.errors] + [repr(e) for e in nemesis.errors]
    problems = []
    if errors:
        problems.append(f"errors: {errors}")
    if len(set(ok_values)) != ok:
        problems.append("two acknowledged increments saw the same value")
    if not ok <= final <= ok + unknown:
        problems.append(f"final {final} outside [{ok}, {ok} + {unknown}]: not exactly-once")
    if ok == 0:
        problems.append("no increment succeeded")
    if problems:
        report = {
            "workload": "counter",
            "seed": seed,
            "seconds": seconds,
            "final": final,
            "acknowledged": ok,
            "unknown": unknown,
            "ok_values": sorted(ok_values),
            "schedule": events_to_json(nemesis.events),
            "errors": errors,
            "problems": problems,
        }
        path = save_failure(f"counter-seed{seed}", report, cluster)
        raise AssertionError(f"{'; '.join(problems)}; saved to {path}")
    print(f"counter seed {seed}: final {final}, {ok} acknowledged, {unknown} unknown")


def test_kv_history_stays_linearizable_under_faults(make_cluster: MakeCluster) -> None:
    """Short client deadlines, so failovers leave operations with unknown outcomes."""
    kv_run(make_cluster, seed=1, seconds=20, op_timeout=1.5)


def test_a_failing_run_is_saved_as_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No processes: the artifact of a failing run holds the report, readable back."""
    directory, manifest = create_cluster(tmp_path / "c", nodes=3, app="kvstore", storage="durable")
    (directory / "n1.log").write_text("hello from n1\n")
    monkeypatch.setenv(ARTIFACTS_ENV, str(tmp_path / "artifacts"))
    ops = [
        Operation(0, "set", "a", 1.0, 2.0, True, "x"),
        Operation(1, "cas", "a", 1.5, 9.0, UNKNOWN, "y", "x"),
    ]
    report = {"seed": 7, "history": [operation_to_json(op) for op in ops], "schedule": []}
    path = save_failure("kv-seed7", report, ProcessCluster(directory, manifest))
    assert path.parent == tmp_path / "artifacts" and str(path) in capsys.readouterr().out
    saved = json.loads(path.read_text())
    assert saved["seed"] == 7 and saved["node_logs"]["n1"] == "hello from n1\n"
    assert saved["history"][1] == {
        "client": 1,
        "kind": "cas",
        "key": "a",
        "call": 1.5,
        "ret": None,
        "output": "UNKNOWN",
        "value": "y",
        "expected": "x",
    }


def test_counter_exactly_once_under_faults(make_cluster: MakeCluster) -> None:
    """Short deadlines, so failovers leave increments with unknown outcomes."""
    counter_run(make_cluster, seed=1, seconds=12, op_timeout=1.5)


@pytest.mark.long
@pytest.mark.parametrize("seed", [2, 3, 4, 5])
def test_kv_long(make_cluster: MakeCluster, seed: int) -> None:
    kv_run(make_cluster, seed=seed, seconds=60, clients=8, op_timeout=1.5 if seed % 2 else 4.0)


@pytest.mark.long
@pytest.mark.parametrize("seed", [2, 3, 4])
def test_counter_long(make_cluster: MakeCluster, seed: int) -> None:
    counter_run(make_cluster, seed=seed, seconds=45, clients=6, op_timeout=1.5 if seed % 2 else 6.0)


def test_partition_hook_cuts_the_leader_off(make_cluster: MakeCluster) -> None:
    """The partition the nemesis uses really cuts real processes apart: the isolated
    leader is replaced by one of the others, writes go on through the majority, and
    after healing the old leader catches up."""
    cluster = make_cluster("kvstore")
    leader = cluster.leader()
    before = cluster.status(leader)
    assert before is not None
    others = [m for m in cluster.members() if m != leader]
    with RaftClient(cluster.addresses, config=client_config(cluster.addresses), tick_ms=10).connect(
        WAIT
    ) as client:
        set_partition(cluster, {leader: others, **{m: [leader] for m in others}})
        cluster.leader(expect=others, not_leader=leader)
        client.call(KvSet("k", "during").to_native(), timeout=WAIT)
        got = KvGet("k").parse_result(client.query(KvGet("k").to_native(), timeout=WAIT))
        assert got.value == "during"
        heal(cluster)
    statuses = wait_for(lambda: cluster.caught_up(cluster.members()), "catching up")
    assert statuses[leader].term > before.term, "the old leader never saw the new term"
    assert statuses[leader].applied_index > before.applied_index
