"""``Node``: one cluster member, assembled from its actors, storage and transports.

```python
node = Node(config, CounterStateMachine()).start()
...
node.stop()
```

No globals and no fixed ports: everything comes from the :class:`NodeConfig` (and, for
single-process clusters over the in-memory transport, the :class:`InMemoryHub` passed
in). ``stop()`` closes sockets, flushes storage and joins every thread it started.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pykka

from actors.address_book import AddressBook, AddressBookError
from actors.admin import AdminCommand
from actors.base import Mailbox, NodeActor, Wiring, member_logger
from actors.clock import Ticker, TickGate
from actors.config import MemberAddress, NodeConfig
from actors.consensus import ConsensusActor
from actors.handoff import Coalescer
from actors.host import HostedRef, start_host
from actors.link import RemoteRef, core_endpoint, registry_endpoint
from actors.loop_host import start_on_loop
from actors.messages import PeerFrame, Reannounce
from actors.metrics import MetricsUnavailableError, require_prometheus
from actors.registry import ClientFrame, make_registry_actor
from actors.removal import REMOVED_FILE, RemovalFlag, removed_marker
from actors.retry import RetrySchedulerActor
from actors.security import NodeCurve, link_options, node_curve
from actors.session import SessionActor
from actors.status import StatusBoard
from actors.storage import DurableStorage, MemoryStorage, StorageWriter
from actors.transport import (
    ClientFrameHandler,
    ClientTransport,
    FaultControlledPeerTransport,
    InMemoryClientTransport,
    InMemoryHub,
    InMemoryPeerTransport,
    PeerFrameHandler,
    PeerTransport,
    ZmqClientTransport,
    ZmqOptions,
    ZmqPeerTransport,
)
from actors.transport._zmq_loop import ZmqLoop
from protocol.actions import RAFT_ACTION_TYPES
from protocol.admin import (
    AdminOp,
    AdminRequest,
    AdminResponse,
    LinkedAdminRequest,
    LinkedAdminResponse,
    NodeStatus,
    StatusUpdate,
)
from protocol.codec import ProtocolError, decode
from protocol.ids import MemberId
from protocol.raft import Configuration, RaftCore, RaftOptions, RestoredState, Role, SnapshotMeta
from protocol.session import SessionStateMachine, UserCodec, UserStateMachine

__all__ = ["Node", "NodeError", "RegistryLink"]

#: How often the registry and the retry scheduler get a tick (ms).
_SLOW_TICK_MS = 50
#: How often a node repeats its leadership notice to a registry in another process.
_REANNOUNCE_MS = 1000


@dataclass(frozen=True, slots=True)
class RegistryLink:
    """Where a node whose registry runs in another process binds its end of the link
    (``bind``) and where the registry process's end is (``registry_address``)."""

    bind: str
    registry_address: str


_FROM_REGISTRY = (*RAFT_ACTION_TYPES, LinkedAdminRequest)


def _from_registry(
    consensus: Mailbox, frame: bytes, max_bytes: int, answer: Callable[[Any], None]
) -> None:
    """A frame from the registry process: a RaftAction, or an operator's admin
    request (answered through ``answer`` over the link)."""
    try:
        action: Any = decode(frame, _FROM_REGISTRY, max_bytes=max_bytes)
    except ProtocolError:
        logging.getLogger(__name__).warning("dropped a bad frame on the registry link")
        return
    if isinstance(action, LinkedAdminRequest):
        connection = action.connection

        def reply(response: AdminResponse) -> None:
            answer(LinkedAdminResponse(connection, response))

        consensus.tell(AdminCommand(action.request, reply))
        return
    consensus.tell(action)


class NodeError(RuntimeError):
    """The node could not start (bad storage, a port in use, ...)."""


class Node:
    """One member of a raft-actors cluster; see the module docstring."""

    def __init__(
        self,
        config: NodeConfig,
        state_machine: UserStateMachine,
        *,
        codec: UserCodec | None = None,
        hub: InMemoryHub | None = None,
        registry_link: RegistryLink | None = None,
        join: bool = False,
    ) -> None:
        if config.transport == "memory" and hub is None:
            raise NodeError("the in-memory transport needs an InMemoryHub (hub=...)")
        self.config = config
        self.state_machine = state_machine
        self.codec = codec
        self.hub = hub
        self.registry_link = registry_link
        #: A fresh node that joins an existing cluster (``add_member``) starts with no
        #: configuration and waits for the leader, instead of founding a cluster.
        self.join = join
        self.log = member_logger(__name__, config.member_id)
        self.board = StatusBoard()
        self.wiring = Wiring()
        self._started_at = 0.0
        self._refs: list[HostedRef[NodeActor]] = []
        self._storage: DurableStorage | MemoryStorage | None = None
        self._writer: StorageWriter | None = None
        self._peers: PeerTransport | None = None
        self._clients: ClientTransport | None = None
        self._link: PeerTransport | None = None
        self._tickers: list[Ticker] = []
        self._curve: NodeCurve | None = None
        self._next_reannounce = 0
        #: The slow ticker's gate for each local actor it ticks (registry, retry
        #: scheduler): at most one slow tick waits for each.
        self._slow_gates: dict[object, TickGate] = {}
        self._state = "new"
        self._core: RaftCore | None = None
        #: Set once this node learns it was removed from the cluster.
        self.removal = RemovalFlag(config.member_id, config.data_dir)
        #: Set once a transport's I/O thread died (:attr:`failure` says which and
        #: why): the node can no longer take part; stop it and start it again.
        self.failed = threading.Event()
        self.failure: str | None = None
        self._metrics_server: Any = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Node:
        """Open storage, start the actors and transports; return once serving."""
        if self._state != "new":
            raise NodeError(f"node {self.config.member_id} was already started")
        self._state = "starting"
        try:
            self._start()
        except Exception as exc:
            self.log.error("failed to start: %s", exc)
            self.stop()
            if isinstance(exc, NodeError):
                raise
            raise NodeError(f"node {self.config.member_id} failed to start: {exc}") from exc
        self._state = "running"
        self.log.info("serving clients on %s, peers on %s", self.client_address, self.peer_address)
        return self

    def _start(self) -> None:
        cfg = self.config
        self._started_at = time.monotonic()
        self._curve = node_curve(cfg) if cfg.transport == "zmq" else None
        if cfg.storage == "durable":
            assert cfg.data_dir is not None
            marker = removed_marker(cfg.data_dir)
            if marker is not None:
                raise NodeError(f"refusing to start: {marker} ({cfg.data_dir / REMOVED_FILE})")
            self._storage = DurableStorage.open(cfg.data_dir, durable_log=cfg.durable_log)
        else:
            self._storage = MemoryStorage()
        storage = self._storage
        try:
            book = AddressBook(
                cfg.members, cfg.data_dir if cfg.storage == "durable" else None, self.log
            )
        except AddressBookError as exc:
            raise NodeError(f"refusing to start: {exc}") from None
        members = book.members()
        restored, snapshot_meta = self._restore(storage)
        machine = SessionStateMachine(self.state_machine, self.codec)
        if restored.snapshot is not None and restored.snapshot.index > 0:
            machine.restore(restored.snapshot_data)
        core = self._core = RaftCore(cfg.member_id, self._raft_options(), random.Random(), restored)
        # What was restored shows in status() at once, not only after the first event.
        stats = machine.stats()
        self.board.update(
            term=core.term,
            commit_index=core.commit_index,
            applied_index=snapshot_meta.index,
            last_log_index=core.last_index,
            snapshot_index=core.snapshot.index,
            voters=core.config.voters,
            learners=core.config.learners,
            sessions=stats.sessions,
            pending_server_requests=stats.pending_server_requests,
        )

        wiring = self.wiring
        # The writer calls into an actor that does not exist yet: it gets a late-bound
        # forwarder, pointed at the actor before anything is started.
        to_consensus = _Late()
        # Frames from a transport thread reach their actor through a Coalescer: one
        # actor message per burst, handled as one batch (see actors.handoff).
        peer_frames: Coalescer[PeerFrame] = Coalescer()
        client_frames: Coalescer[ClientFrame] = Coalescer()

        def on_peer_frame(sender: MemberId, frame: bytes) -> None:
            peer_frames.put(PeerFrame(sender, frame), len(frame))  # full: dropped, counted

        def on_client_frame(connection: bytes, data: bytes, admin: bool) -> None:
            client_frames.put(ClientFrame(connection, data, admin), len(data))

        self._peers = self._peer_transport(on_peer_frame)
        self._writer = StorageWriter(
            storage.log,
            storage.stable,
            to_consensus.tell,
            to_consensus.tell,
            name=f"storage-writer-{cfg.member_id}",
            on_sync=self.board.metrics.on_sync,
            inline=cfg.storage_writes == "inline",
        )
        session = SessionActor(
            cfg.member_id,
            machine,
            storage.snapshots,
            snapshot_meta,
            wiring,
            self.board,
            snapshot_threshold_bytes=cfg.snapshot_threshold_bytes,
        )
        retry = RetrySchedulerActor(
            cfg.member_id, wiring, interval_ms=cfg.retry_interval_ms, age_ms=cfg.retry_age_ms
        )
        consensus_actor = ConsensusActor(
            core,
            self._writer,
            storage.snapshots,
            self._peers,
            {m: a.client for m, a in members.items()},
            wiring,
            self.board,
            max_frame_bytes=cfg.max_frame_bytes,
            on_role=lambda role: self._on_role(role, core.term),
            remember=lambda m, peer, client: book.learn(m, MemberAddress(peer, client)),
        )
        actors: list[NodeActor] = [session, retry, consensus_actor]
        if self.registry_link is None:
            self._clients = self._client_transport(on_client_frame)
            actors.append(make_registry_actor(cfg, self._clients, wiring, self.status))
        refs = self._refs = self._host(actors)
        wiring.session, wiring.retry = refs[0], refs[1]
        consensus = wiring.consensus = to_consensus.ref = refs[2]
        peer_frames.target = consensus
        if self.registry_link is None:
            wiring.registry = client_frames.target = refs[3]
        else:
            # The registry runs in another process (actors.registry_node): RaftActions
            # arrive over the link, ServerActions leave through it.
            link = self.registry_link
            far = registry_endpoint(cfg.member_id)
            far_ref = _LateRemote()
            self._link = ZmqPeerTransport(
                core_endpoint(cfg.member_id),
                lambda sender, frame: _from_registry(
                    consensus, frame, cfg.max_frame_bytes, far_ref.tell
                ),
                bind=link.bind,
                options=link_options(self._curve, cfg.max_frame_bytes, far),
            )
            self._link.add_peer(far, link.registry_address)
            wiring.registry = far_ref.ref = RemoteRef(self._link, far)

        self._writer.start()
        for member, address in members.items():
            if member != cfg.member_id:
                self._peers.add_peer(member, address.peer)
        for kind, transport in (
            ("peer", self._peers),
            ("client", self._clients),
            ("link", self._link),
        ):
            if isinstance(transport, ZmqLoop):
                transport.on_failure = functools.partial(self._transport_failed, kind)
            if transport is not None:
                transport.start()
        self._slow_gates = {
            ref: TickGate(ref.tell)
            for ref in (wiring.registry, wiring.retry)
            if ref is not None and not isinstance(ref, RemoteRef)
        }
        self._tickers = [
            Ticker(
                f"tick-{cfg.member_id}",
                cfg.tick_ms,
                TickGate(consensus.tell, self.board.metrics.tick_skipped),
            ),
            Ticker(f"tick-slow-{cfg.member_id}", _SLOW_TICK_MS, self._slow_tick),
        ]
        for ticker in self._tickers:
            ticker.start()
        if cfg.metrics_port is not None:
            self._start_metrics(cfg.metrics_port, cfg.metrics_host)

    def _host(self, actors: list[NodeActor]) -> list[HostedRef[NodeActor]]:
        """Start the node's actors (session, retry, consensus and maybe registry) as
        ``actor_threads`` says (see :class:`~actors.config.NodeConfig`); their refs,
        in the same order."""
        member = self.config.member_id
        mode = self.config.actor_threads
        if mode == "shared":
            return start_host(f"actors-{member}", actors)
        if mode == "separate":
            return [self._own_thread(a) for a in actors]
        if mode == "hybrid":  # the actors that run user code keep threads of their own
            own, on_peers = actors[:2], actors[2:3]
        else:
            own, on_peers = [], actors[:3]
        refs = [self._own_thread(a) for a in own]
        refs += self._on_transport(f"actors-{member}", self._peers, on_peers)
        if len(actors) > 3:
            refs += self._on_transport(f"registry-{member}", self._clients, actors[3:])
        return refs

    def _own_thread(self, actor: NodeActor) -> HostedRef[NodeActor]:
        return start_host(f"{type(actor).__name__}-{self.config.member_id}", [actor])[0]

    @staticmethod
    def _on_transport(
        name: str, transport: object, group: list[NodeActor]
    ) -> list[HostedRef[NodeActor]]:
        """``group`` on ``transport``'s I/O thread; where a transport has no such
        thread (in-memory, fault-controlled), on a pykka thread of its own, as with
        ``"shared"``."""
        if isinstance(transport, ZmqLoop):
            return start_on_loop(name, transport, group)
        return start_host(name, group)

    def _start_metrics(self, port: int, host: str) -> None:
        try:
            require_prometheus()
        except MetricsUnavailableError as exc:
            raise NodeError(str(exc)) from None
        from actors.metrics_http import MetricsSource, start_metrics_server

        transports = {}
        if self._peers is not None:
            transports["peer"] = self._peers.stats
        if self._clients is not None:
            transports["client"] = self._clients.stats
        board = self.board
        source = MetricsSource(
            self.config.member_id,
            board,
            self._started_at,
            self._core,
            transports,
            {"peer": lambda: board.read().peer_frames_dropped},
        )
        try:
            self._metrics_server = start_metrics_server(source, port, host)
        except OSError as exc:
            raise NodeError(f"cannot serve metrics on {host}:{port}: {exc}") from None
        self.log.info("metrics on %s", self._metrics_server.url)

    def _on_role(self, role: Role, term: int) -> None:
        """The core's role changed (on the consensus actor's thread): note a removal,
        or a leader replicating to this member again after one (it was added back)."""
        if role == Role.REMOVED and not self.removal.is_set:
            self.removal.set(term)
            self.log.warning(
                "%s WAS REMOVED from the cluster (term %d): it takes no further part in Raft%s",
                self.config.member_id,
                term,
                f"; {self.removal.error}" if self.removal.error else "",
            )
        elif role != Role.REMOVED and self.removal.is_set:
            self.removal.clear()
            self.log.warning("%s was added back to the cluster (term %d)", self.member_id, term)

    def _transport_failed(self, kind: str, exc: BaseException) -> None:
        """A transport's I/O thread died (on that thread, as it ends): with it went its
        sockets and any actors it hosted, so say so loudly rather than run on half
        dead (``raft-actors node`` exits; an embedding app watches :attr:`failed`)."""
        self.failure = f"the {kind} transport's I/O thread failed: {exc!r}"
        self.log.critical("NODE FAILED: %s; stop this node and start it again", self.failure)
        self.failed.set()

    def _slow_tick(self, now: int) -> None:
        wiring = self.wiring
        for gate in self._slow_gates.values():
            gate(now)
        if isinstance(wiring.registry, RemoteRef):
            # The registry process answers status requests from what we push.
            wiring.registry.tell(StatusUpdate(self.status()))
        if isinstance(wiring.registry, RemoteRef) and now >= self._next_reannounce:
            self._next_reannounce = now + _REANNOUNCE_MS
            assert wiring.consensus is not None
            wiring.consensus.tell(Reannounce())

    def _restore(
        self, storage: DurableStorage | MemoryStorage
    ) -> tuple[RestoredState, SnapshotMeta]:
        """What the core and the session actor start from."""
        persisted = storage.load()
        cfg = self.config
        if persisted.snapshot is None and not persisted.entries and persisted.hard_state.term == 0:
            if self.join:
                empty = Configuration(())
                return RestoredState(), SnapshotMeta(0, 0, empty)
            # A founding member's first start: the configured members are the voters.
            boot = Configuration(tuple(sorted(cfg.members)))
            return RestoredState.bootstrap(boot), SnapshotMeta(0, 0, boot)
        data = b""
        meta = SnapshotMeta(0, 0, Configuration(tuple(sorted(cfg.members))))
        if persisted.snapshot is not None:
            meta = persisted.snapshot.meta
            reader = storage.snapshots.open_latest()
            assert reader is not None
            try:
                chunks = []
                while chunk := reader.read(1 << 20):
                    chunks.append(chunk)
                data = b"".join(chunks)
            finally:
                reader.close()
        restored = RestoredState(persisted.hard_state, meta, data, persisted.entries)
        self.log.info(
            "restored term %d, snapshot at %d, %d log entries",
            persisted.hard_state.term,
            meta.index,
            len(persisted.entries),
        )
        return restored, meta

    def _raft_options(self) -> RaftOptions:
        cfg = self.config
        election = max(2, cfg.election_timeout_ms // cfg.tick_ms)
        heartbeat = max(1, min(election - 1, cfg.heartbeat_ms // cfg.tick_ms))
        # Every Raft message must fit in one peer frame, or the transport drops it for
        # good (a follower could then never catch up): entry data gets half a frame,
        # their per-entry encoding overhead (< 32 bytes each) at most a quarter, and a
        # snapshot goes in chunks of half a frame.
        half = max(1, cfg.max_frame_bytes // 2)
        return RaftOptions(
            election_ticks=election,
            heartbeat_ticks=heartbeat,
            compaction_tail=cfg.snapshot_trailing_entries,
            max_append_bytes=half,
            max_entries_per_msg=max(1, min(1024, cfg.max_frame_bytes // 128)),
            snapshot_chunk_bytes=min(1024 * 1024, half),
            promotion_lag=cfg.promotion_lag_entries,
            # Commit-only AppendEntries wait for the next tick (see RaftOptions): half
            # the peer messages of a leader serving a stream of commands.
            lazy_commit_notices=True,
        )

    def _peer_transport(self, on_frame: PeerFrameHandler) -> PeerTransport:
        cfg = self.config

        def make(handler: PeerFrameHandler) -> PeerTransport:
            if cfg.transport == "memory":
                assert self.hub is not None
                return InMemoryPeerTransport(
                    self.hub,
                    cfg.member_id,
                    handler,
                    bind=cfg.address.peer,
                    max_frame_bytes=cfg.max_frame_bytes,
                )
            options = (
                ZmqOptions(max_frame_bytes=cfg.max_frame_bytes)
                if self._curve is None
                else self._curve.peer_options(cfg.max_frame_bytes)
            )
            return ZmqPeerTransport(cfg.member_id, handler, bind=cfg.address.peer, options=options)

        if cfg.fault_control is not None:  # test-only: partitions for fault injection
            return FaultControlledPeerTransport(cfg.fault_control, make, on_frame)
        return make(on_frame)

    def _client_transport(self, on_frame: ClientFrameHandler) -> ClientTransport:
        cfg = self.config
        if cfg.transport == "memory":
            assert self.hub is not None
            return InMemoryClientTransport(
                self.hub,
                on_frame,
                bind=cfg.address.client,
                node=cfg.member_id,
                max_frame_bytes=cfg.max_frame_bytes,
            )
        options = (
            ZmqOptions(max_frame_bytes=cfg.max_frame_bytes)
            if self._curve is None
            else self._curve.client_options(cfg.max_frame_bytes)
        )
        return ZmqClientTransport(on_frame, bind=cfg.address.client, options=options)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop everything this node started; idempotent."""
        if self._state in ("stopped", "new"):
            self._state = "stopped"
            return
        self._state = "stopped"
        if self._metrics_server is not None:
            self._metrics_server.stop()
        for ticker in self._tickers:
            ticker.stop(timeout)
        for transport in (self._clients, self._link, self._peers):
            if transport is not None:
                transport.stop()
        for ref in reversed(self._refs):
            with contextlib.suppress(pykka.ActorDeadError, pykka.Timeout):
                ref.stop(block=True, timeout=timeout)
        if self._writer is not None:
            with contextlib.suppress(RuntimeError):
                self._writer.stop(timeout)
        if self._storage is not None:
            self._storage.close()
        self.log.info("stopped")

    # ------------------------------------------------------------------ observing

    @property
    def member_id(self) -> MemberId:
        return self.config.member_id

    @property
    def client_address(self) -> str:
        if self._clients is not None and self._clients.address:
            return self._clients.address
        return self.config.address.client

    @property
    def metrics_url(self) -> str | None:
        """``http://host:port/metrics`` while the metrics endpoint runs, else None."""
        server = self._metrics_server
        return server.url if server is not None else None

    @property
    def peer_address(self) -> str:
        if self._peers is not None and self._peers.address:
            return self._peers.address
        return self.config.address.peer

    def status(self) -> NodeStatus:
        """This node's view of itself, without waiting on any actor."""
        f = self.board.read()
        return NodeStatus(
            member_id=self.config.member_id,
            role=f.role,
            term=f.term,
            leader=f.leader,
            commit_index=f.commit_index,
            applied_index=f.applied_index,
            last_log_index=f.last_log_index,
            snapshot_index=f.snapshot_index,
            voters=f.voters,
            learners=f.learners,
            sessions=f.sessions,
            pending_server_requests=f.pending_server_requests,
            client_address=self.client_address,
            peer_address=self.peer_address,
            pid=os.getpid(),
            uptime_ms=int((time.monotonic() - self._started_at) * 1000) if self._started_at else 0,
            last_contact_ms=self._last_contact_ms(),
        )

    def _last_contact_ms(self) -> tuple[tuple[MemberId, int], ...]:
        """(Leader) ms since each follower's last successful response (-1: none yet)."""
        core = self._core
        if core is None:
            return ()
        tick = self.config.tick_ms
        contact = core.last_contact_ticks()  # plain reads; safe from this thread
        return tuple(sorted((m, -1 if t is None else t * tick) for m, t in contact.items()))

    # ------------------------------------------------------------------ operating

    def transfer_leadership(
        self, member: MemberId | None = None, *, timeout: float = 10.0
    ) -> AdminResponse:
        """Ask this node, if it leads, to hand leadership to ``member`` (None: the
        most caught-up other voter). Returns once leadership moved (``ok``) or the
        attempt failed; a follower answers ``ok=False`` with the leader's client
        address in ``leader_hint`` (:func:`actors.client.admin_request` follows it)."""
        return self._admin(AdminOp.TRANSFER_LEADER, member, timeout=timeout)

    def add_member(
        self, member: MemberId, peer_address: str, client_address: str, *, timeout: float = 30.0
    ) -> AdminResponse:
        """Ask this node, if it leads, to add ``member`` as a learner and promote it
        once caught up; returns when it is a voter or the attempt failed. The other
        members must know its addresses too (:meth:`learn_member`, or
        :func:`actors.client.add_member`, which does both over the wire)."""
        return self._admin(
            AdminOp.ADD_MEMBER,
            member,
            peer_address=peer_address,
            client_address=client_address,
            timeout=timeout,
        )

    def learn_member(self, member: MemberId, peer_address: str, client_address: str) -> None:
        """Record ``member``'s addresses in this node's address book (kept in its data
        directory with durable storage, see :mod:`actors.address_book`); ``NodeError``
        if that failed."""
        response = self._admin(
            AdminOp.LEARN_MEMBER,
            member,
            peer_address=peer_address,
            client_address=client_address,
            timeout=10.0,
        )
        if not response.ok:
            raise NodeError(response.error)

    def remove_member(self, member: MemberId, *, timeout: float = 30.0) -> AdminResponse:
        """Ask this node, if it leads, to remove ``member``. Removing the leader itself
        transfers leadership first and answers ``ok=False``, retryable, with the new
        leader's address in ``leader_hint``: repeat the request there."""
        return self._admin(AdminOp.REMOVE_MEMBER, member, timeout=timeout)

    def _admin(
        self,
        op: AdminOp,
        member: MemberId | None,
        *,
        peer_address: str = "",
        client_address: str = "",
        timeout: float,
    ) -> AdminResponse:
        consensus = self.wiring.consensus
        if self._state != "running" or consensus is None:
            raise NodeError(f"node {self.config.member_id} is not running")
        cid = next(_admin_ids)
        done = threading.Event()
        answer: list[AdminResponse] = []

        def reply(response: AdminResponse) -> None:
            answer.append(response)
            done.set()

        request = AdminRequest(cid, op, member, peer_address, client_address)
        consensus.tell(AdminCommand(request, reply))
        if not done.wait(timeout):
            return AdminResponse(cid, False, f"no answer within {timeout:g}s", True, None)
        return answer[0]

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_admin_ids = itertools.count(1)


class _LateRemote:
    """A :class:`RemoteRef` to be filled in once the link exists."""

    ref: RemoteRef | None = None

    def tell(self, message: Any) -> None:
        if self.ref is not None:
            self.ref.tell(message)


class _Late:
    """An actor ref to be filled in once the actor exists (set before any traffic)."""

    ref: Mailbox | None = None

    def tell(self, message: Any) -> None:
        if self.ref is not None:
            # A transport or the storage writer may still call in while the node stops.
            with contextlib.suppress(pykka.ActorDeadError):
                self.ref.tell(message)


logging.getLogger(__name__).addHandler(logging.NullHandler())
