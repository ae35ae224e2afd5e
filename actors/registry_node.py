"""``RegistryNode``: a member's client registry in a process of its own.

The member's consensus and session actors run in a :class:`~actors.node.Node` started
with ``registry_link=RegistryLink(bind, registry_address)``; this process serves the
member's clients on its configured client address and talks to that node over the link
(:mod:`actors.link`). Clients see no difference; operators neither: admin requests are
forwarded to the node, and status requests answered from the status the node pushes
over the link every 50 ms.

    python -m actors.registry_node --config n1.toml --link-bind tcp://127.0.0.1:9101 \\
        --core tcp://127.0.0.1:9001
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import threading
import time
from typing import Any

from actors.base import Wiring, member_logger
from actors.clock import Ticker, TickGate
from actors.config import NodeConfig, load_config
from actors.host import HostedRef
from actors.link import RemoteRef, core_endpoint, registry_endpoint
from actors.registry import ClientFrame, RegistryActor, start_registry_actor
from actors.security import link_options, node_curve
from actors.transport import ZmqClientTransport, ZmqOptions, ZmqPeerTransport
from protocol.actions import SERVER_ACTION_TYPES, LeadershipChanged
from protocol.admin import LinkedAdminResponse, NodeStatus, StatusUpdate
from protocol.codec import ProtocolError, decode, encode

__all__ = ["RegistryNode"]

#: The node pushes its status every 50 ms; older than this, it is not to be believed.
_STALE_STATUS_S = 1.0

_TICK_MS = 50
_FROM_CORE = (*SERVER_ACTION_TYPES, LinkedAdminResponse, StatusUpdate)


class RegistryNode:
    """A registry process for one member; ``start()``/``stop()`` like a Node."""

    def __init__(self, config: NodeConfig, *, link_bind: str, core_address: str) -> None:
        self.config = config
        self.link_bind = link_bind
        self.core_address = core_address
        self.log = member_logger(__name__, config.member_id)
        self._leadership: LeadershipChanged | None = None
        #: The node's latest pushed status (every 50 ms), and when it came.
        self._status: NodeStatus | None = None
        self._status_at = 0.0
        self._started_at = time.monotonic()
        self._registry: HostedRef[RegistryActor] | None = None
        self._clients: ZmqClientTransport | None = None
        self._link: ZmqPeerTransport | None = None
        self._ticker: Ticker | None = None

    def start(self) -> RegistryNode:
        cfg = self.config
        curve = node_curve(cfg)
        wiring = Wiring()
        self._link = ZmqPeerTransport(
            registry_endpoint(cfg.member_id),
            self._from_core,
            bind=self.link_bind,
            options=link_options(curve, cfg.max_frame_bytes, core_endpoint(cfg.member_id)),
        )
        self._link.add_peer(core_endpoint(cfg.member_id), self.core_address)
        wiring.consensus = RemoteRef(self._link, core_endpoint(cfg.member_id))
        registry_ref: list[HostedRef[RegistryActor]] = []
        self._clients = ZmqClientTransport(
            lambda connection, data, admin: registry_ref[0].tell(
                ClientFrame(connection, data, admin)
            ),
            bind=cfg.address.client,
            options=ZmqOptions(max_frame_bytes=cfg.max_frame_bytes)
            if curve is None
            else curve.client_options(cfg.max_frame_bytes),
        )
        self._registry = start_registry_actor(cfg, self._clients, wiring, self.status)
        registry_ref.append(self._registry)
        wiring.registry = self._registry
        self._link.start()
        self._clients.start()
        registry = self._registry
        self._ticker = Ticker(
            f"tick-registry-{cfg.member_id}", _TICK_MS, TickGate(registry.tell)
        ).start()
        self.log.info("registry serving clients on %s", self._clients.address)
        return self

    def _from_core(self, sender: Any, frame: bytes) -> None:
        try:
            action: Any = decode(frame, _FROM_CORE, max_bytes=self.config.max_frame_bytes)
        except ProtocolError:
            self.log.warning("dropped a bad frame on the link from the core")
            return
        if isinstance(action, StatusUpdate):
            self._status, self._status_at = action.status, time.monotonic()
            return
        if isinstance(action, LinkedAdminResponse):
            # The client transport's send is thread-safe: no need for the actor.
            if self._clients is not None:
                self._clients.send(action.connection, encode(action.response))
            return
        if isinstance(action, LeadershipChanged):
            self._leadership = action
        assert self._registry is not None
        self._registry.tell(action)

    def status(self) -> NodeStatus:
        """The node's own status, as it last pushed it over the link (with this
        registry's client address); before the first push, only what the core's
        leadership notices told (indexes 0). A push older than a second means the node
        or the link is down: the role then says ``unreachable``."""
        client_address = self._clients.address if self._clients else ""
        pushed = self._status
        if pushed is not None:
            if time.monotonic() - self._status_at > _STALE_STATUS_S:
                pushed = dataclasses.replace(pushed, role="unreachable", leader=None)
            return dataclasses.replace(pushed, client_address=client_address)
        lead = self._leadership
        return NodeStatus(
            member_id=self.config.member_id,
            role=lead.role.name.lower() if lead else "follower",
            term=lead.term if lead else 0,
            leader=lead.leader_id if lead else None,
            commit_index=0,
            applied_index=0,
            last_log_index=0,
            snapshot_index=0,
            voters=tuple(self.config.members),
            learners=(),
            sessions=0,
            pending_server_requests=0,
            client_address=self._clients.address if self._clients else "",
            peer_address=self.link_bind,
            pid=os.getpid(),
            uptime_ms=int((time.monotonic() - self._started_at) * 1000),
        )

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()
        for transport in (self._clients, self._link):
            if transport is not None:
                transport.stop()
        if self._registry is not None:
            self._registry.stop(block=True, timeout=5)
            self._registry = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m actors.registry_node", description=__doc__)
    parser.add_argument("--config", required=True, help="the member's node TOML file")
    parser.add_argument("--link-bind", required=True, help="this process's link address")
    parser.add_argument("--core", required=True, help="the node's link address")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    node = RegistryNode(load_config(args.config), link_bind=args.link_bind, core_address=args.core)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    node.start()
    done.wait()
    node.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
