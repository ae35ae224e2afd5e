"""``scripts/cluster`` and ``scripts/run`` as a newcomer runs them."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.cli.conftest import Reaper

ROOT = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RAFT_ACTORS_DIR", None)
    env["RAFT_ACTORS_HOME"] = str(tmp_path / "state")
    env["TMPDIR"] = str(tmp_path)
    return env


def test_scripts_cluster_is_the_cluster_command(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "cluster"), "--help"],
        capture_output=True, text=True, timeout=300, env=_env(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: raft-actors cluster")
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "cluster"), "status"],
        capture_output=True, text=True, timeout=300, env=_env(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 1
    assert "no cluster running" in proc.stderr


@pytest.mark.integration
def test_scripts_run_shows_everything_working(tmp_path: Path, reaper: Reaper) -> None:
    pytest.importorskip("actors.node", reason="needs the running node (actors/node.py)")
    pytest.importorskip("actors.client", reason="needs the client library (actors/client.py)")
    proc = subprocess.Popen(
        ["bash", str(ROOT / "scripts" / "run")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(tmp_path),
        start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:  # the script and the tour share its process group
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        for cluster_dir in tmp_path.glob("raft-actors-run.*/cluster"):
            reaper.watch(cluster_dir)  # nodes are in their own groups: reap by manifest
    assert proc.returncode == 0, out
    assert "all steps worked" in out
    assert "FAILED" not in out
    assert list(tmp_path.glob("raft-actors-run.*")) == []  # cleaned up after itself
