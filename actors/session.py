"""``SessionActor``: applies committed entries to the session state machine, on every node.

It turns each result into ``ServerAction``\\ s for the registry (only while this node
leads: a follower's registry serves no clients), runs linearizable queries once the
applied index reaches their read index, answers the retry scheduler's dirty read,
takes snapshots when the log since the last one has grown past a threshold (writing
them itself, off the consensus thread unless the node shares one thread among its
actors: `actor_threads = "shared"` or `"transport"`), and installs snapshots from the
leader.
"""

from __future__ import annotations

import heapq
import itertools
from time import perf_counter
from typing import Any

from actors.base import NodeActor, Wiring, member_logger
from actors.messages import (
    Applied,
    ApplyEntries,
    InstallSnapshot,
    Reannounce,
    RetryCheck,
    RetryHint,
    RunQueries,
    SnapshotTaken,
)
from actors.status import StatusBoard
from actors.storage import SnapshotStore, StorageError
from protocol.actions import (
    LeadershipChanged,
    NodeRole,
    QueryAction,
    SendQueryError,
    SendQueryResponse,
    ServerAction,
    SessionsSnapshot,
)
from protocol.bridge import to_server_actions
from protocol.codec import ProtocolError, decode
from protocol.ids import MemberId
from protocol.raft import Configuration, EntryKind, LogEntry, SnapshotMeta
from protocol.session import (
    ApplicationError,
    CreateSession,
    RetryBatch,
    SessionCommand,
    SessionStateMachine,
    decode_session_command,
)
from protocol.wire import ErrorReason

__all__ = ["SessionActor"]

# Module constants: looked up once per entry rather than through the enum class.
_COMMAND = EntryKind.COMMAND
_CONFIGURATION = EntryKind.CONFIGURATION


class SessionActor(NodeActor):
    """Hosts one :class:`SessionStateMachine`; see the module docstring."""

    def __init__(
        self,
        member_id: MemberId,
        machine: SessionStateMachine,
        snapshots: SnapshotStore,
        start: SnapshotMeta,
        wiring: Wiring,
        board: StatusBoard,
        *,
        snapshot_threshold_bytes: int,
    ) -> None:
        super().__init__()
        self.machine = machine
        self.snapshots = snapshots
        self.wiring = wiring
        self.board = board
        self.threshold = snapshot_threshold_bytes
        self.log = member_logger(__name__, member_id)
        self.applied = start.index
        self.applied_term = start.term
        self.configuration = start.configuration
        self.bytes_since_snapshot = 0
        self.is_leader = False
        self._term = 0
        #: Send the registry the sessions once the entries of this term start applying.
        self._sessions_due: int | None = None
        self._queries: list[tuple[int, int, QueryAction]] = []
        self._query_order = itertools.count()

    def handle(self, message: Any) -> None:
        if isinstance(message, ApplyEntries):
            self._apply(message.entries, message.commands)
        elif isinstance(message, RunQueries):
            for state, action in message.reads:
                heapq.heappush(self._queries, (state.index, next(self._query_order), action))
            self._run_queries()
        elif isinstance(message, RetryCheck):
            pending = self.machine.has_pending_requests_sent_before(message.before_ms)
            assert self.wiring.retry is not None
            self.wiring.retry.tell(RetryHint(message.before_ms, pending))
        elif isinstance(message, LeadershipChanged):
            self.is_leader = message.role == NodeRole.LEADER
            self._term = message.term
            self._sessions_due = message.term if self.is_leader else None
        elif isinstance(message, Reannounce):
            # The registry may have missed the sessions; it ignores a repeat.
            if self.is_leader and self._sessions_due is None and self.wiring.registry:
                self.wiring.registry.tell([SessionsSnapshot(self._term, self.machine.sessions())])
        elif isinstance(message, InstallSnapshot):
            self._install(message.meta, message.data)

    # ------------------------------------------------------------------ apply

    def _apply(
        self, entries: list[LogEntry], commands: list[SessionCommand | None] | None = None
    ) -> None:
        """Apply ``entries``; ``commands``: see :class:`ApplyEntries`."""
        started = perf_counter()
        out: list[ServerAction] = []
        machine = self.machine
        is_leader = self.is_leader
        for k, entry in enumerate(entries):
            index = entry.index
            if index <= self.applied:
                continue  # already covered by an installed snapshot
            kind = entry.kind
            if kind == _COMMAND:
                cmd = commands[k] if commands is not None else None
                if cmd is None:
                    try:
                        cmd = decode_session_command(entry.data)
                    except ProtocolError as exc:
                        # Every replica skips the same entry the same way.
                        self.log.error("skipped undecodable entry %d: %s", index, exc)
                if cmd is not None:
                    result = machine.apply(index, cmd)
                    if is_leader:
                        if type(result) is RetryBatch:
                            self.board.metrics.server_requests_retried += len(
                                result.server_requests
                            )
                        caps = cmd.capabilities if type(cmd) is CreateSession else None
                        out.extend(to_server_actions(result, caps))
            elif kind == _CONFIGURATION:
                try:
                    self.configuration = decode(entry.data, Configuration)
                except ProtocolError as exc:
                    self.log.error("bad configuration entry %d: %s", index, exc)
            self.applied, self.applied_term = index, entry.term
            self.bytes_since_snapshot += len(entry.data) + 32
            due = self._sessions_due
            if due is not None and entry.term >= due:
                self._sessions_due = None
                out.append(SessionsSnapshot(due, machine.sessions()))
        registry = self.wiring.registry
        if registry is not None and out:
            registry.tell(out)  # one message for the whole batch
        assert self.wiring.consensus is not None
        self.wiring.consensus.tell(Applied(self.applied))
        self._run_queries()
        if self.bytes_since_snapshot >= self.threshold:
            self._take_snapshot()
        self._post_status()
        self.board.metrics.applied(len(entries), perf_counter() - started)

    # ------------------------------------------------------------------ queries

    def _run_queries(self) -> None:
        queue = self._queries
        while queue and queue[0][0] <= self.applied:
            action = heapq.heappop(queue)[2]
            answer = self.machine.query(action.payload)
            reply: ServerAction
            if isinstance(answer, ApplicationError):
                reply = SendQueryError(
                    action.connection,
                    action.correlation_id,
                    ErrorReason.APPLICATION_ERROR,
                    answer.message,
                )
            else:
                reply = SendQueryResponse(action.connection, action.correlation_id, answer)
            assert self.wiring.registry is not None
            self.wiring.registry.tell(reply)

    # ------------------------------------------------------------------ snapshots

    def _take_snapshot(self) -> None:
        meta = SnapshotMeta(self.applied, self.applied_term, self.configuration)
        data = self.machine.snapshot()
        try:
            writer = self.snapshots.begin(meta)
            writer.write(data)
            writer.finish()
        except StorageError as exc:
            self.log.error("could not store a snapshot at %d: %s", meta.index, exc)
            return
        self.bytes_since_snapshot = 0
        self.log.info("took a snapshot at index %d (%d bytes)", meta.index, len(data))
        assert self.wiring.consensus is not None
        self.wiring.consensus.tell(SnapshotTaken(meta, data))

    def _install(self, meta: SnapshotMeta, data: bytes) -> None:
        if meta.index <= self.applied:
            return
        try:
            self.machine.restore(data)
        except ProtocolError as exc:
            self.log.critical("snapshot %d from the leader is unreadable: %s", meta.index, exc)
            return
        self.applied, self.applied_term = meta.index, meta.term
        self.configuration = meta.configuration
        self.bytes_since_snapshot = 0
        assert self.wiring.consensus is not None
        self.wiring.consensus.tell(Applied(self.applied))
        self._run_queries()
        self._post_status()

    def _post_status(self) -> None:
        stats = self.machine.stats()
        self.board.update(
            applied_index=self.applied,
            sessions=stats.sessions,
            pending_server_requests=stats.pending_server_requests,
        )
