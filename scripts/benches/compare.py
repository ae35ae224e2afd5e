"""``scripts/bench compare``: this project's 3-node cluster next to PySyncObj's, same machine.

    scripts/bench compare [--seconds S] [--quick] [--clients 1,16] [--storage durable,memory]
                          [--payload BYTES] [--workers W] [--pysyncobj-via leader|follower]
                          [--set FIELD=VALUE]

For each storage kind and each number N of concurrent clients, both systems do the same
small replicated write -- a counter increment carrying a ~100-byte payload -- closed
loop: each client sends its next write when the previous one was acknowledged, so N
clients = N writes in flight. Throughput counts writes acknowledged in the measured
window (after a warm-up); latency is from the call to the acknowledgement, on the
caller's side. One Markdown table, with the ratios raft-actors / PySyncObj, then notes
on what each configuration guarantees.

* raft-actors: exactly what ``scripts/bench cluster`` measures (its code is reused): 3
  ``raft-actors node --app counter`` processes, N ``RaftClient`` sessions in up to
  ``--workers`` separate client processes over ZeroMQ, command ``["inc", 0, pad]``
  (the counter's add-0 form, which skips the app's own "crossed a multiple of ten"
  notifications to other sessions -- PySyncObj has no such feature) of ``--payload``
  bytes of msgpack. durable = the nodes' durable log (SQLite, or the log file with
  ``--set durable_log=file``) with fsync before a write is acknowledged;
  memory = no disk.
* PySyncObj 0.3.17: 3 node processes on 127.0.0.1 (free ports), a ``SyncObj`` with a
  ``@replicated inc(by, pad)`` method (pad: a string of the same length as ours).
  PySyncObj has no separate client: a replicated method is called *on a node*, with a
  callback run when the entry is applied. So the N closed-loop clients are N chains of
  callbacks inside one node process (the leader by default, the best case: no client
  hop; ``--pysyncobj-via follower`` calls a follower, which forwards to the leader, a
  hop like our client's). durable = its ``journalFile`` (an mmap-ed file, written
  before the entry counts, never fsynced or msynced while running) plus
  ``fullDumpFile``; memory = neither.

PySyncObj is installed into this venv (``pip install pysyncobj==0.3.17``) by this
command only, on first use; it is not a dependency of the project. Every process started
here is stopped at the end, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PYSYNCOBJ = "pysyncobj==0.3.17"
_SETUP_S = 60.0


def _cluster_bench() -> ModuleType:
    """``scripts/benches/cluster.py`` (not a package: loaded by path, as the dispatcher does)."""
    name = "bench_cluster"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("cluster.py"))
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def ensure_pysyncobj() -> None:
    """Install PySyncObj into this venv if it is missing (only ever done here)."""
    if importlib.util.find_spec("pysyncobj") is not None:
        return
    if sys.prefix == sys.base_prefix:
        raise SystemExit(f"not in a venv: install {PYSYNCOBJ} yourself or run via scripts/bench")
    print(f"installing {PYSYNCOBJ} into {sys.prefix} (for this benchmark only)", file=sys.stderr)
    subprocess.check_call(
        [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", PYSYNCOBJ]
    )
    importlib.invalidate_caches()


# ---------------------------------------------------------------- PySyncObj node process


def pso_node_main(argv: list[str]) -> int:
    """A PySyncObj node: ``compare.py pso-node SPEC`` (JSON). Answers JSON lines on stdin:
    ``{"cmd": "status"}`` and ``{"cmd": "load", "clients": N, "start": t, "end": t}``
    (closed-loop callbacks; reports ok/errors/latencies when the window ended)."""
    from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated

    spec = json.loads(argv[0])

    class Counter(SyncObj):  # type: ignore[misc]
        def __init__(self, me: str, partners: list[str], conf: SyncObjConf) -> None:
            super().__init__(me, partners, conf)
            self.value = 0

        @replicated  # type: ignore[untyped-decorator]
        def inc(self, by: int, pad: str) -> int:
            self.value += by
            return self.value

    conf = SyncObjConf(
        journalFile=spec.get("journal"),
        fullDumpFile=spec.get("dump"),
        dynamicMembershipChange=False,
        appendEntriesUseBatch=spec["batch"],
    )
    node = Counter(spec["self"], spec["partners"], conf)
    try:
        for line in sys.stdin:
            request = json.loads(line)
            if request["cmd"] == "status":
                status = node.getStatus()
                _say(
                    {
                        "leader": bool(node._isLeader()),
                        "ready": bool(node.isReady()),
                        "applied": status["last_applied"],
                        "value": node.value,
                    }
                )
            elif request["cmd"] == "load":
                _say(_pso_load(node, FAIL_REASON.SUCCESS, request, spec["pad"]))
    finally:
        node.destroy()
    return 0


def _pso_load(node: Any, success: Any, request: dict[str, Any], pad: str) -> dict[str, Any]:
    start, end = request["start"], request["end"]
    lock = threading.Lock()
    latencies: list[int] = []
    counts = {"ok": 0, "errors": 0, "outside": 0}
    running = [request["clients"]]
    finished = threading.Event()

    def one() -> None:
        sent = time.monotonic()
        node.inc(1, pad, callback=lambda result, error: done(sent, error))

    def done(sent: float, error: Any) -> None:
        now = time.monotonic()
        with lock:
            if error != success:
                counts["errors"] += 1
            elif start <= now < end:
                counts["ok"] += 1
                latencies.append(int((now - sent) * 1e6))
            else:
                counts["outside"] += 1
        if now < end:
            one()  # on the node's tick thread: enqueues, never blocks
        else:
            with lock:
                running[0] -= 1
                if running[0] == 0:
                    finished.set()

    for _ in range(request["clients"]):
        one()
    finished.wait(max(0.0, end - time.monotonic()) + _SETUP_S)
    with lock:
        return {**counts, "latencies_us": list(latencies)}


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Child:
    """One PySyncObj node process (``compare.py pso-node SPEC``), speaking JSON lines."""

    def __init__(self, spec: dict[str, Any], log: Path) -> None:
        self.log = log
        script = str(Path(__file__).resolve())
        with log.open("w") as stderr:
            self.line = _cluster_bench().LineChild(
                [sys.executable, script, "pso-node", json.dumps(spec)], "PySyncObj node", stderr
            )
        self.proc: subprocess.Popen[str] = self.line.proc

    def ask(self, obj: dict[str, Any], timeout: float) -> dict[str, Any]:
        answer: dict[str, Any] = self.line.ask(obj, timeout)
        return answer

    def stop(self) -> None:
        if self.proc.poll() is None:
            if self.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    self.proc.stdin.close()  # ends its loop: destroy() and exit
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait(timeout=10)


# ---------------------------------------------------------------- measuring


@dataclass(frozen=True, slots=True)
class Result:
    system: str
    storage: str
    clients: int
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int


def run_pysyncobj(
    storage: str, args: argparse.Namespace, results: list[Result], checks: list[Agreement]
) -> None:
    """Start 3 PySyncObj nodes with ``storage``, run every N against them, stop them."""
    from actors.cluster import free_ports

    bench = _cluster_bench()
    base = Path(tempfile.mkdtemp(prefix=f"bench-pysyncobj-{storage}-"))
    addresses = [f"127.0.0.1:{p}" for p in free_ports(3)]
    pad = "x" * max(0, args.payload - 10)
    children: list[Child] = []
    try:
        for i, me in enumerate(addresses):
            spec: dict[str, Any] = {
                "self": me,
                "partners": [a for a in addresses if a != me],
                "pad": pad,
                "batch": args.batch,
            }
            if storage == "durable":
                spec["journal"] = str(base / f"n{i + 1}.journal")
                spec["dump"] = str(base / f"n{i + 1}.dump")
            children.append(Child(spec, base / f"n{i + 1}.log"))
        deadline = time.monotonic() + _SETUP_S
        while True:
            states = [c.ask({"cmd": "status"}, _SETUP_S) for c in children]
            leaders = [i for i, s in enumerate(states) if s["leader"]]
            if len(leaders) == 1 and all(s["ready"] for s in states):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"PySyncObj elected no leader: {states}")
            time.sleep(0.1)
        leader = leaders[0]
        target = children[leader if args.via == "leader" else (leader + 1) % 3]
        for n in args.clients:
            start = time.monotonic() + args.warmup  # calls start now: warm-up, as ours
            end = start + args.seconds
            got = target.ask(
                {"cmd": "load", "clients": n, "start": start, "end": end},
                end - time.monotonic() + _SETUP_S,
            )
            latencies = sorted(got["latencies_us"])
            result = Result(
                "PySyncObj",
                storage,
                n,
                got["ok"] / args.seconds,
                bench.percentile(latencies, 0.50),
                bench.percentile(latencies, 0.99),
                got["errors"],
            )
            results.append(result)
            _progress(result)
        checks.append(agreement(storage, children))
    finally:
        for c in children:
            c.stop()
        shutil.rmtree(base, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class Agreement:
    """After the load: did PySyncObj's replicas apply the same number of entries and end
    with the same counter, and how often did a follower log that it truncated entries it
    had already applied (PySyncObj's own CRITICAL message)?"""

    storage: str
    agreed: bool
    values: tuple[int, ...]
    applied: tuple[int, ...]
    truncations: int


def agreement(storage: str, children: list[Child]) -> Agreement:
    deadline = time.monotonic() + 15.0
    while True:
        states = [c.ask({"cmd": "status"}, _SETUP_S) for c in children]
        applied = tuple(s["applied"] for s in states)
        if len(set(applied)) == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    values = tuple(s["value"] for s in states)
    truncations = sum(
        c.log.read_text(errors="replace").count("truncating already-applied") for c in children
    )
    agreed = len(set(applied)) == 1 and len(set(values)) == 1
    return Agreement(storage, agreed, values, applied, truncations)


def run_ours(storage: str, args: argparse.Namespace, results: list[Result]) -> None:
    """``scripts/bench cluster``'s run for one storage kind (its own start/stop)."""
    bench = _cluster_bench()
    rows: list[Any] = []
    bench_args = bench.parse_args(
        [
            f"--seconds={args.seconds}",
            f"--warmup={args.warmup}",
            "--clients=" + ",".join(map(str, args.clients)),
            f"--workers={args.workers}",
            f"--payload={args.payload}",
            "--command=inc0",
            *(f"--set={pair}" for pair in args.set),
        ]
    )
    bench.run_storage(storage, bench_args, rows)
    for row in rows:
        results.append(
            Result(
                "raft-actors", storage, row.clients, row.rate, row.p50_ms, row.p99_ms, row.errors
            )
        )


def _progress(r: Result) -> None:
    print(
        f"  {r.system:>11} {r.storage:>7} {r.clients:>3} clients: {r.rate:>8,.0f} writes/s, "
        f"p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms",
        file=sys.stderr,
    )


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b > 0 and a == a and b == b else "n/a"


def table(results: list[Result], checks: list[Agreement], args: argparse.Namespace) -> str:
    by = {(r.system, r.storage, r.clients): r for r in results}
    lines = [
        "| storage | clients | raft-actors writes/s | p50 ms | p99 ms "
        "| PySyncObj writes/s | p50 ms | p99 ms | throughput ratio | p50 ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for storage in args.storages:
        for n in args.clients:
            ours, theirs = by.get(("raft-actors", storage, n)), by.get(("PySyncObj", storage, n))
            cells = [storage, str(n)]
            for r in (ours, theirs):
                if r is None:
                    cells += ["-", "-", "-"]
                else:
                    errs = f" ({r.errors} errors)" if r.errors else ""
                    cells += [f"{r.rate:,.0f}{errs}", f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}"]
            if ours and theirs:
                cells += [_ratio(ours.rate, theirs.rate), _ratio(ours.p50_ms, theirs.p50_ms)]
            else:
                cells += ["-", "-"]
            lines.append("| " + " | ".join(cells) + " |")
    via = "the leader node" if args.via == "leader" else "a follower node (forwarded)"
    mode = (
        "its default `appendEntriesUseBatch=True` (new entries go out on the next 100 ms tick)"
        if args.batch
        else "`appendEntriesUseBatch=False` (each write goes to the followers at once;\n"
        "  its default batching mode waits for a 100 ms tick and is far slower closed-loop:\n"
        "  see `--pysyncobj-batch`)"
    )
    agreement_lines = "".join(
        f"- PySyncObj {c.storage}: replicas "
        + (
            f"agreed at the end (counter {c.values[0]}, {c.applied[0]} entries applied)"
            if c.agreed
            else f"did NOT agree at the end: counters {c.values}, applied {c.applied}"
        )
        + f"; its followers logged {c.truncations} times 'truncating already-applied log "
        "entries ... state machine may have diverged' (it truncates whenever an "
        "AppendEntries has an older prevLogIdx, conflict or not).\n"
        for c in checks
    )
    notes = f"""
Ratios are raft-actors / PySyncObj (throughput: higher is better for us; p50: lower is).
3 nodes each on 127.0.0.1, {os.cpu_count()} CPUs shared by everything; {args.seconds:g} s
per row after {args.warmup:g} s of warm-up; each client keeps 1 write in flight.
raft-actors node settings: {", ".join(f"`{pair}`" for pair in args.set) or "the defaults"}.

What is measured and guaranteed:
- raft-actors clients are {max(args.clients)} or fewer `RaftClient` sessions in up to
  {args.workers} separate processes over ZeroMQ (a network hop each way). A write is
  acknowledged once committed by a majority and applied; sessions make it exactly-once
  (a retried write is not applied twice, its cached response is returned), and reads
  (not measured here) are linearizable queries through the log.
- PySyncObj has no client: the calls are made inside {via} (a callback per applied
  entry), in the same process (one GIL) as that node's Raft work.
  PySyncObj mode: {mode}.
  No sessions: a call retried after a lost answer may be applied twice; reads of the
  local object are not linearizable (a follower or a deposed leader can be stale).
- durable: raft-actors writes each entry to its durable log (SQLite, or its own log file
  with `durable_log=file`) and fsyncs before it counts (survives power loss).
  PySyncObj's `journalFile` is written through mmap and never fsynced or msynced while
  running: it survives a killed process, not an OS crash or power loss.
- memory: neither touches the disk; a write survives as long as a majority of
  processes does.
{agreement_lines}"""
    return "\n".join(lines) + "\n" + notes


def main(argv: list[str]) -> int:
    bench = _cluster_bench()
    parser = argparse.ArgumentParser(
        prog="scripts/bench compare",
        description="raft-actors and PySyncObj 3-node clusters, same writes, one table.",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="per row (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--quick", action="store_true", help="2 s per row, 0.5 s warm-up")
    parser.add_argument("--clients", type=bench.client_counts, default=[1, 16], help="e.g. 1,16,64")
    parser.add_argument("--storage", default="durable,memory", help="durable,memory")
    parser.add_argument("--payload", type=int, default=100, help="write bytes (default 100)")
    parser.add_argument("--workers", type=int, default=4, help="our client processes")
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="one of our node settings"
    )
    parser.add_argument(
        "--pysyncobj-via",
        dest="via",
        choices=("leader", "follower"),
        default="leader",
        help="which PySyncObj node the calls are made on (default leader)",
    )
    parser.add_argument(
        "--pysyncobj-batch",
        dest="batch",
        action="store_true",
        help="PySyncObj's default appendEntriesUseBatch=True (entries go out every 100 ms "
        "tick); without it, each write is sent to the followers at once",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup = 2.0, 0.5
    if args.workers < 1 or args.seconds <= 0 or args.payload < 10:
        parser.error("--workers must be >= 1, --seconds > 0, --payload >= 10")
    args.storages = [s.strip() for s in args.storage.split(",") if s.strip()]
    if not args.storages or set(args.storages) - {"durable", "memory"}:
        parser.error("--storage takes durable and/or memory")
    ensure_pysyncobj()

    results: list[Result] = []
    checks: list[Agreement] = []

    def body() -> None:
        for storage in args.storages:
            run_ours(storage, args, results)
            run_pysyncobj(storage, args, results, checks)

    code: int = bench.run_and_print(body, lambda: table(results, checks, args) if results else None)
    return code


if __name__ == "__main__":
    if sys.argv[1:2] == ["pso-node"]:
        # Ctrl-C reaches the whole process group: the parent stops us.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        sys.exit(pso_node_main(sys.argv[2:]))
    sys.exit(main(sys.argv[1:]))
