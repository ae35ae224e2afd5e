"""Helpers shared by the transport implementations (not part of the public API)."""

from __future__ import annotations

import logging
import threading

from .base import TransportStats

__all__ = ["LOG", "THREAD_PREFIX", "Counters", "log_rate_limited"]

LOG = logging.getLogger("actors.transport")

#: Every transport thread's name starts with this (tests look for leftovers by it).
THREAD_PREFIX = "raft-transport"


def log_rate_limited(count: int, msg: str, *args: object) -> None:
    """Warn on the 1st, 2nd, 4th, 8th ... occurrence, debug otherwise (hostile input
    must not flood the log)."""
    level = logging.WARNING if count & (count - 1) == 0 else logging.DEBUG
    LOG.log(level, msg + " (%d so far)", *args, count)


class Counters:
    """Thread-safe mutable counters behind :meth:`Transport.stats` (shared by implementations)."""

    __slots__ = (
        "_lock",
        "bytes_in",
        "bytes_out",
        "decode_errors",
        "dropped",
        "forged",
        "frames_in",
        "frames_out",
        "handler_errors",
        "malformed",
        "oversized",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.frames_in = 0
        self.frames_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.dropped = 0
        self.oversized = 0
        self.malformed = 0
        self.decode_errors = 0
        self.handler_errors = 0
        self.forged = 0

    def bump(self, name: str, n: int = 1) -> int:
        """Add ``n`` to counter ``name`` and return its new value."""
        with self._lock:
            value: int = getattr(self, name) + n
            setattr(self, name, value)
            return value

    def received(self, size: int) -> None:
        with self._lock:
            self.frames_in += 1
            self.bytes_in += size

    def sent(self, size: int) -> None:
        with self._lock:
            self.frames_out += 1
            self.bytes_out += size

    def snapshot(self) -> TransportStats:
        with self._lock:
            return TransportStats(
                frames_in=self.frames_in,
                frames_out=self.frames_out,
                bytes_in=self.bytes_in,
                bytes_out=self.bytes_out,
                dropped=self.dropped,
                oversized=self.oversized,
                malformed=self.malformed,
                decode_errors=self.decode_errors,
                handler_errors=self.handler_errors,
                forged=self.forged,
            )
