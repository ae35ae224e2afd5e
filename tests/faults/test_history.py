"""``resolve_unknowns`` and ``check_kv_history`` on hand-made histories (no processes)."""

from __future__ import annotations

import math

from tests.checker.linearizability import UNKNOWN, Operation
from tests.faults.history import check_kv_history, resolve_unknowns


def op(
    client: int,
    kind: str,
    call: float,
    ret: float,
    output: object,
    value: object = None,
    expected: object = None,
) -> Operation:
    return Operation(client, kind, "k", call, ret, output, value, expected)  # type: ignore[arg-type]


def test_an_observed_unknown_write_took_effect_before_its_first_observer() -> None:
    unknown = op(0, "set", 1.0, math.inf, UNKNOWN, "v")
    unknown_cas = op(2, "cas", 1.5, math.inf, UNKNOWN, "w", "v")
    read = op(1, "get", 2.0, 3.0, "v")
    later = op(1, "get", 4.0, 5.0, "v")
    assert resolve_unknowns([unknown, read, later]) == [
        op(0, "set", 1.0, 3.0, True, "v"),
        read,
        later,
    ]
    # The unknown cas expected "v", so "v" was seen by its call (1.5): an earlier bound;
    # nobody saw "w", so the unknown cas itself is dropped.
    resolved = resolve_unknowns([unknown, unknown_cas, read, later])
    assert resolved == [op(0, "set", 1.0, 1.5, True, "v"), read, later]


def test_a_value_seen_before_its_write_was_called_stays_a_violation() -> None:
    read = op(1, "get", 0.0, 0.5, "v")
    unknown = op(0, "set", 1.0, math.inf, UNKNOWN, "v")
    assert resolve_unknowns([read, unknown])[1].ret == 1.0
    verdict = check_kv_history([read, unknown], full_budget_s=30)
    assert verdict.ok is False and verdict.by == "full"


def test_an_unseen_write_that_explains_a_failed_cas_needs_the_full_search() -> None:
    history = [
        op(0, "set", 0.0, 1.0, True, "x"),
        op(1, "set", 2.0, math.inf, UNKNOWN, "y"),
        op(2, "cas", 3.0, 4.0, False, "z", "x"),  # fails only if "y" was written
    ]
    verdict = check_kv_history(history, full_budget_s=30)
    assert verdict.ok is True and verdict.by == "full"


def test_a_stale_read_is_caught() -> None:
    history = [
        op(0, "set", 0.0, 1.0, True, "x"),
        op(0, "set", 2.0, 3.0, True, "y"),
        op(1, "get", 4.0, 5.0, "x"),
    ]
    verdict = check_kv_history(history)
    assert verdict.ok is False and verdict.key == "k" and verdict.by == "resolved"


def test_many_unknowns_resolve_and_a_violation_among_them_is_not_accepted() -> None:
    """80 unknown writes on one key, half of them seen by a read: resolved, the check is
    a straight line; a read of a never-written value at the end is not accepted (the
    full search gets a small budget: it may run out of time, never say yes)."""
    history = []
    t = 0.0
    for i in range(80):
        history.append(op(0, "set", t, t + 1, True, f"a{i}"))
        history.append(op(1, "set", t + 0.5, math.inf, UNKNOWN, f"u{i}"))
        history.append(op(2, "get", t + 1.5, t + 2, f"u{i}" if i % 2 else f"a{i}"))
        t += 3
    verdict = check_kv_history(history, full_budget_s=30)
    assert verdict.ok is True and verdict.by == "resolved"
    assert sum(o.output is UNKNOWN for o in resolve_unknowns(history)) == 0
    history.append(op(2, "get", t, t + 1, "never-written"))
    verdict = check_kv_history(history, full_budget_s=2)
    assert verdict.ok is not True and verdict.by == "full" and verdict.key == "k"
