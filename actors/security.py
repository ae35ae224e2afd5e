"""A node's CURVE settings, read from the key files its :class:`NodeConfig` names.

See :mod:`actors.transport.curve` for the model: one server key pair shared by the
cluster's binding sockets, one key pair per member (its identity on the peer port), and
directories of allowed member, client and admin public keys. The link between a node
and a registry in another process (:func:`link_options`) is secured like the peer port.
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
    load_public_keys,
)

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


def link_options(curve: NodeCurve | None, max_frame_bytes: int) -> ZmqOptions:
    """Options for the link between a node and its registry in another process: with
    CURVE, the same as the peer port (both ends read the member's config, so each
    presents the server key pair, connects with the member's own key pair, and lets in
    only member keys)."""
    if curve is None:
        return ZmqOptions(max_frame_bytes=max_frame_bytes)
    return curve.peer_options(max_frame_bytes)


def _keys(directory: Path | None) -> frozenset[bytes]:
    return frozenset() if directory is None else load_public_keys(directory)


def node_curve(config: NodeConfig) -> NodeCurve | None:
    """The node's CURVE settings, or None when CURVE is off; :class:`ConfigError` for a
    missing or unreadable key file."""
    if config.curve_server_key is None:
        return None
    assert config.curve_node_key is not None and config.curve_peer_keys is not None
    try:
        server = load_key_pair(config.curve_server_key)
        node = load_key_pair(config.curve_node_key)
        peers = load_public_keys(config.curve_peer_keys)
        clients = _keys(config.curve_client_keys)
        admins = _keys(config.curve_admin_keys)
    except CurveError as exc:
        raise ConfigError(f"CURVE: {exc}") from None
    if node.public not in peers:
        raise ConfigError(
            f"CURVE: this member's public key is not in {config.curve_peer_keys} "
            "(the other members would refuse it)"
        )
    return NodeCurve(
        peer_server=CurveServer(server, peers),
        peer_client=CurveClient(node, server.public),
        client_server=CurveServer(server, clients | admins, admins),
    )
