"""The one place the node reads the wall clock (cores get time from their inputs)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["Ticker", "wall_ms"]


def wall_ms() -> int:
    """Wall-clock time in integer milliseconds (what ``created_at`` stamps use)."""
    return time.time_ns() // 1_000_000


class Ticker:
    """A thread calling ``fn(wall_ms())`` every ``period_ms`` until stopped.

    Ticks are how time enters the actors (as plain messages). A ticker that falls far
    behind (the process was paused) skips the missed ticks instead of bursting them.
    """

    def __init__(self, name: str, period_ms: int, fn: Callable[[int], None]) -> None:
        self._period = period_ms / 1000
        self._fn = fn
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Ticker:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        period = self._period
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self._fn(wall_ms())
            except Exception:  # an actor stopped under us: we are stopping too
                logging.getLogger(__name__).debug("tick failed", exc_info=True)
            next_at += period
            delay = next_at - time.monotonic()
            if delay < -10 * period:
                next_at, delay = time.monotonic(), 0.0
            self._stop.wait(max(0.0, delay))
