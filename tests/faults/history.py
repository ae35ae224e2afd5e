"""Checking a fault run's kv history without drowning in unknown outcomes.

Every operation whose outcome stayed unknown has its return at infinity, so it stays a
candidate at every later point of the search. Finding a linearization is still quick,
but *refuting* one means exhausting the search, up to every subset of the ``k`` unknown
operations of a key (2^k): a long run under kills and short deadlines leaves dozens
per key, and a non-linearizable history would never be reported.

Because every written value is unique (``"c<client>-<seq>"``), most of that uncertainty
resolves from the history itself (:func:`resolve_unknowns`):

* an unknown write whose value someone observed (a read returned it, or a ``cas``
  expected it, which its client only does after seeing it) *did* take effect, and
  before the first observer's return (or the ``cas``'s call); it becomes a definite
  operation (``set``/``cas`` answering True) returning then. This only states what every
  linearization must do anyway, so it hides nothing.
* an unknown write whose value nobody observed is dropped: "never took effect" is one of
  its allowed outcomes, so if the rest is linearizable, so is the whole history.

The second rule can only turn a linearizable history into an apparently non-linearizable
one (when an unseen write is needed to explain a failed ``cas``), never the reverse;
:func:`check_kv_history` then falls back to the full search on the original history, in
a child process with a time budget.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from tests.checker.linearizability import UNKNOWN, Operation, check_history

__all__ = ["Verdict", "check_kv_history", "resolve_unknowns"]


def resolve_unknowns(history: Sequence[Operation]) -> list[Operation]:
    """The history with unknown writes made definite (observed) or dropped (unseen)."""
    # Earliest moment each (key, value) is known to be in effect.
    seen_by: dict[tuple[Hashable, object], float] = {}

    def observe(key: Hashable, value: object, at: float) -> None:
        if value is not None:
            k = (key, value)
            seen_by[k] = min(seen_by.get(k, math.inf), at)

    for op in history:
        if op.kind == "get" and op.output is not UNKNOWN:
            observe(op.key, op.output, op.ret)
        if op.kind == "cas":
            observe(op.key, op.expected, op.call)
    resolved = []
    for op in history:
        if op.output is not UNKNOWN or op.kind == "get":
            resolved.append(op)
            continue
        bound = seen_by.get((op.key, op.value))
        if bound is None:
            continue  # never observed: "did not take effect" is allowed
        resolved.append(dataclasses.replace(op, output=True, ret=max(bound, op.call)))
    return resolved


@dataclass(frozen=True)
class Verdict:
    """``ok``: linearizable; ``None``: the full search ran out of time (inconclusive)."""

    ok: bool | None
    key: Hashable = None
    #: Which check decided: "resolved" (fast) or "full".
    by: str = "resolved"


def _full_check(history: Sequence[Operation], out: multiprocessing.SimpleQueue) -> None:  # type: ignore[type-arg]
    result = check_history(history)
    out.put((result.ok, result.key))


def check_kv_history(history: Sequence[Operation], full_budget_s: float = 120.0) -> Verdict:
    """Linearizability of a kv history: the fast check on :func:`resolve_unknowns`'s
    history; only if that fails, the full search on the original (forked child, killed
    after ``full_budget_s``)."""
    fast = check_history(resolve_unknowns(history))
    if fast.ok:
        return Verdict(True)
    if not any(op.output is UNKNOWN for op in history):
        return Verdict(False, fast.key)
    context = multiprocessing.get_context("fork")
    out = context.SimpleQueue()
    child = context.Process(target=_full_check, args=(list(history), out), daemon=True)
    child.start()
    child.join(full_budget_s)
    if child.is_alive():
        child.kill()
        child.join(5)
        return Verdict(None, fast.key, "full")
    ok, key = out.get() if not out.empty() else (None, fast.key)
    return Verdict(ok, key, "full")
