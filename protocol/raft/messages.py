"""The Raft RPCs exchanged between members (codec tags 104-115).

Every message names its ``sender`` and ``receiver`` and carries the sender's ``term``.
Heartbeats are their own messages (rather than empty AppendEntries) so that they can
carry the ReadIndex round number (§6.4) and never touch the follower's log.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.codec import message
from protocol.ids import MemberId
from protocol.raft.log import LogEntry, SnapshotMeta

__all__ = [
    "RAFT_MESSAGE_TYPES",
    "AppendEntries",
    "AppendEntriesResponse",
    "Heartbeat",
    "HeartbeatResponse",
    "InstallSnapshot",
    "InstallSnapshotResponse",
    "RaftMessage",
    "ReadIndexRequest",
    "ReadIndexResponse",
    "RemovedNotice",
    "RequestVote",
    "RequestVoteResponse",
    "TimeoutNow",
]


@message(tag=104)
@dataclass(frozen=True, slots=True)
class RequestVote:
    """A (pre-)candidate asks for a vote (§3.4); ``pre_vote`` asks without a term bump
    (§9.6); ``transfer`` marks a campaign started by TimeoutNow (§3.10), which voters
    honour even while they still hear from a leader."""

    term: int
    sender: MemberId
    receiver: MemberId
    last_log_index: int
    last_log_term: int
    pre_vote: bool = False
    transfer: bool = False


@message(tag=105)
@dataclass(frozen=True, slots=True)
class RequestVoteResponse:
    term: int
    sender: MemberId
    receiver: MemberId
    granted: bool
    pre_vote: bool = False


@message(tag=106)
@dataclass(frozen=True, slots=True)
class AppendEntries:
    """Replicate ``entries`` after ``(prev_log_index, prev_log_term)`` (§3.5)."""

    term: int
    sender: MemberId
    receiver: MemberId
    prev_log_index: int
    prev_log_term: int
    entries: tuple[LogEntry, ...]
    commit: int


@message(tag=107)
@dataclass(frozen=True, slots=True)
class AppendEntriesResponse:
    """``success``: the follower's log matches the leader's up to ``index``.

    On a rejection ``index`` is the rejected ``prev_log_index`` and the hint tells the
    leader where to retry: ``conflict_term`` is the follower's term at that index (0 if
    its log is shorter) and ``conflict_index`` the first index the follower has of that
    term (or its last index + 1), so a whole term is skipped per round trip.
    """

    term: int
    sender: MemberId
    receiver: MemberId
    success: bool
    index: int
    conflict_index: int = 0
    conflict_term: int = 0


@message(tag=108)
@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Leader liveness, the commit index (capped at the follower's match) and the
    latest ReadIndex round number to confirm."""

    term: int
    sender: MemberId
    receiver: MemberId
    commit: int
    read_round: int


@message(tag=109)
@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    term: int
    sender: MemberId
    receiver: MemberId
    read_round: int


@message(tag=110)
@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """One chunk of the leader's snapshot (§5.3): ``data`` goes at byte ``offset``;
    ``done`` marks the last chunk."""

    term: int
    sender: MemberId
    receiver: MemberId
    meta: SnapshotMeta
    offset: int
    data: bytes
    done: bool


@message(tag=111)
@dataclass(frozen=True, slots=True)
class InstallSnapshotResponse:
    """``next_offset``: the bytes the follower holds of snapshot ``snapshot_index``
    (resume from there); ``done``: the follower now has everything up to
    ``match_index``."""

    term: int
    sender: MemberId
    receiver: MemberId
    snapshot_index: int
    next_offset: int
    done: bool
    match_index: int = 0


@message(tag=112)
@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """Leadership transfer: start an election right away (§3.10)."""

    term: int
    sender: MemberId
    receiver: MemberId


@message(tag=113)
@dataclass(frozen=True, slots=True)
class ReadIndexRequest:
    """A follower forwards a linearizable read to its leader (§6.4)."""

    term: int
    sender: MemberId
    receiver: MemberId
    context: bytes


@message(tag=114)
@dataclass(frozen=True, slots=True)
class ReadIndexResponse:
    """The leader's confirmed read index for ``context`` (``ok`` False: refused)."""

    term: int
    sender: MemberId
    receiver: MemberId
    context: bytes
    index: int
    ok: bool


@message(tag=115)
@dataclass(frozen=True, slots=True)
class RemovedNotice:
    """The leader tells ``receiver``, which sent it a message, that it is not a member
    of the leader's committed configuration: it was removed (the leader never sends
    a removed member the entry that removes it), so it must stop taking part.
    ``config_index`` is the index of that configuration: a member that already holds
    a later configuration naming it (it was added again) ignores a late notice."""

    term: int
    sender: MemberId
    receiver: MemberId
    config_index: int


RaftMessage = (
    RequestVote
    | RequestVoteResponse
    | AppendEntries
    | AppendEntriesResponse
    | Heartbeat
    | HeartbeatResponse
    | InstallSnapshot
    | InstallSnapshotResponse
    | TimeoutNow
    | ReadIndexRequest
    | ReadIndexResponse
    | RemovedNotice
)

#: Every Raft message class, for ``decode(data, expected=RAFT_MESSAGE_TYPES)``.
RAFT_MESSAGE_TYPES: tuple[type[RaftMessage], ...] = (
    RequestVote,
    RequestVoteResponse,
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    TimeoutNow,
    ReadIndexRequest,
    ReadIndexResponse,
    RemovedNotice,
)
