"""``scripts/bench kvstore``: the kv store example on SessionStateMachine, in process.

Times are CPU seconds of this process (``time.process_time``). Commands are built
outside the timed region, as a host receives them already decoded from the log. Rows:

* ``set`` to a key with 0, 10 and 100 watchers (each write emits one server request per
  watcher; events/s counts those);
* ``watch`` + ``unwatch`` of one key by a session already watching K other keys (each
  copies the key's watcher list and the session's key list: O(w + K));
* ``get`` as a query;
* expiry of a session watching many keys.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from examples.kvstore import KvGet, KvRequest, KvSet, KvStateMachine, KvUnwatch, KvWatch
from protocol.ids import RequestId, SessionId
from protocol.session import (
    ClientRequest,
    CreateSession,
    SessionCommand,
    SessionExpired,
    SessionStateMachine,
)


class Store:
    def __init__(self) -> None:
        self.sm = SessionStateMachine(KvStateMachine())
        self.index = 0
        self.rid: dict[str, int] = {}

    def apply(self, cmd: SessionCommand) -> None:
        self.index += 1
        self.sm.apply(self.index, cmd)

    def session(self, sid: str) -> SessionId:
        self.apply(CreateSession(SessionId(sid), {}, self.index))
        return SessionId(sid)

    def request(self, sid: SessionId, request: KvRequest[Any]) -> ClientRequest:
        rid = self.rid[sid] = self.rid.get(sid, 0) + 1
        return ClientRequest(sid, RequestId(rid), RequestId(rid), request.encode(), rid)

    def timed(self, cmds: list[SessionCommand]) -> float:
        apply, index = self.sm.apply, self.index
        start = time.process_time()
        for cmd in cmds:
            index += 1
            apply(index, cmd)
        self.index = index
        return time.process_time() - start


def sets(n: int, watchers: int) -> tuple[float, int]:
    store = Store()
    writer = store.session("writer")
    for i in range(watchers):
        sid = store.session(f"w{i:04d}")
        store.apply(store.request(sid, KvWatch("hot")))
    cmds: list[SessionCommand] = [store.request(writer, KvSet("hot", i)) for i in range(n)]
    cpu = store.timed(cmds)
    events = store.sm.stats().pending_server_requests
    return cpu, events


def watch_unwatch(n: int, others: int) -> float:
    store = Store()
    sid = store.session("s")
    for i in range(others):
        store.apply(store.request(sid, KvWatch(f"other/{i:06d}")))
    cmds: list[SessionCommand] = []
    for _ in range(n):
        cmds.append(store.request(sid, KvWatch("k")))
        cmds.append(store.request(sid, KvUnwatch("k")))
    return store.timed(cmds)


def queries(n: int) -> float:
    store = Store()
    sid = store.session("s")
    for i in range(1000):
        store.apply(store.request(sid, KvSet(f"k{i}", i)))
    data = [KvGet(f"k{i % 1000}").encode() for i in range(n)]
    query = store.sm.query
    start = time.process_time()
    for q in data:
        query(q)
    return time.process_time() - start


def expiry(keys: int, watchers_per_key: int) -> float:
    store = Store()
    sids = [store.session(f"s{i}") for i in range(watchers_per_key)]
    for sid in sids:
        for k in range(keys):
            store.apply(store.request(sid, KvWatch(f"k{k}")))
    return store.timed([SessionExpired(sids[0], store.index)])


def rate(count: int, cpu: float) -> str:
    return f"{count / cpu:,.0f}/s"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench kvstore", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smaller run (seconds)")
    args = parser.parse_args(argv)
    n = 20_000 if args.quick else 200_000
    rows: list[tuple[str, str]] = []
    for w in (0, 10, 100):
        count = n // (1 + w // 10)
        cpu, events = sets(count, w)
        fanout = f", {rate(events, cpu)} events" if events else ""
        rows.append((f"set, {w} watchers", f"{rate(count, cpu)} writes{fanout}"))
    for others in (0, 1_000):
        cpu = watch_unwatch(n // 20, others)
        rows.append((f"watch+unwatch, session watching {others:,} keys", rate(n // 10, cpu)))
    rows.append(("get (query)", rate(n, queries(n))))
    keys = 1_000 if args.quick else 10_000
    rows.append((f"expire a session watching {keys:,} keys (3 watchers each)",
                 f"{expiry(keys, 3) * 1000:.1f} ms CPU"))  # fmt: skip
    print("| kv store (CPU time) | result |\n| --- | --- |")
    for name, value in rows:
        print(f"| {name} | {value} |")
    return 0
