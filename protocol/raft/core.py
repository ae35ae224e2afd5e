"""``RaftCore``: the Raft consensus algorithm as a deterministic state machine.

No clock, no threads, no I/O: the host feeds it ticks, messages and requests, and
carries out the effects it hands back as :class:`~protocol.raft.types.Ready` batches.
The design follows etcd's ``raft`` package (a ``Ready`` of entries to persist,
messages to send and entries to apply) and the Raft dissertation (Ongaro, 2014), whose
sections the comments cite.
"""

from __future__ import annotations

from collections.abc import Sequence

from protocol.codec import ProtocolError, decode, encode
from protocol.ids import MemberId
from protocol.raft.log import Configuration, EntryKind, HardState, LogEntry, SnapshotMeta
from protocol.raft.messages import (
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
from protocol.raft.raftlog import RaftLog
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

__all__ = ["RaftCore"]

_COMMAND = EntryKind.COMMAND
_CONFIGURATION = EntryKind.CONFIGURATION
_REPLICATE = ProgressState.REPLICATE
_SNAPSHOT = ProgressState.SNAPSHOT
_EMPTY: tuple[LogEntry, ...] = ()

# A read waiting for its quorum round: (round, index, context, requester or None).
_PendingRead = tuple[int, int, bytes, MemberId | None]


def decode_configuration(data: bytes) -> Configuration:
    """The configuration a CONFIGURATION entry holds (raises ``ProtocolError``)."""
    return decode(data, expected=Configuration)


def _quorum_value(values: list[int]) -> int:
    """The largest value that a majority of ``values`` reach (0 if empty)."""
    if not values:
        return 0
    values.sort(reverse=True)
    return values[len(values) // 2]


class RaftCore:
    """One member's Raft state machine.

    Inputs: :meth:`tick`, :meth:`step`, :meth:`propose`, :meth:`read_index`,
    :meth:`transfer_leader`, :meth:`change_membership`, :meth:`on_persisted`,
    :meth:`on_snapshot_taken`, :meth:`on_applied`. They only change memory; their
    effects accumulate until the host calls :meth:`ready` (cheap to test with
    :meth:`has_ready`), which returns them as one :class:`Ready` and forgets them.

    The host handles each ``Ready`` completely, in this order, before the next one:

    1. ``snapshot``: a snapshot received from the leader. Store it durably (it
       replaces the whole stored log) and restore the state machine from it.
    2. ``messages``: send now (may overlap with step 3).
    3. Persist, durably, in this order or atomically: drop stored entries from
       ``truncate_from`` on, append ``entries``, store ``hard_state``.
    4. ``persisted_messages``: send only now (votes and acknowledgements depend on
       step 3). Then call ``on_persisted(entries[-1].index, entries[-1].term)`` if
       ``entries`` was not empty (later is fine; the core waits for it to count its
       own copy towards commitment and to hand entries out for applying).
    5. Apply ``committed_entries`` in order, then call ``on_applied(last index)``
       (possibly later, possibly batched). Configuration entries need no action.
    6. ``read_states``: answer each read once the applied index reaches its index;
       ``failed_reads``: answer with an error (retry at the leader).
    7. ``soft_state``: role/leader changes (e.g. refuse clients when not leader).
    8. ``take_snapshot``: optional; when the host takes a snapshot at an applied
       index ``i``, it stores ``snapshot_meta_for(i)`` with its data, then calls
       ``on_snapshot_taken(meta, data)``; it may then drop stored entries at or below
       ``i`` (the core keeps ``compaction_tail`` entries in memory).

    At start the host passes what it loaded (:class:`RestoredState`): the hard state,
    the latest snapshot and the entries after it; a founding member's first start uses
    ``RestoredState.bootstrap(configuration)``, a member that joins later starts with
    ``None`` and learns the configuration from the leader.
    """

    def __init__(
        self,
        member_id: MemberId,
        options: RaftOptions,
        rng: RandomSource,
        restored: RestoredState | None = None,
    ) -> None:
        self.id = member_id
        self.options = options
        self._rng = rng
        r = restored if restored is not None else RestoredState()
        snap = r.snapshot if r.snapshot is not None else SnapshotMeta(0, 0, Configuration(()))
        entries = [e for e in r.entries if e.index > snap.index]
        for k, e in enumerate(entries):
            if e.index != snap.index + 1 + k:
                raise ValueError(f"restored entries are not contiguous at index {e.index}")
        hs = r.hard_state
        #: Persistent state (§3.3): current term and vote.
        self.term = hs.term
        self.voted_for = hs.voted_for
        commit = max(snap.index, min(hs.commit, snap.index + len(entries)))
        self.log = RaftLog(snap.index, snap.term, entries, commit)
        #: The latest snapshot (taken here or received) and its data, for followers.
        self.snapshot = snap
        self.snapshot_data = r.snapshot_data
        self._base_config = snap.configuration  # the configuration at log.offset
        self.config, self.config_index = self._config_at(self.log.last_index)
        self.role = Role.FOLLOWER
        self.leader: MemberId | None = None
        self.progress: dict[MemberId, Progress] = {}
        self._votes: dict[MemberId, bool] = {}
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        #: Ticks since this core was made (for :meth:`last_contact_ticks`).
        self.ticks = 0
        self._timeout = options.election_ticks
        self._reset_timeout()
        self._transferee: MemberId | None = None
        self._uncommitted = 0
        self._term_start = 0  # index of this leader's no-op entry
        self._last_proposed = 0  # last index of this leader's latest proposed batch
        #: (Leader, ``lazy_commit_notices``) followers not yet sent the current commit
        #: index; told at the next tick unless an append or heartbeat carries it first.
        self._commit_due: set[MemberId] = set()
        # ReadIndex (§6.4)
        self._read_round = 0
        self._read_round_open = False
        self._pending_reads: list[_PendingRead] = []
        self._waiting_reads: list[tuple[bytes, MemberId | None]] = []
        # Snapshot being received: (meta, bytes so far).
        self._incoming: tuple[SnapshotMeta, bytearray] | None = None
        # Effects not yet handed out.
        self._msgs: list[RaftMessage] = []
        self._pmsgs: list[RaftMessage] = []
        self._read_states: list[ReadState] = []
        self._failed_reads: list[bytes] = []
        self._received: ReceivedSnapshot | None = None
        self._hs = hs
        self._soft = SoftState(self.role, self.leader, self.term)
        self._suggested_snapshot = snap.index
        self._handlers = {
            AppendEntries: self._on_append,
            AppendEntriesResponse: self._on_append_response,
            Heartbeat: self._on_heartbeat,
            HeartbeatResponse: self._on_heartbeat_response,
            RequestVote: self._on_request_vote,
            RequestVoteResponse: self._on_vote_response,
            InstallSnapshot: self._on_install_snapshot,
            InstallSnapshotResponse: self._on_snapshot_response,
            TimeoutNow: self._on_timeout_now,
            ReadIndexRequest: self._on_read_index_request,
            ReadIndexResponse: self._on_read_index_response,
            RemovedNotice: self._on_removed_notice,
        }

    # ================================================================ queries

    @property
    def commit_index(self) -> int:
        return self.log.commit

    @property
    def last_index(self) -> int:
        return self.log.last_index

    @property
    def is_leader(self) -> bool:
        return self.role == Role.LEADER

    @property
    def proposal_in_flight(self) -> bool:
        """This leader's latest batch of proposals is not committed yet (always False
        on a follower or candidate).

        A host may hold further commands while this is True and propose them together
        once it turns False (the commit of the batch before, or losing leadership):
        under load the batches then grow to what arrives in one commit round instead
        of fragmenting into one small batch per arrival, which costs every node a
        message, a write and thread wake-ups per batch. A lone client with one command
        at a time rarely waits for this: its next command comes after its previous one
        committed (only the leader's own proposals, keep-alives say, can be in flight)."""
        return self.role == Role.LEADER and self._last_proposed > self.log.commit

    @property
    def promotable(self) -> bool:
        """May this member start elections? Voters of the latest configuration may,
        and so may the voters of the committed one while a change is uncommitted:
        otherwise a member whose log holds its own uncommitted removal (the only log
        that can win) would never campaign, and the cluster would be stuck."""
        if self.id in self.config.voters:
            return True
        if self.config_index > self.log.commit:
            return self.id in self._config_at(self.log.commit)[0].voters
        return False

    def caught_up(self, member: MemberId) -> bool:
        """(Leader) Is ``member``'s log far enough along to promote it (see
        ``RaftOptions.promotion_lag``)?"""
        pr = self.progress.get(member)
        if pr is None or pr.match == 0 or pr.last_ack_tick < 0:
            return False  # it never answered this leader: nothing says it is alive
        log = self.log
        return pr.match >= min(log.commit, max(log.last_index - self.options.promotion_lag, 0))

    def last_contact_ticks(self) -> dict[MemberId, int | None]:
        """(Leader) Ticks since each follower's last successful AppendEntries or
        heartbeat response (None: none yet this term); empty unless leading."""
        if self.role != Role.LEADER:
            return {}
        now = self.ticks
        return {
            m: (now - pr.last_ack_tick if pr.last_ack_tick >= 0 else None)
            for m, pr in list(self.progress.items())
        }

    def snapshot_meta_for(self, index: int) -> SnapshotMeta:
        """The meta of a snapshot of the state after applying ``index``."""
        if not self.log.offset <= index <= self.log.applied:
            raise ValueError(f"index {index} is not applied or no longer in the log")
        term = self.log.term_at(index)
        assert term is not None
        return SnapshotMeta(index, term, self._config_at(index)[0])

    # ================================================================ inputs

    @property
    def removed(self) -> bool:
        """Has this member learnt that it was removed (it then takes no part)?"""
        return self.role == Role.REMOVED

    def tick(self) -> None:
        """One unit of logical time has passed."""
        if self.role == Role.REMOVED:
            return
        self.ticks += 1
        if self.role == Role.LEADER:
            self._tick_leader()
        else:
            self._election_elapsed += 1
            if self._election_elapsed >= self._timeout and self.promotable:
                self._election_elapsed = 0
                self._campaign(pre_vote=self.options.pre_vote)

    def step(self, msg: RaftMessage) -> None:
        """Handle a message from a peer (any message; stale or odd ones are ignored)."""
        if msg.receiver != self.id or msg.sender == self.id:
            return
        handler = self._handlers.get(type(msg))
        if handler is None:
            return
        term = msg.term
        if (
            type(msg) is RemovedNotice
            and self.role != Role.PRE_CANDIDATE
            and self.role != Role.CANDIDATE
            and self.leader is not None
            and msg.sender != self.leader
        ):
            # Only a member that lost its leader, or that leader itself, is believed:
            # a removed member stops hearing from the leader and campaigns; a live
            # leader's follower that someone else calls removed is not.
            return
        if self.role == Role.REMOVED:
            if term < self.term or type(msg) not in (AppendEntries, Heartbeat, InstallSnapshot):
                return
            # A leader replicates to it: it was added again (or the notice was late).
            self._become_follower(term, msg.sender)
        if (
            self.role == Role.LEADER
            and msg.sender not in self.progress
            and (term <= self.term or (type(msg) is RequestVote and msg.pre_vote))
        ):
            self._from_non_member(msg)
            return
        if term > self.term:
            if type(msg) is RequestVote:
                in_lease = (
                    self.options.check_quorum
                    and self.leader is not None
                    and self._election_elapsed < self.options.election_ticks
                )
                if in_lease and not msg.transfer:
                    return  # §4.2.3: a live leader's followers ignore disruptive votes
                if not msg.pre_vote:
                    self._become_follower(term, None)
            elif type(msg) is RequestVoteResponse and msg.pre_vote and msg.granted:
                pass  # a pre-vote granted for our prospective term
            elif type(msg) in (AppendEntries, Heartbeat, InstallSnapshot):
                self._become_follower(term, msg.sender)
            else:
                self._become_follower(term, None)
        elif term < self.term:
            opts = self.options
            if (opts.check_quorum or opts.pre_vote) and type(msg) in (AppendEntries, Heartbeat):
                # Tell a stale leader about the new term so that it steps down; without
                # this a partitioned old leader could block elections forever.
                self._pmsgs.append(AppendEntriesResponse(self.term, self.id, msg.sender, False, 0))
            elif type(msg) is RequestVote and msg.pre_vote:
                self._pmsgs.append(RequestVoteResponse(self.term, self.id, msg.sender, False, True))
            return
        handler(msg)  # type: ignore[operator]

    def propose(self, payloads: Sequence[bytes]) -> Proposed | Refused:
        """Append commands to the leader's log (§3.5); refused, never dropped."""
        if self.role != Role.LEADER:
            return Refused(Refusal.NOT_LEADER, self.leader)
        if self._transferee is not None:
            return Refused(Refusal.TRANSFERRING, self.id)
        if not payloads:
            return Refused(Refusal.INVALID, self.id, "nothing to propose")
        nbytes = 0
        for p in payloads:
            nbytes += len(p)
        if self._uncommitted and self._uncommitted + nbytes > self.options.max_uncommitted_bytes:
            return Refused(Refusal.TOO_BUSY, self.id, "too many uncommitted bytes")
        log = self.log
        term = self.term
        first = log.last_index + 1
        log.entries.extend([LogEntry(i, term, _COMMAND, p) for i, p in enumerate(payloads, first)])
        self._uncommitted += nbytes
        self._last_proposed = first + len(payloads) - 1
        self._broadcast_append()
        return Proposed(first, self._last_proposed, term)

    def read_index(self, context: bytes) -> Refused | None:
        """Start a linearizable read (§6.4); a ``ReadState`` with ``context`` follows.

        A follower forwards it to its leader. None means accepted (a ``ReadState`` or a
        failed read with this context will follow, unless a message is lost: hosts
        time reads out).
        """
        if self.role == Role.LEADER:
            return self._leader_read(context, None)
        if self.leader is None:
            return Refused(Refusal.NOT_LEADER, None)
        self._msgs.append(ReadIndexRequest(self.term, self.id, self.leader, context))
        return None

    def transfer_leader(self, target: MemberId) -> Refused | None:
        """Hand leadership to ``target`` (§3.10): catch it up, then TimeoutNow."""
        if self.role != Role.LEADER:
            return Refused(Refusal.NOT_LEADER, self.leader)
        if target == self.id or target not in self.config.voters:
            return Refused(Refusal.INVALID, self.id, f"{target} is not another voter")
        if self._transferee == target:
            return None
        self._transferee = target
        self._election_elapsed = 0  # the transfer must finish within an election timeout
        if self.progress[target].match == self.log.last_index:
            self._msgs.append(TimeoutNow(self.term, self.id, target))
        else:
            self._send_append(target)
        return None

    def change_membership(self, change: MembershipChange) -> Proposed | Refused:
        """Propose a single-server configuration change (§4.1): add a learner, promote
        a caught-up learner to voter, or remove a member. One at a time."""
        if self.role != Role.LEADER:
            return Refused(Refusal.NOT_LEADER, self.leader)
        if self._transferee is not None:
            return Refused(Refusal.TRANSFERRING, self.id)
        log = self.log
        if self.config_index > log.commit or log.commit < self._term_start:
            return Refused(Refusal.CHANGE_IN_PROGRESS, self.id)
        cfg = self.config
        member = change.member
        if change.kind == ChangeKind.ADD_LEARNER:
            if member in cfg.members:
                return Refused(Refusal.INVALID, self.id, f"{member} is already a member")
            new = Configuration(cfg.voters, (*cfg.learners, member))
        elif change.kind == ChangeKind.PROMOTE:
            if member not in cfg.learners:
                return Refused(Refusal.INVALID, self.id, f"{member} is not a learner")
            if not self.caught_up(member):
                return Refused(Refusal.TOO_BUSY, self.id, f"{member} is still catching up")
            new = Configuration(
                (*cfg.voters, member), tuple(m for m in cfg.learners if m != member)
            )
        else:
            if member not in cfg.members:
                return Refused(Refusal.INVALID, self.id, f"{member} is not a member")
            voters = tuple(m for m in cfg.voters if m != member)
            if not voters:
                return Refused(Refusal.INVALID, self.id, "cannot remove the last voter")
            new = Configuration(voters, tuple(m for m in cfg.learners if m != member))
        index = log.last_index + 1
        log.entries.append(LogEntry(index, self.term, _CONFIGURATION, encode(new)))
        self._set_config(new, index)
        self._broadcast_append()
        return Proposed(index, index, self.term)

    def on_persisted(self, index: int, term: int) -> None:
        """Entries up to ``(index, term)`` (and the hard state handed with them) are
        durable."""
        log = self.log
        if log.stable < index <= log.persist_handed and log.term_at(index) == term:
            log.stable = index
            if self.role == Role.LEADER and self._maybe_commit():
                self._broadcast_commit()

    def on_applied(self, index: int) -> None:
        """The state machine has applied every entry up to ``index``."""
        log = self.log
        if log.applied < index:
            log.applied = min(index, log.apply_handed)

    def on_snapshot_taken(self, meta: SnapshotMeta, data: bytes) -> None:
        """The host stored a snapshot (made with :meth:`snapshot_meta_for`): keep it for
        lagging followers and compact the log, keeping ``compaction_tail`` entries."""
        log = self.log
        if meta.index <= self.snapshot.index:
            return
        if meta.index > log.applied or log.term_at(meta.index) != meta.term:
            raise ValueError(f"snapshot at {meta.index} does not match the applied log")
        self.snapshot = meta
        self.snapshot_data = data
        self._suggested_snapshot = max(self._suggested_snapshot, meta.index)
        compact_to = meta.index - self.options.compaction_tail
        if compact_to > log.offset:
            self._base_config = self._config_at(compact_to)[0]
            log.compact(compact_to)

    # ================================================================ output

    def has_ready(self) -> bool:
        """Is there anything for the host to do?"""
        log = self.log
        return bool(
            self._msgs
            or self._pmsgs
            or log.persist_handed < log.last_index
            or log.apply_handed < min(log.commit, log.stable)
            or self._read_states
            or self._failed_reads
            or self._received is not None
            or self._read_round_open
            or log.truncated_from is not None
            or self._hs.term != self.term
            or self._hs.voted_for != self.voted_for
            or self._hs.commit != log.commit
            or self._soft.role != self.role
            or self._soft.leader != self.leader
            or self._soft.term != self.term
            or self._snapshot_due()
        )

    def ready(self) -> Ready:
        """Hand out (and forget) every effect accumulated so far."""
        if self._read_round_open:
            self._read_round_open = False
            self._broadcast_heartbeat()
        log = self.log
        rd = Ready()
        if self._received is not None:
            rd.snapshot = self._received
            self._received = None
        if log.persist_handed < log.last_index:
            rd.entries = log.slice(log.persist_handed + 1, log.last_index + 1)
            log.persist_handed = log.last_index
        if log.truncated_from is not None:
            rd.truncate_from = log.truncated_from
            log.truncated_from = None
        hs = self._hs
        vote_changed = hs.term != self.term or hs.voted_for != self.voted_for
        if vote_changed or hs.commit != log.commit:
            self._hs = rd.hard_state = HardState(self.term, self.voted_for, log.commit)
        if vote_changed or rd.snapshot is not None:
            # Nothing may leave before the new term/vote (or snapshot) is durable.
            self._msgs.extend(self._pmsgs)
            rd.persisted_messages = self._msgs
        else:
            rd.messages = self._msgs
            rd.persisted_messages = self._pmsgs
        self._msgs = []
        self._pmsgs = []
        hi = log.commit if log.commit < log.stable else log.stable
        if hi > log.apply_handed:
            rd.committed_entries = log.slice(log.apply_handed + 1, hi + 1)
            log.apply_handed = hi
        if self._read_states:
            rd.read_states = self._read_states
            self._read_states = []
        if self._failed_reads:
            rd.failed_reads = self._failed_reads
            self._failed_reads = []
        soft = self._soft
        if soft.role != self.role or soft.leader != self.leader or soft.term != self.term:
            self._soft = rd.soft_state = SoftState(self.role, self.leader, self.term)
        if self._snapshot_due():
            rd.take_snapshot = self._suggested_snapshot = log.applied
        return rd

    def _snapshot_due(self) -> bool:
        every = self.options.snapshot_entries
        return every > 0 and self.log.applied - self._suggested_snapshot >= every

    # ================================================================ roles

    def _reset_timeout(self) -> None:
        n = self.options.election_ticks
        self._timeout = n + self._rng.randrange(0, n)

    def _become_follower(self, term: int, leader: MemberId | None) -> None:
        if self.role == Role.LEADER:
            self._abort_leadership()
        if term != self.term:
            self.term = term
            self.voted_for = None
        self.role = Role.FOLLOWER
        self.leader = leader
        self._votes = {}
        self._election_elapsed = 0
        self._reset_timeout()

    def _abort_leadership(self) -> None:
        self.progress = {}
        self._commit_due.clear()
        self._transferee = None
        self._uncommitted = 0
        self._read_round_open = False
        reads = [(ctx, who) for _, _, ctx, who in self._pending_reads] + self._waiting_reads
        self._pending_reads = []
        self._waiting_reads = []
        for ctx, who in reads:
            if who is None:
                self._failed_reads.append(ctx)
            else:
                self._msgs.append(ReadIndexResponse(self.term, self.id, who, ctx, 0, False))

    def _from_non_member(self, msg: RaftMessage) -> None:
        """§4.2.3: a leader ignores servers outside its configuration (they cannot
        disrupt it); once that configuration is committed it tells the sender so, since
        it never sends a removed member the entry that removes it."""
        if self.config_index <= self.log.commit:
            self._msgs.append(RemovedNotice(self.term, self.id, msg.sender, self.config_index))

    def _on_removed_notice(self, m: RemovedNotice) -> None:
        # step() has dropped a notice of an older term (a deposed leader's word).
        if self.config_index > m.config_index and self.id in self.config.members:
            return  # a late notice: we were added again since
        self._become_removed()

    def _become_removed(self) -> None:
        """Stop taking part: no elections, no votes, no answers -- until a leader
        replicates to this member again (it was added back, or the notice was stale),
        which makes it a follower again."""
        if self.role == Role.LEADER:
            self._abort_leadership()
        self.role = Role.REMOVED
        self.leader = None
        self._votes = {}

    def _campaign(self, pre_vote: bool, transfer: bool = False) -> None:
        """Start a (pre-)election (§3.4, §9.6)."""
        if pre_vote:
            self.role = Role.PRE_CANDIDATE
            vote_term = self.term + 1
        else:
            self.term += 1
            self.voted_for = self.id
            self.role = Role.CANDIDATE
            vote_term = self.term
        self.leader = None
        self._votes = {self.id: True}
        self._election_elapsed = 0
        self._reset_timeout()
        if self._tally_votes():
            return
        log = self.log
        last_index, last_term = log.last_index, log.last_term
        for v in self.config.voters:
            if v != self.id:
                self._pmsgs.append(
                    RequestVote(vote_term, self.id, v, last_index, last_term, pre_vote, transfer)
                )

    def _tally_votes(self) -> bool:
        """Act on the votes so far; True if the election is decided."""
        voters = self.config.voters
        quorum = len(voters) // 2 + 1
        granted = sum(1 for v in voters if self._votes.get(v) is True)
        rejected = sum(1 for v in voters if self._votes.get(v) is False)
        if granted >= quorum:
            if self.role == Role.PRE_CANDIDATE:
                self._campaign(pre_vote=False)
            else:
                self._become_leader()
            return True
        if rejected > len(voters) - quorum:
            self._become_follower(self.term, None)
            return True
        return False

    def _become_leader(self) -> None:
        log = self.log
        self.role = Role.LEADER
        self.leader = self.id
        self._votes = {}
        nxt = log.last_index + 1
        self.progress = {}
        for m in self.config.members:
            if m != self.id:
                pr = Progress(nxt)
                pr.recent_active = True
                self.progress[m] = pr
        self._transferee = None
        self._uncommitted = 0
        self._last_proposed = 0
        self._commit_due.clear()
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._term_start = nxt
        # §3.6.2: a no-op entry lets the new leader commit its predecessors' entries.
        log.entries.append(LogEntry(nxt, self.term, EntryKind.NOOP, b""))
        self._broadcast_append()

    def _tick_leader(self) -> None:
        opts = self.options
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._election_elapsed >= opts.election_ticks:
            self._election_elapsed = 0
            if opts.check_quorum and not self._quorum_active():
                self._become_follower(self.term, None)  # §6.2: lost touch with a quorum
                return
            self._transferee = None  # a transfer that took too long is abandoned
        if self._heartbeat_elapsed >= opts.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._broadcast_heartbeat()
        if self._commit_due:
            self._send_commit_notices()

    def _quorum_active(self) -> bool:
        voters = self.config.voters
        active = 0
        for v in voters:
            if v == self.id:
                active += 1
            else:
                pr = self.progress.get(v)
                if pr is not None and pr.recent_active:
                    active += 1
        for pr in self.progress.values():
            pr.recent_active = False
        return active >= len(voters) // 2 + 1

    # ================================================================ configuration

    def _config_at(self, index: int) -> tuple[Configuration, int]:
        """The configuration in force after entry ``index`` and the entry it is from."""
        log = self.log
        for i in range(min(index, log.last_index), log.offset, -1):
            e = log.entry(i)
            if e.kind == _CONFIGURATION:
                return decode_configuration(e.data), i
        return self._base_config, log.offset

    def _set_config(self, config: Configuration, index: int) -> None:
        """A configuration takes effect as soon as it is in the log (§4.1)."""
        self.config = config
        self.config_index = index
        if self.role != Role.LEADER:
            return
        members = config.members
        for m in members:
            if m != self.id and m not in self.progress:
                pr = Progress(self.log.last_index + 1)
                pr.recent_active = True
                self.progress[m] = pr
        for m in list(self.progress):
            if m not in members:
                del self.progress[m]
        if self._transferee is not None and self._transferee not in config.voters:
            self._transferee = None

    # ================================================================ replication

    def _broadcast_append(self) -> None:
        """Send every follower what it lacks (as far as its window allows), or at
        least the commit index."""
        for m in self.progress:
            if self._send_append(m):
                while self._send_append_entries_only(m):
                    pass

    def _broadcast_commit(self) -> None:
        """The commit index advanced: send every follower what it lacks, and with it
        the new commit index.

        With ``lazy_commit_notices`` a follower in the replicate state that has nothing
        new to receive is not sent an AppendEntries just for the commit index: it is
        marked due instead, and told by the next append or heartbeat to it, or by
        :meth:`_send_commit_notices` at the next tick."""
        if not self.options.lazy_commit_notices:
            self._broadcast_append()
            return
        last = self.log.last_index
        due = self._commit_due
        for m, pr in self.progress.items():
            if pr.state == _REPLICATE and pr.next > last:
                due.add(m)
            elif self._send_append(m):
                while self._send_append_entries_only(m):
                    pass

    def _send_commit_notices(self) -> None:
        """(Tick) Tell the followers still due the commit index (see
        :meth:`_broadcast_commit`); one that flow control pauses stays due."""
        due = self._commit_due
        for m, pr in self.progress.items():  # (not the set's order: deterministic)
            if m in due:
                if pr.state != _REPLICATE:
                    due.discard(m)  # probing or snapshotting: those messages carry it
                else:
                    self._send_append(m)  # sent: no longer due (paused: stays due)
        due.intersection_update(self.progress)

    def _broadcast_heartbeat(self) -> None:
        commit = self.log.commit
        term = self.term
        rnd = self._read_round
        due = self._commit_due
        for m, pr in self.progress.items():
            c = pr.match if pr.match < commit else commit
            self._msgs.append(Heartbeat(term, self.id, m, c, rnd))
            if c == commit and due:
                due.discard(m)  # the heartbeat carries the commit index

    def _send_append(self, to: MemberId) -> bool:
        """Send ``to`` what it needs next, if its flow control allows; True if sent."""
        pr = self.progress.get(to)
        if pr is None:
            return False
        opts = self.options
        if pr.is_paused(opts.max_inflight_msgs, opts.max_inflight_bytes):
            return False
        if pr.state == _SNAPSHOT:
            self._send_snapshot_chunk(to, pr)
            return True
        log = self.log
        prev = pr.next - 1
        prev_term = log.term_at(prev)
        if prev_term is None:
            if prev < log.offset:
                pr.become_snapshot(self.snapshot)
                self._send_snapshot_chunk(to, pr)
                return True
            # next beyond our log (stale bookkeeping): probe from our end
            pr.next = log.last_index + 1
            prev = log.last_index
            prev_term = log.last_term
        entries: tuple[LogEntry, ...] | list[LogEntry] = _EMPTY
        nbytes = 0
        if prev < log.last_index:
            hi = min(log.last_index, prev + opts.max_entries_per_msg) + 1
            batch = log.slice(prev + 1, hi)
            limit = opts.max_append_bytes
            for k, e in enumerate(batch):
                nbytes += len(e.data)
                if nbytes > limit and k > 0:
                    nbytes -= len(e.data)
                    del batch[k:]
                    break
            entries = batch
        self._msgs.append(
            AppendEntries(self.term, self.id, to, prev, prev_term, tuple(entries), log.commit)
        )
        if self._commit_due:
            self._commit_due.discard(to)  # this append carries the commit index
        if entries:
            pr.sent(entries[-1].index, nbytes)
        elif pr.state != _REPLICATE:
            pr.paused = True
        return True

    def _send_snapshot_chunk(self, to: MemberId, pr: Progress) -> None:
        if pr.snapshot != self.snapshot:  # a newer snapshot replaced the one being sent
            pr.become_snapshot(self.snapshot)
        meta = self.snapshot
        data = self.snapshot_data
        off = min(pr.snapshot_offset, len(data))
        end = off + self.options.snapshot_chunk_bytes
        self._msgs.append(
            InstallSnapshot(self.term, self.id, to, meta, off, data[off:end], end >= len(data))
        )
        pr.paused = True

    def _maybe_commit(self) -> bool:
        """Advance the commit index to what a quorum stores, if it is of this term
        (§3.6.2: entries of earlier terms are committed only indirectly)."""
        log = self.log
        matches = []
        for v in self.config.voters:
            if v == self.id:
                matches.append(log.stable)
            else:
                pr = self.progress.get(v)
                matches.append(pr.match if pr is not None else 0)
        index = _quorum_value(matches)
        if index <= log.commit or log.term_at(index) != self.term:
            return False
        old = log.commit
        log.commit = index
        if self._uncommitted:
            freed = 0
            for e in log.slice(old + 1, index + 1):
                freed += len(e.data)
            self._uncommitted = max(0, self._uncommitted - freed)
        if old < self._term_start <= index:
            self._release_waiting_reads()
        if self.config_index <= index and self.id not in self.config.voters:
            # §4.2.2: a leader removed from the configuration steps down once the
            # change is committed (and, having committed its own removal, knows it
            # is out for good).
            self._become_removed()
            return False
        return True

    def _on_append(self, m: AppendEntries) -> None:
        if self.role != Role.FOLLOWER:
            self._become_follower(m.term, m.sender)
        self.leader = m.sender
        self._election_elapsed = 0
        log = self.log
        prev = m.prev_log_index
        if prev < log.commit:
            self._pmsgs.append(
                AppendEntriesResponse(self.term, self.id, m.sender, True, log.commit)
            )
            return
        term_here = log.term_at(prev)
        if term_here != m.prev_log_term:
            if term_here is None:
                hint_index, hint_term = log.last_index + 1, 0
            else:
                hint_index, hint_term = log.first_index_of_term_at(prev), term_here
            self._pmsgs.append(
                AppendEntriesResponse(
                    self.term, self.id, m.sender, False, prev, hint_index, hint_term
                )
            )
            return
        entries = m.entries
        last_new = prev + len(entries)
        if entries:
            if entries[0].index != prev + 1 or entries[-1].index != last_new:
                return  # malformed: not contiguous after prev
            k = 0
            n = len(entries)
            if prev < log.last_index:  # skip the entries we already have
                while k < n and log.term_at(entries[k].index) == entries[k].term:
                    k += 1
            if k < n:
                new = list(entries[k:]) if k else list(entries)
                if new[0].index <= log.commit:
                    return  # would overwrite committed entries: not from a real leader
                configs = []
                for e in new:
                    if e.kind == _CONFIGURATION:
                        try:
                            configs.append((decode_configuration(e.data), e.index))
                        except ProtocolError:
                            return
                reverted = new[0].index <= self.config_index
                log.truncate_and_append(new)
                if configs:
                    self._set_config(*configs[-1])
                elif reverted:
                    self._set_config(*self._config_at(log.last_index))
        commit = m.commit if m.commit < last_new else last_new
        if commit > log.commit:
            log.commit = commit
        self._pmsgs.append(AppendEntriesResponse(self.term, self.id, m.sender, True, last_new))

    def _on_append_response(self, m: AppendEntriesResponse) -> None:
        if self.role != Role.LEADER:
            return
        pr = self.progress.get(m.sender)
        if pr is None:
            return
        pr.recent_active = True
        if not m.success:
            if m.conflict_term:
                last = self.log.last_index_of_term(m.conflict_term)
                retry = last + 1 if last is not None else m.conflict_index
            else:
                retry = m.conflict_index
            if pr.decrease(m.index, retry):
                self._send_append(m.sender)
            return
        pr.last_ack_tick = self.ticks
        if not pr.update(m.index) and not (pr.state == ProgressState.PROBE and m.index == pr.match):
            return
        if pr.state != _REPLICATE:
            if pr.state == ProgressState.PROBE:
                pr.become_replicate()
            elif pr.snapshot is None or pr.match >= pr.snapshot.index:
                pr.become_probe()
        if self._maybe_commit():
            self._broadcast_commit()
        elif self.role == Role.LEADER:
            while self._send_append_entries_only(m.sender):
                pass
        if self._transferee == m.sender and pr.match == self.log.last_index:
            self._msgs.append(TimeoutNow(self.term, self.id, m.sender))

    def _send_append_entries_only(self, to: MemberId) -> bool:
        pr = self.progress.get(to)
        if pr is None or pr.next > self.log.last_index:
            return False
        return self._send_append(to)

    def _on_heartbeat(self, m: Heartbeat) -> None:
        if self.role != Role.FOLLOWER:
            self._become_follower(m.term, m.sender)
        self.leader = m.sender
        self._election_elapsed = 0
        log = self.log
        if log.commit < m.commit <= log.last_index:
            log.commit = m.commit
        self._pmsgs.append(HeartbeatResponse(self.term, self.id, m.sender, m.read_round))

    def _on_heartbeat_response(self, m: HeartbeatResponse) -> None:
        if self.role != Role.LEADER:
            return
        pr = self.progress.get(m.sender)
        if pr is None:
            return
        pr.recent_active = True
        pr.last_ack_tick = self.ticks
        pr.paused = False
        if pr.state == _REPLICATE and pr.inflight:
            # An append may have been lost: make room for one more (which, if there is
            # a gap, the follower rejects, sending us back to probing).
            pr.inflight_bytes -= pr.inflight.popleft()[1]
        if m.read_round > pr.read_round:
            pr.read_round = min(m.read_round, self._read_round)
            self._release_confirmed_reads()
        if pr.match < self.log.last_index or pr.state == _SNAPSHOT:
            self._send_append(m.sender)

    # ================================================================ elections

    def _on_request_vote(self, m: RequestVote) -> None:
        can_vote = (
            self.voted_for == m.sender
            or (self.voted_for is None and self.leader is None)
            or (m.pre_vote and m.term > self.term)
        )
        if can_vote and self.log.is_up_to_date(m.last_log_index, m.last_log_term):
            self._pmsgs.append(RequestVoteResponse(m.term, self.id, m.sender, True, m.pre_vote))
            if not m.pre_vote:
                self.voted_for = m.sender
                self._election_elapsed = 0
        else:
            self._pmsgs.append(RequestVoteResponse(self.term, self.id, m.sender, False, m.pre_vote))

    def _on_vote_response(self, m: RequestVoteResponse) -> None:
        if m.pre_vote != (self.role == Role.PRE_CANDIDATE):
            return
        if self.role not in (Role.PRE_CANDIDATE, Role.CANDIDATE):
            return
        self._votes[m.sender] = m.granted
        self._tally_votes()

    def _on_timeout_now(self, m: TimeoutNow) -> None:
        if self.role == Role.FOLLOWER and self.promotable:
            self._campaign(pre_vote=False, transfer=True)

    # ================================================================ snapshots

    def _on_install_snapshot(self, m: InstallSnapshot) -> None:
        if self.role != Role.FOLLOWER:
            self._become_follower(m.term, m.sender)
        self.leader = m.sender
        self._election_elapsed = 0
        meta = m.meta
        log = self.log

        def respond(next_offset: int, done: bool, match: int = 0) -> None:
            self._pmsgs.append(
                InstallSnapshotResponse(
                    self.term, self.id, m.sender, meta.index, next_offset, done, match
                )
            )

        if meta.index <= log.commit:
            self._incoming = None
            respond(0, True, log.commit)
            return
        inc = self._incoming
        if m.offset == 0:
            inc = self._incoming = (meta, bytearray())
        elif inc is None or inc[0] != meta or m.offset != len(inc[1]):
            respond(len(inc[1]) if inc is not None and inc[0] == meta else 0, False)
            return
        inc[1].extend(m.data)
        if not m.done:
            respond(len(inc[1]), False)
            return
        self._incoming = None
        self._restore(meta, bytes(inc[1]))
        respond(0, True, meta.index)

    def _restore(self, meta: SnapshotMeta, data: bytes) -> None:
        log = self.log
        if log.term_at(meta.index) == meta.term:
            log.commit = meta.index  # we have those entries: no need to install (§5.3)
            return
        log.reset(meta.index, meta.term)
        self.snapshot = meta
        self.snapshot_data = data
        self._suggested_snapshot = meta.index
        self._base_config = meta.configuration
        self._set_config(meta.configuration, meta.index)
        self._received = ReceivedSnapshot(meta, data)

    def _on_snapshot_response(self, m: InstallSnapshotResponse) -> None:
        if self.role != Role.LEADER:
            return
        pr = self.progress.get(m.sender)
        if pr is None:
            return
        pr.recent_active = True
        if m.done:
            pr.update(m.match_index)
            if pr.state == _SNAPSHOT and (pr.snapshot is None or pr.match >= pr.snapshot.index):
                pr.become_probe()
            if self._maybe_commit():
                self._broadcast_commit()
            else:
                self._send_append(m.sender)
            return
        if pr.state == _SNAPSHOT and pr.snapshot is not None:
            if m.snapshot_index == pr.snapshot.index:
                pr.snapshot_offset = m.next_offset
            pr.paused = False
            self._send_append(m.sender)

    # ================================================================ ReadIndex

    def _leader_read(self, context: bytes, requester: MemberId | None) -> Refused | None:
        if len(self._pending_reads) + len(self._waiting_reads) >= self.options.max_pending_reads:
            return Refused(Refusal.TOO_BUSY, self.id, "too many pending reads")
        if self.log.commit < self._term_start:
            # §6.4 step 1: the commit index is only known once an entry of this term is
            # committed; wait for the no-op.
            self._waiting_reads.append((context, requester))
            return None
        self._register_read(context, requester)
        return None

    def _register_read(self, context: bytes, requester: MemberId | None) -> None:
        if not self._read_round_open:
            self._read_round += 1
            self._read_round_open = True
        self._pending_reads.append((self._read_round, self.log.commit, context, requester))
        self._release_confirmed_reads()

    def _release_waiting_reads(self) -> None:
        waiting = self._waiting_reads
        self._waiting_reads = []
        for ctx, who in waiting:
            self._register_read(ctx, who)

    def _release_confirmed_reads(self) -> None:
        """Answer the reads whose heartbeat round a quorum acknowledged (§6.4 step 3)."""
        if not self._pending_reads:
            return
        rounds = []
        for v in self.config.voters:
            if v == self.id:
                rounds.append(self._read_round)
            else:
                pr = self.progress.get(v)
                rounds.append(pr.read_round if pr is not None else 0)
        confirmed = _quorum_value(rounds)
        pending = self._pending_reads
        k = 0
        while k < len(pending) and pending[k][0] <= confirmed:
            _, index, ctx, who = pending[k]
            if who is None:
                self._read_states.append(ReadState(index, ctx))
            else:
                self._msgs.append(ReadIndexResponse(self.term, self.id, who, ctx, index, True))
            k += 1
        if k:
            del pending[:k]

    def _on_read_index_request(self, m: ReadIndexRequest) -> None:
        refused = (
            self._leader_read(m.context, m.sender)
            if self.role == Role.LEADER
            else Refused(Refusal.NOT_LEADER)
        )
        if refused is not None:
            self._msgs.append(ReadIndexResponse(self.term, self.id, m.sender, m.context, 0, False))

    def _on_read_index_response(self, m: ReadIndexResponse) -> None:
        if m.ok:
            self._read_states.append(ReadState(m.index, m.context))
        else:
            self._failed_reads.append(m.context)
