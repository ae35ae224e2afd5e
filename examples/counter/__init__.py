"""The counter: the plan's quickstart application on raft-actors."""

from examples.counter.state_machine import (
    CROSSING_STEP,
    CounterStateMachine,
    decrement,
    get,
    increment,
)

__all__ = ["CROSSING_STEP", "CounterStateMachine", "decrement", "get", "increment"]
