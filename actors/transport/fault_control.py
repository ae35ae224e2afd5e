"""A test-only peer transport wrapper that drops frames to and from chosen members.

Selected by the node config option ``fault_control`` (a file path) and used only by the
fault-injection tests, to cut real node processes apart (network partitions) without
root or network namespaces. Nothing in a normal configuration enables it.

The control file is JSON: ``{"drop": ["n2", "n3"]}`` means this node neither sends
frames to nor accepts frames from ``n2`` and ``n3``, as if the links were cut; a
missing, empty or unreadable file means "drop nothing". Two optional keys cut one
direction only: ``"drop_out"`` (frames this node sends to those members vanish, what
it receives from them still arrives) and ``"drop_in"`` (the reverse). A test writes one
file per node (atomically: temp file, then rename), so it can make symmetric cuts,
one-sided (asymmetric) cuts, or cuts between chosen pairs of members.
The file is re-read at most every ``poll_ms`` milliseconds, and only when its
modification time or size changed, so the check costs next to nothing per frame.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from protocol.ids import MemberId

from .base import PeerFrameHandler, PeerTransport, TransportStats

__all__ = ["DropRules", "FaultControlledPeerTransport", "read_drop_rules", "read_rules"]


@dataclass(frozen=True, slots=True)
class DropRules:
    """Whose frames vanish: ``outgoing`` (frames sent to these members) and
    ``incoming`` (frames received from these members)."""

    outgoing: frozenset[MemberId] = frozenset()
    incoming: frozenset[MemberId] = frozenset()


def _members(raw: object, key: str) -> frozenset[MemberId]:
    value = raw.get(key) if isinstance(raw, dict) else None
    if not isinstance(value, list):
        return frozenset()
    return frozenset(MemberId(m) for m in value if isinstance(m, str))


def _load(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_drop_rules(path: Path) -> frozenset[MemberId]:
    """The members the control file cuts off both ways (``"drop"``; empty if absent or
    malformed)."""
    return _members(_load(path), "drop")


def read_rules(path: Path) -> DropRules:
    """All the control file's rules: ``drop`` (both ways) merged into ``drop_out`` and
    ``drop_in``; a malformed key counts as empty, a malformed file drops nothing."""
    raw = _load(path)
    both = _members(raw, "drop")
    return DropRules(both | _members(raw, "drop_out"), both | _members(raw, "drop_in"))


class FaultControlledPeerTransport:
    """Wraps a :class:`PeerTransport` built by ``make_inner``; frames to (or from) a
    member the control file cuts in that direction are dropped silently (``send``
    still answers True, as a lossy network would) and counted in :attr:`cut_frames`."""

    def __init__(
        self,
        control: Path,
        make_inner: Callable[[PeerFrameHandler], PeerTransport],
        on_frame: PeerFrameHandler,
        *,
        poll_ms: int = 50,
    ) -> None:
        self._control = control
        self._on_frame = on_frame
        self._poll_s = poll_ms / 1000
        self._lock = threading.Lock()
        self._checked = -float("inf")
        self._stamp: tuple[int, int] | None = None
        self._rules = DropRules()
        self.cut_frames = 0
        self._inner = make_inner(self._receive)

    def _current(self) -> DropRules:
        now = time.monotonic()
        with self._lock:
            if now - self._checked >= self._poll_s:
                self._checked = now
                try:
                    st = os.stat(self._control)
                    stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
                except OSError:
                    stamp = None
                if stamp != self._stamp:
                    self._stamp = stamp
                    self._rules = DropRules() if stamp is None else read_rules(self._control)
            return self._rules

    def _cut(self, member: MemberId, outgoing: bool) -> bool:
        rules = self._current()
        if member in (rules.outgoing if outgoing else rules.incoming):
            with self._lock:
                self.cut_frames += 1
            return True
        return False

    def _receive(self, sender: MemberId, frame: bytes) -> None:
        if not self._cut(sender, outgoing=False):
            self._on_frame(sender, frame)

    # ------------------------------------------------------------------ PeerTransport

    @property
    def member_id(self) -> MemberId:
        return self._inner.member_id

    @property
    def address(self) -> str:
        return self._inner.address

    def add_peer(self, member: MemberId, address: str) -> None:
        self._inner.add_peer(member, address)

    def remove_peer(self, member: MemberId) -> None:
        self._inner.remove_peer(member)

    def peers(self) -> dict[MemberId, str]:
        return self._inner.peers()

    def send(self, to: MemberId, frame: bytes) -> bool:
        if self._cut(to, outgoing=True):
            return True
        return self._inner.send(to, frame)

    def start(self) -> None:
        self._inner.start()

    def stop(self) -> None:
        self._inner.stop()

    def stats(self) -> TransportStats:
        return self._inner.stats()
