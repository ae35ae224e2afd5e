"""``RegistryActor``: the client connection registry of one node.

It owns the client-facing transport and hosts :class:`~protocol.registry.Registry`:
client frames, ticks and ``ServerAction``\\ s go in; frames to clients, ``RaftAction``\\ s
for consensus and connections to close come out. It also answers operators'
``StatusRequest``\\ s from the node's status board, whatever the node's role, and
forwards ``AdminRequest``\\ s to the consensus actor, which answers through this
actor's mailbox (see :mod:`actors.admin`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from actors.admin import AdminCommand
from actors.base import NodeActor, Wiring, member_logger
from actors.clock import wall_ms
from actors.config import NodeConfig
from actors.handoff import Drain
from actors.host import HostedRef, start_host
from actors.link import RemoteRef
from actors.messages import Tick
from actors.transport import ClientTransport
from protocol.actions import SERVER_ACTION_TYPES, RaftAction
from protocol.admin import (
    AdminRequest,
    AdminResponse,
    LinkedAdminRequest,
    NodeStatus,
    StatusRequest,
    StatusResponse,
)
from protocol.codec import ProtocolError, decode, encode
from protocol.ids import MemberId, SessionId
from protocol.registry import Registry, RegistryConfig, RegistryEffects, routing_ids
from protocol.wire import (
    CLIENT_BATCH_HEAD,
    CLIENT_FRAME_TYPES,
    ServerMessage,
    decode_client_frame,
)

__all__ = [
    "ClientFrame",
    "RegistryActor",
    "make_registry_actor",
    "registry_config",
    "start_registry_actor",
]

_ACCEPTED = (*CLIENT_FRAME_TYPES, StatusRequest, AdminRequest)


@dataclass(frozen=True, slots=True)
class ClientFrame:
    connection: bytes
    data: bytes
    #: Whether the sender may run admin requests (False: a non-admin CURVE key).
    admin: bool = True


@dataclass(frozen=True, slots=True)
class _AdminAnswer:
    """The consensus actor's answer to an operator's ``AdminRequest``."""

    connection: bytes
    response: AdminResponse


def registry_config(config: NodeConfig) -> RegistryConfig:
    """The registry's timeouts and hostile-client limits from the node's config."""
    return RegistryConfig(
        session_timeout_ms=config.session_timeout_ms,
        max_payload_bytes=config.max_payload_bytes,
        max_sessions_per_connection=config.max_sessions_per_connection,
        max_sessions=config.max_sessions,
        max_pending_requests_per_session=config.max_pending_requests_per_session,
        max_cached_responses_per_session=config.max_cached_responses_per_session,
        max_pending_queries_per_connection=config.max_pending_queries_per_connection,
    )


def make_registry_actor(
    config: NodeConfig,
    transport: ClientTransport,
    wiring: Wiring,
    status: Callable[[], NodeStatus],
) -> RegistryActor:
    """A registry actor for ``config``'s member, serving clients on ``transport``
    (not yet hosted: see :mod:`actors.host`)."""
    registry = Registry(
        registry_config(config),
        lambda: SessionId(secrets.token_hex(16)),
    )
    return RegistryActor(
        config.member_id,
        registry,
        transport,
        wiring,
        status,
        max_frame_bytes=config.max_frame_bytes,
    )


def start_registry_actor(
    config: NodeConfig,
    transport: ClientTransport,
    wiring: Wiring,
    status: Callable[[], NodeStatus],
) -> HostedRef[RegistryActor]:
    """:func:`make_registry_actor`, running on a thread of its own."""
    (ref,) = start_host(
        f"RegistryActor-{config.member_id}",
        [make_registry_actor(config, transport, wiring, status)],
    )
    return ref


class RegistryActor(NodeActor):
    """Hosts one :class:`Registry`; see the module docstring."""

    def __init__(
        self,
        member_id: MemberId,
        registry: Registry,
        transport: ClientTransport,
        wiring: Wiring,
        status: Callable[[], NodeStatus],
        *,
        max_frame_bytes: int,
    ) -> None:
        super().__init__()
        self.registry = registry
        self.wiring = wiring
        self.status = status
        # A client frame is refused beyond the registry's own bound too (a batch of
        # the largest payload), and its arrays and maps may hold at most as many items
        # as a batch may (see codec.decode's max_items).
        self.max_frame_bytes = min(max_frame_bytes, registry.config.max_batch_frame_bytes)
        self.max_items = registry.config.max_batch_items
        self.transport = transport
        self.log = member_logger(__name__, member_id)
        self.bad_frames = 0
        #: While a burst of frames is handled: the RaftActions it produced, proposed
        #: together at its end.
        self._batch: list[RaftAction] | None = None
        #: While a message is handled: the answers to clients and the connections to
        #: close, carried out at its end (one frame per client connection).
        self._out: list[tuple[bytes, ServerMessage]] = []
        self._closing: list[bytes] = []

    def handle(self, message: Any) -> None:
        try:
            self._handle(message)
        finally:
            if self._out or self._closing:
                self._flush()

    def _flush(self) -> None:
        """Send the turn's answers, one frame per connection, then close connections
        (after their last frames, which tell the client why)."""
        out, self._out = self._out, []
        closing, self._closing = self._closing, []
        send = self.transport.send
        for routing_id, frame in self.registry.frames(out):
            send(routing_id, frame)
        for routing_id in routing_ids(closing):
            self.transport.disconnect(routing_id)

    def _handle(self, message: Any) -> None:
        if isinstance(message, Drain):  # every client frame that arrived in one burst
            frames = message.source.take()
            now = wall_ms()
            self._batch = []
            try:
                self.handle_each(frames, lambda f: self._frame(f.connection, f.data, now, f.admin))
            finally:
                batch, self._batch = self._batch, None
                if batch:
                    self._propose(batch)
        elif isinstance(message, ClientFrame):
            self._frame(message.connection, message.data, wall_ms(), message.admin)
        elif isinstance(message, Tick):
            self._carry_out(self.registry.on_tick(message.now_ms))
        elif isinstance(message, _AdminAnswer):
            self._send(message.connection, encode(message.response))
        elif isinstance(message, SERVER_ACTION_TYPES):
            self._carry_out(self.registry.on_server_action(message, wall_ms()))
        elif isinstance(message, list):  # a batch of ServerActions, in order
            self._carry_out(self.registry.on_server_actions(message, wall_ms()))

    def _frame(self, connection: bytes, data: bytes, now_ms: int, admin: bool = True) -> None:
        try:
            msg: Any
            if data[:4] == CLIENT_BATCH_HEAD:  # (the direct path for batches)
                msg = decode_client_frame(
                    data, max_bytes=self.max_frame_bytes, max_items=self.max_items
                )
            else:
                msg = decode(
                    data, _ACCEPTED, max_bytes=self.max_frame_bytes, max_items=self.max_items
                )
        except ProtocolError as exc:
            self.bad_frames += 1
            self.log.debug("bad client frame: %s", exc)
            self._carry_out(self.registry.on_bad_connection(connection))
            return
        if isinstance(msg, StatusRequest):
            self._send(connection, encode(StatusResponse(msg.correlation_id, self.status())))
            return
        if isinstance(msg, AdminRequest):
            if admin:
                self._admin(connection, msg)
            else:
                error = "admin requests need an admin key (CURVE)"
                refusal = AdminResponse(msg.correlation_id, False, error, False, None)
                self._send(connection, encode(refusal))
            return
        self._carry_out(self.registry.on_routed(connection, msg, now_ms))

    def _admin(self, connection: bytes, request: AdminRequest) -> None:
        """Forward to the consensus actor, which answers through this actor's mailbox."""
        consensus = self.wiring.consensus
        if isinstance(consensus, RemoteRef):
            # Callables do not cross the registry link: the node answers over it with a
            # LinkedAdminResponse, which the registry process sends to the client.
            consensus.tell(LinkedAdminRequest(connection, request))
            return
        if consensus is None:
            error = "this registry has no node to ask"
            self._send(
                connection, encode(AdminResponse(request.correlation_id, False, error, False, None))
            )
            return
        me = self.actor_ref
        consensus.tell(
            AdminCommand(request, lambda response: me.tell(_AdminAnswer(connection, response)))
        )

    def _carry_out(self, fx: RegistryEffects) -> None:
        if fx.send:
            self._out.extend(fx.send)
        if fx.propose:
            if self._batch is not None:
                self._batch.extend(fx.propose)  # one message for the whole burst
            else:
                self._propose(fx.propose)
        if fx.close:
            self._closing.extend(fx.close)

    def _propose(self, actions: list[RaftAction]) -> None:
        consensus = self.wiring.consensus
        assert consensus is not None
        consensus.tell(actions[0] if len(actions) == 1 else actions)

    def _send(self, connection: bytes, frame: bytes) -> None:
        self.transport.send(connection, frame)
