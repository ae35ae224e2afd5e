"""CURVE encryption and authentication for the ZeroMQ transports (optional).

Key files are ZeroMQ certificates as written by :func:`generate_keys` (pyzmq's
``zmq.auth.create_certificates``): ``NAME.key`` holds a public key, ``NAME.key_secret``
the pair. A directory of allowed keys is read as every ``*.key`` file in it (the
``*.key_secret`` files next to them are ignored).

The model (see the README's Security section):

* Every member's *binding* sockets (the peer PULL and the client ROUTER) are CURVE
  servers with one **server key pair shared by the cluster**, so a client or a peer
  needs only one server public key whichever member it talks to (clients follow leader
  hints to any member).
* Every connecting socket (a peer's PUSH, a client's DEALER) proves who it is with its
  own key pair; the server lets it in only if its public key is in the allowed set
  (:class:`CurveServer`). The check is a ZAP handler that the transport's own I/O thread
  answers (:class:`ZapHandler`), so no extra thread runs.
* On the client port a key is either a client or an admin key; the ZAP answer names
  the role as the connection's ZeroMQ ``User-Id``, so every received message says
  whether it came from an admin key (admin requests are refused otherwise).
* On the peer port a key speaks for exactly one member: the public key file
  ``NAME.key`` in the peer-keys directory belongs to member ``NAME``
  (:func:`load_member_keys`, :attr:`CurveServer.members`). The ZAP answer names that
  member as the connection's ``User-Id``, and the peer transport drops every frame
  whose claimed sender id is not that member, so one member's key (or a stolen one)
  cannot speak for the others.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.utils import z85 as _z85

from ._common import LOG, log_rate_limited

__all__ = [
    "ADMIN_USER",
    "CLIENT_USER",
    "CurveClient",
    "CurveError",
    "CurveKeyPair",
    "CurveServer",
    "ZapHandler",
    "curve_available",
    "generate_keys",
    "load_key_pair",
    "load_member_keys",
    "load_public_key",
    "load_public_keys",
]

#: ``User-Id`` of a connection authenticated with an admin key / any other allowed key.
ADMIN_USER = b"admin"
CLIENT_USER = b"client"
ZAP_ENDPOINT = "inproc://zeromq.zap.01"
_ZAP_VERSION = b"1.0"


class CurveError(ValueError):
    """A key file or key directory that cannot be used (or libzmq lacks CURVE)."""


def curve_available() -> bool:
    """Whether this libzmq was built with CURVE (libsodium)."""
    return bool(zmq.has("curve"))


@dataclass(frozen=True, slots=True)
class CurveKeyPair:
    """A Z85-encoded (40-byte) public and secret key."""

    public: bytes
    secret: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class CurveServer:
    """A binding socket's CURVE settings: its key pair and whom it lets in.

    ``allowed`` are the Z85 public keys that may connect. On a client port ``admins``
    may connect too and are reported as :data:`ADMIN_USER` (the others as
    :data:`CLIENT_USER`). On a peer port ``members`` maps each allowed key to the one
    member id it speaks for (reported as the connection's ``User-Id``); its keys must be
    exactly ``allowed`` -- build it with :meth:`for_members`.
    """

    keys: CurveKeyPair
    allowed: frozenset[bytes]
    admins: frozenset[bytes] = frozenset()
    members: Mapping[bytes, str] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        if self.members is not None:
            if frozenset(self.members) != self.allowed:
                raise CurveError("CurveServer.members must map exactly the allowed keys")
            if self.admins:
                raise CurveError("CurveServer: admin keys are for the client port only")

    @classmethod
    def for_members(cls, keys: CurveKeyPair, members: Mapping[bytes, str]) -> CurveServer:
        """A peer-port server letting in exactly ``members``' keys, each bound to its
        member id (e.g. from :func:`load_member_keys`)."""
        return cls(keys, frozenset(members), members=dict(members))


@dataclass(frozen=True, slots=True)
class CurveClient:
    """A connecting socket's CURVE settings: its own key pair and the server's public key."""

    keys: CurveKeyPair
    server_public: bytes


def _check(key: bytes | None, path: Path) -> bytes:
    if key is None or len(key) != 40:
        raise CurveError(f"{path}: not a CURVE key file")
    return key


def _load(path: Path) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise CurveError(f"{path}: {exc}") from None
    return _check(public, path), secret


def load_key_pair(path: str | Path) -> CurveKeyPair:
    """Read a ``*.key_secret`` file (public and secret key)."""
    path = Path(path)
    public, secret = _load(path)
    if secret is None:
        raise CurveError(f"{path}: holds no secret key (use the .key_secret file)")
    return CurveKeyPair(public, _check(secret, path))


def load_public_key(path: str | Path) -> bytes:
    """Read the public key of a ``*.key`` (or ``*.key_secret``) file."""
    path = Path(path)
    return _load(path)[0]


def load_public_keys(directory: str | Path) -> frozenset[bytes]:
    """Every public key in ``directory``'s ``*.key`` files."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CurveError(f"{directory}: not a directory of public keys")
    return frozenset(load_public_key(p) for p in sorted(directory.glob("*.key")))


def load_member_keys(directory: str | Path) -> dict[bytes, str]:
    """The peer-keys ``directory`` as ``{public key: member id}``: ``NAME.key`` is the
    key of member ``NAME``. A public key found under two names is refused (it would
    speak for two members), as is a directory that is missing."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CurveError(f"{directory}: not a directory of public keys")
    members: dict[bytes, str] = {}
    for path in sorted(directory.glob("*.key")):
        key, name = load_public_key(path), path.name[: -len(".key")]
        if key in members:
            raise CurveError(
                f"{directory}: {members[key]}.key and {name}.key hold the same public key "
                "(a member key speaks for the one member its file is named after)"
            )
        members[key] = name
    return members


def generate_keys(directory: str | Path, name: str) -> tuple[Path, Path]:
    """Write a fresh key pair as ``directory/NAME.key`` and ``NAME.key_secret`` (mode
    0600); returns both paths. Refuses to overwrite an existing pair."""
    if not name or "/" in name or name.startswith("."):
        raise CurveError(f"bad key name {name!r}")
    if not curve_available():
        raise CurveError("this libzmq has no CURVE support")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
    if public.exists() or secret.exists():
        raise CurveError(f"{public} or {secret} exists already")
    # The secret must never exist readable by others, not even for a moment:
    # create_certificates opens with the umask, so tighten it while it writes (the
    # umask is process-wide; this runs at setup, not while a node serves).
    old_umask = os.umask(0o077)
    try:
        made_public, made_secret = zmq.auth.create_certificates(str(directory), name)
    finally:
        os.umask(old_umask)
    os.chmod(made_secret, 0o600)
    os.chmod(made_public, 0o644)
    return Path(made_public), Path(made_secret)


def configure_server(socket: zmq.Socket[Any], curve: CurveServer, domain: str) -> None:
    """Make a binding ``socket`` a CURVE server checked by the ZAP handler for ``domain``."""
    socket.setsockopt(zmq.ZAP_DOMAIN, domain.encode())
    socket.setsockopt(zmq.CURVE_SECRETKEY, curve.keys.secret)
    socket.setsockopt(zmq.CURVE_SERVER, 1)


def configure_client(socket: zmq.Socket[Any], curve: CurveClient) -> None:
    """Make a connecting ``socket`` a CURVE client of ``curve.server_public``."""
    socket.setsockopt(zmq.CURVE_SERVERKEY, curve.server_public)
    socket.setsockopt(zmq.CURVE_PUBLICKEY, curve.keys.public)
    socket.setsockopt(zmq.CURVE_SECRETKEY, curve.keys.secret)


class ZapHandler:
    """Answers libzmq's ZAP requests for one context on the owning I/O thread.

    Only CURVE handshakes of the configured domain with an allowed public key pass;
    everything else (NULL or PLAIN mechanisms, unknown keys, malformed requests) is
    refused, and counted in :attr:`refused`. The ``User-Id`` of an accepted connection
    is the key's member id when the server has :attr:`CurveServer.members` (peer port),
    else :data:`ADMIN_USER` or :data:`CLIENT_USER` (client port).
    """

    def __init__(self, domain: str, curve: CurveServer, name: str) -> None:
        self.domain = domain.encode()
        self.curve = curve
        self.name = name
        self.refused = 0
        self.socket: zmq.Socket[Any] | None = None

    def open(self, context: zmq.Context[Any]) -> zmq.Socket[Any]:
        socket: zmq.Socket[Any] = context.socket(zmq.REP)
        socket.setsockopt(zmq.LINGER, 0)
        socket.bind(ZAP_ENDPOINT)
        self.socket = socket
        return socket

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close(0)
            self.socket = None

    def handle(self, parts: list[bytes]) -> None:
        """Answer one ZAP request (``parts`` as received on :attr:`socket`)."""
        assert self.socket is not None
        if len(parts) < 2:
            return  # cannot even name the request; libzmq never sends this
        request_id = parts[1]
        status, text, user = b"400", b"malformed request", b""
        if len(parts) >= 6 and parts[0] == _ZAP_VERSION:
            domain, mechanism, credentials = parts[2], parts[5], parts[6:]
            key = credentials[0] if len(credentials) == 1 and len(credentials[0]) == 32 else None
            if domain != self.domain or mechanism != b"CURVE" or key is None:
                status, text = b"400", b"CURVE with a key is required"
            else:
                z85 = _z85.encode(key)
                members = self.curve.members
                if members is not None:
                    member = members.get(z85)
                    if member is None:
                        status, text = b"400", b"key not allowed (no member's NAME.key)"
                    else:
                        status, text, user = b"200", b"OK", member.encode()
                elif z85 in self.curve.admins:
                    status, text, user = b"200", b"OK", ADMIN_USER
                elif z85 in self.curve.allowed:
                    status, text, user = b"200", b"OK", CLIENT_USER
                else:
                    status, text = b"400", b"key not allowed"
        if status != b"200":
            self.refused += 1
            log_rate_limited(self.refused, "%s: refused a connection (%s)", self.name, text)
        try:
            self.socket.send_multipart([_ZAP_VERSION, request_id, status, text, user, b""])
        except zmq.ZMQError as exc:  # pragma: no cover - inproc REP send does not fail
            LOG.error("%s: cannot answer a ZAP request: %s", self.name, exc)
