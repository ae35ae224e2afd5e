"""The guided tour behind ``scripts/run``: a real 3-node kv store cluster, end to end.

Starts a cluster with ``raft-actors cluster up``, writes and reads keys with the CLI,
opens a watcher (a :class:`~actors.client.RaftClient` with ``on_server_request``) and
shows a notification arriving, SIGKILLs the leader with ``cluster kill`` and shows a new
leader taking over while a client's write, sent into the dead leader, completes exactly
once and the watcher's session carries on; then brings the old leader back and stops
the cluster with ``cluster down``. Every step is checked; the exit code is 0 only if all
of them held. Every wait is bounded, and the cluster is torn down whatever happens.

``python -m examples.kvstore.tour [--dir EMPTY_DIR]``
"""

from __future__ import annotations

import argparse
import os
import queue
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from actors.client import RaftClient, fetch_status
from actors.cluster import load_manifest, runs_member, tail
from examples.kvstore import KvEvent, KvGet, KvSet, KvWatch, parse_event

__all__ = ["main"]

#: Bound on each CLI step.
STEP_TIMEOUT = 40.0


class StepFailed(Exception):
    """A step of the tour did not behave as promised."""


def _cli() -> list[str]:
    exe = shutil.which("raft-actors")
    return [exe] if exe else [sys.executable, "-m", "actors.cli"]


def run_cli(*args: str, ok_codes: Sequence[int] = (0,)) -> str:
    """Run ``raft-actors ARGS``, echo the command and its output, return stdout."""
    print(f"$ raft-actors {shlex.join(args)}", flush=True)
    try:
        proc = subprocess.run(
            [*_cli(), *args], capture_output=True, text=True, timeout=STEP_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        raise StepFailed(f"`raft-actors {shlex.join(args)}` took over {STEP_TIMEOUT:g}s") from None
    for line in (proc.stdout + proc.stderr).splitlines():
        print(f"    {line}")
    if proc.returncode not in ok_codes:
        raise StepFailed(f"`raft-actors {shlex.join(args)}` exited {proc.returncode}")
    return proc.stdout


def check(what: str, ok: bool) -> None:
    print(f"  [{'ok' if ok else 'FAILED'}] {what}", flush=True)
    if not ok:
        raise StepFailed(what)


def _events(inbox: queue.SimpleQueue[Any], until: float) -> list[KvEvent]:
    """Drain ``inbox`` until ``until`` (monotonic) or it is empty after the first event."""
    got: list[KvEvent] = []
    while True:
        wait = until - time.monotonic()
        if wait <= 0:
            return got
        try:
            got.append(parse_event(inbox.get(timeout=wait if not got else min(wait, 0.3))))
        except queue.Empty:
            if got:
                return got


def _leader(addresses: Sequence[str], exclude: str | None = None) -> tuple[str, int]:
    """The leader (and its term) that the answering members agree on, within 15 s."""
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline:
        seen = []
        for address in addresses:
            try:
                seen.append(fetch_status(address, timeout=1.0))
            except Exception:  # a dead member does not answer: ask the others
                continue
        leaders = {s.leader for s in seen}
        leading = [s for s in seen if s.role.lower() == "leader" and s.member_id != exclude]
        if len(seen) * 2 > len(addresses) and len(leaders) == 1 and len(leading) == 1:
            return leading[0].member_id, leading[0].term
        time.sleep(0.1)
    raise StepFailed("no agreed leader within 15s")


def tour(directory: Path) -> None:
    d = str(directory)
    print("== 1. start a 3-node cluster running the kv store")
    run_cli("cluster", "up", "--nodes", "3", "--app", "kvstore", "--dir", d)
    manifest = load_manifest(directory)
    members = manifest.client_addresses
    by_member = {m.member_id: m.client for m in manifest.members}

    print("\n== 2. write and read keys with the CLI")
    run_cli("kv", "set", "greeting", "hello", "--dir", d)
    out = run_cli("kv", "get", "greeting", "--dir", d)
    check('kv get greeting prints "hello"', out.strip() == '"hello"')
    run_cli("kv", "cas", "greeting", "hello", "hi there", "--dir", d)
    out = run_cli("kv", "cas", "greeting", "hello", "again", "--dir", d, ok_codes=(3,))
    check("a second cas from the stale value does not swap (exit 3)", "not swapped" in out)
    run_cli("kv", "set", "config", '{"replicas": 3, "tags": ["a", "b"]}', "--dir", d)
    out = run_cli("kv", "get", "config", "--dir", d)
    check("JSON values come back as JSON", '"replicas": 3' in out)

    print("\n== 3. a watcher session sees a change to its key")
    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    watcher = RaftClient(members, on_server_request=inbox.put).connect(timeout=10.0)
    writer = RaftClient(members).connect(timeout=10.0)
    try:
        watch = KvWatch("greeting")
        added = watch.parse_result(watcher.call(watch.to_native(), timeout=10.0))
        check(f"watcher watches greeting from revision {added.revision}", added.added)
        first = KvSet("greeting", "watch this")
        writer.call(first.to_native(), timeout=10.0)
        events = _events(inbox, time.monotonic() + 10.0)
        for e in events:
            print(f"    watcher got: {e.kind} {e.key} = {e.value!r} (revision {e.revision})")
        check(
            "exactly one notification, with the new value",
            [(e.key, e.value) for e in events] == [("greeting", "watch this")],
        )

        print("\n== 4. kill the leader; a write sent into the dead leader completes once")
        old_leader, old_term = _leader(members)
        print(f"    leader is {old_leader} (term {old_term})")
        get = KvGet("greeting")
        before = get.parse_result(writer.query(get.to_native(), timeout=10.0))
        assert before.entry is not None
        session = writer.session_id
        run_cli("cluster", "kill", old_leader, "--dir", d)
        started = time.monotonic()
        pending = KvSet("greeting", "written during failover")
        print("    writer: set greeting = 'written during failover' (its leader is dead) ...")
        result = pending.parse_result(writer.call(pending.to_native(), timeout=30.0))
        print(
            f"    ... completed after {time.monotonic() - started:.1f}s at revision "
            f"{result.revision}, version {result.entry.version}"
        )
        check(
            "applied exactly once: the store revision and the key's version each rose by 1",
            result.revision == before.revision + 1
            and result.entry.version == before.entry.version + 1,
        )
        check(
            f"the writer's session {str(session)[:8]}... carried on (no new session)",
            writer.session_id == session,
        )
        new_leader, new_term = _leader(
            [a for m, a in by_member.items() if m != old_leader], exclude=old_leader
        )
        check(
            f"{new_leader} took over in term {new_term} (after term {old_term})",
            new_leader != old_leader and new_term > old_term,
        )
        events = _events(inbox, time.monotonic() + 10.0)
        for e in events:
            print(f"    watcher got: {e.kind} {e.key} = {e.value!r} (revision {e.revision})")
        check(
            "the watcher's session survived the failover: one notification, no duplicate",
            [(e.value, e.revision) for e in events]
            == [("written during failover", result.revision)],
        )
        after = get.parse_result(writer.query(get.to_native(), timeout=10.0))
        check("a read through the new leader sees the write", after.entry == result.entry)
        run_cli("cluster", "status", "--dir", d)

        print(f"\n== 5. bring {old_leader} back: it rejoins as a follower")
        run_cli("cluster", "start", old_leader, "--dir", d)
        rejoined = fetch_status(by_member[old_leader], timeout=2.0)
        check(
            f"{old_leader} follows {rejoined.leader}",
            rejoined.role.lower() == "follower" and rejoined.leader is not None,
        )
    finally:
        writer.close()
        watcher.close()

    print("\n== 6. stop the cluster")
    pids = [(m.pid, directory / m.config) for m in load_manifest(directory).members]
    run_cli("cluster", "down", "--dir", d)
    check(
        "every node process is gone",
        not any(pid is not None and runs_member(pid, config) for pid, config in pids),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", help="an empty directory for the cluster (default: a new one)")
    args = parser.parse_args(argv)
    directory = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="raft-actors-"))
    os.environ["RAFT_ACTORS_DIR"] = str(directory)
    started = time.monotonic()
    try:
        tour(directory)
    except Exception as exc:  # any surprise fails the tour with its reason
        reason = str(exc) if isinstance(exc, StepFailed) else f"{type(exc).__name__}: {exc}"
        print(f"\nFAILED: {reason}")
        for log in sorted(directory.glob("*.log")):
            print(f"--- last lines of {log}:\n{tail(log, 20)}")
        return 1
    finally:
        if (directory / "cluster.json").is_file():
            subprocess.run(
                [*_cli(), "cluster", "down", "--dir", str(directory), "--timeout", "5"],
                capture_output=True,
                timeout=30,
                check=False,
            )
    print(f"\nall steps worked ({time.monotonic() - started:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
