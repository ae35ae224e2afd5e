"""The CLI end to end against a real 3-node cluster of processes on 127.0.0.1: up,
status, kv set/get/cas/delete/watch, kill the leader, status shows a new leader, start
it again, down, and every node process gone afterwards."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.cluster import alive, free_ports, load_manifest
from tests.cli.conftest import Reaper

pytest.importorskip("actors.node", reason="needs the running node (actors/node.py)")
pytest.importorskip("actors.client", reason="needs the client library (actors/client.py)")

pytestmark = pytest.mark.integration

CLI_TIMEOUT = 60.0


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = dict(os.environ)
    e.pop("RAFT_ACTORS_DIR", None)
    e["RAFT_ACTORS_HOME"] = str(tmp_path / "state")
    root = str(Path(__file__).resolve().parents[2])
    e["PYTHONPATH"] = os.pathsep.join(p for p in (root, e.get("PYTHONPATH", "")) if p)
    return e


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Child processes a test starts directly; killed whatever happens."""
    started: list[subprocess.Popen[str]] = []
    try:
        yield started
    finally:
        for p in started:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "actors.cli", *args],
        capture_output=True, text=True, timeout=CLI_TIMEOUT, env=env,
    )  # fmt: skip


def ok(env: dict[str, str], *args: str) -> str:
    proc = cli(env, *args)
    assert proc.returncode == 0, f"{args}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def leader_from_status(out: str) -> str:
    last = out.strip().splitlines()[-1]
    assert last.startswith("leader "), out
    return last.split()[1]


def lines_of(proc: subprocess.Popen[str]) -> queue.SimpleQueue[str]:
    """The process's stdout lines, read by a daemon thread (so reads can be bounded)."""
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()
    assert proc.stdout is not None
    stdout = proc.stdout

    def pump() -> None:
        for line in stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    return lines


def test_cli_end_to_end(
    tmp_path: Path,
    env: dict[str, str],
    procs: list[subprocess.Popen[str]],
    reaper: Reaper,
) -> None:
    d = reaper.watch(tmp_path / "cluster")
    dflag = ("--dir", str(d))
    try:
        out = ok(env, "cluster", "up", "--nodes", "3", "--app", "kvstore", *dflag)
        assert "all 3 nodes agree" in out
        pids = [m.pid for m in load_manifest(d).members]
        assert all(p is not None and alive(p) for p in pids)

        status = ok(env, "cluster", "status")  # the remembered directory
        leader = leader_from_status(status)
        rows = status.splitlines()[2:5]
        assert sorted(r.split()[1] for r in rows) == ["follower", "follower", "leader"]
        assert all(r.split()[3] == leader for r in rows)

        assert 'OK k = "v1"' in ok(env, "kv", "set", "k", "v1")
        assert ok(env, "kv", "get", "k").strip() == '"v1"'
        assert "swapped: k = 2" in ok(env, "kv", "cas", "k", "v1", "2")
        stale = cli(env, "kv", "cas", "k", "v1", "3")
        assert stale.returncode == 3 and "not swapped: k is 2" in stale.stdout
        assert ok(env, "kv", "get", "k", "-v").startswith("k = 2 (version 2")
        assert "deleted k" in ok(env, "kv", "delete", "k")
        absent = cli(env, "kv", "get", "k")
        assert absent.returncode == 3 and "k: not found" in absent.stderr

        watch = subprocess.Popen(
            [sys.executable, "-m", "actors.cli", "kv", "watch", "w", "--count", "2",
             "--timeout", "40"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        procs.append(watch)
        lines = lines_of(watch)
        assert lines.get(timeout=CLI_TIMEOUT).startswith("watching w (now absent")
        ok(env, "kv", "set", "w", "1")
        ok(env, "kv", "set", "w", '{"x": [1, 2]}')
        assert watch.wait(timeout=CLI_TIMEOUT) == 0
        assert lines.get(timeout=5).startswith("set w = 1 (version 1")
        assert lines.get(timeout=5).startswith('set w = {"x": [1, 2]} (version 2')

        assert f"killed {leader}" in ok(env, "cluster", "kill", leader)
        deadline = time.monotonic() + 30
        while True:
            status_proc = cli(env, "cluster", "status")
            if status_proc.returncode == 0:
                new_leader = leader_from_status(status_proc.stdout)
                if new_leader != leader:
                    break
            assert time.monotonic() < deadline, status_proc.stdout
            time.sleep(0.2)
        assert f"{leader}  " in status_proc.stdout and " down " in status_proc.stdout
        assert "2/3 nodes running" in status_proc.stdout
        assert "OK w = 3" in ok(env, "kv", "set", "w", "3")

        restarted = ok(env, "cluster", "start", leader, "--timeout", "30")
        assert f"{leader}: follower" in restarted
        assert ok(env, "kv", "get", "w").strip() == "3"
        pids = [m.pid for m in load_manifest(d).members]
    finally:
        down = cli(env, "cluster", "down", "--dir", str(d))
    assert down.returncode == 0, down.stderr
    assert "stopped" in down.stdout
    assert not any(p is not None and alive(p) for p in pids)

    # Durable storage: the same directory comes back with its data.
    try:
        assert "restarting the cluster in" in ok(env, "cluster", "up", *dflag)
        assert ok(env, "kv", "get", "w").strip() == "3"
        pids = [m.pid for m in load_manifest(d).members]
    finally:
        down = cli(env, "cluster", "down", "--purge", *dflag)
    assert down.returncode == 0, down.stderr
    assert not any(p is not None and alive(p) for p in pids)
    assert not d.exists()


def test_kv_without_a_reachable_leader_fails_in_time(env: dict[str, str]) -> None:
    port = free_ports(1)[0]  # nobody listens there
    started = time.monotonic()
    proc = cli(env, "kv", "get", "k", "--members", f"127.0.0.1:{port}", "--timeout", "2")
    assert proc.returncode == 1
    assert "raft-actors: error:" in proc.stderr
    assert time.monotonic() - started < CLI_TIMEOUT
