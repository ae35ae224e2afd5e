"""The core's configuration, inputs and outputs other than wire messages.

``RaftOptions`` tunes it; ``RestoredState`` is what the host loads from storage at
start; ``Ready`` is the batch of effects the host carries out; ``Proposed`` /
``Refused`` answer the host's requests.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

from protocol.ids import MemberId
from protocol.raft.log import Configuration, HardState, LogEntry, SnapshotMeta
from protocol.raft.messages import RaftMessage

__all__ = [
    "ChangeKind",
    "MembershipChange",
    "Proposed",
    "RaftOptions",
    "RandomSource",
    "ReadState",
    "Ready",
    "ReceivedSnapshot",
    "Refusal",
    "Refused",
    "RestoredState",
    "Role",
    "SoftState",
]


class RandomSource(Protocol):
    """The slice of ``random.Random`` the core uses (injected, seeded in tests)."""

    def randrange(self, start: int, stop: int) -> int: ...


@dataclass(frozen=True, slots=True)
class RaftOptions:
    """Tuning knobs; times are in ticks (the host decides how long a tick is).

    A follower starts an election after a random timeout in
    ``[election_ticks, 2 * election_ticks)``; the leader sends heartbeats every
    ``heartbeat_ticks``.
    """

    election_ticks: int = 10
    heartbeat_ticks: int = 1
    #: Upper bound of entry payload bytes in one AppendEntries (at least one entry).
    max_append_bytes: int = 1024 * 1024
    #: AppendEntries messages in flight to one follower (pipelining window).
    max_inflight_msgs: int = 64
    #: Entry payload bytes in flight to one follower.
    max_inflight_bytes: int = 16 * 1024 * 1024
    #: Proposals beyond this many uncommitted payload bytes are refused (retryable).
    max_uncommitted_bytes: int = 64 * 1024 * 1024
    #: Entries in one AppendEntries.
    max_entries_per_msg: int = 1024
    #: Bytes of snapshot data per InstallSnapshot chunk.
    snapshot_chunk_bytes: int = 1024 * 1024
    #: Entries kept before a snapshot's index when the log is compacted, so that
    #: slightly lagging followers catch up from the log rather than a snapshot.
    compaction_tail: int = 1000
    #: Suggest a snapshot (``Ready.take_snapshot``) once this many entries were
    #: applied since the last one; 0 never suggests.
    snapshot_entries: int = 0
    #: Local ReadIndex requests waiting for confirmation; beyond: refused, retryable.
    max_pending_reads: int = 4096
    check_quorum: bool = True
    pre_vote: bool = True
    #: A learner may be promoted once its log reaches the leader's commit index, or is
    #: within this many entries of the leader's last entry (whichever comes first);
    #: 0: only the former. A larger lag promotes sooner under a steady write load, at
    #: the price of a voter that still has to catch up.
    promotion_lag: int = 0
    #: When the commit index advances, do not send a follower (in the replicate state)
    #: that has no new entries to receive an AppendEntries of its own just to carry the
    #: commit index: it learns it from the next append or heartbeat to it, or at the
    #: leader's next tick at the latest. Under a stream of commands this halves the
    #: peer messages (those notices and their answers); followers apply up to one tick
    #: later. The leader's commitment, clients' answers and safety are unaffected.
    #: Off: followers are told at once (as the dissertation describes).
    lazy_commit_notices: bool = False

    def __post_init__(self) -> None:
        positive = (
            "election_ticks",
            "heartbeat_ticks",
            "max_append_bytes",
            "max_inflight_msgs",
            "max_inflight_bytes",
            "max_uncommitted_bytes",
            "max_entries_per_msg",
            "snapshot_chunk_bytes",
            "max_pending_reads",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.heartbeat_ticks >= self.election_ticks:
            raise ValueError("heartbeat_ticks must be below election_ticks")
        if self.compaction_tail < 0 or self.snapshot_entries < 0 or self.promotion_lag < 0:
            raise ValueError("compaction_tail, snapshot_entries, promotion_lag must be >= 0")


@dataclass(frozen=True, slots=True)
class RestoredState:
    """What the host loaded from storage: the hard state, the latest snapshot (its
    meta and data) and the log entries after it, contiguous (entries at or before the
    snapshot's index are ignored)."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: SnapshotMeta | None = None
    snapshot_data: bytes = b""
    entries: tuple[LogEntry, ...] = ()

    @staticmethod
    def bootstrap(configuration: Configuration) -> RestoredState:
        """A founding member's first start: the initial configuration at index 0."""
        return RestoredState(snapshot=SnapshotMeta(0, 0, configuration))


class Role(enum.IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3
    #: Removed from the configuration (told by the leader, or a leader that removed
    #: itself): takes no part in Raft until a leader replicates to it again.
    REMOVED = 4


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state the host reacts to: this member's role and the known leader."""

    role: Role
    leader: MemberId | None
    term: int


@dataclass(frozen=True, slots=True)
class ReadState:
    """A confirmed linearizable read: serve ``context`` once ``index`` is applied."""

    index: int
    context: bytes


@dataclass(frozen=True, slots=True)
class ReceivedSnapshot:
    """A snapshot received from the leader, to install before anything else."""

    meta: SnapshotMeta
    data: bytes


class Refusal(enum.IntEnum):
    NOT_LEADER = 0
    #: The leader holds too many uncommitted bytes / pending reads: retry later.
    TOO_BUSY = 1
    #: A leadership transfer is in progress: retry later (at the new leader).
    TRANSFERRING = 2
    #: A membership change is still uncommitted, or the leader has not committed an
    #: entry of its term yet: retry later.
    CHANGE_IN_PROGRESS = 3
    #: The request makes no sense (e.g. promoting a non-learner, empty proposal).
    INVALID = 4


@dataclass(frozen=True, slots=True)
class Refused:
    """A request the core did not take; ``leader`` is the known leader, if any."""

    reason: Refusal
    leader: MemberId | None = None
    detail: str = ""

    @property
    def retryable(self) -> bool:
        return self.reason in (
            Refusal.TOO_BUSY,
            Refusal.TRANSFERRING,
            Refusal.CHANGE_IN_PROGRESS,
        )


@dataclass(frozen=True, slots=True)
class Proposed:
    """Entries appended to the leader's log at ``first_index..last_index`` in ``term``;
    they are committed when a ``Ready.committed_entries`` carries them (an entry at one
    of these indexes with another term means the proposal was lost)."""

    first_index: int
    last_index: int
    term: int


class ChangeKind(enum.IntEnum):
    ADD_LEARNER = 0
    PROMOTE = 1
    REMOVE = 2


@dataclass(frozen=True, slots=True)
class MembershipChange:
    kind: ChangeKind
    member: MemberId


@dataclass(slots=True)
class Ready:
    """One batch of effects. See :class:`~protocol.raft.core.RaftCore` for the order."""

    #: Install this snapshot (state machine and storage) first.
    snapshot: ReceivedSnapshot | None = None
    #: Persist: drop stored entries from ``truncate_from`` on (if set), append
    #: ``entries`` (dropping any stored entry at or after ``entries[0].index`` is always
    #: correct), store ``hard_state`` (if set). Atomically or in that order.
    truncate_from: int | None = None
    entries: list[LogEntry] = field(default_factory=list)
    hard_state: HardState | None = None
    #: May be sent right away, even before the writes above are durable.
    messages: list[RaftMessage] = field(default_factory=list)
    #: Only after the writes above are durable.
    persisted_messages: list[RaftMessage] = field(default_factory=list)
    #: Apply in order (after installing ``snapshot``), then call ``on_applied``.
    committed_entries: list[LogEntry] = field(default_factory=list)
    #: Linearizable reads to answer once the applied index reaches theirs.
    read_states: list[ReadState] = field(default_factory=list)
    #: Contexts of local reads that failed (leadership lost): answer with an error.
    failed_reads: list[bytes] = field(default_factory=list)
    #: Set when the role, leader or term changed.
    soft_state: SoftState | None = None
    #: A suggestion to take a snapshot at this applied index.
    take_snapshot: int | None = None
