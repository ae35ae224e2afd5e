"""The registry <-> consensus/session link when the registry lives in another process.

Inside one process the registry and the consensus/session actors talk through actor
mailboxes. Across processes the same ``RaftAction``/``ServerAction`` messages (all
codec-registered) travel over a :class:`~actors.transport.PeerTransport` between two
link endpoints, ``<member>/core`` and ``<member>/registry``; :class:`RemoteRef` stands
in for the actor on the far side, so neither side's code changes.

Like any network link it may lose messages when a process dies; the protocol already
copes (clients resend requests with their ids, the retry scheduler resends server
requests), exactly as with a lost client connection.
"""

from __future__ import annotations

import logging
from typing import Any

from actors.transport import PeerTransport
from protocol.codec import encode
from protocol.ids import MemberId

__all__ = ["RemoteRef", "core_endpoint", "registry_endpoint"]

log = logging.getLogger(__name__)


def core_endpoint(member: MemberId) -> MemberId:
    return MemberId(f"{member}/core")


def registry_endpoint(member: MemberId) -> MemberId:
    return MemberId(f"{member}/registry")


class RemoteRef:
    """``tell()`` for an actor in another process: encodes and sends each action."""

    def __init__(self, link: PeerTransport, to: MemberId) -> None:
        self.link = link
        self.to = to

    def tell(self, message: Any) -> None:
        for action in message if isinstance(message, list) else (message,):
            if not self.link.send(self.to, encode(action)):
                log.debug("link to %s dropped a %s", self.to, type(action).__name__)
