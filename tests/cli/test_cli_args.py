"""The command line: help on every level, bad arguments, and clear errors (with non-zero
exit codes) when there is no cluster to act on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from actors.cli import build_parser, main
from actors.cli_kv import format_event, parse_value, show
from actors.cluster import create_cluster, write_current
from examples.kvstore import KvEvent

LEVELS = [
    [],
    ["node"],
    ["cluster"],
    ["cluster", "up"],
    ["cluster", "status"],
    ["cluster", "down"],
    ["cluster", "kill"],
    ["cluster", "start"],
    ["kv"],
    ["kv", "set"],
    ["kv", "get"],
    ["kv", "delete"],
    ["kv", "cas"],
    ["kv", "watch"],
]


@pytest.mark.parametrize("level", LEVELS, ids=lambda lv: " ".join(lv) or "top")
def test_every_level_has_help(level: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*level, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: raft-actors {' '.join(level)}".rstrip())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "required: COMMAND"),
        (["frobnicate"], "invalid choice"),
        (["cluster"], "required: ACTION"),
        (["cluster", "up", "--nodes", "0"], "must be at least 1"),
        (["cluster", "up", "--nodes", "three"], "not an integer"),
        (["cluster", "up", "--app", "tetris"], "invalid choice"),
        (["cluster", "up", "--storage", "tape"], "invalid choice"),
        (["cluster", "up", "--timeout", "-1"], "positive number"),
        (["cluster", "status", "--timeout", "soon"], "not a number"),
        (["cluster", "kill"], "required: MEMBER"),
        (["node"], "required: --config"),
        (["kv", "set", "k"], "required: VALUE"),
        (["kv", "set", "", "v"], "non-empty"),
        (["kv", "cas", "k", "1"], "required: NEW"),
        (["kv", "watch", "k", "--count", "0"], "at least 1"),
        (["kv", "get", "k", "--timeout", "inf"], "positive number"),
    ],
)
def test_bad_arguments_exit_2_with_a_reason(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["cluster", "status"],
        ["cluster", "down"],
        ["cluster", "kill", "n1"],
        ["cluster", "start", "n1"],
        ["kv", "get", "k"],
        ["kv", "set", "k", "v"],
        ["kv", "watch", "k", "--count", "1"],
    ],
)
def test_no_cluster_is_a_clear_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "raft-actors: error: no cluster running" in err
    assert "cluster up" in err


def test_a_dir_without_a_cluster_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cluster", "status", "--dir", str(tmp_path)]) == 1
    assert f"no cluster in {tmp_path} (from --dir)" in capsys.readouterr().err
    monkeypatch.setenv("RAFT_ACTORS_DIR", str(tmp_path / "gone"))
    assert main(["kv", "get", "k"]) == 1
    assert "(from RAFT_ACTORS_DIR)" in capsys.readouterr().err
    monkeypatch.delenv("RAFT_ACTORS_DIR")
    write_current(tmp_path / "old")
    assert main(["cluster", "down"]) == 1
    assert "(from the last cluster" in capsys.readouterr().err


def test_kv_refuses_a_cluster_of_another_app_or_with_nothing_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    counter, _ = create_cluster(tmp_path / "c", nodes=1, app="counter", storage="memory")
    assert main(["kv", "get", "k", "--dir", str(counter)]) == 1
    assert "runs the counter app, not kvstore" in capsys.readouterr().err
    kv, _ = create_cluster(tmp_path / "k", nodes=3, app="kvstore", storage="memory")
    assert main(["kv", "set", "k", "1", "--dir", str(kv)]) == 1
    assert "no node of the cluster" in capsys.readouterr().err


def test_node_with_a_bad_config_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["node", "--config", str(tmp_path / "absent.toml")]) == 1
    assert "absent.toml" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text('member_id = "n1"\nstorage = "memory"\n[members.n2]\npeer = "a"\nclient = "b"\n')
    assert main(["node", "--config", str(bad)]) == 1
    assert "not among members" in capsys.readouterr().err


def test_cluster_up_refuses_bad_settings_and_cleans_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "c"
    argv = ["cluster", "up", "--dir", str(target), "--storage", "memory"]
    assert main([*argv, "--set", "bogus_ms=5"]) == 1
    assert "unknown keys: bogus_ms" in capsys.readouterr().err
    assert not target.exists()
    assert main([*argv, "--set", "tick_ms"]) == 1
    assert "expected FIELD=VALUE" in capsys.readouterr().err
    assert main([*argv, "--set", "tick_ms=fast"]) == 1  # a string where an int belongs
    assert "tick_ms must be int, got 'fast'" in capsys.readouterr().err
    assert main([*argv, "--set", "actor_threads=sometimes"]) == 1
    assert "actor_threads" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    assert main(["cluster", "up", "--dir", str(tmp_path / "full")]) == 1
    assert "is not empty" in capsys.readouterr().err


def test_the_console_script_runs_as_a_module() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "actors.cli", "cluster", "status"],
        capture_output=True, text=True, timeout=60,
        env={"RAFT_ACTORS_HOME": "/nonexistent/raft-actors-test", "PATH": ""},
    )  # fmt: skip
    assert proc.returncode == 1
    assert "no cluster running" in proc.stderr


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("42", 42),
        ("4.5", 4.5),
        ("true", True),
        ("null", None),
        ('"42"', "42"),
        ('{"a": [1, 2]}', {"a": [1, 2]}),
        ("hello", "hello"),
        ("hello world", "hello world"),
        ("{not json", "{not json"),
        ("", ""),
    ],
)
def test_values_are_json_else_strings(text: str, value: object) -> None:
    parsed = parse_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_values_and_events_print_readably() -> None:
    assert show({"a": [1, "é"]}) == '{"a": [1, "é"]}'
    assert show(b"\x00") == "b'\\x00'"
    assert json.loads(show("x y")) == "x y"
    assert format_event(KvEvent("set", "k", 1, 2, 9)) == "set k = 1 (version 2, revision 9)"
    assert format_event(KvEvent("delete", "k", None, 0, 10)) == "delete k (revision 10)"


def test_parser_lists_every_subcommand() -> None:
    text = build_parser().format_help()
    for name in ("node", "cluster", "kv"):
        assert name in text
