"""Identifiers shared by every layer."""

from __future__ import annotations

from typing import NewType

__all__ = ["MemberId", "RequestId", "SessionId"]

#: A cluster member's stable name (e.g. ``"n1"``), unique within a cluster.
MemberId = NewType("MemberId", str)
#: A client session, chosen by the leader's registry when it proposes the session
#: (a random hex string made in the actor shell, never in a core).
SessionId = NewType("SessionId", str)
#: A client request number within one session: 1, 2, 3, ... Server-initiated requests
#: are numbered the same way, per target session.
RequestId = NewType("RequestId", int)
