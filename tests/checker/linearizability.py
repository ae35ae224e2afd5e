"""A linearizability checker for key-value histories (Wing & Gong, with Lowe's memoisation).

The search follows the porcupine checker: calls and returns of one key's operations are
laid out in time order in a linked list; a depth-first search tries to linearize the
earliest pending call whose effect the model accepts, remembers every (set of linearized
operations, model state) it has already explored, and backtracks when it reaches a
return whose call it could not place. Histories are partitioned by key first, since a
key-value store is linearizable iff each key's sub-history is (locality, Herlihy & Wing).

An operation whose outcome is unknown (a timeout, a lost connection) may or may not have
taken effect: its return is put at infinity and its output matches anything, so the
search may place it anywhere after its call (placing it last is "never happened").
An operation that definitely failed is left out of the history by the caller.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["UNKNOWN", "CheckResult", "Operation", "check_history", "step"]

OpKind = Literal["get", "set", "cas"]


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


#: The output of an operation whose outcome the client never learned.
UNKNOWN = _Unknown()


@dataclass(frozen=True)
class Operation:
    """One client operation on one key, with monotonic call and return times.

    ``get`` has ``value`` unused and output = the value read (None if absent);
    ``set`` writes ``value``, output ``True``; ``cas`` writes ``value`` if the current
    value equals ``expected``, output whether it did.
    """

    client: int
    kind: OpKind
    key: Hashable
    call: float
    ret: float
    output: object
    value: object = None
    expected: object = None

    def __post_init__(self) -> None:
        if self.output is UNKNOWN:
            object.__setattr__(self, "ret", math.inf)
        if self.ret < self.call:
            raise ValueError(f"operation returns before it is called: {self}")


def step(state: object, op: Operation) -> tuple[bool, object]:
    """The sequential key-value model: (does op's output fit, state after op)."""
    unknown = op.output is UNKNOWN
    if op.kind == "get":
        return unknown or op.output == state, state
    if op.kind == "set":
        return True, op.value
    swapped = state == op.expected
    if unknown:
        return True, op.value if swapped else state
    return op.output == swapped, op.value if swapped else state


@dataclass
class CheckResult:
    ok: bool
    #: For a failed check: the key whose history is not linearizable, and its operations.
    key: Hashable = None
    operations: list[Operation] = field(default_factory=list)
    #: Per key: how many search states were explored (to see what a history cost).
    explored: dict[Hashable, int] = field(default_factory=dict)


def check_history(history: Iterable[Operation], initial: object = None) -> CheckResult:
    """Check a whole history, key by key."""
    by_key: dict[Hashable, list[Operation]] = defaultdict(list)
    for op in history:
        by_key[op.key].append(op)
    explored: dict[Hashable, int] = {}
    for key, ops in by_key.items():
        ok, count = _check_key(ops, initial)
        explored[key] = count
        if not ok:
            return CheckResult(False, key, sorted(ops, key=lambda o: o.call), explored)
    return CheckResult(True, explored=explored)


class _Entry:
    __slots__ = ("id", "is_call", "match", "next", "op", "prev", "time")

    def __init__(self, id_: int, is_call: bool, time: float, op: Operation | None) -> None:
        self.id = id_
        self.is_call = is_call
        self.time = time
        self.op = op
        self.match: _Entry | None = None
        self.prev: _Entry | None = None
        self.next: _Entry | None = None


def _build(ops: list[Operation]) -> _Entry:
    events: list[tuple[float, int, _Entry]] = []
    for i, op in enumerate(ops):
        call = _Entry(i, True, op.call, op)
        ret = _Entry(i, False, op.ret, None)
        call.match = ret
        # Calls sort before returns at equal times: operations that touch are concurrent.
        events.append((op.call, 0, call))
        events.append((op.ret, 1, ret))
    events.sort(key=lambda e: (e[0], e[1]))
    head = _Entry(-1, False, -math.inf, None)
    prev = head
    for _, _, entry in events:
        prev.next = entry
        entry.prev = prev
        prev = entry
    return head


def _lift(entry: _Entry) -> None:
    assert entry.prev is not None and entry.match is not None
    entry.prev.next = entry.next
    if entry.next is not None:
        entry.next.prev = entry.prev
    match = entry.match
    assert match.prev is not None
    match.prev.next = match.next
    if match.next is not None:
        match.next.prev = match.prev


def _unlift(entry: _Entry) -> None:
    match = entry.match
    assert match is not None and match.prev is not None and entry.prev is not None
    match.prev.next = match
    if match.next is not None:
        match.next.prev = match
    entry.prev.next = entry
    if entry.next is not None:
        entry.next.prev = entry


def _check_key(ops: list[Operation], initial: object) -> tuple[bool, int]:
    head = _build(ops)
    state = initial
    linearized = 0
    seen: set[tuple[int, object]] = set()
    stack: list[tuple[_Entry, object]] = []
    entry = head.next
    explored = 0
    while head.next is not None:
        assert entry is not None
        if entry.is_call:
            assert entry.op is not None
            fits, new_state = step(state, entry.op)
            explored += 1
            if fits:
                new_linearized = linearized | (1 << entry.id)
                if (new_linearized, new_state) not in seen:
                    seen.add((new_linearized, new_state))
                    stack.append((entry, state))
                    state, linearized = new_state, new_linearized
                    _lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
        else:
            # A return whose call is still unplaced: undo the latest choice and move on.
            if not stack:
                return False, explored
            top, state = stack.pop()
            linearized &= ~(1 << top.id)
            _unlift(top)
            entry = top.next
    return True, explored
