"""Setup the registry benches share (``registry-path``, ``client-path``): a leader's
registry with its sessions loaded, and the confirmation of the sessions it proposes."""

from __future__ import annotations

import itertools

from protocol.actions import (
    CreateSessionAction,
    LeadershipChanged,
    NodeRole,
    SessionCreationConfirmed,
    SessionsSnapshot,
)
from protocol.ids import MemberId, SessionId
from protocol.registry import Registry, RegistryConfig, RegistryEffects
from protocol.wire import ServerMessage


def leader_registry(config: RegistryConfig | None = None) -> Registry:
    """A registry that leads (term 1) and has loaded the (no) sessions of its log."""
    ids = itertools.count(1)
    reg = Registry(config or RegistryConfig(), lambda: SessionId(f"{next(ids):032x}"))
    reg.on_server_action(LeadershipChanged(NodeRole.LEADER, MemberId("n1"), "tcp://n1", 1), 0)
    reg.on_server_action(SessionsSnapshot(1, {}), 0)
    return reg


def confirm_creations(reg: Registry, fx: RegistryEffects) -> list[tuple[bytes, ServerMessage]]:
    """Confirm every session ``fx`` proposes (as the session state machine would); the
    answers to send, by connection key."""
    sends: list[tuple[bytes, ServerMessage]] = []
    for action in fx.propose:
        assert isinstance(action, CreateSessionAction)
        confirmed = SessionCreationConfirmed(action.session_id, {})
        sends += reg.on_server_action(confirmed, 0).send
    return sends
