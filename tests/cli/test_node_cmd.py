"""``raft-actors node``: one node in the foreground, stopped cleanly by a signal."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.cluster import create_cluster

pytest.importorskip("actors.node", reason="needs the running node (actors/node.py)")

pytestmark = pytest.mark.integration


@pytest.fixture
def node_proc(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], queue.SimpleQueue[str]]]:
    """A single-node kv store in the foreground, its stderr lines on a queue."""
    directory, _ = create_cluster(tmp_path / "c", nodes=1, app="kvstore", storage="durable")
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "actors.cli", "node", "--config", str(directory / "n1.toml")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, env=env,
    )  # fmt: skip
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()
    stderr = proc.stderr
    assert stderr is not None

    def pump() -> None:
        for line in stderr:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    try:
        yield proc, lines
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def _wait_for(lines: queue.SimpleQueue[str], text: str, timeout: float = 30.0) -> list[str]:
    seen = []
    while True:
        line = lines.get(timeout=timeout)  # queue.Empty fails the test: bounded
        seen.append(line)
        if text in line:
            return seen


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_node_serves_until_signalled_then_stops_cleanly(
    node_proc: tuple[subprocess.Popen[str], queue.SimpleQueue[str]], sig: signal.Signals
) -> None:
    proc, lines = node_proc
    started = _wait_for(lines, "runs app kvstore with durable storage")
    assert all(" n1 " in line for line in started)  # every log line names the member
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == 0
    rest = _wait_for(lines, "n1 stopped")
    assert any(f"received {sig.name}, stopping" in line for line in rest)
