"""``scripts/bench codec``: microseconds per encode/decode of the hot messages.

The messages every command meets: the session command in the log entry, an
AppendEntries carrying a batch of such entries (encoded once per follower, decoded by
each follower) and its response. Best of ``--repeat`` runs, to see through the noise
of a shared machine.

    scripts/bench codec [--entries 32] [--payload 100] [--repeat 5]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from protocol.codec import decode, encode
from protocol.ids import MemberId, RequestId, SessionId
from protocol.raft.log import EntryKind, LogEntry
from protocol.raft.messages import RAFT_MESSAGE_TYPES, AppendEntries, AppendEntriesResponse
from protocol.session import SESSION_COMMAND_TYPES, ClientRequest


def best_us(fn: Callable[[], Any], n: int, repeat: int) -> float:
    """The fastest of ``repeat`` runs of ``n`` calls, in microseconds per call."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n * 1e6)
    return best


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench codec", description=__doc__)
    parser.add_argument("--entries", type=int, default=32, help="entries per AppendEntries")
    parser.add_argument("--payload", type=int, default=100, help="command bytes")
    parser.add_argument("--repeat", type=int, default=5, help="runs; the best counts")
    args = parser.parse_args(argv)
    cmd = ClientRequest(
        SessionId("a" * 32), RequestId(5), RequestId(5), b"x" * args.payload, 1_700_000_000_000
    )
    cmd_bytes = encode(cmd)
    entries = tuple(
        LogEntry(i, 3, EntryKind.COMMAND, cmd_bytes) for i in range(1, args.entries + 1)
    )
    ae = AppendEntries(3, MemberId("n1"), MemberId("n2"), 10, 3, entries, 9)
    ae_bytes = encode(ae)
    resp = AppendEntriesResponse(3, MemberId("n2"), MemberId("n1"), True, 42)
    resp_bytes = encode(resp)
    rows: list[tuple[str, Callable[[], Any], int]] = [
        ("encode ClientRequest (session command)", lambda: encode(cmd), 20_000),
        (
            "decode ClientRequest (session command)",
            lambda: decode(cmd_bytes, SESSION_COMMAND_TYPES),
            20_000,
        ),
        (f"encode AppendEntries ({args.entries} entries)", lambda: encode(ae), 1_000),
        (
            f"decode AppendEntries ({args.entries} entries)",
            lambda: decode(ae_bytes, RAFT_MESSAGE_TYPES),
            1_000,
        ),
        ("encode AppendEntriesResponse", lambda: encode(resp), 20_000),
        ("decode AppendEntriesResponse", lambda: decode(resp_bytes, RAFT_MESSAGE_TYPES), 20_000),
    ]
    print("| operation | µs |")
    print("|---|---:|")
    for name, fn, n in rows:
        print(f"| {name} | {best_us(fn, n, args.repeat):.2f} |")
    return 0
