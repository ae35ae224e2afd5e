"""CPU cost of one command's trip through the pure client-side cores and the codec.

client.submit -> encode ClientRequest -> decode_client_frame -> registry.on_routed ->
proposal -> registry.on_server_action(SendResponse) -> encode ClientResponse -> decode ->
client completion. No sockets, no Raft: this is the protocol's own share of the per-command
budget (the cluster goal is 15,000 commands/s on 2 cores).

    scripts/bench client-path [--commands N] [--payload BYTES] [--window W]
"""

from __future__ import annotations

import argparse
import time

from _leader import confirm_creations, leader_registry

from protocol.actions import ClientRequestAction, SendResponse
from protocol.client import ClientConfig, ClientSessionCore
from protocol.codec import encode
from protocol.wire import CreateSession, decode_client_frame, decode_server_message


def run(commands: int, payload: bytes, window: int) -> float:
    reg = leader_registry()
    client = ClientSessionCore(ClientConfig(("tcp://n1",)))
    conn = b"conn"  # the transport connection's routing id
    max_bytes = reg.config.max_batch_frame_bytes
    client.start(0)
    (hello,) = client.on_connected(0).send
    assert isinstance(hello, CreateSession)
    for _, msg in confirm_creations(
        reg, reg.on_routed(conn, decode_client_frame(encode(hello)), 0)
    ):
        client.on_message(decode_server_message(encode(msg)), 0)

    def trip(frames: list[bytes]) -> int:
        done = 0
        for frame in frames:
            request = decode_client_frame(frame, max_bytes=max_bytes)  # as the registry actor
            for action in reg.on_routed(conn, request, 0).propose:
                assert isinstance(action, ClientRequestAction)
                answer = SendResponse(action.session_id, action.request_id, b"ok")
                for _, msg in reg.on_server_action(answer, 0).send:
                    fx = client.on_message(decode_server_message(encode(msg)), 0)
                    done += len(fx.completed)
        return done

    start = time.perf_counter()
    completed = 0
    while completed < commands:
        frames = [encode(m) for _ in range(window) for m in client.submit(payload, 0)[1].send]
        completed += trip(frames)
    return time.perf_counter() - start


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench client-path")
    parser.add_argument("--commands", type=int, default=100_000)
    parser.add_argument("--payload", type=int, default=100)
    args = parser.parse_args(argv)
    print(f"{'window':>6} {'commands/s':>12} {'us/command':>11}")
    for window in (1, 8, 64):
        elapsed = run(args.commands, b"x" * args.payload, window)
        rate = args.commands / elapsed
        print(f"{window:>6} {rate:>12,.0f} {1e6 / rate:>11.1f}")
    return 0
