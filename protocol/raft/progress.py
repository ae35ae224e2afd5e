"""The leader's view of one follower's replication (etcd's ``Progress``).

A follower is probed (one AppendEntries at a time until the logs match), then
replicated to (pipelined: up to ``max_inflight_msgs`` messages and
``max_inflight_bytes`` payload bytes unacknowledged), or sent a snapshot in chunks when
the entries it needs are compacted away.
"""

from __future__ import annotations

import enum
from collections import deque

from protocol.raft.log import SnapshotMeta

__all__ = ["Progress", "ProgressState"]


class ProgressState(enum.IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Progress:
    """Replication state of one follower, kept by the leader."""

    __slots__ = (
        "inflight",
        "inflight_bytes",
        "last_ack_tick",
        "match",
        "next",
        "paused",
        "read_round",
        "recent_active",
        "snapshot",
        "snapshot_offset",
        "state",
    )

    def __init__(self, next_index: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        #: PROBE: a probe is outstanding; SNAPSHOT: a chunk is outstanding.
        self.paused = False
        #: (last index, payload bytes) of each unacknowledged AppendEntries.
        self.inflight: deque[tuple[int, int]] = deque()
        self.inflight_bytes = 0
        #: Heard from since the last CheckQuorum round.
        self.recent_active = False
        #: Highest ReadIndex round the follower acknowledged.
        self.read_round = 0
        self.snapshot: SnapshotMeta | None = None
        self.snapshot_offset = 0
        #: The leader's tick count at the follower's last successful AppendEntries or
        #: heartbeat response (-1: none yet in this term); for operators' status.
        self.last_ack_tick = -1

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT and self.snapshot is not None:
            self.next = max(self.match + 1, self.snapshot.index + 1)
        else:
            self.next = self.match + 1
        self._reset(ProgressState.PROBE)

    def become_replicate(self) -> None:
        self.next = self.match + 1
        self._reset(ProgressState.REPLICATE)

    def become_snapshot(self, meta: SnapshotMeta) -> None:
        self._reset(ProgressState.SNAPSHOT)
        self.snapshot = meta
        self.snapshot_offset = 0

    def _reset(self, state: ProgressState) -> None:
        self.state = state
        self.paused = False
        self.inflight.clear()
        self.inflight_bytes = 0
        self.snapshot = None
        self.snapshot_offset = 0

    def is_paused(self, max_msgs: int, max_bytes: int) -> bool:
        if self.state == ProgressState.REPLICATE:
            return len(self.inflight) >= max_msgs or self.inflight_bytes >= max_bytes
        return self.paused

    def sent(self, last_index: int, nbytes: int) -> None:
        """Record an AppendEntries carrying entries up to ``last_index``."""
        if self.state == ProgressState.REPLICATE:
            self.next = last_index + 1
            self.inflight.append((last_index, nbytes))
            self.inflight_bytes += nbytes
        else:
            self.paused = True

    def update(self, index: int) -> bool:
        """An acknowledgement up to ``index``; True if it was news."""
        updated = False
        if index > self.match:
            self.match = index
            updated = True
            self.paused = False
        if index + 1 > self.next:
            self.next = index + 1
        inflight = self.inflight
        while inflight and inflight[0][0] <= index:
            self.inflight_bytes -= inflight.popleft()[1]
        return updated

    def decrease(self, rejected: int, retry_next: int) -> bool:
        """A rejection of ``prev_log_index == rejected``; retry from ``retry_next``.
        False if the rejection is stale."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self._reset(ProgressState.PROBE)
            self.next = max(self.match + 1, min(rejected, retry_next))
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(self.match + 1, min(rejected, retry_next))
        self.paused = False
        return True
