"""Transport benchmark: frames/s and round-trip latency for 100-byte frames.

``scripts/bench transport [--frames N] [--pings N] [--size BYTES] [--window N]``

Two transports in one process, over ZeroMQ on 127.0.0.1 and over the in-memory hub:

* throughput -- one sender thread streams frames to the other transport with at most
  ``--window`` frames in flight (so the numbers measure the link, not drops at the
  high-water mark); frames/s counted at the receiving handler;
* round trip -- one frame at a time, echoed back from the receiver's handler; p50/p99.

Peer links (PeerTransport) and the client link (ClientConnection -> ClientTransport and
back) are measured. Prints a Markdown table. Not a test: nothing here asserts timings.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from actors.transport import (
    ClientConnection,
    ClientFrameHandler,
    ClientTransport,
    InMemoryClientConnection,
    InMemoryClientTransport,
    InMemoryHub,
    InMemoryPeerTransport,
    PeerTransport,
    ZmqClientConnection,
    ZmqClientTransport,
    ZmqPeerTransport,
)
from protocol.ids import MemberId

A, B = MemberId("a"), MemberId("b")


class Meter:
    """Counts frames at a handler and lets a sender wait for the window to open."""

    def __init__(self) -> None:
        self.count = 0
        self.cond = threading.Condition()

    def hit(self) -> None:
        with self.cond:
            self.count += 1
            self.cond.notify_all()

    def wait_for(self, target: int, timeout: float = 30.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.count >= target, timeout)


class Result(NamedTuple):
    name: str
    frames_per_s: float
    p50_us: float
    p99_us: float
    dropped: int


def stream(
    send: Callable[[bytes], bool], meter: Meter, frames: int, size: int, window: int
) -> float:
    payload = b"x" * size
    start = time.perf_counter()
    for i in range(frames):
        if i - meter.count >= window and not meter.wait_for(i - window + 256):
            raise RuntimeError(f"receiver stalled at {meter.count} of {i} sent frames")
        send(payload)
    if not meter.wait_for(frames, 60.0):
        raise RuntimeError(f"only {meter.count} of {frames} frames arrived")
    return frames / (time.perf_counter() - start)


def ping(
    send: Callable[[bytes], bool], pong: threading.Event, pings: int, size: int
) -> list[float]:
    payload = b"p" * size
    samples = []
    for _ in range(pings):
        pong.clear()
        t0 = time.perf_counter()
        send(payload)
        if not pong.wait(5.0):
            raise RuntimeError("ping lost")
        samples.append((time.perf_counter() - t0) * 1e6)
    return samples


def percentile(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100)[q - 1]


def bench_peers(
    name: str,
    make: Callable[[MemberId, Callable[[MemberId, bytes], None]], PeerTransport],
    args: argparse.Namespace,
) -> Result:
    meter = Meter()
    pong = threading.Event()
    mode = {"echo": False}
    holder: list[PeerTransport] = []

    def on_b(sender: MemberId, frame: bytes) -> None:
        if mode["echo"]:
            holder[0].send(sender, frame)
        else:
            meter.hit()

    a = make(A, lambda _s, _f: pong.set())
    b = make(B, on_b)
    holder.append(b)
    for t in (a, b):
        t.start()
    try:
        a.add_peer(B, b.address)
        b.add_peer(A, a.address)
        while not pong.is_set():  # wait for both directions to be up
            mode["echo"] = True
            a.send(B, b"warm-up")
            pong.wait(0.05)
        mode["echo"] = False
        try:
            rate = stream(lambda f: a.send(B, f), meter, args.frames, args.size, args.window)
        except RuntimeError as exc:
            raise RuntimeError(f"{name}: {exc}; sender {a.stats()}, receiver {b.stats()}") from exc
        mode["echo"] = True
        samples = ping(lambda f: a.send(B, f), pong, args.pings, args.size)
        dropped = a.stats().dropped + b.stats().dropped
    finally:
        a.stop()
        b.stop()
    return Result(name, rate, percentile(samples, 50), percentile(samples, 99), dropped)


def bench_clients(
    name: str,
    make_server: Callable[[ClientFrameHandler], ClientTransport],
    make_client: Callable[[Callable[[bytes], None]], ClientConnection],
    args: argparse.Namespace,
) -> Result:
    meter = Meter()
    pong = threading.Event()
    mode = {"echo": True}
    holder: list[ClientTransport] = []

    def on_server(routing_id: bytes, frame: bytes, admin: bool) -> None:
        if mode["echo"]:
            holder[0].send(routing_id, frame)
        else:
            meter.hit()

    server = make_server(on_server)
    holder.append(server)
    client = make_client(lambda _f: pong.set())
    server.start()
    client.start()
    try:
        client.connect(server.address)
        ping(client.send, pong, 10, args.size)  # warm-up
        mode["echo"] = False
        rate = stream(client.send, meter, args.frames, args.size, args.window)
        mode["echo"] = True
        samples = ping(client.send, pong, args.pings, args.size)
        dropped = server.stats().dropped + client.stats().dropped
    finally:
        client.stop()
        server.stop()
    return Result(name, rate, percentile(samples, 50), percentile(samples, 99), dropped)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench transport", description=__doc__)
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--pings", type=int, default=5_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--window", type=int, default=5_000)
    args = parser.parse_args(argv)

    results = [
        bench_peers("ZmqPeerTransport", lambda m, h: ZmqPeerTransport(m, h), args),
    ]
    hub = InMemoryHub(seed=0)
    try:
        results.append(
            bench_peers(
                "InMemoryPeerTransport", lambda m, h: InMemoryPeerTransport(hub, m, h), args
            )
        )
    finally:
        hub.stop()
    results.append(
        bench_clients(
            "ZmqClientConnection -> ZmqClientTransport",
            lambda h: ZmqClientTransport(h),
            lambda h: ZmqClientConnection(h),
            args,
        )
    )
    hub = InMemoryHub(seed=0)
    try:
        results.append(
            bench_clients(
                "InMemoryClientConnection -> InMemoryClientTransport",
                lambda h: InMemoryClientTransport(hub, h),
                lambda h: InMemoryClientConnection(hub, h),
                args,
            )
        )
    finally:
        hub.stop()

    print(
        f"{args.size}-byte frames, two transports in one process; throughput over "
        f"{args.frames} frames (window {args.window}), round trip over {args.pings} pings\n"
    )
    print("| link | frames/s (one way) | round trip p50 (µs) | round trip p99 (µs) | dropped |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        rate, p50, p99 = f"{r.frames_per_s:,.0f}", f"{r.p50_us:,.0f}", f"{r.p99_us:,.0f}"
        print(f"| {r.name} | {rate} | {p50} | {p99} | {r.dropped} |")
    return 0
