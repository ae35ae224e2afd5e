"""``raft-actors``: the console command.

::

    raft-actors node --config FILE [--app kvstore|counter]     one node, in the foreground
    raft-actors cluster up|status|down|kill|start ...          a local cluster of processes
    raft-actors kv set|get|delete|cas|watch ...                the kv store of a running cluster
    raft-actors keys generate DIR NAME...                      CURVE key pairs

Every level answers ``--help``. Exit codes: 0 success; 1 an error (the message on
stderr says what and what to do); 2 bad arguments; 3 a clean negative answer (``kv get``
of an absent key, a ``kv cas`` that did not swap, a ``kv watch --count N`` that saw fewer
events in time); 130 interrupted.

The subcommands live in :mod:`actors.cli_cluster`, :mod:`actors.cli_kv`,
:mod:`actors.cli_node` and :mod:`actors.cli_keys`; this module builds the parser and
turns errors into messages and exit codes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from actors import cli_cluster, cli_keys, cli_kv, cli_node
from actors.cli_common import EXIT_ERROR, EXIT_INTERRUPTED, CliError
from actors.cluster import ClusterError
from actors.config import ConfigError
from protocol.client import ClientError

__all__ = ["build_parser", "main"]

PROG = "raft-actors"


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, every subcommand with its own ``--help``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Exactly-once, linearizable replicated state machines on Raft: run "
        "nodes, manage a local cluster, and talk to its kv store.",
        epilog="Exit codes: 0 ok, 1 error, 2 bad arguments, 3 negative answer "
        "(absent key, cas not swapped, too few watch events), 130 interrupted.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    cli_node.add_parser(commands)
    cli_cluster.add_parser(commands)
    cli_kv.add_parser(commands)
    cli_keys.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 with a usage message on bad arguments
    try:
        code: int = args.handler(args)
        return code
    except (CliError, ClusterError, ConfigError, ClientError, TimeoutError) as exc:
        _error(str(exc) or type(exc).__name__)
        return EXIT_ERROR
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `raft-actors kv watch k | head -1`
        sys.stderr.close()
        return EXIT_ERROR


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
