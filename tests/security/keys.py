"""Key files for the CURVE tests: one directory per role, as an operator would lay out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from actors.transport import (
    CurveClient,
    CurveKeyPair,
    CurveServer,
    ZmqOptions,
    generate_keys,
    load_key_pair,
    load_member_keys,
)


@dataclass(frozen=True)
class KeyRing:
    """``root/server``, ``root/peers/<member>``, ``root/clients/client``,
    ``root/admins/admin`` and ``root/strangers/<name>`` (allowed nowhere)."""

    root: Path

    @property
    def server(self) -> Path:
        return self.root / "server" / "server.key_secret"

    @property
    def server_public(self) -> Path:
        return self.root / "server" / "server.key"

    def pair(self, role: str, name: str) -> CurveKeyPair:
        return load_key_pair(self.root / role / f"{name}.key_secret")

    def client(self, role: str = "clients", name: str = "client") -> CurveClient:
        return CurveClient(self.pair(role, name), self.pair("server", "server").public)

    def peer_options(self, key_of: str, role: str = "peers") -> ZmqOptions:
        """Peer-port options for someone holding ``key_of``'s key pair of ``role``
        (the server side allows the members in ``peers``)."""
        server = self.pair("server", "server")
        return ZmqOptions(
            curve_server=CurveServer.for_members(server, load_member_keys(self.root / "peers")),
            curve_client=CurveClient(self.pair(role, key_of), server.public),
        )


def make_keys(root: Path, members: tuple[str, ...] = ("n1", "n2", "n3")) -> KeyRing:
    generate_keys(root / "server", "server")
    for member in members:
        generate_keys(root / "peers", member)
    generate_keys(root / "clients", "client")
    generate_keys(root / "admins", "admin")
    for name in ("peer", "client"):
        generate_keys(root / "strangers", name)
    return KeyRing(root)
