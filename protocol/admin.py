"""Operator messages on the client port: ask a node how it is (tags 250-259).

A node answers :class:`StatusRequest` whatever its role, so ``raft-actors cluster
status`` works against any member reachable by address, and needs no session.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.codec import message
from protocol.ids import MemberId

__all__ = ["NodeStatus", "StatusRequest", "StatusResponse"]


@message(tag=250)
@dataclass(frozen=True, slots=True)
class NodeStatus:
    """One node's view of itself and the cluster."""

    member_id: MemberId
    role: str
    term: int
    leader: MemberId | None
    commit_index: int
    applied_index: int
    last_log_index: int
    snapshot_index: int
    voters: tuple[MemberId, ...]
    learners: tuple[MemberId, ...]
    sessions: int
    pending_server_requests: int
    client_address: str
    peer_address: str
    pid: int
    uptime_ms: int


@message(tag=251)
@dataclass(frozen=True, slots=True)
class StatusRequest:
    correlation_id: int


@message(tag=252)
@dataclass(frozen=True, slots=True)
class StatusResponse:
    correlation_id: int
    status: NodeStatus
