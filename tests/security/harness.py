"""What the CURVE transport tests share: an inbox for received frames, a sender that
retries until a peer is connected, and the list of transports a test stops."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from protocol.ids import MemberId


class Stoppable(Protocol):
    def stop(self) -> None: ...


#: What the ``stoppers`` fixture gives: every transport appended is stopped afterwards.
Stoppers = list[Stoppable]


class Inbox:
    """Frames received, as ``(sender, frame)`` (sender None for a client connection)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.frames: list[tuple[MemberId | None, bytes]] = []
        self.event = threading.Event()

    def peer(self, sender: MemberId, frame: bytes) -> None:
        with self.lock:
            self.frames.append((sender, frame))
        self.event.set()

    def client(self, frame: bytes) -> None:
        self.peer(None, frame)  # type: ignore[arg-type]

    def snapshot(self) -> list[tuple[MemberId | None, bytes]]:
        with self.lock:
            return list(self.frames)


def send_until(send: Callable[[], object], inbox: Inbox, timeout: float = 5.0) -> bool:
    """Send every 50 ms until the inbox got something (frames to a peer that is not yet
    connected are dropped by design), or ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        send()
        if inbox.event.wait(0.05):
            return True
    return False
