"""The multi-process tests' helpers say why a node they need is gone."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from actors import cluster
from actors.cluster import create_cluster
from tests.cluster_procs import ProcessCluster, wait_for

#: A stand-in node: runs until signalled.
SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def test_a_node_killed_from_outside_fails_the_wait_at_once_saying_how(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cluster, "node_command", lambda config, app: SLEEPER)
    directory, manifest = create_cluster(tmp_path / "c", nodes=3, app="counter", storage="memory")
    procs = ProcessCluster(directory, manifest)
    try:
        for member in procs.members():
            procs.start(member)
        procs.kill9("n1")  # the test's own kill: that member is not expected to run
        assert procs.gone(procs.members()) == []
        pid = procs.pid("n2")
        os.kill(pid, signal.SIGTERM)  # as a stranger's pkill would
        cluster._CHILDREN[pid].wait(timeout=30)
        with pytest.raises(AssertionError) as failed:
            wait_for(lambda: procs.caught_up(["n2", "n3"]), "catching up", explain=procs.logs)
        text = str(failed.value)
        assert f"n2 (pid {pid}) killed by SIGTERM, a signal this test did not send" in text
        assert "n3 (pid" not in text  # the live one is not named
        assert "MB free on the cluster directory" in text
        assert "--- n2.log" in text  # and the log tails follow
    finally:
        procs.kill_all()


def test_a_timed_out_wait_ends_with_the_explanation() -> None:
    with pytest.raises(AssertionError, match="waiting for nothing\nthe logs"):
        wait_for(lambda: False, "nothing", timeout=0.01, explain=lambda: "the logs")
