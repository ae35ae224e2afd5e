"""``raft-actors node``: one node in the foreground, stopped cleanly by a signal."""

from __future__ import annotations

import queue
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.cluster import create_cluster
from tests.cli.cli_procs import start_cli, wait_for_line

pytest.importorskip("actors.node", reason="needs the running node (actors/node.py)")

pytestmark = pytest.mark.integration


@pytest.fixture
def node_proc(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], queue.SimpleQueue[str]]]:
    """A single-node kv store in the foreground, its stderr lines on a queue."""
    directory, _ = create_cluster(tmp_path / "c", nodes=1, app="kvstore", storage="durable")
    proc, lines = start_cli(["node", "--config", str(directory / "n1.toml")])
    try:
        yield proc, lines
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_node_serves_until_signalled_then_stops_cleanly(
    node_proc: tuple[subprocess.Popen[str], queue.SimpleQueue[str]], sig: signal.Signals
) -> None:
    proc, lines = node_proc
    started = wait_for_line(lines, "runs app kvstore with durable storage")
    assert all(" n1 " in line for line in started)  # every log line names the member
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == 0
    rest = wait_for_line(lines, "n1 stopped")
    assert any(f"received {sig.name}, stopping" in line for line in rest)
