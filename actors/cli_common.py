"""Pieces shared by the ``raft-actors`` subcommands: exit codes, errors, the apps."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from actors.transport import CurveClient
    from protocol.session import UserStateMachine

__all__ = [
    "EXIT_ERROR",
    "EXIT_FALSE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "CliError",
    "Subcommands",
    "add_curve_args",
    "curve_from_args",
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


def add_curve_args(parser: argparse.ArgumentParser) -> None:
    """``--key`` and ``--server-key``: talk CURVE to a cluster that requires it."""
    parser.add_argument(
        "--key",
        dest="curve_key_file",
        metavar="FILE",
        help="CURVE: this client's key pair (a .key_secret file; an admin key for "
        "cluster changes). Default for a `cluster up --curve` directory: its admin key",
    )
    parser.add_argument(
        "--server-key",
        dest="curve_server_key_file",
        metavar="FILE",
        help="CURVE: the cluster's server public key (a .key file)",
    )


def curve_from_args(
    args: argparse.Namespace, directory: Path | None = None, *, admin: bool = True
) -> CurveClient | None:
    """The CURVE settings ``--key``/``--server-key`` ask for; else the admin (or with
    ``admin=False`` the client) key of the cluster directory ``directory`` if it was
    made with ``--curve``; else None."""
    from actors.cluster import curve_key_paths
    from actors.transport import CurveError

    key = getattr(args, "curve_key_file", None)
    server = getattr(args, "curve_server_key_file", None)
    if (key is None) != (server is None):
        raise CliError("--key and --server-key go together")
    if key is None and directory is not None:
        found = curve_key_paths(directory, admin=admin)
        if found is not None:
            key, server = found
    if key is None or server is None:
        return None
    from actors.client import curve_client

    try:
        return curve_client(key, server)
    except CurveError as exc:
        raise CliError(str(exc)) from None
