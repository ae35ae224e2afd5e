"""CURVE from the command line, against real node processes: ``keys generate``, and
``cluster up --curve`` whose kv, status and admin commands use the directory's keys,
while a client without a key gets nothing and a client key cannot run admin commands."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from actors.cluster import alive, load_manifest
from actors.transport import curve_available
from tests.cli.conftest import Reaper
from tests.cli.test_e2e import cli, env, leader_from_status, ok

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not curve_available(), reason="libzmq without CURVE"),
]
__all__ = ["env"]  # the fixture, shared with test_e2e


def test_keys_generate_writes_pairs_and_never_overwrites(
    tmp_path: Path, env: dict[str, str]
) -> None:
    out = ok(env, "keys", "generate", str(tmp_path / "k"), "n1", "admin")
    assert "n1: public" in out and "admin: public" in out
    for name in ("n1", "admin"):
        assert (tmp_path / "k" / f"{name}.key").is_file()
        secret = tmp_path / "k" / f"{name}.key_secret"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    again = cli(env, "keys", "generate", str(tmp_path / "k"), "n1")
    assert again.returncode == 1 and "exists" in again.stderr


def test_a_curve_cluster_from_the_cli(tmp_path: Path, env: dict[str, str], reaper: Reaper) -> None:
    d = reaper.watch(tmp_path / "cluster")
    dflag = ("--dir", str(d))
    keys = d / "keys"
    pids: list[int | None] = []
    try:
        out = ok(env, "cluster", "up", "--curve", "--nodes", "3", *dflag)
        assert "all 3 nodes agree" in out
        pids = [m.pid for m in load_manifest(d).members]
        assert 'OK k = "v1"' in ok(env, "kv", "set", "k", "v1", *dflag)
        assert ok(env, "kv", "get", "k", *dflag).strip() == '"v1"'
        leader = leader_from_status(ok(env, "cluster", "status", *dflag))
        members = ",".join(m.client for m in load_manifest(d).members)
        # Without a key (by address, so no directory keys): no answer.
        plain = cli(env, "kv", "get", "k", "--members", members, "--timeout", "2")
        assert plain.returncode == 1 and "no leader reachable" in plain.stderr
        as_client = (
            "--key", str(keys / "clients" / "client.key_secret"),
            "--server-key", str(keys / "server" / "server.key"),
        )  # fmt: skip
        got = ok(env, "kv", "get", "k", "--members", members, *as_client)
        assert got.strip() == '"v1"'
        refused = cli(
            env, "cluster", "transfer-leader", "--members", members, *as_client, "--timeout", "5"
        )
        assert refused.returncode == 1 and "admin key" in refused.stderr
        assert "leadership transferred" in ok(env, "cluster", "transfer-leader", *dflag)
        assert leader_from_status(ok(env, "cluster", "status", *dflag)) != leader
        half = cli(env, "kv", "get", "k", "--members", members, "--key", as_client[1])
        assert half.returncode == 1 and "go together" in half.stderr
    finally:
        down = cli(env, "cluster", "down", "--purge", *dflag)
    assert down.returncode == 0, down.stderr
    assert not any(p is not None and alive(p) for p in pids)
