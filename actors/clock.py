"""The one place the node reads the wall clock (cores get time from their inputs)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from actors.messages import Tick

__all__ = ["TickGate", "Ticker", "wall_ms"]


def wall_ms() -> int:
    """Wall-clock time in integer milliseconds (what ``created_at`` stamps use)."""
    return time.time_ns() // 1_000_000


class Ticker:
    """A thread calling ``fn(wall_ms())`` every ``period_ms`` until stopped.

    Ticks are how time enters the actors (as plain messages). A ticker that falls far
    behind (the process was paused) skips the missed ticks instead of bursting them.
    It ticks whatever its receiver does: to keep an actor that is behind from finding
    a pile of ticks in its inbox, tick through a :class:`TickGate`.
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


class TickGate:
    """A :class:`Ticker`'s ``fn`` that keeps at most one tick waiting for an actor.

    Each call tells ``tell`` a :class:`Tick` unless the previous one has not been
    handled yet (its ``handled`` callback, which :class:`actors.base.NodeActor` calls
    after handling it, not yet called); then the tick is skipped. An actor that falls
    behind thus gets one tick when it catches up, not a burst of every period it
    missed (which would run election and heartbeat timers in a bunch), and its timers
    slow down with it instead of firing on a backlog.

    Called from the ticker's thread only; ``handled`` may come from any thread.
    """

    def __init__(
        self, tell: Callable[[Tick], None], on_skip: Callable[[], None] | None = None
    ) -> None:
        self._tell = tell
        self._on_skip = on_skip
        self._free = threading.Event()
        self._free.set()
        #: Ticks not told because the previous one was still waiting.
        self.skipped = 0

    def __call__(self, now_ms: int) -> None:
        if not self._free.is_set():
            self.skipped += 1
            if self._on_skip is not None:
                self._on_skip()  # e.g. a metric: the actor is behind
            return
        self._free.clear()
        try:
            self._tell(Tick(now_ms, self._free.set))
        except BaseException:
            self._free.set()  # never told: nothing will mark it handled
            raise
