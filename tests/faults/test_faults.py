"""Fault runs: real node processes, concurrent clients, a seeded nemesis, checked histories.

* kv runs: 6-8 clients doing get (query) / set / cas on 3 keys of the kv store while
  the nemesis (``harness.Nemesis``) kills (``kill -9``) and restarts nodes, pauses them
  (SIGSTOP/SIGCONT), and partitions them: one node cut off, the leader with a minority
  cut off from the majority, one-sided cuts (a node's outgoing or incoming frames
  lost), single links cut -- the leader more often, several faults at once, and on some
  schedules more than a minority down for a while (the workload stalls; nothing may be
  lost). The whole history must be linearizable
  (:func:`tests.checker.linearizability.check_history`).
* counter runs: 4-6 clients each keeping increments in flight under the same kind of
  nemesis; exactly-once: every acknowledged increment saw a distinct value, and the
  final value is the number of acknowledged increments plus at most the number whose
  outcome stayed unknown.

Each run also fails if its schedule was vacuous (a fault kind it asked for never
happened, no two faults overlapped, the majority was never lost when it should be).

A failing run saves its history, the nemesis schedule that ran and the node log tails
to a JSON file (``$RAFT_FAULTS_DIR``, default ``<tmp>/raft-actors-faults``) and prints
its path. The default suite runs one short run of each (kv on 5 nodes, counter on 3);
``scripts/test --long`` runs more seeds, longer, on 3 and 5 nodes.
"""

from __future__ import annotations

import dataclasses
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from actors.client import RaftClient
from actors.cluster import create_cluster
from examples.kvstore import KvGet, KvSet
from tests.checker.linearizability import UNKNOWN, Operation, check_history
from tests.cluster_procs import WAIT, ProcessCluster, Workload, wait_for
from tests.conftest import LONG
from tests.faults.harness import (
    ARTIFACTS_ENV,
    KINDS,
    KvClients,
    Nemesis,
    client_config,
    enable_partitions,
    events_to_json,
    heal,
    operation_to_json,
    save_failure,
    set_cuts,
)
from tests.faults.history import check_kv_history, resolve_unknowns

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800 if LONG else 180)]

MakeCluster = Callable[..., ProcessCluster]
#: Every fault kind, once per deck.
ALL_FAULTS = dict.fromkeys(KINDS, 1)
#: Node settings under test: the defaults, and the fast ones the README measures (the
#: actors on the transports' I/O threads, log writes on the consensus actor's thread,
#: into the log file).
FAST: dict[str, int | str] = {
    "actor_threads": "transport",
    "storage_writes": "inline",
    "durable_log": "file",
}
NODE_SETTINGS = pytest.mark.parametrize("settings", [{}, FAST], ids=["default", "fast"])


@dataclass(frozen=True)
class Schedule:
    """The nemesis of one run: which faults, how many at once, how often a fault may
    take the majority away."""

    weights: dict[str, int] = dataclasses.field(default_factory=lambda: dict(ALL_FAULTS))
    max_faults: int = 2
    majority_loss: float = 0.0

    def nemesis(self, cluster: ProcessCluster, seed: int) -> Nemesis:
        return Nemesis(
            cluster,
            random.Random(seed),
            weights=self.weights,
            max_faults=self.max_faults,
            majority_loss=self.majority_loss,
        )

    def shortfalls(self, nemesis: Nemesis) -> list[str]:
        """What this schedule was meant to do and the run did not (a vacuous run)."""
        problems = []
        missing = set(self.weights) - nemesis.kinds_injected()
        if missing:
            problems.append(f"the nemesis never injected {sorted(missing)}")
        if self.max_faults > 1 and nemesis.max_overlap < 2:
            problems.append("no two faults ever overlapped")
        if self.majority_loss > 0 and nemesis.majority_losses == 0:
            problems.append("the majority was never lost")
        return problems


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[MakeCluster]:
    """Builds started durable clusters of ``app`` (3 or 5 nodes) whose nodes can be
    partitioned; SIGKILLs every process after."""
    made: list[ProcessCluster] = []

    def make(
        app: str, nodes: int = 3, settings: dict[str, int | str] | None = None
    ) -> ProcessCluster:
        directory, manifest = create_cluster(
            tmp_path / f"cluster{len(made)}",
            nodes=nodes,
            app=app,
            storage="durable",
            settings=settings,
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
    make_cluster: MakeCluster,
    seed: int,
    seconds: float,
    *,
    nodes: int = 3,
    schedule: Schedule = Schedule(),
    clients: int = 6,
    op_timeout: float = 4.0,
    settings: dict[str, int | str] | None = None,
) -> None:
    cluster = make_cluster("kvstore", nodes, settings)
    workload = KvClients(cluster.addresses, clients, ["a", "b", "c"], seed, op_timeout=op_timeout)
    nemesis = schedule.nemesis(cluster, seed)
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
        "nodes": nodes,
        "nemesis": dataclasses.asdict(schedule),
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
    problems += schedule.shortfalls(nemesis)
    if verdict.ok and not _catches_a_bad_read(history):
        problems.append("the checker accepted this history with a read of a never-written value")
    if problems:
        report["problems"] = problems
        path = save_failure(f"kv-seed{seed}", report, cluster)
        raise AssertionError(f"{'; '.join(problems)}; saved to {path}")
    print(
        f"kv {nodes} nodes seed {seed}: {len(history)} ops {counts}, {describe(nemesis)}, "
        f"checked ({verdict.by}) in {check_s:.2f}s"
    )


def describe(nemesis: Nemesis) -> str:
    """The run's fault statistics, for the test output."""
    starts = [e for e in nemesis.events if e.action in KINDS]
    return (
        f"{len(starts)} faults ({sum(e.was_leader for e in starts)} on the leader; "
        f"{', '.join(f'{k} {sum(e.action == k for e in starts)}' for k in KINDS)}), "
        f"{len(nemesis.events)} events, up to {nemesis.max_overlap} at once, "
        f"majority lost {nemesis.majority_losses}x"
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
    make_cluster: MakeCluster,
    seed: int,
    seconds: float,
    *,
    nodes: int = 3,
    schedule: Schedule = Schedule(),
    clients: int = 4,
    op_timeout: float = 6.0,
    settings: dict[str, int | str] | None = None,
) -> None:
    cluster = make_cluster("counter", nodes, settings)
    nemesis = schedule.nemesis(cluster, seed)
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
        for work in works:
            work.halt()  # a failed run must not leave workload threads behind
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
    problems += schedule.shortfalls(nemesis)
    if problems:
        report = {
            "workload": "counter",
            "seed": seed,
            "seconds": seconds,
            "nodes": nodes,
            "nemesis": dataclasses.asdict(schedule),
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
    print(
        f"counter {nodes} nodes seed {seed}: final {final}, {ok} acknowledged, "
        f"{unknown} unknown, {describe(nemesis)}"
    )


@NODE_SETTINGS
def test_kv_history_stays_linearizable_under_faults(
    make_cluster: MakeCluster, settings: dict[str, int | str]
) -> None:
    """5 nodes, every fault kind, up to 3 at once, now and then without a majority;
    short client deadlines, so failovers leave operations with unknown outcomes."""
    schedule = Schedule(max_faults=3, majority_loss=0.4)
    kv_run(
        make_cluster,
        seed=1,
        seconds=20,
        nodes=5,
        schedule=schedule,
        op_timeout=1.5,
        settings=settings,
    )


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


@NODE_SETTINGS
def test_counter_exactly_once_under_faults(
    make_cluster: MakeCluster, settings: dict[str, int | str]
) -> None:
    """3 nodes, every fault kind, two at once, often without a majority (2 of 3 down);
    short deadlines, so failovers leave increments with unknown outcomes."""
    schedule = Schedule(max_faults=2, majority_loss=0.5)
    counter_run(
        make_cluster, seed=1, seconds=12, schedule=schedule, op_timeout=1.5, settings=settings
    )


#: The long runs: (nodes, seed, max faults at once, odds of breaking the majority);
#: every third seed runs with the :data:`FAST` settings.
LONG_KV = [(3, 2, 1, 0.0), (5, 3, 2, 0.0), (3, 4, 2, 0.4), (5, 5, 3, 0.25), (5, 6, 2, 0.0)]
LONG_COUNTER = [(3, 2, 2, 0.4), (5, 3, 2, 0.0), (5, 4, 3, 0.3), (3, 5, 1, 0.0)]


def long_settings(seed: int) -> dict[str, int | str]:
    return FAST if seed % 3 == 0 else {}


@pytest.mark.long
@pytest.mark.parametrize(("nodes", "seed", "max_faults", "majority_loss"), LONG_KV)
def test_kv_long(
    make_cluster: MakeCluster, nodes: int, seed: int, max_faults: int, majority_loss: float
) -> None:
    schedule = Schedule(max_faults=max_faults, majority_loss=majority_loss)
    kv_run(
        make_cluster,
        seed=seed,
        seconds=60,
        nodes=nodes,
        schedule=schedule,
        clients=8,
        op_timeout=1.5 if seed % 2 else 4.0,
        settings=long_settings(seed),
    )


@pytest.mark.long
@pytest.mark.parametrize(("nodes", "seed", "max_faults", "majority_loss"), LONG_COUNTER)
def test_counter_long(
    make_cluster: MakeCluster, nodes: int, seed: int, max_faults: int, majority_loss: float
) -> None:
    schedule = Schedule(max_faults=max_faults, majority_loss=majority_loss)
    counter_run(
        make_cluster,
        seed=seed,
        seconds=45,
        nodes=nodes,
        schedule=schedule,
        clients=6,
        op_timeout=1.5 if seed % 2 else 6.0,
        settings=long_settings(seed),
    )


def test_one_way_cut_of_the_leader(make_cluster: MakeCluster) -> None:
    """The one-sided partition the nemesis uses really cuts one direction between real
    processes: the leader's outgoing frames are lost, its incoming ones are not. The
    others stop hearing it and elect one of themselves; the old leader still hears
    them, so it learns the new term and steps down *while cut*; writes go on through the
    majority, and after healing the old leader catches up."""
    cluster = make_cluster("kvstore")
    leader = cluster.leader()
    before = cluster.status(leader)
    assert before is not None
    others = [m for m in cluster.members() if m != leader]
    with RaftClient(cluster.addresses, config=client_config(cluster.addresses), tick_ms=10).connect(
        WAIT
    ) as client:
        set_cuts(cluster, {(leader, m) for m in others})
        cluster.leader(expect=others, not_leader=leader)

        def stepped_down() -> bool:
            st = cluster.status(leader)
            return st is not None and st.role.lower() != "leader" and st.term > before.term

        wait_for(stepped_down, "the cut-off leader hearing the new term")
        client.call(KvSet("k", "during").to_native(), timeout=WAIT)
        got = KvGet("k").parse_result(client.query(KvGet("k").to_native(), timeout=WAIT))
        assert got.value == "during"
        heal(cluster)
    statuses = wait_for(lambda: cluster.caught_up(cluster.members()), "catching up")
    assert statuses[leader].applied_index > before.applied_index
