"""Node configuration: TOML loading and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.config import ConfigError, MemberAddress, NodeConfig, config_from_dict, load_config
from protocol.ids import MemberId

TOML = """
member_id = "n1"
data_dir = "data/n1"
election_timeout_ms = 500

[members.n1]
peer = "tcp://127.0.0.1:7001"
client = "tcp://127.0.0.1:8001"

[members.n2]
peer = "tcp://127.0.0.1:7002"
client = "tcp://127.0.0.1:8002"
"""


def test_load_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "n1.toml"
    path.write_text(TOML)
    cfg = load_config(path)
    assert cfg.member_id == "n1"
    assert cfg.data_dir == tmp_path / "data/n1"
    assert cfg.election_timeout_ms == 500
    assert cfg.heartbeat_ms == 50  # default
    assert cfg.address == MemberAddress("tcp://127.0.0.1:7001", "tcp://127.0.0.1:8001")
    assert list(cfg.peers) == ["n2"]
    assert cfg.actor_threads == "hybrid"  # default
    (tmp_path / "n1s.toml").write_text('actor_threads = "shared"\n' + TOML)
    assert load_config(tmp_path / "n1s.toml").actor_threads == "shared"
    assert cfg.storage_writes == "thread"  # default
    (tmp_path / "n1i.toml").write_text('storage_writes = "inline"\n' + TOML)
    assert load_config(tmp_path / "n1i.toml").storage_writes == "inline"
    assert cfg.durable_log == "sqlite"  # default
    (tmp_path / "n1f.toml").write_text('durable_log = "file"\n' + TOML)
    assert load_config(tmp_path / "n1f.toml").durable_log == "file"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"member_id": "n9"}, "not among members"),
        ({"bogus": 1}, "unknown keys: bogus"),
        ({"tick_ms": "10"}, "tick_ms must be int"),
        ({"heartbeat_ms": 900}, "heartbeat_ms must be shorter"),
        ({"storage": "tape"}, "storage must be"),
        ({"actor_threads": "many"}, "actor_threads must be one of .hybrid., .separate."),
        ({"actor_threads": 1}, "actor_threads must be str"),
        ({"storage_writes": "async"}, "storage_writes must be 'thread' or 'inline'"),
        ({"storage_writes": True}, "storage_writes must be str"),
        ({"durable_log": "tape"}, "durable_log must be 'sqlite' or 'file'"),
        ({"durable_log": 2}, "durable_log must be str"),
        ({"members": {}}, "members must be a table"),
        ({"members": {"n1": {"peer": "x"}}}, "needs exactly"),
        (
            {"members": {"n1": {"peer": "127.0.0.1:1", "client": "tcp://127.0.0.1:2"}}},
            "members.n1.peer: not an endpoint such as tcp://host:port: '127.0.0.1:1'",
        ),
        (
            {"members": {"n1": {"peer": "tcp://127.0.0.1:1", "client": "tcp:// x"}}},
            "members.n1.client: not an endpoint",
        ),
    ],
)
def test_bad_configs_are_refused_with_a_reason(change: dict[str, object], message: str) -> None:
    raw: dict[str, object] = {
        "member_id": "n1",
        "data_dir": "d",
        "members": {"n1": {"peer": "tcp://127.0.0.1:1", "client": "tcp://127.0.0.1:2"}},
    }
    raw.update(change)
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


def test_missing_member_id_and_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing required key"):
        config_from_dict({"members": {}})
    with pytest.raises(ConfigError):
        load_config(tmp_path / "absent.toml")
    (tmp_path / "bad.toml").write_text("member_id = ")
    with pytest.raises(ConfigError):
        load_config(tmp_path / "bad.toml")


def test_durable_storage_needs_a_data_dir() -> None:
    members = {MemberId("a"): MemberAddress("inproc://a", "inproc://a-c")}
    with pytest.raises(ConfigError, match="data_dir"):
        NodeConfig(MemberId("a"), members)
    cfg = NodeConfig(MemberId("a"), members, storage="memory", transport="memory")
    assert cfg.with_changes(tick_ms=5).tick_ms == 5
