"""Helpers for the paper tests: single cores driven by hand, and small clusters."""

from __future__ import annotations

import random

from protocol.ids import MemberId
from protocol.raft import (
    Configuration,
    RaftCore,
    RaftMessage,
    RaftOptions,
    Ready,
    RestoredState,
    Role,
)
from tests.simulation.cluster import Cluster

A, B, C, D, E = (MemberId(x) for x in "abcde")


#: ``RaftOptions.lazy_commit_notices`` unless a test says otherwise; ``conftest.py`` runs
#: each paper test with it off and on (but only off those marked ``eager_commit``).
LAZY_COMMIT_NOTICES = False


def options(**kw: object) -> RaftOptions:
    base: dict[str, object] = {
        "election_ticks": 10,
        "heartbeat_ticks": 1,
        "lazy_commit_notices": LAZY_COMMIT_NOTICES,
    }
    base.update(kw)
    return RaftOptions(**base)  # type: ignore[arg-type]


def core(
    me: MemberId = A,
    voters: tuple[MemberId, ...] = (A, B, C),
    restored: RestoredState | None = None,
    seed: int = 0,
    **kw: object,
) -> RaftCore:
    boot = restored or RestoredState.bootstrap(Configuration(voters))
    return RaftCore(me, options(**kw), random.Random(seed), boot)


def drain(c: RaftCore) -> tuple[list[RaftMessage], list[Ready]]:
    """Handle every Ready as an instant host: returns all messages, and the Readys."""
    msgs: list[RaftMessage] = []
    readys = []
    while c.has_ready():
        rd = c.ready()
        readys.append(rd)
        msgs += rd.messages + rd.persisted_messages
        if rd.entries:
            c.on_persisted(rd.entries[-1].index, rd.entries[-1].term)
        if rd.committed_entries:
            c.on_applied(rd.committed_entries[-1].index)
    return msgs, readys


def campaign(c: RaftCore) -> list[RaftMessage]:
    """Tick ``c`` until it starts an election; returns what it sent."""
    for _ in range(3 * c.options.election_ticks):
        c.tick()
        if c.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            return drain(c)[0]
    raise AssertionError("no election started")


def cluster(n: int = 3, **kw: object) -> Cluster:
    spares = int(kw.pop("spares", 0))  # type: ignore[call-overload]
    return Cluster(n, options=options(**kw), spares=spares)


def elect(c: Cluster, m: str = "n1", max_ticks: int = 200) -> None:
    """Tick only ``m`` (others idle) until it leads and has committed its no-op."""
    for _ in range(max_ticks):
        core = c.core(m)
        if core.is_leader and core.commit_index >= core._term_start:
            c.stabilize()
            return
        c.tick([m])
    raise AssertionError(f"{m} did not become leader")
