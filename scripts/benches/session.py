"""``scripts/bench session``: throughput of SessionStateMachine.apply, snapshot and restore.

Times are CPU seconds of this process (``time.process_time``), so other load on the
machine does not distort them; the wall-clock rate is printed too.

Part 1 applies ClientRequests to the counter example from many sessions, each client
keeping a small window of requests in flight and sending its real lowest pending id, so
the response cache must stay bounded by sessions x window. Commands alternate increment
and decrement (the value never crosses a multiple of 10, so this measures the request
path, not server-request fan-out). Command objects are built in batches outside the
timed region, as a host would receive them already decoded from the log.

Part 2 builds N sessions (each with cached responses and a user key), then times
``snapshot()`` and ``restore()`` and checks the restored state re-snapshots identically.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import msgpack

from examples.counter import CounterStateMachine, decrement, increment
from protocol.ids import RequestId, SessionId
from protocol.session import ClientRequest, CreateSession, SessionStateMachine

BATCH = 20_000


def peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def requests(sm: SessionStateMachine, n: int, sessions: int, window: int) -> tuple[float, float]:
    """Apply ``n`` ClientRequests round-robin over ``sessions``; return (wall s, CPU s)."""
    index = sm.last_applied
    sids = [SessionId(f"client-{i:06d}") for i in range(sessions)]
    for sid in sids:
        index += 1
        sm.apply(index, CreateSession(sid, {"counter": "v1"}, index))
    commands = (msgpack.packb(increment()), msgpack.packb(decrement()))
    next_rid = [1] * sessions
    elapsed = cpu = 0.0
    done = 0
    while done < n:
        batch = []
        for k in range(done, min(n, done + BATCH)):
            s = k % sessions
            rid = next_rid[s]
            next_rid[s] = rid + 1
            # the client's oldest unanswered request: a window of `window` in flight
            lowest = rid - window + 1 if rid > window else 1
            batch.append(
                ClientRequest(sids[s], RequestId(rid), RequestId(lowest), commands[k & 1], k)
            )
        apply = sm.apply
        start, start_cpu = time.perf_counter(), time.process_time()
        for cmd in batch:
            index += 1
            apply(index, cmd)
        elapsed += time.perf_counter() - start
        cpu += time.process_time() - start_cpu
        done += len(batch)
    return elapsed, cpu


def snapshot_restore(sessions: int) -> tuple[float, float, int]:
    """CPU seconds of snapshot() and restore() of ``sessions`` sessions, and the bytes."""
    sm = SessionStateMachine(CounterStateMachine())
    requests(sm, 2 * sessions, sessions, window=2)
    start = time.process_time()
    snap = sm.snapshot()
    taken = time.process_time() - start
    other = SessionStateMachine(CounterStateMachine())
    start = time.process_time()
    other.restore(snap)
    restored = time.process_time() - start
    if other.snapshot() != snap or other.stats() != sm.stats():
        raise SystemExit("restore did not reproduce the snapshot")
    return taken, restored, len(snap)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench session", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smaller run (seconds)")
    parser.add_argument("--window", type=int, default=4, help="requests in flight per client")
    args = parser.parse_args(argv)
    n, sessions, snap_sessions = (
        (100_000, 100, 10_000) if args.quick else (1_000_000, 1_000, 100_000)
    )

    sm = SessionStateMachine(CounterStateMachine())
    seconds, cpu = requests(sm, n, sessions, args.window)
    stats = sm.stats()
    rss_after_requests = peak_rss_mib()
    taken, restored, size = snapshot_restore(snap_sessions)

    rows = [
        ("ClientRequests applied", f"{n:,} over {sessions:,} sessions, window {args.window}"),
        ("throughput per CPU second", f"{n / cpu:,.0f} commands/s ({cpu:.2f} s CPU)"),
        ("throughput, wall clock", f"{n / seconds:,.0f} commands/s ({seconds:.2f} s)"),
        ("peak RSS after requests", f"{rss_after_requests:,.0f} MiB"),
        (
            "cached responses at the end",
            f"{stats.cached_responses:,} (bound: sessions x window = {sessions * args.window:,})",
        ),
        (f"snapshot of {snap_sessions:,} sessions", f"{taken:.2f} s CPU, {size:,} bytes"),
        (f"restore of {snap_sessions:,} sessions", f"{restored:.2f} s CPU"),
        ("peak RSS overall", f"{peak_rss_mib():,.0f} MiB"),
    ]
    print("| session state machine | result |\n| --- | --- |")
    for name, value in rows:
        print(f"| {name} | {value} |")
    return 0 if stats.cached_responses <= sessions * args.window else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
