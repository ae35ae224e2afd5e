"""``raft-actors keys generate DIR NAME...``: CURVE key pairs for nodes and clients.

Each NAME gets ``DIR/NAME.key`` (the public key, to copy into the allowed-keys
directories) and ``DIR/NAME.key_secret`` (the pair, mode 0600, kept by its owner). A
member's key must be named after its member id: in a ``curve_peer_keys`` directory
``NAME.key`` speaks only for member ``NAME``.
"""

from __future__ import annotations

import argparse

from actors.cli_common import EXIT_OK, CliError, Subcommands

__all__ = ["add_parser", "keys_generate"]


def add_parser(commands: Subcommands) -> None:
    keys = commands.add_parser(
        "keys",
        help="CURVE key pairs",
        description="Make CURVE key pairs for `curve_*` node settings and `--key` options.",
    )
    sub = keys.add_subparsers(dest="action", metavar="ACTION", required=True)
    generate = sub.add_parser(
        "generate",
        help="write NAME.key and NAME.key_secret into DIR for each NAME",
        description="Write a fresh key pair for each NAME: DIR/NAME.key (public) and "
        "DIR/NAME.key_secret (public and secret, mode 0600). Existing files are never "
        "overwritten. Member keys (the curve_peer_keys directory) must be named after "
        "their member ids: NAME.key speaks only for member NAME.",
    )
    generate.add_argument("directory", metavar="DIR", help="where to write (made if missing)")
    generate.add_argument("names", nargs="+", metavar="NAME", help="key names, e.g. n1 admin")
    generate.set_defaults(handler=keys_generate)


def keys_generate(args: argparse.Namespace) -> int:
    from actors.transport import CurveError, generate_keys

    for name in args.names:
        try:
            public, secret = generate_keys(args.directory, name)
        except CurveError as exc:
            raise CliError(str(exc)) from None
        print(f"{name}: public {public}, secret {secret}")
    return EXIT_OK
