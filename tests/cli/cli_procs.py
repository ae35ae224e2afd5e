"""``raft-actors`` run as a real child process, its stderr lines on a queue."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])


def start_cli(argv: list[str]) -> tuple[subprocess.Popen[str], queue.SimpleQueue[str]]:
    """Start ``python -m actors.cli ARGV``; its stderr lines arrive on the queue."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "actors.cli", *argv],
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
    return proc, lines


def wait_for_line(lines: queue.SimpleQueue[str], text: str, timeout: float = 60.0) -> list[str]:
    """The lines up to and including the first one containing ``text`` (``queue.Empty``
    after ``timeout`` seconds of silence fails the caller's test: bounded)."""
    seen = []
    while True:
        line = lines.get(timeout=timeout)
        seen.append(line)
        if text in line:
            return seen
