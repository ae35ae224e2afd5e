"""Pieces shared by the ``raft-actors`` subcommands: exit codes, errors, the apps."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from protocol.session import UserStateMachine

__all__ = [
    "EXIT_ERROR",
    "EXIT_FALSE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "CliError",
    "Subcommands",
    "make_app",
    "positive_float",
    "positive_int",
]

EXIT_OK: Final = 0
#: Something went wrong; the message says what.
EXIT_ERROR: Final = 1
#: A clean negative answer: absent key, cas not swapped, too few watch events.
EXIT_FALSE: Final = 3
EXIT_INTERRUPTED: Final = 130

#: What ``add_subparsers`` returns (its class is private in argparse).
Subcommands = Any


class CliError(Exception):
    """A command that cannot do what was asked; the message says why and what to do."""


def make_app(name: str) -> UserStateMachine:
    """A fresh state machine for an app named on the command line."""
    if name == "kvstore":
        from examples.kvstore import KvStateMachine

        return KvStateMachine()
    if name == "counter":
        from examples.counter import CounterStateMachine

        return CounterStateMachine()
    raise CliError(f"unknown app {name!r} (choose kvstore or counter)")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value
