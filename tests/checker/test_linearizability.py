"""The linearizability checker against hand-made histories and a brute-force oracle."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.checker.linearizability import UNKNOWN, Operation, check_history, step


def get(client: int, call: float, ret: float, out: object, key: str = "k") -> Operation:
    return Operation(client, "get", key, call, ret, out)


def put(client: int, call: float, ret: float, value: object, key: str = "k") -> Operation:
    return Operation(client, "set", key, call, ret, True, value)


def lost_put(client: int, call: float, value: object) -> Operation:
    """A write whose client timed out: it may or may not have taken effect."""
    return Operation(client, "set", "k", call, call, UNKNOWN, value)


def cas(
    client: int, call: float, ret: float, expected: object, value: object, out: object
) -> Operation:
    return Operation(client, "cas", "k", call, ret, out, value, expected)


def test_sequential_history_is_linearizable() -> None:
    h = [put(0, 0, 1, "a"), get(0, 2, 3, "a"), cas(0, 4, 5, "a", "b", True), get(0, 6, 7, "b")]
    assert check_history(h).ok


def test_concurrent_write_may_be_seen_either_way() -> None:
    for seen in ("a", None):
        assert check_history([put(0, 0, 10, "a"), get(1, 1, 2, seen)]).ok


def test_stale_read_after_completed_write_is_not_linearizable() -> None:
    """The classic stale read: a read that starts after a write finished sees the old value."""
    h = [put(0, 0, 1, "a"), put(0, 2, 3, "b"), get(1, 4, 5, "a")]
    result = check_history(h)
    assert not result.ok
    assert result.key == "k" and len(result.operations) == 3


def test_lost_write_is_not_linearizable() -> None:
    """An acknowledged write that no later read sees, with no other writer to explain it."""
    h = [put(0, 0, 1, "a"), put(1, 2, 3, "b"), get(2, 4, 5, "a"), get(2, 6, 7, "b")]
    assert not check_history(h).ok


def test_reads_must_not_go_back_in_time() -> None:
    h = [put(0, 0, 10, "a"), get(1, 1, 2, "a"), get(2, 3, 4, None)]
    assert not check_history(h).ok


def test_unknown_write_may_have_happened() -> None:
    h = [lost_put(0, 0, "a"), get(1, 5, 6, "a")]
    assert check_history(h).ok


def test_unknown_write_may_not_have_happened() -> None:
    h = [lost_put(0, 0, "a"), get(1, 5, 6, None)]
    assert check_history(h).ok


def test_unknown_write_cannot_take_effect_before_it_was_called() -> None:
    h = [get(1, 0, 1, "a"), lost_put(0, 2, "a")]
    assert not check_history(h).ok


def test_failed_cas_must_see_a_different_value() -> None:
    assert not check_history([put(0, 0, 1, "a"), cas(0, 2, 3, "a", "b", False)]).ok
    assert check_history([put(0, 0, 1, "x"), cas(0, 2, 3, "a", "b", False)]).ok


def test_keys_are_checked_independently() -> None:
    h = [put(0, 0, 1, "a", key="x"), get(1, 2, 3, "a", key="x"), get(1, 2, 3, "a", key="y")]
    result = check_history(h)
    assert not result.ok and result.key == "y"


def test_backtracking_finds_the_only_order() -> None:
    # Three overlapping writes and reads that pin one order: c, a, b.
    h = [
        put(0, 0, 10, "a"),
        put(1, 0, 10, "b"),
        put(2, 0, 10, "c"),
        get(3, 11, 12, "b"),
        get(4, 1, 2, "c"),
    ]
    assert check_history(h).ok
    assert not check_history([*h, get(5, 13, 14, "a")]).ok


# ------------------------------------------------------------ brute force as an oracle


def brute_force(ops: list[Operation]) -> bool:
    """Try every total order that respects real time; unknown ops may also be left out."""
    unknown = [o for o in ops if o.output is UNKNOWN]
    for drop in range(len(unknown) + 1):
        for dropped in itertools.combinations(unknown, drop):
            kept = [o for o in ops if o not in dropped]
            for order in itertools.permutations(kept):
                if _respects_real_time(order) and _legal(order):
                    return True
    return False


def _respects_real_time(order: tuple[Operation, ...]) -> bool:
    return all(not (b.ret < a.call) for i, a in enumerate(order) for b in order[i + 1 :])


def _legal(order: tuple[Operation, ...]) -> bool:
    state: object = None
    for op in order:
        fits, state = step(state, op)
        if not fits:
            return False
    return True


@st.composite
def small_histories(draw: st.DrawFn) -> list[Operation]:
    n = draw(st.integers(min_value=1, max_value=6))
    values = st.sampled_from([None, "a", "b"])
    ops = []
    for client in range(n):
        call = draw(st.integers(min_value=0, max_value=8))
        length = draw(st.integers(min_value=0, max_value=6))
        lost = draw(st.booleans()) and draw(st.booleans())
        kind = draw(st.sampled_from(["get", "set", "cas"]))
        ret = float(call + length)
        if kind == "get":
            out: object = UNKNOWN if lost else draw(values)
            ops.append(Operation(client, "get", "k", call, ret, out))
        elif kind == "set":
            out = UNKNOWN if lost else True
            ops.append(Operation(client, "set", "k", call, ret, out, draw(values)))
        else:
            out = UNKNOWN if lost else draw(st.booleans())
            ops.append(Operation(client, "cas", "k", call, ret, out, draw(values), draw(values)))
    return ops


@settings(max_examples=400)
@given(small_histories())
def test_checker_agrees_with_brute_force(ops: list[Operation]) -> None:
    assert check_history(ops).ok == brute_force(ops)
