"""Shared helpers for the registry tests: a registry with counter session ids."""

from __future__ import annotations

import itertools

from protocol.actions import LeadershipChanged, NodeRole, SessionsSnapshot
from protocol.ids import MemberId, SessionId
from protocol.registry import Registry, RegistryConfig, RegistryEffects

HINT = "tcp://n2:7000"
SELF = "tcp://n1:7000"


def make_registry(**overrides: int) -> Registry:
    counter = itertools.count(1)
    config = RegistryConfig(**{"session_timeout_ms": 1000, **overrides})
    return Registry(config, lambda: SessionId(f"s{next(counter)}"))


def lead(
    reg: Registry,
    term: int = 1,
    sessions: dict[SessionId, dict[str, str]] | None = None,
    now: int = 0,
    load: bool = True,
) -> RegistryEffects:
    fx = reg.on_server_action(LeadershipChanged(NodeRole.LEADER, MemberId("n1"), SELF, term), now)
    if load:
        reg.on_server_action(SessionsSnapshot(term, sessions or {}), now)
    return fx


def follow(reg: Registry, term: int, hint: str | None = HINT) -> RegistryEffects:
    leader = None if hint is None else MemberId("n2")
    return reg.on_server_action(LeadershipChanged(NodeRole.FOLLOWER, leader, hint, term), 0)
