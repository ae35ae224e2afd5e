"""CPU cost of the leader registry's share of one command, in one process.

A shared client connection sends ClientBatch frames of ``--channels`` ClientRequests
(one per bound session); per frame: decode_client_frame -> Registry.on_routed
(proposals) -> Registry.on_server_actions(SendResponse per proposal) -> Registry.frames
(the answer frames). Encoding the client's frames is not counted. No sockets, no Raft:
the registry core's own per-command cost on the leader.

    scripts/bench registry-path [--frames N] [--channels C] [--payload BYTES]
"""

from __future__ import annotations

import argparse
import time

from _leader import confirm_creations, leader_registry

from protocol.actions import ClientRequestAction, SendResponse
from protocol.codec import encode
from protocol.ids import RequestId
from protocol.registry import Registry, RegistryConfig
from protocol.wire import (
    ClientBatch,
    ClientRequest,
    CreateSession,
    decode_client_frame,
    pack_batches,
)

_ROUTING_ID = b"\x00k\x8bEg"


def _frame(items: list[tuple[int, bytes]]) -> bytes:
    (frame,) = pack_batches(items, ClientBatch, max_items=1024, max_bytes=1 << 24)
    return frame


def _leader(channels: int) -> Registry:
    reg = leader_registry(RegistryConfig(max_sessions_per_connection=max(channels, 1)))
    hello = _frame([(c, encode(CreateSession({}, b"n%d" % c))) for c in range(channels)])
    confirm_creations(reg, reg.on_routed(_ROUTING_ID, decode_client_frame(hello), 0))
    return reg


def run(frames: int, channels: int, payload: bytes) -> float:
    """Seconds spent in the registry for ``frames`` frames of ``channels`` commands."""
    reg = _leader(channels)
    max_bytes = reg.config.max_batch_frame_bytes
    spent = 0.0
    for n in range(1, frames + 1):
        rid = RequestId(n)
        data = _frame([(c, encode(ClientRequest(rid, rid, payload))) for c in range(channels)])
        start = time.perf_counter()
        fx = reg.on_routed(_ROUTING_ID, decode_client_frame(data, max_bytes=max_bytes), n)
        answers = []
        for action in fx.propose:
            assert isinstance(action, ClientRequestAction)
            answers.append(SendResponse(action.session_id, action.request_id, b"ok"))
        reg.frames(reg.on_server_actions(answers, n).send)
        spent += time.perf_counter() - start
    return spent


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench registry-path")
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--payload", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5, help="best of this many runs")
    args = parser.parse_args(argv)
    payload = b"x" * args.payload
    best = min(run(args.frames, args.channels, payload) for _ in range(args.repeat))
    per_command = 1e6 * best / (args.frames * args.channels)
    print(f"{args.channels} commands/frame: {per_command:.2f} us/command (best of {args.repeat})")
    return 0
