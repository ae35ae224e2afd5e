"""The one place the node reads the wall clock (cores get time from their inputs)."""

from __future__ import annotations

import time

__all__ = ["wall_ms"]


def wall_ms() -> int:
    """Wall-clock time in integer milliseconds (what ``created_at`` stamps use)."""
    return time.time_ns() // 1_000_000
