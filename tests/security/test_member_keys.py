"""With CURVE a member's key speaks only for that member: ``NAME.key`` in the peer-keys
directory is member ``NAME``'s key, the ZAP handler names that member as the
connection's ``User-Id``, and the peer transport drops (and counts) every frame whose
claimed sender is another member. The node <-> registry link binds the member's own
key to the far end's link id. A node refuses a peer-keys directory that files its own
key under another name."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from actors.config import ConfigError, MemberAddress, NodeConfig
from actors.link import core_endpoint, registry_endpoint
from actors.security import link_options, node_curve
from actors.transport import (
    CurveClient,
    CurveError,
    CurveServer,
    ZmqOptions,
    ZmqPeerTransport,
    curve_available,
    generate_keys,
    load_key_pair,
    load_member_keys,
    load_public_key,
)
from actors.transport.curve import ADMIN_USER, CLIENT_USER, ZapHandler
from protocol.ids import MemberId
from tests.actors.node.cluster import wait_for
from tests.security.harness import Inbox, Stoppers, send_until
from tests.security.keys import KeyRing

pytestmark = pytest.mark.skipif(not curve_available(), reason="libzmq without CURVE")

N1, N2, N3 = MemberId("n1"), MemberId("n2"), MemberId("n3")


# -- key files ----------------------------------------------------------------------


def test_member_keys_are_named_by_their_files(keys: KeyRing, tmp_path: Path) -> None:
    members = load_member_keys(keys.root / "peers")
    assert sorted(members.values()) == ["n1", "n2", "n3"]
    for key, name in members.items():
        assert load_public_key(keys.root / "peers" / f"{name}.key") == key
    # The same public key under two names would speak for two members: refused.
    shutil.copy(keys.root / "peers" / "n1.key", tmp_path / "n1.key")
    shutil.copy(keys.root / "peers" / "n1.key", tmp_path / "n9.key")
    with pytest.raises(CurveError, match="same public key"):
        load_member_keys(tmp_path)
    with pytest.raises(CurveError):
        load_member_keys(tmp_path / "missing")


def test_a_member_server_binds_exactly_its_allowed_keys(keys: KeyRing) -> None:
    server = keys.pair("server", "server")
    members = load_member_keys(keys.root / "peers")
    bound = CurveServer.for_members(server, members)
    assert bound.allowed == frozenset(members) and bound.members == members
    with pytest.raises(CurveError):
        CurveServer(server, frozenset(members), members={})
    with pytest.raises(CurveError):
        CurveServer(server, frozenset(members), frozenset(members), members=members)
    # A CURVE peer transport must bind keys to members.
    with pytest.raises(ValueError, match="for_members"):
        ZmqPeerTransport(
            N1,
            Inbox().peer,
            options=ZmqOptions(
                curve_server=CurveServer(server, frozenset(members)),
                curve_client=CurveClient(keys.pair("peers", "n1"), server.public),
            ),
        )


def _zap_answers(handler: ZapHandler, keys: list[bytes], domain: bytes) -> list[list[bytes]]:
    sent: list[list[bytes]] = []

    class FakeSocket:
        def send_multipart(self, parts: list[bytes]) -> None:
            sent.append(parts)

    handler.socket = FakeSocket()  # type: ignore[assignment]
    for i, key in enumerate(keys):
        handler.handle([b"1.0", b"r%d" % i, domain, b"addr", b"", b"CURVE", key])
    return sent


def test_zap_answers_a_member_key_with_its_member_id(keys: KeyRing) -> None:
    from zmq.utils import z85

    server = keys.pair("server", "server")
    members = load_member_keys(keys.root / "peers")
    by_name = {name: z85.decode(key) for key, name in members.items()}
    stranger = z85.decode(keys.pair("strangers", "peer").public)
    zap = ZapHandler("peers", CurveServer.for_members(server, members), "test")
    answers = _zap_answers(zap, [by_name["n2"], by_name["n1"], stranger], b"peers")
    # [version, request id, status, text, user id, metadata]
    assert [(a[2], a[4]) for a in answers] == [(b"200", b"n2"), (b"200", b"n1"), (b"400", b"")]
    assert zap.refused == 1
    # The client port still answers roles, not members.
    client = keys.pair("clients", "client").public
    admin = keys.pair("admins", "admin").public
    roles = ZapHandler(
        "clients",
        CurveServer(server, frozenset({client, admin}), frozenset({admin})),
        "test",
    )
    answers = _zap_answers(roles, [z85.decode(client), z85.decode(admin)], b"clients")
    assert [a[4] for a in answers] == [CLIENT_USER, ADMIN_USER]


# -- the peer transport --------------------------------------------------------------


def test_a_member_key_speaks_only_for_its_member(keys: KeyRing, stoppers: Stoppers) -> None:
    """n2's key under n2's id gets through; the same key claiming n3 (or n1, the
    receiver itself) gets nothing through, and every such frame is counted."""
    inbox = Inbox()
    target = ZmqPeerTransport(N1, inbox.peer, options=keys.peer_options("n1"))
    stoppers.append(target)
    target.start()
    honest = ZmqPeerTransport(N2, Inbox().peer, options=keys.peer_options("n2"))
    impostors = [
        ZmqPeerTransport(claim, Inbox().peer, options=keys.peer_options("n2")) for claim in (N3, N1)
    ]
    for transport in (honest, *impostors):
        stoppers.append(transport)
        transport.start()
        transport.add_peer(N1, target.address)

    def forge() -> None:
        for impostor in impostors:
            impostor.send(N1, b"forged")

    wait_for(
        lambda: (forge(), target.stats().forged >= 2 * len(impostors))[1],
        5.0,
        "forged frames dropped and counted",
    )
    assert send_until(lambda: honest.send(N1, b"honest"), inbox)
    forge()
    inbox.event.clear()
    assert send_until(lambda: honest.send(N1, b"again"), inbox)  # after the forgeries
    frames = inbox.snapshot()
    assert frames and all(sender == N2 for sender, _ in frames)
    assert {frame for _, frame in frames} <= {b"honest", b"again"}
    stats = target.stats()
    assert stats.forged >= 2 * len(impostors) and stats.frames_in == len(frames)
    assert stats.malformed == 0


def test_without_curve_the_claimed_sender_is_taken_as_is(stoppers: Stoppers) -> None:
    """The control: no keys, no binding -- anyone may claim any id (so the CURVE test
    above can fail)."""
    inbox = Inbox()
    target = ZmqPeerTransport(N1, inbox.peer)
    claimer = ZmqPeerTransport(N3, Inbox().peer)
    stoppers += [target, claimer]
    target.start()
    claimer.start()
    claimer.add_peer(N1, target.address)
    assert send_until(lambda: claimer.send(N1, b"x"), inbox)
    assert inbox.snapshot()[0] == (N3, b"x") and target.stats().forged == 0


# -- the node <-> registry link --------------------------------------------------------


def _config(keys: KeyRing, member: str, peers_dir: Path | None = None) -> NodeConfig:
    addresses = {
        MemberId(m): MemberAddress(f"tcp://127.0.0.1:{i}", f"tcp://127.0.0.1:{i + 10}")
        for i, m in enumerate(("n1", "n2", "n3"), 1)
    }
    return NodeConfig(
        MemberId(member),
        addresses,
        storage="memory",
        curve_server_key=keys.server,
        curve_node_key=keys.root / "peers" / f"{member}.key_secret",
        curve_peer_keys=peers_dir or keys.root / "peers",
    )


def test_the_registry_link_binds_the_members_own_key_to_the_far_end(
    keys: KeyRing, stoppers: Stoppers
) -> None:
    """Both ends of n1's link run on n1's config and talk; n2's config (n2's key) cannot
    speak on n1's link, not even claiming to be n1's registry: its key is refused."""
    curve = node_curve(_config(keys, "n1"))
    other = node_curve(_config(keys, "n2"))
    assert curve is not None and other is not None
    core_box, registry_box = Inbox(), Inbox()
    core = ZmqPeerTransport(
        core_endpoint(N1),
        core_box.peer,
        options=link_options(curve, 1 << 20, registry_endpoint(N1)),
    )
    registry = ZmqPeerTransport(
        registry_endpoint(N1),
        registry_box.peer,
        options=link_options(curve, 1 << 20, core_endpoint(N1)),
    )
    intruder = ZmqPeerTransport(
        registry_endpoint(N1),
        Inbox().peer,
        options=link_options(other, 1 << 20, core_endpoint(N1)),
    )
    for transport in (core, registry, intruder):
        stoppers.append(transport)
        transport.start()
    registry.add_peer(core_endpoint(N1), core.address)
    core.add_peer(registry_endpoint(N1), registry.address)
    intruder.add_peer(core_endpoint(N1), core.address)
    intruder.send(core_endpoint(N1), b"intruder")
    zap = core._zap
    assert zap is not None
    wait_for(lambda: (intruder.send(core_endpoint(N1), b"intruder"), zap.refused)[1], 5.0)
    assert send_until(lambda: registry.send(core_endpoint(N1), b"up"), core_box)
    assert send_until(lambda: core.send(registry_endpoint(N1), b"down"), registry_box)
    assert set(core_box.snapshot()) == {(registry_endpoint(N1), b"up")}
    assert set(registry_box.snapshot()) == {(core_endpoint(N1), b"down")}
    assert link_options(None, 1 << 20, core_endpoint(N1)).curve_server is None


# -- config validation -----------------------------------------------------------------


def test_a_node_refuses_a_peer_keys_directory_that_misnames_its_key(
    keys: KeyRing, tmp_path: Path
) -> None:
    peers = keys.root / "peers"
    assert node_curve(_config(keys, "n2")) is not None
    # n2's key filed as n9.key (and no n2.key): the others would bind it to n9.
    misnamed = tmp_path / "misnamed"
    misnamed.mkdir()
    shutil.copy(peers / "n1.key", misnamed / "n1.key")
    shutil.copy(peers / "n2.key", misnamed / "n9.key")
    with pytest.raises(ConfigError, match=r"name it n2\.key"):
        node_curve(_config(keys, "n2", misnamed))
    # n2.key is someone else's key (and n2's own key is not there at all).
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    shutil.copy(peers / "n3.key", swapped / "n2.key")
    with pytest.raises(ConfigError, match=r"n2\.key is not the public key"):
        node_curve(_config(keys, "n2", swapped))
    # n2's key missing altogether.
    missing = tmp_path / "missing"
    missing.mkdir()
    shutil.copy(peers / "n1.key", missing / "n1.key")
    with pytest.raises(ConfigError, match=r"not in .* as n2\.key"):
        node_curve(_config(keys, "n2", missing))
    # The same key under two names.
    twice = tmp_path / "twice"
    twice.mkdir()
    shutil.copy(peers / "n2.key", twice / "n2.key")
    shutil.copy(peers / "n2.key", twice / "n2-old.key")
    with pytest.raises(ConfigError, match="same public key"):
        node_curve(_config(keys, "n2", twice))


def test_key_names_may_be_any_member_id(keys: KeyRing, tmp_path: Path, stoppers: Stoppers) -> None:
    """Member ids are strings; a file name carries any of them (UTF-8 included), and the
    ZAP ``User-Id`` carries it through to the receiving transport's check."""
    name = MemberId("nœud-1")
    generate_keys(tmp_path / "peers", name)
    generate_keys(tmp_path / "peers", "n1")
    members = load_member_keys(tmp_path / "peers")
    assert sorted(members.values()) == sorted(["nœud-1", "n1"])
    server = keys.pair("server", "server")

    def options(own: str) -> ZmqOptions:
        pair = load_key_pair(tmp_path / "peers" / f"{own}.key_secret")
        return ZmqOptions(
            curve_server=CurveServer.for_members(server, members),
            curve_client=CurveClient(pair, server.public),
        )

    inbox = Inbox()
    target = ZmqPeerTransport(N1, inbox.peer, options=options("n1"))
    sender = ZmqPeerTransport(name, Inbox().peer, options=options(name))
    stoppers += [target, sender]
    target.start()
    sender.start()
    sender.add_peer(N1, target.address)
    assert send_until(lambda: sender.send(N1, b"hello"), inbox)
    assert inbox.snapshot()[0] == (name, b"hello") and target.stats().forged == 0
