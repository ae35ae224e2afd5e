"""An in-process walk through the kv store on ``SessionStateMachine``.

Prints each step and returns non-zero if anything did not behave as the contract says:
set/get, compare-and-set, a watch notification to another session, a retried write
that emits no second notification, expiry dropping a session's watches, and a snapshot
that restores with the watches intact. ``python -m examples.kvstore.demo``.
"""

from __future__ import annotations

import sys
from typing import Any, TypeVar

from examples.kvstore import (
    KvCas,
    KvEvent,
    KvGet,
    KvListWatches,
    KvRequest,
    KvSet,
    KvStateMachine,
    KvWatch,
    decode_event,
)
from protocol.ids import RequestId, SessionId
from protocol.session import (
    ClientRequest,
    CreateSession,
    RequestResult,
    ServerRequestAck,
    SessionCreated,
    SessionExpired,
    SessionResult,
    SessionStateMachine,
)

R = TypeVar("R")
ALICE, BOB = SessionId("alice"), SessionId("bob")


def main() -> int:
    sm = SessionStateMachine(KvStateMachine())
    index = 0
    failures = 0
    next_rid: dict[str, int] = {}

    def apply(cmd: Any) -> SessionResult:
        nonlocal index
        index += 1
        return sm.apply(index, cmd)

    def check(what: str, ok: bool) -> None:
        nonlocal failures
        failures += not ok
        print(f"  [{'ok' if ok else 'FAILED'}] {what}")

    def send(
        sid: SessionId, request: KvRequest[R], rid: int | None = None
    ) -> tuple[R, RequestResult]:
        """Run ``request`` for ``sid`` (``rid``: resend that earlier request id)."""
        if rid is None:
            rid = next_rid[sid] = next_rid.get(sid, 0) + 1
        cmd = ClientRequest(sid, RequestId(rid), RequestId(rid), request.encode(), index + 1)
        result = apply(cmd)
        assert isinstance(result, RequestResult) and isinstance(result.response, bytes)
        return request.decode_result(result.response), result

    def query(request: KvRequest[R]) -> R:
        response = sm.query(request.encode())
        assert isinstance(response, bytes), response
        return request.decode_result(response)

    print("the kv store on SessionStateMachine, in process:")
    for sid in (ALICE, BOB):
        check(f"create session {sid}", isinstance(apply(CreateSession(sid, {}, 1)), SessionCreated))
    send(ALICE, KvSet("greeting", "hello"))
    got = query(KvGet("greeting"))
    check(
        f"alice sets greeting; a query reads {got.value!r} at revision {got.revision}",
        got.value == "hello",
    )
    watched, _ = send(BOB, KvWatch("greeting"))
    check("bob watches greeting", watched.added)
    swapped, cas = send(ALICE, KvCas("greeting", "hello", "hi"))
    check("alice: cas greeting hello -> hi swaps", swapped.swapped)
    sent = [(e.session_id, e.request_id, decode_event(e.payload)) for e in cas.server_requests]
    check(
        f"bob is notified: {sent}",
        sent == [(BOB, 1, KvEvent("set", "greeting", "hi", 2, 2))],
    )
    _, again = send(ALICE, KvCas("greeting", "hello", "hi"), rid=cas.request_id)
    check(
        "alice's cas retried: the cached answer, no second notification",
        again.from_cache and again.response == cas.response and not again.server_requests,
    )
    stale, failed = send(ALICE, KvCas("greeting", "hello", "hey"))
    check(
        "a cas with a stale expected value does not swap, notifies nobody",
        not stale.swapped and not failed.server_requests,
    )
    apply(ServerRequestAck(BOB, RequestId(1), index + 1))
    check("bob acks the notification", sm.stats().pending_server_requests == 0)

    restored = SessionStateMachine(KvStateMachine())
    restored.restore(sm.snapshot())
    check("a snapshot restores byte-identically", restored.snapshot() == sm.snapshot())
    apply(SessionExpired(BOB, index + 1))
    check("bob expires: his watches are gone", query(KvListWatches()).watches == ())
    _, quiet = send(ALICE, KvSet("greeting", "bye"))
    check("the next change notifies nobody", not quiet.server_requests)
    print(f"  stats: {sm.stats()}")
    print("all checks passed" if not failures else f"{failures} check(s) FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
