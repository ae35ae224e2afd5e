"""Local cluster management without real nodes: files, state, and processes (stand-in
nodes from ``fake_node.py``), driven through ``actors.cluster`` and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, NoReturn

import pytest

from actors import cli_cluster, cluster
from actors.cli import main
from actors.cli_cluster import format_status_table
from actors.cluster import (
    MANIFEST,
    ClusterError,
    _ephemeral_range,
    alive,
    create_cluster,
    exit_status,
    free_ports,
    live_pid,
    load_manifest,
    parse_setting,
    read_current,
    resolve_dir,
    runs_member,
    save_manifest,
    spawn_member,
    state_file,
    stop_members,
    wait_for_leader,
    write_current,
)
from actors.config import load_config
from tests.cli.conftest import FakeCluster, Reaper, wait_ready


def test_parse_setting_reads_integers_and_strings() -> None:
    assert parse_setting("tick_ms=20") == ("tick_ms", 20)
    assert parse_setting(" actor_threads = separate ") == ("actor_threads", "separate")
    for bad in ("tick_ms", "=5"):
        with pytest.raises(ValueError, match="expected FIELD=VALUE"):
            parse_setting(bad)


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(8)
    assert len(set(ports)) == 8 and all(1024 <= p < 65536 for p in ports)


def test_free_ports_avoid_the_ephemeral_range() -> None:
    """A bind-to-0 port is ephemeral: any connect() may be handed it before a node binds
    it (seen in CI as "Address already in use"), so picks come from below that range."""
    low, high = _ephemeral_range()
    if low - cluster._PICK_FROM <= 1000:
        pytest.skip(f"no room below this machine's ephemeral range ({low}-{high})")
    assert all(not low <= p <= high for p in free_ports(50))


def test_create_cluster_writes_loadable_configs(tmp_path: Path) -> None:
    directory, manifest = create_cluster(
        tmp_path / "c", nodes=3, app="kvstore", storage="durable",
        settings={"election_timeout_ms": 500, "actor_threads": "separate"},
    )  # fmt: skip
    assert [m.member_id for m in manifest.members] == ["n1", "n2", "n3"]
    addresses = {a for m in manifest.members for a in (m.peer, m.client)}
    assert len(addresses) == 6 and all(a.startswith("tcp://127.0.0.1:") for a in addresses)
    for m in manifest.members:
        cfg = load_config(directory / m.config)
        assert cfg.member_id == m.member_id
        assert cfg.data_dir == directory / "data" / m.member_id
        assert cfg.election_timeout_ms == 500
        assert cfg.actor_threads == "separate"  # a string setting
        assert {k: (a.peer, a.client) for k, a in cfg.members.items()} == {
            x.member_id: (x.peer, x.client) for x in manifest.members
        }
    assert load_manifest(directory) == manifest
    _, memory = create_cluster(tmp_path / "m", nodes=1, app="counter", storage="memory")
    cfg = load_config(tmp_path / "m" / "n1.toml")
    assert cfg.storage == "memory" and cfg.data_dir is None
    assert memory.app == "counter"


def test_create_cluster_refuses_nonsense(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="at least one node"):
        create_cluster(tmp_path / "a", nodes=0, app="kvstore", storage="memory")
    with pytest.raises(ClusterError, match="unknown app"):
        create_cluster(tmp_path / "b", nodes=1, app="chess", storage="memory")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "keep").write_text("")
    with pytest.raises(ClusterError, match="not empty"):
        create_cluster(tmp_path / "c", nodes=1, app="kvstore", storage="memory")
    directory, _ = create_cluster(None, nodes=1, app="kvstore", storage="memory")
    try:
        assert directory.name.startswith("raft-actors-") and (directory / MANIFEST).is_file()
    finally:
        for f in directory.iterdir():
            f.unlink()
        directory.rmdir()


def test_manifest_errors_are_typed(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="no cluster in"):
        load_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(ClusterError, match="cannot read"):
        load_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps({"version": 99}))
    with pytest.raises(ClusterError, match="version"):
        load_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps({"version": 1, "app": "kvstore"}))
    with pytest.raises(ClusterError, match="malformed"):
        load_manifest(tmp_path)
    raw = {"version": 1, "app": "kvstore", "storage": "tape", "members": {}}
    (tmp_path / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(ClusterError, match="bad storage"):
        load_manifest(tmp_path)
    raw["storage"], raw["members"] = "memory", {"n1": {"peer": "p"}}
    (tmp_path / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(ClusterError, match="malformed"):
        load_manifest(tmp_path)


def test_unknown_member_is_named(tmp_path: Path) -> None:
    _, manifest = create_cluster(tmp_path / "c", nodes=2, app="kvstore", storage="memory")
    with pytest.raises(ClusterError, match=r"no member 'n9' .*members: n1, n2"):
        manifest.member("n9")


def test_directory_resolution_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, private_state: Path
) -> None:
    a, _ = create_cluster(tmp_path / "a", nodes=1, app="kvstore", storage="memory")
    b, _ = create_cluster(tmp_path / "b", nodes=1, app="kvstore", storage="memory")
    c, _ = create_cluster(tmp_path / "c", nodes=1, app="kvstore", storage="memory")
    assert state_file() == private_state / "current"
    assert read_current() is None
    with pytest.raises(ClusterError, match="no cluster running"):
        resolve_dir(None)
    write_current(a)
    assert read_current() == a and resolve_dir(None) == a
    monkeypatch.setenv("RAFT_ACTORS_DIR", str(b))
    assert resolve_dir(None) == b
    assert resolve_dir(str(c)) == c
    cluster.clear_current(b)  # not the remembered one: kept
    assert read_current() == a
    cluster.clear_current(a)
    assert read_current() is None


def test_state_file_falls_back_to_xdg_runtime_dir_then_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAFT_ACTORS_HOME")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    assert state_file() == tmp_path / "run" / "raft-actors" / "current"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert state_file() == tmp_path / "home" / ".raft-actors" / "current"


def test_pid_checks_tell_our_node_from_a_recycled_pid(tmp_path: Path) -> None:
    me = os.getpid()
    assert alive(me)
    assert not runs_member(me, tmp_path / "n1.toml")  # alive, but not running that config
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    assert not alive(proc.pid)


def test_a_node_just_spawned_is_recognised_at_once(tmp_path: Path) -> None:
    """For a few ms after ``Popen`` returns, ``/proc/PID/cmdline`` of the new process
    can read empty (the kernel is still setting up the exec'd image): a pid check then
    took a healthy node for a dead one ("n3 exited during startup", and ``cluster up``
    stopped the nodes). ``spawn_member`` returns only once the command line shows."""
    directory, manifest = create_cluster(tmp_path / "c", nodes=1, app="kvstore", storage="memory")
    sleeper = [sys.executable, "-c", "import time; time.sleep(30)", "--config"]
    for _ in range(20):  # without the wait, half of these missed on a loaded machine
        command = [*sleeper, str(directory / "n1.toml")]
        pid = spawn_member(directory, manifest, "n1", command=command)
        try:
            assert runs_member(pid, directory / "n1.toml")
        finally:
            cluster._CHILDREN[pid].kill()
            cluster._CHILDREN[pid].wait(timeout=30)


def test_spawn_returns_once_the_command_line_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same, deterministically: the first reads of the command line come back
    empty, as they do while the exec is being set up."""
    directory, manifest = create_cluster(tmp_path / "c", nodes=1, app="kvstore", storage="memory")
    config = directory / "n1.toml"
    real = cluster._cmdline
    reads: list[int] = []

    def exec_in_progress(pid: int) -> list[bytes] | None:
        reads.append(pid)
        return [b""] if len(reads) <= 3 else real(pid)

    monkeypatch.setattr(cluster, "_cmdline", exec_in_progress)
    command = [sys.executable, "-c", "import time; time.sleep(30)", "--config", str(config)]
    pid = spawn_member(directory, manifest, "n1", command=command)
    try:
        # Polled past the faked empty reads up to a real one (which itself may still
        # be empty for a moment on a loaded machine: then it polls on).
        assert len(reads) >= 4 and set(reads) == {pid}
        assert runs_member(pid, config)
    finally:
        cluster._CHILDREN[pid].kill()
        cluster._CHILDREN[pid].wait(timeout=30)


def test_a_zombie_counts_as_dead(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCluster()
    monkeypatch.setattr(cluster, "node_command", fake.command)
    directory, manifest = create_cluster(tmp_path / "c", nodes=1, app="kvstore", storage="memory")
    pid = spawn_member(directory, manifest, "n1")
    child = cluster._CHILDREN.pop(pid)  # forget it: alive() must not reap it
    try:
        wait_ready(directory / "n1.toml")
        assert runs_member(pid, directory / "n1.toml")
        os.kill(pid, 9)
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
        assert not alive(pid)
    finally:
        child.kill()
        child.wait(timeout=10)


def test_exit_status_says_how_a_node_ended(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCluster()
    monkeypatch.setattr(cluster, "node_command", fake.command)
    directory, manifest = create_cluster(tmp_path / "c", nodes=2, app="kvstore", storage="memory")
    killed = spawn_member(directory, manifest, "n1")
    wait_ready(directory / "n1.toml")
    assert exit_status(killed) is None  # still running
    os.kill(killed, 9)
    cluster._CHILDREN[killed].wait(timeout=10)
    assert exit_status(killed) == "killed by SIGKILL"
    failing = spawn_member(
        directory, manifest, "n2", command=[sys.executable, "-c", "import sys; sys.exit(3)"]
    )
    cluster._CHILDREN[failing].wait(timeout=30)
    assert exit_status(failing) == "exit code 3"
    assert exit_status(os.getpid()) is None  # not a child of ours


@pytest.mark.parametrize("stubborn", [False, True])
def test_stop_members_terms_then_kills(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reaper: Reaper, stubborn: bool
) -> None:
    fake = FakeCluster(stubborn=stubborn)
    monkeypatch.setattr(cluster, "node_command", fake.command)
    directory, manifest = create_cluster(
        reaper.watch(tmp_path / "c"), nodes=3, app="kvstore", storage="memory"
    )
    for m in manifest.members:
        manifest = manifest.with_pid(m.member_id, spawn_member(directory, manifest, m.member_id))
    save_manifest(directory, manifest)
    for m in manifest.members:
        wait_ready(directory / m.config)
        assert live_pid(directory, m) == m.pid
    stopped, killed = stop_members(directory, manifest, ["n1", "n2", "n3"], timeout=0.5)
    assert stopped == ["n1", "n2", "n3"]
    assert killed == (["n1", "n2", "n3"] if stubborn else [])
    assert all(m.pid is not None and not alive(m.pid) for m in manifest.members)
    assert stop_members(directory, manifest, ["n1"]) == ([], [])  # nothing left to stop


def test_wait_for_leader_needs_agreement(tmp_path: Path) -> None:
    directory, manifest = create_cluster(tmp_path / "c", nodes=3, app="kvstore", storage="memory")
    fake = FakeCluster()
    fake.directory = directory
    # Without recorded pids nobody is asked: no leader, within the (short) timeout.
    result = wait_for_leader(directory, manifest, fake.status, timeout=0.2, interval=0.05)
    assert result.leader is None and result.exited == ()
    # A recorded pid that is not our node reads as "exited" at once.
    dead = manifest.with_pid("n2", os.getpid())
    result = wait_for_leader(directory, dead, fake.status, timeout=5)
    assert result.exited == ("n2",)


def test_status_table_rows(tmp_path: Path) -> None:
    _, manifest = create_cluster(tmp_path / "c", nodes=3, app="kvstore", storage="memory")
    manifest = manifest.with_pid("n3", 4242)
    lines = format_status_table(manifest, {}, {"n1": None, "n2": 77, "n3": None})
    assert lines[0].split() == [
        "MEMBER", "ROLE", "TERM", "LEADER", "COMMIT/APPLIED", "SESSIONS", "SNAPSHOT", "PID",
    ]  # fmt: skip
    assert lines[1].split() == ["n1", "down", "-", "-", "-", "-", "-", "-"]
    assert lines[2].split() == ["n2", "unreachable", "-", "-", "-", "-", "-", "77"]
    assert lines[3].split() == ["n3", "down", "-", "-", "-", "-", "-", "4242", "(gone)"]


def test_cli_cluster_lifecycle_with_stand_in_nodes(
    tmp_path: Path,
    fake_cluster: FakeCluster,
    reaper: Reaper,
    capsys: pytest.CaptureFixture[str],
) -> None:
    d = str(reaper.watch(tmp_path / "c"))
    assert main(["cluster", "up", "--dir", d, "--storage", "memory", "--timeout", "20"]) == 0
    out = capsys.readouterr().out
    assert f"cluster directory: {Path(d).resolve()}" in out
    assert "leader: n1 (term 1); all 3 nodes agree" in out
    pids = {m.member_id: m.pid for m in load_manifest(Path(d)).members}
    assert all(pid is not None and alive(pid) for pid in pids.values())

    assert main(["cluster", "status"]) == 0  # the remembered directory
    out = capsys.readouterr().out.splitlines()
    assert out[2].split()[:4] == ["n1", "leader", "1", "n1"]
    assert out[3].split() == ["n2", "follower", "1", "n1", "5/4", "1", "0", str(pids["n2"])]
    assert out[-1] == "leader n1 (term 1); 3/3 nodes running"

    assert main(["cluster", "up", "--dir", d]) == 1
    assert "already running (n1, n2, n3)" in capsys.readouterr().err

    assert main(["cluster", "kill", "n1"]) == 0
    assert f"killed n1 (pid {pids['n1']}) with SIGKILL" in capsys.readouterr().out
    assert pids["n1"] is not None and not alive(pids["n1"])
    assert main(["cluster", "kill", "n1"]) == 1
    assert "n1 is not running" in capsys.readouterr().err
    assert main(["cluster", "kill", "n7"]) == 1
    assert "no member 'n7'" in capsys.readouterr().err

    assert main(["cluster", "status"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2].split()[:2] == ["n1", "down"]
    assert out[3].split()[:4] == ["n2", "leader", "2", "n2"]
    assert out[-1] == "leader n2 (term 2); 2/3 nodes running"

    assert main(["cluster", "start", "n2"]) == 1
    assert "n2 is already running" in capsys.readouterr().err
    assert main(["cluster", "start", "n1"]) == 0
    assert "n1: leader, term 3, leader n1" in capsys.readouterr().out  # first running leads
    assert alive(load_manifest(Path(d)).member("n1").pid or 0)

    assert main(["cluster", "down", "--timeout", "5"]) == 0
    assert "stopped n1, n2, n3" in capsys.readouterr().out
    assert all(m.pid is None for m in load_manifest(Path(d)).members)
    assert not any(pid is not None and alive(pid) for pid in pids.values())
    assert main(["cluster", "status"]) == 1
    assert "no leader; 0/3 nodes running" in capsys.readouterr().out
    assert main(["cluster", "up", "--dir", d, "--timeout", "20"]) == 0  # restart in place
    assert "restarting the cluster in" in capsys.readouterr().out
    assert main(["cluster", "down", "--purge"]) == 0
    assert not Path(d).exists() and read_current() is None


def test_cli_cluster_up_reports_nodes_that_die(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    reaper: Reaper,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(
        cluster,
        "node_command",
        lambda config, app: [
            sys.executable,
            "-c",
            "import sys; sys.exit('bad node: x')",
            str(config),
        ],
    )
    d = reaper.watch(tmp_path / "c")
    assert main(["cluster", "up", "--dir", str(d), "--timeout", "20"]) == 1
    out = capsys.readouterr().out
    assert "exited during startup" in out
    assert "bad node: x" in out  # the log tail
    assert "exit code 1" in out  # how the process ended
    assert all(m.pid is None for m in load_manifest(d).members)


def test_cli_cluster_up_without_a_leader_in_time_stops_the_nodes(
    tmp_path: Path,
    fake_cluster: FakeCluster,
    monkeypatch: pytest.MonkeyPatch,
    reaper: Reaper,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def no_answer(address: str) -> NoReturn:
        raise TimeoutError(f"{address} does not answer")

    monkeypatch.setattr(cli_cluster, "status_fn", lambda timeout, curve=None: no_answer)
    started: list[int] = []

    def spawn(*args: Any, **kwargs: Any) -> int:
        started.append(spawn_member(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(cli_cluster, "spawn_member", spawn)
    d = reaper.watch(tmp_path / "c")
    assert main(["cluster", "up", "--dir", str(d), "--timeout", "0.5"]) == 1
    assert len(started) == 3 and not any(alive(pid) for pid in started)
    out = capsys.readouterr().out
    assert "raft-actors: error: no agreed leader within 0.5s (last seen: no answers)" in out
    assert "stopped the nodes; configs and logs are kept in" in out
    manifest = load_manifest(d)
    assert all(m.pid is None for m in manifest.members)
    assert all((d / m.log).is_file() for m in manifest.members)
