"""The Raft consensus core and its messages.

:class:`RaftCore` is the whole algorithm as a deterministic state machine (ticks,
messages and requests in; :class:`Ready` batches of effects out); the messages are
codec-registered frozen dataclasses (tags 100-114).
"""

from protocol.raft.core import RaftCore, decode_configuration
from protocol.raft.log import Configuration, EntryKind, HardState, LogEntry, SnapshotMeta
from protocol.raft.messages import (
    RAFT_MESSAGE_TYPES,
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    RaftMessage,
    ReadIndexRequest,
    ReadIndexResponse,
    RemovedNotice,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from protocol.raft.progress import Progress, ProgressState
from protocol.raft.types import (
    ChangeKind,
    MembershipChange,
    Proposed,
    RaftOptions,
    RandomSource,
    ReadState,
    Ready,
    ReceivedSnapshot,
    Refusal,
    Refused,
    RestoredState,
    Role,
    SoftState,
)

__all__ = [
    "RAFT_MESSAGE_TYPES",
    "AppendEntries",
    "AppendEntriesResponse",
    "ChangeKind",
    "Configuration",
    "EntryKind",
    "HardState",
    "Heartbeat",
    "HeartbeatResponse",
    "InstallSnapshot",
    "InstallSnapshotResponse",
    "LogEntry",
    "MembershipChange",
    "Progress",
    "ProgressState",
    "Proposed",
    "RaftCore",
    "RaftMessage",
    "RaftOptions",
    "RandomSource",
    "ReadIndexRequest",
    "ReadIndexResponse",
    "ReadState",
    "Ready",
    "ReceivedSnapshot",
    "Refusal",
    "Refused",
    "RemovedNotice",
    "RequestVote",
    "RequestVoteResponse",
    "RestoredState",
    "Role",
    "SnapshotMeta",
    "SoftState",
    "TimeoutNow",
    "decode_configuration",
]
