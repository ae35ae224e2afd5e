"""The test-only partition hook: frames to and from members named in a control file are
dropped, and the file is picked up while the transport runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from actors.config import ConfigError, config_from_dict
from actors.transport import (
    DropRules,
    FaultControlledPeerTransport,
    PeerFrameHandler,
    PeerTransport,
    TransportStats,
    read_drop_rules,
    read_rules,
)
from protocol.ids import MemberId

N2, N3 = MemberId("n2"), MemberId("n3")


class FakePeers:
    """A stand-in peer transport that records what it is asked to do."""

    def __init__(self, handler: PeerFrameHandler) -> None:
        self.handler = handler
        self.sent: list[tuple[MemberId, bytes]] = []
        self.table: dict[MemberId, str] = {}
        self.running = False

    @property
    def member_id(self) -> MemberId:
        return MemberId("n1")

    @property
    def address(self) -> str:
        return "tcp://127.0.0.1:1"

    def add_peer(self, member: MemberId, address: str) -> None:
        self.table[member] = address

    def remove_peer(self, member: MemberId) -> None:
        self.table.pop(member, None)

    def peers(self) -> dict[MemberId, str]:
        return dict(self.table)

    def send(self, to: MemberId, frame: bytes) -> bool:
        self.sent.append((to, frame))
        return True

    def start(self) -> None:
        self.running = True

    def stop(self) -> None:
        self.running = False

    def stats(self) -> TransportStats:
        return TransportStats(frames_out=len(self.sent))


def write_rules(path: Path, drop: list[str], stamp: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"drop": drop}))
    os.replace(tmp, path)
    os.utime(path, ns=(stamp, stamp))  # a distinct mtime even within one clock tick


def make(
    path: Path,
) -> tuple[FaultControlledPeerTransport, FakePeers, list[tuple[MemberId, bytes]]]:
    received: list[tuple[MemberId, bytes]] = []
    inner: list[FakePeers] = []

    def factory(handler: PeerFrameHandler) -> PeerTransport:
        inner.append(FakePeers(handler))
        return inner[0]

    wrapper = FaultControlledPeerTransport(
        path, factory, lambda s, f: received.append((s, f)), poll_ms=0
    )
    return wrapper, inner[0], received


def test_cuts_frames_both_ways_and_follows_the_file(tmp_path: Path) -> None:
    control = tmp_path / "n1.faults.json"
    wrapper, inner, received = make(control)
    assert isinstance(wrapper, PeerTransport)
    wrapper.add_peer(N2, "tcp://a")
    wrapper.add_peer(N3, "tcp://b")
    wrapper.start()
    assert inner.running and wrapper.peers() == {N2: "tcp://a", N3: "tcp://b"}
    assert wrapper.member_id == "n1" and wrapper.address == "tcp://127.0.0.1:1"

    # No file: nothing is cut.
    assert wrapper.send(N2, b"x") and inner.sent == [(N2, b"x")]
    inner.handler(N3, b"y")
    assert received == [(N3, b"y")]

    # Cut n2: frames to it vanish (send still says yes), frames from it too; n3 passes.
    write_rules(control, ["n2"], 1_000)
    assert wrapper.send(N2, b"lost") is True
    inner.handler(N2, b"lost too")
    assert wrapper.send(N3, b"ok")
    assert inner.sent == [(N2, b"x"), (N3, b"ok")] and received == [(N3, b"y")]
    assert wrapper.cut_frames == 2

    # Heal: everything flows again.
    write_rules(control, [], 2_000)
    assert wrapper.send(N2, b"back")
    inner.handler(N2, b"back too")
    assert inner.sent[-1] == (N2, b"back") and received[-1] == (N2, b"back too")

    # A removed file also heals.
    write_rules(control, ["n2", "n3"], 3_000)
    inner.handler(N3, b"cut")
    control.unlink()
    inner.handler(N3, b"through")
    assert received[-1] == (N3, b"through") and (N3, b"cut") not in received

    wrapper.remove_peer(N3)
    assert wrapper.peers() == {N2: "tcp://a"}
    assert wrapper.stats().frames_out == len(inner.sent)
    wrapper.stop()
    assert not inner.running


@pytest.mark.parametrize(
    "text",
    ["", "not json", "[1, 2]", '{"drop": "n2"}', '{"nope": []}', '{"drop": [1, null]}'],
)
def test_malformed_rules_cut_nothing(tmp_path: Path, text: str) -> None:
    path = tmp_path / "f.json"
    path.write_text(text)
    assert read_drop_rules(path) == frozenset()
    assert read_drop_rules(tmp_path / "absent.json") == frozenset()


def test_config_option_is_relative_to_the_config_file(tmp_path: Path) -> None:
    base = {
        "member_id": "n1",
        "storage": "memory",
        "members": {"n1": {"peer": "tcp://127.0.0.1:1", "client": "tcp://127.0.0.1:2"}},
    }
    assert config_from_dict(base, tmp_path).fault_control is None
    cfg = config_from_dict({**base, "fault_control": "faults/n1.json"}, tmp_path)
    assert cfg.fault_control == tmp_path / "faults/n1.json"
    with pytest.raises(ConfigError, match="fault_control"):
        config_from_dict({**base, "fault_control": 3}, tmp_path)


def test_one_sided_rules_cut_one_direction_only(tmp_path: Path) -> None:
    """``drop_out`` loses what this node sends to a member, ``drop_in`` what it
    receives from one; ``drop`` is both."""
    control = tmp_path / "n1.json"
    wrapper, inner, received = make(control)
    control.write_text(json.dumps({"drop_out": ["n2"], "drop_in": ["n3"]}))
    assert wrapper.send(N2, b"lost") and wrapper.send(N3, b"sent")
    inner.handler(N2, b"heard")
    inner.handler(N3, b"unheard")
    assert inner.sent == [(N3, b"sent")] and received == [(N2, b"heard")]
    assert wrapper.cut_frames == 2
    assert read_rules(control) == DropRules(frozenset({N2}), frozenset({N3}))
    assert read_drop_rules(control) == frozenset()


@pytest.mark.parametrize(
    ("text", "rules"),
    [
        ('{"drop": ["n2"], "drop_in": ["n3"]}', DropRules(frozenset({N2}), frozenset({N2, N3}))),
        ('{"drop_out": "n2", "drop_in": [4, "n3"]}', DropRules(frozenset(), frozenset({N3}))),
        ("[]", DropRules()),
        ("garbage", DropRules()),
    ],
)
def test_rules_merge_both_ways_and_ignore_malformed_keys(
    tmp_path: Path, text: str, rules: DropRules
) -> None:
    path = tmp_path / "f.json"
    path.write_text(text)
    assert read_rules(path) == rules
