"""The registry's configuration, its effects batch, its status, and its id source."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Protocol

from protocol.actions import NodeRole, RaftAction
from protocol.ids import SessionId
from protocol.wire import ServerMessage

__all__ = ["RegistryConfig", "RegistryEffects", "RegistryStatus", "SessionIdSource"]

#: Room for a message's own fields around its payload when sizing frames.
FRAME_OVERHEAD_BYTES = 4096


class SessionIdSource(Protocol):
    """Draws a fresh session id (the shell passes random hex; tests pass a counter)."""

    def __call__(self) -> SessionId: ...


@dataclass(frozen=True, slots=True)
class RegistryConfig:
    """Timeouts and the limits a hostile client cannot exceed.

    Every limit, when hit, produces a typed answer (``SessionRejected``,
    ``RequestError``, ``QueryError``), never unbounded memory or a crash.
    """

    #: A session with no message from its client for this long is expired (leader only).
    session_timeout_ms: int = 10_000
    #: Largest accepted command/query payload (and total size of session capabilities).
    max_payload_bytes: int = 1 << 20
    #: Sessions one connection may create while it holds any state (a client that keeps
    #: replacing its session would otherwise leave unbounded orphans behind).
    max_sessions_per_connection: int = 8
    #: Sessions (live plus being created) this node tracks at once.
    max_sessions: int = 100_000
    #: Client requests of one session proposed and not yet answered.
    max_pending_requests_per_session: int = 1024
    #: How far a command's id may lie above the session's lowest pending request id.
    #: The state machine caches a session's responses from its lowest pending id up, so
    #: this bounds that cache (a client that never advances its lowest pending id is
    #: refused with ``TOO_MANY_PENDING`` instead of growing it without end).
    max_cached_responses_per_session: int = 8192
    #: Queries of one connection sent to consensus and not yet answered.
    max_pending_queries_per_connection: int = 256
    #: Queries of all connections sent to consensus and not yet answered.
    max_pending_queries: int = 65_536
    #: Server requests kept for a session that has no connection (resent on continue;
    #: beyond this they are dropped and the retry scheduler resends them later).
    max_held_server_requests: int = 1024
    #: Items one batch frame may carry (either direction); a client batch with more is
    #: a protocol error of its connection.
    max_batch_items: int = 1024
    #: Soft bound on the bytes of one server batch frame (a larger single answer still
    #: goes alone, as it would unbatched).
    max_batch_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) < 1:
                raise ValueError(f"RegistryConfig.{f.name} must be >= 1")

    @property
    def max_frame_bytes(self) -> int:
        """The largest client frame worth decoding (payload plus field overhead)."""
        return self.max_payload_bytes + FRAME_OVERHEAD_BYTES

    @property
    def max_batch_frame_bytes(self) -> int:
        """The largest client batch frame worth decoding (a client packs its batches
        under its payload limit, and an item too large for that goes alone)."""
        return self.max_frame_bytes + FRAME_OVERHEAD_BYTES

    @property
    def channels(self) -> int:
        """Channels one connection may use: ``max_sessions_per_connection``, at most 256."""
        return min(self.max_sessions_per_connection, 256)


@dataclass(slots=True)
class RegistryEffects:
    """What the shell must do after one input, in this order: send, propose, close.

    ``send`` holds (connection routing id, message) pairs in the order they must go out;
    ``close`` lists connections to drop after their messages were sent.
    """

    send: list[tuple[bytes, ServerMessage]] = field(default_factory=list)
    propose: list[RaftAction] = field(default_factory=list)
    close: list[bytes] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RegistryStatus:
    """A snapshot of the table for ``Node.status()``."""

    role: NodeRole
    term: int
    leader_hint: str | None
    sessions_loaded: bool
    sessions: int
    bound_sessions: int
    expiring_sessions: int
    pending_creations: int
    connections: int
    pending_queries: int
