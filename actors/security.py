"""A node's CURVE settings, read from the key files its :class:`NodeConfig` names.

See :mod:`actors.transport.curve` for the model: one server key pair shared by the
cluster's binding sockets, one key pair per member (its identity on the peer port), and
directories of allowed member, client and admin public keys. In the peer-keys directory
``NAME.key`` is the key of member ``NAME``, and it speaks only for that member: the
other members drop frames sent with it under any other member id.

The link between a node and its registry in another process (:func:`link_options`) is
secured like the peer port, with tighter binding: both ends run on the member's own
config, so each end lets in only the member's own key, bound to the far end's link id
(``<member>/core`` or ``<member>/registry``). Another member's key gets nothing in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from actors.config import ConfigError, NodeConfig
from actors.transport import (
    CurveClient,
    CurveError,
    CurveServer,
    ZmqOptions,
    load_key_pair,
    load_member_keys,
    load_public_keys,
)
from protocol.ids import MemberId

__all__ = ["NodeCurve", "link_options", "node_curve"]


@dataclass(frozen=True, slots=True)
class NodeCurve:
    """CURVE for the peer port (server and client side) and the client port."""

    peer_server: CurveServer
    peer_client: CurveClient
    client_server: CurveServer

    def peer_options(self, max_frame_bytes: int) -> ZmqOptions:
        return ZmqOptions(
            max_frame_bytes=max_frame_bytes,
            curve_server=self.peer_server,
            curve_client=self.peer_client,
        )

    def client_options(self, max_frame_bytes: int) -> ZmqOptions:
        return ZmqOptions(max_frame_bytes=max_frame_bytes, curve_server=self.client_server)

    def link_options(self, max_frame_bytes: int, far: MemberId) -> ZmqOptions:
        """The registry link's end whose far end is the link id ``far``: it presents the
        server key pair, connects with the member's own key pair, and lets in only that
        key, bound to ``far`` (both ends run on the same member's config)."""
        own = self.peer_client.keys.public
        return ZmqOptions(
            max_frame_bytes=max_frame_bytes,
            curve_server=CurveServer.for_members(self.peer_server.keys, {own: far}),
            curve_client=self.peer_client,
        )


def link_options(curve: NodeCurve | None, max_frame_bytes: int, far: MemberId) -> ZmqOptions:
    """Options for the link between a node and its registry in another process, at the
    end whose far end is ``far`` (:func:`actors.link.core_endpoint` or
    :func:`~actors.link.registry_endpoint`): with CURVE, see
    :meth:`NodeCurve.link_options`."""
    if curve is None:
        return ZmqOptions(max_frame_bytes=max_frame_bytes)
    return curve.link_options(max_frame_bytes, far)


def _keys(directory: Path | None) -> frozenset[bytes]:
    return frozenset() if directory is None else load_public_keys(directory)


def node_curve(config: NodeConfig) -> NodeCurve | None:
    """The node's CURVE settings, or None when CURVE is off; :class:`ConfigError` for a
    missing or unreadable key file, and for a peer-keys directory in which this
    member's public key is not ``<member_id>.key``.

    That last check refuses rather than warns: the other members bind a key to the
    member its file is named after, so a member whose key is missing, or filed under
    another name, would start and then have every frame it sends dropped -- a node
    that silently never counts. Failing at start says what to fix."""
    if config.curve_server_key is None:
        return None
    assert config.curve_node_key is not None and config.curve_peer_keys is not None
    try:
        server = load_key_pair(config.curve_server_key)
        node = load_key_pair(config.curve_node_key)
        peers = load_member_keys(config.curve_peer_keys)
        clients = _keys(config.curve_client_keys)
        admins = _keys(config.curve_admin_keys)
    except CurveError as exc:
        raise ConfigError(f"CURVE: {exc}") from None
    _check_own_key(config, node.public, peers)
    return NodeCurve(
        peer_server=CurveServer.for_members(server, peers),
        peer_client=CurveClient(node, server.public),
        client_server=CurveServer(server, clients | admins, admins),
    )


def _check_own_key(config: NodeConfig, public: bytes, peers: dict[bytes, str]) -> None:
    """This member's public key must be ``<member_id>.key`` in the peer-keys directory."""
    directory, member = config.curve_peer_keys, config.member_id
    assert directory is not None
    named = peers.get(public)
    if named == member:
        return
    if member in peers.values():
        raise ConfigError(
            f"CURVE: {directory / (member + '.key')} is not the public key of curve_node_key "
            f"{config.curve_node_key} (the other members would drop this member's frames)"
        )
    if named is not None:
        raise ConfigError(
            f"CURVE: this member's public key is {directory / (named + '.key')}, but a "
            f"member key speaks only for the member its file is named after: name it "
            f"{member}.key (here and in the other members' peer-keys directories)"
        )
    raise ConfigError(
        f"CURVE: this member's public key is not in {directory} (the other members "
        f"would refuse it): copy it there, and to the other members, as {member}.key"
    )
