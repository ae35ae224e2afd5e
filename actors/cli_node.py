"""``raft-actors node``: run one node in the foreground until SIGTERM or SIGINT.

This is what ``cluster up`` starts for every member, and what a real deployment runs on
each machine (one TOML file per node, see :func:`actors.config.load_config`).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType
from typing import Any

from actors.cli_common import (
    EXIT_ERROR,
    EXIT_OK,
    Subcommands,
    add_curve_args,
    curve_from_args,
    make_app,
)
from actors.cluster import APPS
from actors.config import load_config

__all__ = ["add_parser", "run_node"]

log = logging.getLogger("raft_actors.node")

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def add_parser(commands: Subcommands) -> None:
    p = commands.add_parser(
        "node",
        help="run one node in the foreground",
        description="Run one node in the foreground until SIGTERM or SIGINT, then stop it "
        "cleanly. Logs go to stderr, each line tagged with the member id.",
    )
    p.add_argument("--config", required=True, metavar="FILE", help="the node's TOML file")
    p.add_argument(
        "--app", choices=APPS, default="kvstore", help="the state machine (default: kvstore)"
    )
    p.add_argument(
        "--log-level", choices=_LEVELS, default="INFO", help="log verbosity (default: INFO)"
    )
    p.add_argument(
        "--join",
        metavar="ADDRESS",
        help="start as a new member of a running cluster: ask the member with this client "
        "address (and the others in the config file) to add this node; it joins as a "
        "learner and becomes a voter once caught up. Its data directory must be empty "
        "on the first start. With CURVE its public key must already be in every "
        "member's curve_peer_keys directory, named after it (MEMBER_ID.key)",
    )
    add_curve_args(p)
    p.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (needs the metrics "
        "extra: pip install 'raft-actors[metrics]'); overrides metrics_port in the file",
    )
    p.add_argument(
        "--metrics-host",
        metavar="HOST",
        help="the address the metrics endpoint binds (default: metrics_host in the file, "
        "else 127.0.0.1)",
    )
    p.set_defaults(handler=run_node)


def run_node(args: argparse.Namespace) -> int:
    config = load_config(args.config)  # ConfigError -> a message and exit 1
    if getattr(args, "metrics_port", None) is not None:
        config = config.with_changes(metrics_port=args.metrics_port)
    if getattr(args, "metrics_host", None) is not None:
        config = config.with_changes(metrics_host=args.metrics_host)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level,
        format=f"%(asctime)s {config.member_id} %(levelname)-7s %(name)s: %(message)s",
        force=True,
    )
    from actors.node import Node

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    node = Node(config, make_app(args.app), join=args.join is not None)
    try:
        node.start()
    except Exception as exc:  # any failure to come up is reported, not a traceback
        log.error("cannot start %s: %s", config.member_id, exc)
        node.stop()
        return EXIT_ERROR
    log.info(
        "%s runs app %s with %s storage%s; SIGTERM or Ctrl-C stops it",
        config.member_id,
        args.app,
        config.storage,
        f" in {config.data_dir}" if config.data_dir is not None else "",
    )
    if args.join:
        curve = curve_from_args(args)
        threading.Thread(
            target=_ask_to_join, args=(node, args.join, stop, curve), name="join", daemon=True
        ).start()
    code = EXIT_OK
    try:
        while not stop.wait(0.5):
            if node.removal.is_set:
                log.warning(
                    "%s was removed from the cluster; exiting (its data directory is "
                    "marked removed: start it with an empty one to add it again)",
                    config.member_id,
                )
                break
            if node.failed.is_set():
                log.error("%s failed (%s); exiting", config.member_id, node.failure)
                code = EXIT_ERROR
                break
    finally:
        node.stop()
        log.info("%s stopped", config.member_id)
    return code


def _ask_to_join(node: Any, address: str, stop: threading.Event, curve: Any = None) -> None:
    """Ask the cluster (at ``address`` and the configured members) to add this node
    (with CURVE: ``curve``, the ``--key``/``--server-key`` settings, an admin key)."""
    from actors.client import AdminError, add_member

    cfg = node.config
    addresses = [address, *(a.client for m, a in cfg.members.items() if m != cfg.member_id)]
    while not stop.is_set():
        try:
            add_member(
                addresses, cfg.member_id, node.peer_address, node.client_address, curve=curve
            )
        except AdminError as exc:
            hint = (
                f"; with CURVE every member's curve_peer_keys must hold this member's "
                f"public key as {cfg.member_id}.key"
                if cfg.curve
                else ""
            )
            log.warning("not added yet (%s)%s; asking again", exc, hint)
            stop.wait(1.0)
            continue
        log.info("%s is a voting member", cfg.member_id)
        return
