"""``ConsensusActor``: hosts :class:`~protocol.raft.RaftCore`, its storage and peer links.

It feeds the core ticks, peer messages and proposals, and carries out each ``Ready`` in
the order the core documents: store a received snapshot, send what may go at once,
hand entries and hard state to the storage writer (which fsyncs off this thread, or on
it with ``storage_writes = "inline"``: the messages above are on their way first), send
what had to wait for the disk when the writer says it is durable, pass committed entries
to the session actor, confirmed reads to the session actor, role changes to everyone.

Proposals arriving while a batch is being handled are collected and proposed together
(one ``_Flush`` message per burst, queued behind whatever is already in the inbox; with
an empty inbox the flush happens at once), and while the leader's previous batch is not
committed yet the next one waits for that commit (``RaftCore.proposal_in_flight``; at
most a full append's worth). So a busy leader appends many commands per entry batch,
per fsync and per message to each follower, and an idle one adds no extra hop: a lone
client's next command only comes after its previous one committed.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from typing import Any

from actors.admin import AdminCommand, AdminDesk
from actors.base import NodeActor, Wiring, member_logger
from actors.clock import wall_ms
from actors.handoff import Drain
from actors.messages import (
    Applied,
    ApplyEntries,
    InstallSnapshot,
    PeerFrame,
    ProposeRetry,
    Reannounce,
    RunQueries,
    SnapshotTaken,
    Tick,
)
from actors.status import StatusBoard
from actors.storage import Persisted, SnapshotStore, StorageError, StorageWriter
from actors.transport import PeerTransport
from protocol.actions import (
    ClientRequestAction,
    CreateSessionAction,
    LeadershipChanged,
    NodeRole,
    QueryAction,
    RaftAction,
    RejectSession,
    SendQueryError,
    SendRequestError,
    ServerAction,
)
from protocol.bridge import to_session_command
from protocol.codec import ProtocolError, decode, encode
from protocol.ids import MemberId
from protocol.raft import Configuration, HardState, RaftCore, SnapshotMeta
from protocol.raft.messages import RAFT_MESSAGE_TYPES, RaftMessage
from protocol.raft.types import Refusal, Refused, Role
from protocol.session import (
    GetRequestsForRetry,
    SessionCommand,
    decodes_to_itself,
)
from protocol.wire import ErrorReason, RejectReason

__all__ = ["ConsensusActor"]

_ROLES = {
    Role.FOLLOWER: NodeRole.FOLLOWER,
    Role.PRE_CANDIDATE: NodeRole.CANDIDATE,
    Role.CANDIDATE: NodeRole.CANDIDATE,
    Role.LEADER: NodeRole.LEADER,
    Role.REMOVED: NodeRole.FOLLOWER,
}


#: Bound of ConsensusActor._proposed (commands proposed, not yet committed).
_MAX_REMEMBERED = 65_536


class _Flush:
    """Self-message: propose what was collected and handle the core's ``Ready``."""


_FLUSH = _Flush()


class ConsensusActor(NodeActor):
    """One node's Raft member. See the module docstring."""

    def __init__(
        self,
        core: RaftCore,
        writer: StorageWriter,
        snapshots: SnapshotStore,
        peers: PeerTransport,
        client_addresses: dict[MemberId, str],
        wiring: Wiring,
        board: StatusBoard,
        *,
        max_frame_bytes: int,
        on_role: Callable[[Role], None] | None = None,
        remember: Callable[[MemberId, str, str], str | None] | None = None,
    ) -> None:
        super().__init__()
        self.core = core
        self.writer = writer
        self.snapshots = snapshots
        self.peers = peers
        self.client_addresses = client_addresses
        self.wiring = wiring
        self.board = board
        self.max_frame_bytes = max_frame_bytes
        #: Told every Raft role change, on this actor's thread (the node watches for
        #: ``Role.REMOVED``); must not block.
        self.on_role = on_role
        #: Keeps a learned member's addresses beyond a restart (the node's
        #: :class:`~actors.address_book.AddressBook`); returns why it could not.
        self.remember = remember
        self.log = member_logger(__name__, core.id)
        self._flush_scheduled = False
        self._proposals: list[tuple[RaftAction | None, bytes]] = []
        self._proposal_bytes = 0  # payload bytes in _proposals
        #: What one AppendEntries carries at most: held proposals never wait beyond it.
        self._max_batch = core.options.max_entries_per_msg
        self._max_batch_bytes = core.options.max_append_bytes
        #: Commands this leader proposed, by their encoded bytes: when they commit, the
        #: session actor gets them along and need not decode what was just encoded.
        #: (A hit is always right: it is what decoding those bytes gives.) Emptied when
        #: this node stops leading; bounded, so entries that never commit cannot pile up.
        self._proposed: dict[bytes, SessionCommand] = {}
        # Messages that may leave only once writer submission ``seq`` is durable.
        self._after_sync: deque[tuple[int, list[RaftMessage]]] = deque()
        self._submitted = 0
        self._durable = 0
        self._reads: dict[bytes, QueryAction] = {}
        self._read_ids = itertools.count(1)
        self._role = NodeRole.FOLLOWER
        self._last_change: LeadershipChanged | None = None
        self._previous_snapshot: SnapshotMeta | None = None
        self._failed: StorageError | None = None
        #: The configuration last checked for members without an address, and the
        #: members already warned about.
        self._checked_config: Configuration | None = None
        self._unaddressed: set[MemberId] = set()
        self.bad_frames = 0
        self._stored_vote = (core.term, core.voted_for)
        self._unsaved: HardState | None = None
        self.admin = AdminDesk(
            core, client_addresses, 3 * core.options.election_ticks, learn=self._learn
        )

    # ------------------------------------------------------------------ inputs

    def handle(self, message: Any) -> None:
        core = self.core
        if isinstance(message, Drain):  # every peer frame that arrived in one burst
            self.handle_each(message.source.take(), self._on_peer_frame)
        elif isinstance(message, PeerFrame):
            self._on_peer_frame(message)
        elif isinstance(message, _Flush):
            self._flush_scheduled = False
            self._flush()
            return
        elif isinstance(message, Tick):
            core.tick()
            if self.admin.pending is not None:
                self.admin.on_tick()
        elif isinstance(message, Persisted):
            self._on_persisted(message)
        elif isinstance(message, Applied):
            core.on_applied(message.index)
        elif isinstance(message, SnapshotTaken):
            self._on_snapshot_taken(message)
        elif isinstance(message, QueryAction):
            self._read(message)
        elif isinstance(message, Reannounce):
            if self._last_change is not None:
                self._to_registry(self._last_change)
                if self._last_change.role == NodeRole.LEADER:
                    assert self.wiring.session is not None
                    self.wiring.session.tell(message)
        elif isinstance(message, ProposeRetry):
            retry = GetRequestsForRetry(message.before_ms, wall_ms())
            self._queue(None, encode(retry))
        elif isinstance(message, list):  # a batch of RaftActions from the registry
            for action in message:
                if isinstance(action, QueryAction):
                    self._read(action)
                else:
                    self._collect(action)
        elif isinstance(message, AdminCommand):
            self.admin.submit(message)
        elif isinstance(message, StorageError):  # from the writer's thread
            self._on_storage_failed(message)
            return
        else:
            self._collect(message)
        self._schedule_flush()

    def _on_peer_frame(self, message: PeerFrame) -> None:
        try:
            msg: RaftMessage = decode(
                message.frame, RAFT_MESSAGE_TYPES, max_bytes=self.max_frame_bytes
            )
        except ProtocolError as exc:
            self._bad_frame("a bad frame from %s: %s", message.sender, exc)
            return
        if msg.sender != message.sender or msg.receiver != self.core.id:
            self._bad_frame("a misaddressed %s", type(msg).__name__)
            return
        self.core.step(msg)

    def _bad_frame(self, what: str, *args: Any) -> None:
        """Count a dropped peer frame; log the 1st, 2nd, 4th, 8th, ... (a flood of
        garbage must not flood the log too)."""
        self.bad_frames += 1
        self.board.update(peer_frames_dropped=self.bad_frames)
        if self.bad_frames & (self.bad_frames - 1) == 0:
            self.log.warning("dropped " + what + " (%d so far)", *args, self.bad_frames)

    def _learn(self, member: MemberId, peer_address: str, client_address: str) -> str | None:
        """Add ``member`` to this node's address book (see :mod:`actors.admin`); why
        it could not be kept beyond a restart, if it could not."""
        if member == self.core.id:
            return None
        self.peers.add_peer(member, peer_address)
        self.client_addresses[member] = client_address
        error = self.remember(member, peer_address, client_address) if self.remember else None
        if error is not None:
            self.log.error("%s (it is used until this node restarts)", error)
        return error

    def _schedule_flush(self) -> None:
        if self._flush_scheduled or not (self._proposable() or self.core.has_ready()):
            return
        if self.inbox_empty():
            # Nothing else is waiting: act now (no round trip through the inbox, which
            # would only add latency on a lightly loaded node).
            self._flush()
        else:
            # Let what is already queued join this batch: the flush runs after it.
            self._flush_scheduled = True
            self.tell_self_later(_FLUSH)

    def _collect(self, action: RaftAction) -> None:
        cmd = to_session_command(action, wall_ms())
        if cmd is None:
            self.log.warning("ignored unexpected %s", type(action).__name__)
            return
        payload = encode(cmd)
        self._queue(action, payload)
        if decodes_to_itself(cmd):
            if len(self._proposed) >= _MAX_REMEMBERED:
                self._proposed.clear()
            self._proposed[payload] = cmd

    # ------------------------------------------------------------------ proposals, reads

    def _queue(self, action: RaftAction | None, payload: bytes) -> None:
        self._proposals.append((action, payload))
        self._proposal_bytes += len(payload)

    def _proposable(self) -> bool:
        """Whether the waiting commands go out now: not while this leader's previous
        batch is uncommitted (they join the next one, see ``RaftCore.proposal_in_flight``),
        except a full append's worth (entries or bytes), and nothing waits once storage
        failed (refused at once)."""
        waiting = len(self._proposals)
        return waiting > 0 and (
            not self.core.proposal_in_flight
            or waiting >= self._max_batch
            or self._proposal_bytes >= self._max_batch_bytes
            or self._failed is not None
        )

    def _flush(self) -> None:
        if self._proposable():
            batch, self._proposals = self._proposals, []
            self._proposal_bytes = 0
            if self._failed is not None:
                result: Any = Refused(Refusal.TOO_BUSY, None, "storage failed")
            else:
                result = self.core.propose([payload for _, payload in batch])
                self.board.metrics.proposals += len(batch)
            if isinstance(result, Refused):
                for action, payload in batch:
                    self._proposed.pop(payload, None)
                    self._refuse(action, result)
        while self.core.has_ready():
            self._handle_ready()

    def _refuse(self, action: RaftAction | None, refused: Refused) -> None:
        reason = ErrorReason.NOT_LEADER
        if refused.reason in (Refusal.TOO_BUSY, Refusal.TRANSFERRING):
            reason = ErrorReason.OVERLOADED
        reply: ServerAction
        match action:
            case ClientRequestAction():
                reply = SendRequestError(action.session_id, action.request_id, reason, "")
            case CreateSessionAction():
                why = RejectReason.NOT_LEADER
                if reason == ErrorReason.OVERLOADED:
                    why = RejectReason.OVERLOADED
                reply = RejectSession(action.session_id, why, refused.detail)
            case _:
                return  # acks, expiries, retries: the next attempt repeats them
        self._to_registry(reply)

    def _read(self, action: QueryAction) -> None:
        context = next(self._read_ids).to_bytes(8, "big")
        refused = self.core.read_index(context)
        if refused is not None:
            reason = ErrorReason.NOT_LEADER
            if refused.retryable:
                reason = ErrorReason.OVERLOADED
            self._to_registry(
                SendQueryError(action.connection, action.correlation_id, reason, refused.detail)
            )
            return
        self._reads[context] = action

    # ------------------------------------------------------------------ Ready

    def _handle_ready(self) -> None:
        rd = self.core.ready()
        wiring = self.wiring
        if rd.snapshot is not None:
            self._install(rd.snapshot.meta, rd.snapshot.data)
        for msg in rd.messages:
            self._send(msg)
        hs = rd.hard_state
        if hs is not None and not rd.entries and (hs.term, hs.voted_for) == self._stored_vote:
            # Only the commit index moved: it need not be durable (a restarted node
            # learns it again from the leader), so it rides along with the next write
            # instead of costing an fsync of its own.
            self._unsaved = hs
            hs = None
        elif rd.entries and hs is None:
            hs, self._unsaved = self._unsaved, None
        after_sync = rd.persisted_messages
        if (rd.entries or hs is not None) and self._failed is None:
            if hs is not None:
                self._stored_vote = (hs.term, hs.voted_for)
                self._unsaved = None
            then = None
            if after_sync and not self._after_sync:
                # The writer thread sends these the moment the write is durable, one
                # hop sooner than through this actor's inbox (a follower's
                # acknowledgement is on every command's critical path). Only when
                # nothing older still waits here, so acknowledgements stay in order.
                then = self._sender([(m.receiver, encode(m)) for m in after_sync])
                after_sync = []
            try:
                self._submitted = self.writer.submit(rd.entries, hs, then=then)
            except StorageError as exc:
                self._on_storage_failed(exc)
        if after_sync:
            if self._durable >= self._submitted:
                for msg in after_sync:
                    self._send(msg)
            else:
                self._after_sync.append((self._submitted, after_sync))
        committed = rd.committed_entries
        if committed:
            self.board.metrics.commits += len(committed)
            proposed = self._proposed
            commands = [proposed.pop(e.data, None) for e in committed] if proposed else None
            assert wiring.session is not None
            wiring.session.tell(ApplyEntries(committed, commands))
        if rd.read_states:
            reads = []
            for state in rd.read_states:
                action = self._reads.pop(state.context, None)
                if action is not None:
                    reads.append((state, action))
            if reads:
                assert wiring.session is not None
                wiring.session.tell(RunQueries(reads))
        for context in rd.failed_reads:
            action = self._reads.pop(context, None)
            if action is not None:
                self._to_registry(
                    SendQueryError(
                        action.connection, action.correlation_id, ErrorReason.NOT_LEADER, ""
                    )
                )
        if rd.soft_state is not None:
            self._leadership(rd.soft_state.role, rd.soft_state.leader, rd.soft_state.term)
        if self.core.config is not self._checked_config:
            self._checked_config = self.core.config
            self._warn_unaddressed(self.core.config)
        self._post_status()

    def _warn_unaddressed(self, config: Configuration) -> None:
        """Say so, once per member, when the configuration names a member this node
        has no address for: nothing it sends that member arrives (see
        :mod:`actors.address_book`)."""
        for member in config.members:
            if member in self.client_addresses or member in self._unaddressed:
                continue
            self._unaddressed.add(member)
            self.log.warning(
                "member %s is in the cluster's configuration, but this node has no "
                "address for it: list it in the config file, or teach it again "
                "(raft-actors cluster add, which repeats to every member; learn_member)",
                member,
            )

    def _sender(self, frames: list[tuple[MemberId, bytes]]) -> Callable[[], None]:
        peers = self.peers

        def send() -> None:
            for to, frame in frames:
                peers.send(to, frame)

        return send

    def _send(self, msg: RaftMessage) -> None:
        self.peers.send(msg.receiver, encode(msg))

    def _install(self, meta: SnapshotMeta, data: bytes) -> None:
        """Store a snapshot from the leader before anything that depends on it."""
        try:
            writer = self.snapshots.begin(meta)
            writer.write(data)
            writer.finish()
            # Messages of this Ready wait for the compaction as well as the writes.
            self._submitted = self.writer.compact(meta.index, meta.term)
        except StorageError as exc:
            self._on_storage_failed(exc)
            return
        self.log.info("installed a snapshot at index %d from the leader", meta.index)
        assert self.wiring.session is not None
        self.wiring.session.tell(InstallSnapshot(meta, data))

    def _leadership(self, role: Role, leader: MemberId | None, term: int) -> None:
        node_role = _ROLES[role]
        self.board.metrics.on_role(role)
        if node_role != self._role or role == Role.LEADER:
            self.log.info("now %s in term %d (leader %s)", role.name.lower(), term, leader)
        self._role = node_role
        hint = self.client_addresses.get(leader) if leader is not None else None
        change = self._last_change = LeadershipChanged(node_role, leader, hint, term)
        wiring = self.wiring
        for ref in (wiring.session, wiring.registry, wiring.retry):
            if ref is not None:
                ref.tell(change)
        self.admin.on_leadership()
        if self.on_role is not None:
            self.on_role(role)
        if node_role != NodeRole.LEADER:
            self._proposed.clear()
            for action in self._reads.values():
                self._to_registry(
                    SendQueryError(
                        action.connection, action.correlation_id, ErrorReason.NOT_LEADER, ""
                    )
                )
            self._reads.clear()

    def _to_registry(self, action: ServerAction) -> None:
        assert self.wiring.registry is not None
        self.wiring.registry.tell(action)

    # ------------------------------------------------------------------ storage

    def _on_persisted(self, p: Persisted) -> None:
        self._durable = max(self._durable, p.seq)
        waiting = self._after_sync
        while waiting and waiting[0][0] <= self._durable:
            for msg in waiting.popleft()[1]:
                self._send(msg)
        self.core.on_persisted(p.index, p.term)

    def _on_snapshot_taken(self, taken: SnapshotTaken) -> None:
        try:
            self.core.on_snapshot_taken(taken.meta, taken.data)
        except ValueError as exc:  # overtaken by a snapshot from the leader
            self.log.info("snapshot at %d not used: %s", taken.meta.index, exc)
            return
        # Keep the log back to the previous snapshot, so a corrupt newest snapshot file
        # can still be recovered from the one before it.
        previous, self._previous_snapshot = self._previous_snapshot, taken.meta
        if previous is not None and self._failed is None:
            try:
                self.writer.compact(previous.index, previous.term)
            except StorageError as exc:
                self._on_storage_failed(exc)

    def _on_storage_failed(self, error: StorageError) -> None:
        if self._failed is None:
            self.log.critical("storage failed, refusing writes from now on: %s", error)
            self._failed = error
            self.board.update(storage_failure=str(error))

    # ------------------------------------------------------------------ status

    def _post_status(self) -> None:
        core = self.core
        self.board.update(
            role=core.role.name.lower().replace("_", "-"),
            term=core.term,
            leader=core.leader,
            commit_index=core.commit_index,
            last_log_index=core.last_index,
            snapshot_index=core.snapshot.index,
            voters=core.config.voters,
            learners=core.config.learners,
        )
