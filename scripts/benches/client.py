"""RaftClient's own cost: commands/s and latency against the fake cluster of the tests.

The fake cluster (``tests/actors/fake_server.py``) is a real registry and session state
machine with consensus faked (a proposal is applied at once), so this measures the
client shell, the transport and the registry/session cores -- no Raft, no disk. It is
an upper bound for what one client process can push through a real cluster.

    scripts/bench client [--seconds S] [--window W] [--payload BYTES]
"""

from __future__ import annotations

import argparse
import functools
import threading
import time
from concurrent.futures import Future
from typing import Any

from actors.client import ClientConfig, RaftClient
from actors.transport import InMemoryHub
from tests.actors.fake_server import FakeCluster


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else 0.0


def _run(
    client: RaftClient, seconds: float, window: int, payload: bytes
) -> tuple[int, list[float]]:
    """Keep ``window`` commands in flight for ``seconds``; return count and latencies."""
    latencies: list[float] = []
    room = threading.Semaphore(window)
    done = 0
    lock = threading.Lock()

    def finished(started: float, future: Future[Any]) -> None:
        nonlocal done
        future.result()
        with lock:
            latencies.append(time.perf_counter() - started)
            done += 1
        room.release()

    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        room.acquire()
        started = time.perf_counter()
        future = client.submit(["inc", 1, payload])
        future.add_done_callback(functools.partial(finished, started))
    for _ in range(window):  # drain
        room.acquire(timeout=10)
    return done, latencies


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench client")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--payload", type=int, default=100)
    args = parser.parse_args(argv)
    payload = b"x" * args.payload
    config = ClientConfig(("replaced",), max_in_flight=max(args.window, 1))
    print(f"{'transport':>9} {'in flight':>9} {'commands/s':>11} {'p50 ms':>7} {'p99 ms':>7}")
    for transport in ("inmemory", "zmq"):
        hub = InMemoryHub() if transport == "inmemory" else None
        cluster = FakeCluster(hub, 1)
        try:
            factory = cluster.connection_factory() if hub is not None else None
            client = RaftClient(cluster.addresses, config=config, connection_factory=factory)
            with client.connect():
                for window in (1, args.window):
                    count, latencies = _run(client, args.seconds, window, payload)
                    rate = count / args.seconds
                    p50 = _percentile(latencies, 0.5) * 1000
                    p99 = _percentile(latencies, 0.99) * 1000
                    print(f"{transport:>9} {window:>9} {rate:>11,.0f} {p50:>7.2f} {p99:>7.2f}")
        finally:
            cluster.close()
            if hub is not None:
                hub.stop()
    return 0
