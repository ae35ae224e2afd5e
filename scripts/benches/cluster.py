"""``scripts/bench cluster``: a real 3-node cluster on loopback under N concurrent clients.

    scripts/bench cluster [--seconds S] [--quick] [--clients 1,8,64] [--workers W]
                          [--window K] [--loop shared|private] [--payload BYTES]
                          [--storage durable,memory]
                          [--command inc0|inc1]

For each storage kind (durable: SQLite + fsync, or the log file with
``--set durable_log=file``; then in-memory) it starts 3 node
processes (``raft-actors node --app counter``, via :mod:`actors.cluster`) and, for each
N, runs N clients for ``--seconds`` (after a short warm-up), then prints one Markdown
table: committed commands/s (responses received in the measured window), p50/p99
latency (submit to response, on the client), and the CPU each kind of process used
(100% = one core; this machine may have only two).

Client side, so that one GIL does not cap it: N ``RaftClient`` sessions spread over
``--workers`` client processes (default 4; fewer when N is smaller). Each client is
closed-loop with ``--window`` commands in flight (default 1: it sends the next command
when the previous one's response arrived, so N clients = N commands in flight). The
clients of one worker share one ``ClientLoop`` (one thread, one ZeroMQ context, one
DEALER per 8 sessions carrying batched frames), as an application with many sessions
would; ``--loop private``
gives each client its own loop thread (the default for a lone ``RaftClient``).

The command: the counter expects ``["inc", n]`` and ignores further elements, so the
command is ``["inc", n, "xxx..."]`` padded to exactly ``--payload`` bytes of msgpack
(default 100). ``inc0`` (default) adds 0; ``inc1`` adds 1. The difference matters: the
counter sends a ``crossed`` server request to *every other* live session whenever the
value crosses a multiple of 10, so with 64 sessions ``inc1`` makes ~6 server requests
(plus their acknowledgements, which go through the log) per command. ``inc0`` measures
the command path (propose, replicate, fsync, commit, apply, respond) without that
fan-out; ``inc1`` measures the notification feature as well.

Every process started here is stopped at the end (nodes SIGTERM then SIGKILL, client
workers killed), also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Literal

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: Seconds to wait for clients to open their sessions / for a worker's final report.
_SETUP_S = 60.0
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# ---------------------------------------------------------------- the command


def command(kind: str, size: int) -> list[Any]:
    """``["inc", n, pad]`` whose msgpack encoding is exactly ``size`` bytes (or as
    small as it gets)."""
    import msgpack

    by = 1 if kind == "inc1" else 0
    pad = ""
    while len(msgpack.packb(["inc", by, pad])) < size:
        pad += "x"
    return ["inc", by, pad]


# ---------------------------------------------------------------- client worker process


def worker_main(argv: list[str]) -> int:
    """A client process: ``cluster.py worker SPEC`` (JSON). Opens its clients, says
    ``ready``, waits for ``go`` with the measuring window on stdin, runs closed-loop
    until the window ends, reports one JSON line and exits."""
    from actors.client import ClientConfig, ClientLoop, RaftClient

    spec = json.loads(argv[0])
    addresses: list[str] = spec["addresses"]
    window: int = spec["window"]
    cmd = spec["command"]
    shared = ClientLoop(name="bench-clients") if spec.get("loop", "shared") == "shared" else None

    config = ClientConfig(tuple(addresses), max_in_flight=max(window, 1))
    clients = []
    try:
        for _ in range(spec["clients"]):
            client = RaftClient(addresses, config=config, loop=shared)
            clients.append(client.connect(_SETUP_S))
        _say({"ready": True})
        go = json.loads(sys.stdin.readline() or "null")
        if go is None:
            return 1  # the parent went away
        start, end = go["start"], go["end"]
        lock = threading.Lock()
        latencies: list[int] = []
        counts = {"ok": 0, "errors": 0, "outside": 0}
        running = [len(clients) * window]
        finished = threading.Event()

        def one(client: RaftClient) -> None:
            sent = time.monotonic()
            future = client.submit(cmd, timeout=30.0)
            future.add_done_callback(lambda f: done(client, sent, f))

        def done(client: RaftClient, sent: float, future: Any) -> None:
            now = time.monotonic()
            with lock:
                if future.exception() is not None:
                    counts["errors"] += 1
                elif start <= now < end:
                    counts["ok"] += 1
                    latencies.append(int((now - sent) * 1e6))
                else:
                    counts["outside"] += 1
            if now < end:
                one(client)  # on the client's loop thread: submit never blocks
            else:
                with lock:
                    running[0] -= 1
                    if running[0] == 0:
                        finished.set()

        for client in clients:
            for _ in range(window):
                one(client)
        finished.wait(max(0.0, end - time.monotonic()) + _SETUP_S)
        with lock:
            _say({**counts, "latencies_us": latencies})
    finally:
        for client in clients:
            client.close(timeout=2.0)
        if shared is not None:
            shared.close(timeout=2.0)
    return 0


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------- the parent


class LineChild:
    """A child process that speaks JSON lines on stdin/stdout, with a thread reading its
    stdout (used for client workers here and PySyncObj nodes in ``compare``)."""

    def __init__(self, argv: list[str], what: str, stderr: Any = None) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        self.what = what
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env
        )
        self.lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def read(self, deadline: float) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise RuntimeError(f"{self.what} {self.proc.pid} did not answer in time") from None
        if line is None:
            raise RuntimeError(f"{self.what} {self.proc.pid} exited ({self.proc.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def tell(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()

    def ask(self, obj: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.tell(obj)
        return self.read(time.monotonic() + timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


class Worker(LineChild):
    """One client process (``cluster.py worker SPEC``)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        script = str(Path(__file__).resolve())
        super().__init__([sys.executable, script, "worker", json.dumps(spec)], "client worker")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 if unreadable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


@dataclass(frozen=True, slots=True)
class Row:
    storage: str
    clients: int
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_leader: float
    cpu_followers: float
    cpu_clients: float


def percentile(ordered: list[int], p: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] / 1000


def run_clients(
    addresses: list[str],
    node_pids: dict[str, int],
    leader: str,
    storage: str,
    n: int,
    args: argparse.Namespace,
    workers: list[Worker],
) -> Row:
    """One table row: N clients over min(N, --workers) processes."""
    procs = min(n, args.workers)
    cmd = command(args.command, args.payload)
    mine = []
    for i in range(procs):
        share = n // procs + (1 if i < n % procs else 0)
        spec = {
            "addresses": addresses,
            "clients": share,
            "window": args.window,
            "command": cmd,
            "loop": args.loop,
        }
        w = Worker(spec)
        workers.append(w)
        mine.append(w)
    deadline = time.monotonic() + _SETUP_S
    for w in mine:
        w.read(deadline)  # ready
    start = time.monotonic() + args.warmup
    end = start + args.seconds
    for w in mine:
        w.tell({"start": start, "end": end})
    pids = {**{f"node:{m}": p for m, p in node_pids.items()}, **{
        f"client:{w.proc.pid}": w.proc.pid for w in mine}}  # fmt: skip
    time.sleep(max(0.0, start - time.monotonic()))
    before = {k: cpu_seconds(p) for k, p in pids.items()}
    time.sleep(max(0.0, end - time.monotonic()))
    used = {k: (cpu_seconds(p) - before[k]) / args.seconds * 100 for k, p in pids.items()}
    results = [w.read(end + _SETUP_S) for w in mine]
    for w in mine:
        w.proc.wait(timeout=_SETUP_S)
    latencies = sorted(x for r in results for x in r["latencies_us"])
    ok = sum(r["ok"] for r in results)
    return Row(
        storage=storage,
        clients=n,
        rate=ok / args.seconds,
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
        errors=sum(r["errors"] for r in results),
        cpu_leader=used[f"node:{leader}"],
        cpu_followers=sum(v for k, v in used.items() if k.startswith("node:") and k[5:] != leader),
        cpu_clients=sum(v for k, v in used.items() if k.startswith("client:")),
    )


def run_storage(storage: str, args: argparse.Namespace, rows: list[Row]) -> None:
    """Start a fresh cluster with ``storage``, run every N against it, stop it."""
    from actors.client import fetch_status
    from actors.cluster import create_cluster, spawn_member, stop_members, wait_for_leader

    base = Path(tempfile.mkdtemp(prefix=f"bench-cluster-{storage}-"))
    if storage not in ("durable", "memory"):
        raise SystemExit(f"unknown storage {storage!r} (durable or memory)")
    kind: Literal["durable", "memory"] = "durable" if storage == "durable" else "memory"
    directory, manifest = create_cluster(
        base / "cluster", nodes=3, app="counter", storage=kind, settings=args.settings
    )
    workers: list[Worker] = []
    members = [m.member_id for m in manifest.members]
    ok = False
    try:
        for m in members:
            manifest = manifest.with_pid(m, spawn_member(directory, manifest, m))
        result = wait_for_leader(
            directory, manifest, lambda a: fetch_status(a, timeout=1.0), timeout=30.0
        )
        if result.leader is None:
            raise RuntimeError(f"no leader within 30 s; see the logs in {directory}")
        pids = {m.member_id: m.pid for m in manifest.members if m.pid is not None}
        for n in args.clients:
            row = run_clients(
                manifest.client_addresses, pids, result.leader, storage, n, args, workers
            )
            rows.append(row)
            print(f"  {storage:>7} {n:>3} clients: {row.rate:>8,.0f} commands/s, "
                  f"p50 {row.p50_ms:.2f} ms, p99 {row.p99_ms:.2f} ms", file=sys.stderr)  # fmt: skip
        ok = True
    except KeyboardInterrupt:
        ok = True  # nothing to look into: delete the directory
        raise
    finally:
        for w in workers:
            w.kill()
        stop_members(directory, manifest, members, timeout=10.0)
        if ok and not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"cluster directory kept: {directory}", file=sys.stderr)


def cpu_us_per_command(r: Row) -> float:
    """CPU of every process (leader, followers, clients) per committed command, in µs:
    steadier than commands/s on a shared machine, where what is saturated is the CPU."""
    used = r.cpu_leader + r.cpu_followers + r.cpu_clients  # % of one core
    return used * 1e4 / r.rate if r.rate else float("nan")


def table(rows: list[Row], args: argparse.Namespace) -> str:
    head = (
        "| storage | clients | commands/s | p50 ms | p99 ms | errors "
        "| CPU leader | CPU followers | CPU clients | CPU µs/cmd |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    body = "".join(
        f"| {r.storage} | {r.clients} | {r.rate:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
        f"| {r.errors} | {r.cpu_leader:.0f}% | {r.cpu_followers:.0f}% | {r.cpu_clients:.0f}% "
        f"| {cpu_us_per_command(r):.0f} |\n"
        for r in rows
    )
    note = (
        f"\n3 nodes on loopback, counter app, {args.payload}-byte `{args.command}` commands, "
        f"{args.seconds:g} s per row, window {args.window} per client, up to "
        f"{args.workers} client processes ({args.loop} client loops); "
        f"{os.cpu_count()} CPUs.\n"
    )
    return head + body + note


def client_counts(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("client counts must be >= 1")
    return values


def raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_and_print(body: Callable[[], None], render: Callable[[], str | None]) -> int:
    """Run ``body`` (which fills the rows that ``render`` prints), then print the table.

    Ctrl-C and SIGTERM both end up as KeyboardInterrupt (even if SIGINT was ignored
    when we were started in the background), so the benches' finally blocks stop every
    process; then the rows measured so far are printed and 130 is returned."""
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        body()
    except KeyboardInterrupt:
        print("interrupted; every process was stopped", file=sys.stderr)
        code = 130
    else:
        code = 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    text = render()
    if text is not None:
        print(text)
    return code


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The options of ``scripts/bench cluster`` (also used by ``scripts/bench compare``
    to run this benchmark's rows), checked and with ``settings`` filled in."""
    parser = argparse.ArgumentParser(
        prog="scripts/bench cluster",
        description="A 3-node cluster on loopback under N concurrent clients.",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="per row (default 10)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--quick", action="store_true", help="2 s per row, 0.5 s warm-up")
    parser.add_argument("--clients", type=client_counts, default=[1, 8, 64], help="e.g. 1,8,64")
    parser.add_argument("--workers", type=int, default=4, help="client processes (default 4)")
    parser.add_argument("--window", type=int, default=1, help="commands in flight per client")
    parser.add_argument(
        "--loop",
        choices=("shared", "private"),
        default="shared",
        help="clients of a worker share one ClientLoop (default) or have one each",
    )
    parser.add_argument("--payload", type=int, default=100, help="command bytes (default 100)")
    parser.add_argument("--command", choices=("inc0", "inc1"), default="inc0")
    parser.add_argument("--storage", default="durable,memory", help="durable,memory")
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="a node setting"
    )
    parser.add_argument("--keep", action="store_true", help="keep the cluster directories")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup = 2.0, 0.5
    if args.workers < 1 or args.window < 1 or args.seconds <= 0:
        parser.error("--workers and --window must be >= 1, --seconds > 0")
    storages = [s.strip() for s in args.storage.split(",") if s.strip()]
    if not storages or set(storages) - {"durable", "memory"}:
        parser.error("--storage takes durable and/or memory")
    from actors.cluster import parse_setting

    try:
        args.settings = dict(parse_setting(pair) for pair in args.set)
    except ValueError as exc:
        parser.error(str(exc))
    args.storages = storages
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    rows: list[Row] = []

    def body() -> None:
        for storage in args.storages:
            run_storage(storage, args, rows)

    return run_and_print(body, lambda: table(rows, args) if rows else None)


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        # Ctrl-C reaches the whole process group: the parent stops (kills) us.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        sys.exit(worker_main(sys.argv[2:]))
    sys.exit(main(sys.argv[1:]))
