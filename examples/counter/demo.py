"""An in-process walk through the counter on ``SessionStateMachine`` (used by ``scripts/run``).

Prints each step and returns non-zero if anything did not behave as the contract says.
"""

from __future__ import annotations

import sys
from typing import Any

import msgpack

from examples.counter import CounterStateMachine, get, increment
from protocol.ids import RequestId, SessionId
from protocol.session import (
    ClientRequest,
    CreateSession,
    GetRequestsForRetry,
    RequestResult,
    RetryBatch,
    ServerRequestAck,
    ServerRequestsAcked,
    SessionCreated,
    SessionResult,
    SessionStateMachine,
)

ALICE, BOB = SessionId("alice"), SessionId("bob")


def main() -> int:
    sm = SessionStateMachine(CounterStateMachine())
    index = 0
    failures = 0

    def apply(cmd: Any) -> SessionResult:
        nonlocal index
        index += 1
        return sm.apply(index, cmd)

    def check(what: str, ok: bool) -> None:
        nonlocal failures
        failures += not ok
        print(f"  [{'ok' if ok else 'FAILED'}] {what}")

    def request(sid: SessionId, rid: int, command: Any, t: int) -> RequestResult:
        cmd = ClientRequest(sid, RequestId(rid), RequestId(rid), msgpack.packb(command), t)
        result = apply(cmd)
        assert isinstance(result, RequestResult)
        return result

    print("the counter on SessionStateMachine, in process:")
    for sid in (ALICE, BOB):
        check(f"create session {sid}", isinstance(apply(CreateSession(sid, {}, 1)), SessionCreated))
    r = request(ALICE, 1, increment(4), t=10)
    check("alice request 1: increment 4 -> 4", r.response == msgpack.packb(4))
    again = request(ALICE, 1, increment(4), t=11)
    check(
        "alice request 1 again: the cached response, the counter untouched",
        again.from_cache and again.response == r.response,
    )
    r = request(BOB, 1, increment(6), t=12)
    check("bob request 1: increment 6 -> 10", r.response == msgpack.packb(10))
    sent = [(e.session_id, e.request_id, msgpack.unpackb(e.payload)) for e in r.server_requests]
    check(f"crossing 10 emitted server requests {sent}", sent == [(ALICE, 1, ["crossed", 10])])
    retry = apply(GetRequestsForRetry(last_sent_before=13, created_at=20))
    check(
        "not acked yet: GetRequestsForRetry(13) returns it again",
        isinstance(retry, RetryBatch) and retry.server_requests == r.server_requests,
    )
    ack = apply(ServerRequestAck(ALICE, RequestId(1), 21))
    check("alice acks server request 1", isinstance(ack, ServerRequestsAcked) and ack.removed == 1)
    check("nothing left to retry", not sm.has_pending_requests_sent_before(10**12))

    snapshot = sm.snapshot()
    restored = SessionStateMachine(CounterStateMachine())
    restored.restore(snapshot)
    check(
        f"snapshot ({len(snapshot)} bytes) restores identically",
        restored.snapshot() == snapshot and restored.stats() == sm.stats(),
    )
    check(
        "the restored counter reads 10", restored.query(msgpack.packb(get())) == msgpack.packb(10)
    )
    print(f"  stats: {sm.stats()}")
    print("all checks passed" if not failures else f"{failures} check(s) FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
