"""Operator messages on the client port: status and cluster changes (tags 250-259).

Tags 255-257 travel only on the link between a node and its registry in another
process (:mod:`actors.link`): the registry forwards admin requests and answers status
requests from what the node pushes.

A node answers :class:`StatusRequest` whatever its role, so ``raft-actors cluster
status`` works against any member reachable by address, and needs no session.

:class:`AdminRequest` asks the leader to transfer leadership or change the membership;
a follower answers at once with ``ok=False`` and a ``leader_hint`` (the leader's client
address) so a tool can follow it. ``retryable`` errors (another change in flight, a
leader busy transferring, no leader yet) are worth repeating; the others are not.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from protocol.codec import message
from protocol.ids import MemberId

__all__ = [
    "AdminOp",
    "AdminRequest",
    "AdminResponse",
    "LinkedAdminRequest",
    "LinkedAdminResponse",
    "NodeStatus",
    "StatusRequest",
    "StatusResponse",
    "StatusUpdate",
]


@message(tag=250, extensible=True)
@dataclass(frozen=True, slots=True)
class NodeStatus:
    """One node's view of itself and the cluster.

    Extensible (see :mod:`protocol.codec`): status tools and nodes one release apart
    read each other's status; add new fields last, with defaults."""

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
    #: (Leader only) per follower, ms since its last successful AppendEntries or
    #: heartbeat response as seen by the leader (-1: none yet this term).
    last_contact_ms: tuple[tuple[MemberId, int], ...] = ()


@message(tag=251)
@dataclass(frozen=True, slots=True)
class StatusRequest:
    correlation_id: int


@message(tag=252)
@dataclass(frozen=True, slots=True)
class StatusResponse:
    correlation_id: int
    status: NodeStatus


class AdminOp(enum.IntEnum):
    """What an :class:`AdminRequest` asks for."""

    #: Hand leadership to ``member`` (``None``: the most caught-up other voter).
    TRANSFER_LEADER = 1
    #: Add ``member`` (reachable at ``peer_address``/``client_address``) as a learner;
    #: it is promoted to voter once it has caught up.
    ADD_MEMBER = 2
    #: Remove ``member`` (the leader first hands leadership away if it is the one).
    REMOVE_MEMBER = 3
    #: Only record ``member``'s addresses in this node's address book (any role):
    #: sent to every member before an ``ADD_MEMBER``.
    LEARN_MEMBER = 4


@message(tag=253)
@dataclass(frozen=True, slots=True)
class AdminRequest:
    correlation_id: int
    op: AdminOp
    member: MemberId | None
    peer_address: str = ""
    client_address: str = ""


@message(tag=254)
@dataclass(frozen=True, slots=True)
class AdminResponse:
    """``ok``: done (a transfer: leadership moved; a change: committed). Otherwise
    ``error`` says why and ``retryable`` whether repeating it may succeed."""

    correlation_id: int
    ok: bool
    error: str
    retryable: bool
    leader_hint: str | None


@message(tag=255)
@dataclass(frozen=True, slots=True)
class LinkedAdminRequest:
    """An :class:`AdminRequest` a registry in another process received on client
    ``connection``, forwarded to its node over the registry link."""

    connection: bytes
    request: AdminRequest


@message(tag=256)
@dataclass(frozen=True, slots=True)
class LinkedAdminResponse:
    """The node's answer to a :class:`LinkedAdminRequest`, for client ``connection``."""

    connection: bytes
    response: AdminResponse


@message(tag=257)
@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """A node's status, pushed to its registry process a few times a second so that
    the registry answers :class:`StatusRequest`\\ s truthfully without a round trip."""

    status: NodeStatus
