"""``raft-actors cluster up|status|down|kill|start|transfer-leader``.

``up``/``down``/``kill``/``start`` manage a local cluster of node processes (the
processes and files are managed by :mod:`actors.cluster`); ``status`` and
``transfer-leader`` also work against any cluster reachable by address
(``--members ADDR,...``). This module parses the arguments, asks the nodes and prints
what happened.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from actors.cli_common import (
    EXIT_ERROR,
    EXIT_OK,
    CliError,
    Subcommands,
    add_curve_args,
    curve_from_args,
    positive_float,
    positive_int,
)
from actors.cluster import (
    APPS,
    MANIFEST,
    ClusterManifest,
    LeaderWait,
    StatusFn,
    clear_current,
    create_cluster,
    exit_status,
    live_pid,
    load_manifest,
    parse_setting,
    resolve_dir,
    save_manifest,
    spawn_member,
    stop_members,
    tail,
    wait_for_leader,
    write_current,
)
from actors.config import ConfigError, load_config
from actors.transport import CurveClient
from protocol.admin import AdminOp, AdminResponse, NodeStatus
from protocol.ids import MemberId

#: ``(addresses, op, member) -> response``; raises ``actors.client.AdminError``.
AdminFn = Callable[[Sequence[str], AdminOp, MemberId | None], AdminResponse]

__all__ = ["add_parser", "format_status_table", "status_fn"]

_DIR_HELP = "the cluster directory (default: $RAFT_ACTORS_DIR, else the last one `cluster up` used)"


def _add_timeout(parser: argparse.ArgumentParser, default: float, what: str) -> None:
    parser.add_argument(
        "--timeout",
        type=positive_float,
        metavar="SECONDS",
        default=default,
        help=f"{what} (default: {default:g})",
    )


def _add_cluster_target(p: argparse.ArgumentParser) -> None:
    """``--dir`` or ``--members`` (which cluster) and the CURVE keys to reach it."""
    p.add_argument("--dir", metavar="DIR", help=_DIR_HELP)
    p.add_argument("--members", metavar="ADDR,...", type=_addresses, help=_MEMBERS_HELP)
    add_curve_args(p)


def add_parser(commands: Subcommands) -> None:
    cluster = commands.add_parser(
        "cluster",
        help="start, inspect and stop a local cluster",
        description="A local cluster: node processes on 127.0.0.1, their configs, logs "
        "and data under one directory.",
    )
    sub = cluster.add_subparsers(dest="action", metavar="ACTION", required=True)

    up = sub.add_parser(
        "up",
        help="start N nodes and wait for a leader",
        description="Pick free loopback ports, write one TOML config per node, start the "
        "nodes as detached processes and wait until they agree on a leader. With --dir "
        "naming an existing cluster directory, restart that cluster instead.",
    )
    up.add_argument(
        "--nodes", type=positive_int, metavar="N", default=3, help="number of nodes (default: 3)"
    )
    up.add_argument("--app", choices=APPS, default="kvstore", help="app (default: kvstore)")
    up.add_argument(
        "--dir", metavar="DIR", help="cluster directory (default: a new temporary directory)"
    )
    up.add_argument(
        "--storage",
        choices=("durable", "memory"),
        default="durable",
        help="durable (SQLite + snapshot files under DIR/data) or memory (default: durable)",
    )
    up.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="an integer node setting for every node, e.g. election_timeout_ms=500 (repeatable)",
    )
    up.add_argument(
        "--curve",
        action="store_true",
        help="CURVE encryption and authentication: generate keys under DIR/keys (a "
        "server key, one key per node, a client and an admin key) and require them",
    )
    _add_timeout(up, 30.0, "seconds to wait for a leader")
    up.set_defaults(handler=cluster_up)

    status = sub.add_parser(
        "status",
        help="one line per node",
        description="One line per node: member, role, term, leader, commit/applied "
        "index, sessions, snapshot index, pid. Exits 1 if no leader is known.",
    )
    _add_cluster_target(status)
    _add_timeout(status, 2.0, "seconds per node")
    status.set_defaults(handler=cluster_status)

    down = sub.add_parser(
        "down",
        help="stop every node",
        description="SIGTERM every node, wait for a clean stop, SIGKILL what is left.",
    )
    down.add_argument("--dir", metavar="DIR", help=_DIR_HELP)
    _add_timeout(down, 10.0, "seconds to wait before SIGKILL")
    down.add_argument(
        "--purge", action="store_true", help="also delete the cluster directory and its data"
    )
    down.set_defaults(handler=cluster_down)

    kill = sub.add_parser(
        "kill",
        help="SIGKILL one or more nodes (to try failover)",
        description="SIGKILL the named nodes, as a crash would. `cluster start` brings "
        "them back from their config and data directory.",
    )
    kill.add_argument("members", nargs="+", metavar="MEMBER", help="member id, e.g. n1")
    kill.add_argument("--dir", metavar="DIR", help=_DIR_HELP)
    kill.set_defaults(handler=cluster_kill)

    start = sub.add_parser(
        "start",
        help="restart stopped or killed nodes",
        description="Start the named nodes again from their config and data directory "
        "and wait until each answers.",
    )
    start.add_argument("members", nargs="+", metavar="MEMBER", help="member id, e.g. n1")
    start.add_argument("--dir", metavar="DIR", help=_DIR_HELP)
    _add_timeout(start, 15.0, "seconds to wait for each node to answer")
    start.set_defaults(handler=cluster_start)

    transfer = sub.add_parser(
        "transfer-leader",
        help="hand leadership to another voter",
        description="Ask the leader to hand leadership to MEMBER (default: the most "
        "caught-up other voter) and wait until it has moved.",
    )
    transfer.add_argument("member", nargs="?", metavar="MEMBER", help="member id, e.g. n2")
    _add_cluster_target(transfer)
    _add_timeout(transfer, 20.0, "seconds to keep trying")
    transfer.set_defaults(handler=cluster_transfer_leader)

    add = sub.add_parser(
        "add",
        help="add a member (learner, then voter once caught up)",
        description="Teach every member MEMBER's addresses, then ask the leader to add "
        "it as a learner and promote it once caught up. Start the new node first, with "
        "`raft-actors node --config FILE --join ADDRESS` (which also asks by itself).",
    )
    add.add_argument("member", metavar="MEMBER", help="the new member's id, e.g. n4")
    add.add_argument("--peer", required=True, metavar="ADDR", help="its peer address")
    add.add_argument("--client", required=True, metavar="ADDR", help="its client address")
    remove = sub.add_parser(
        "remove",
        help="remove a member (the leader hands leadership away first)",
        description="Ask the leader to remove MEMBER from the configuration. Stop its "
        "process afterwards.",
    )
    remove.add_argument("member", metavar="MEMBER", help="member id, e.g. n4")
    for p, handler in ((add, cluster_add), (remove, cluster_remove)):
        _add_cluster_target(p)
        _add_timeout(p, 60.0, "seconds to keep trying")
        p.set_defaults(handler=handler)


_MEMBERS_HELP = (
    "client addresses of members (e.g. tcp://10.0.0.1:7001,...): any cluster reachable "
    "by address, instead of a local cluster directory"
)


def _addresses(text: str) -> list[str]:
    addresses = [a.strip() for a in text.split(",") if a.strip()]
    if not addresses:
        raise argparse.ArgumentTypeError("expected ADDR[,ADDR...]")
    return addresses


def admin_fn(timeout: float, curve: CurveClient | None = None) -> AdminFn:
    """Carry out an admin operation at the leader, found from client addresses."""

    def ask(addresses: Sequence[str], op: AdminOp, member: MemberId | None) -> AdminResponse:
        from actors.client import admin_request

        return admin_request(addresses, op, member, timeout=timeout, curve=curve)

    return ask


def status_fn(timeout: float, curve: CurveClient | None = None) -> StatusFn:
    """Ask a node for its status over its client port."""

    def fetch(address: str) -> NodeStatus:
        from actors.client import fetch_status

        status: NodeStatus = fetch_status(address, timeout=timeout, curve=curve)
        return status

    return fetch


def _settings(pairs: Sequence[str]) -> dict[str, int | str]:
    settings: dict[str, int | str] = {}
    for pair in pairs:
        try:
            key, value = parse_setting(pair)
        except ValueError as exc:
            raise CliError(str(exc)) from None
        settings[key] = value
    return settings


def _check_configs(directory: Path, manifest: ClusterManifest) -> None:
    for m in manifest.members:
        try:
            load_config(directory / m.config)
        except ConfigError as exc:
            raise CliError(f"bad node settings: {exc}") from None


def cluster_up(args: argparse.Namespace) -> int:
    if args.nodes < 1:
        raise CliError("--nodes must be at least 1")
    requested = Path(args.dir) if args.dir else None
    if requested is not None and (requested / MANIFEST).is_file():
        directory = requested.resolve()
        manifest = load_manifest(directory)
        running = [m.member_id for m in manifest.members if live_pid(directory, m)]
        if running:
            raise CliError(
                f"the cluster in {directory} is already running ({', '.join(running)}); "
                f"`raft-actors cluster down --dir {directory}` first"
            )
        print(f"restarting the cluster in {directory} ({len(manifest.members)} nodes, "
              f"app {manifest.app}, {manifest.storage} storage)")  # fmt: skip
    else:
        directory, manifest = create_cluster(
            requested, nodes=args.nodes, app=args.app, storage=args.storage,
            settings=_settings(args.set), curve=args.curve,
        )  # fmt: skip
        try:
            _check_configs(directory, manifest)
        except CliError:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        print(f"cluster directory: {directory}")
    write_current(directory)
    fetch = status_fn(1.0, curve_from_args(args, directory))
    for m in manifest.members:
        pid = spawn_member(directory, manifest, m.member_id)
        manifest = manifest.with_pid(m.member_id, pid)
        save_manifest(directory, manifest)
        print(f"  started {m.member_id} (pid {pid}): clients {m.client}, peers {m.peer}")
    print(f"waiting up to {args.timeout:g}s for a leader ...", flush=True)
    result = wait_for_leader(directory, manifest, fetch, timeout=args.timeout)
    if result.leader is None:
        _explain_failure(directory, manifest, result, args.timeout)
        stop_members(directory, manifest, [m.member_id for m in manifest.members], timeout=5.0)
        save_manifest(directory, _no_pids(manifest))
        print(f"stopped the nodes; configs and logs are kept in {directory}")
        return EXIT_ERROR
    n = len(manifest.members)
    print(f"leader: {result.leader} (term {result.term}); all {n} nodes agree")
    print(f"try: raft-actors kv set greeting hello   (cluster dir remembered in {directory})")
    return EXIT_OK


def _explain_failure(
    directory: Path, manifest: ClusterManifest, result: LeaderWait, timeout: float
) -> None:
    if result.exited:
        what = f"node(s) {', '.join(result.exited)} exited during startup"
        show = result.exited
    else:
        seen = {m: (s.role, s.leader) for m, s in result.statuses.items()}
        what = f"no agreed leader within {timeout:g}s (last seen: {seen or 'no answers'})"
        show = tuple(m.member_id for m in manifest.members)
    print(f"raft-actors: error: {what}")
    for member_id in show:
        _print_log_tail(directory, manifest, member_id)


def _print_log_tail(directory: Path, manifest: ClusterManifest, member_id: str) -> None:
    """The last lines of a member's log, and how its process ended if it did."""
    member = manifest.member(member_id)
    ended = exit_status(member.pid) if member.pid is not None else None
    log = directory / member.log
    print(f"--- last lines of {log}{f' ({member_id}: {ended})' if ended else ''}:\n{tail(log)}")


def _no_pids(manifest: ClusterManifest) -> ClusterManifest:
    for m in manifest.members:
        manifest = manifest.with_pid(m.member_id, None)
    return manifest


def _row(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()


_HEADER = ("MEMBER", "ROLE", "TERM", "LEADER", "COMMIT/APPLIED", "SESSIONS", "SNAPSHOT", "PID")


def format_status_table(
    manifest: ClusterManifest, statuses: dict[str, NodeStatus | None], pids: dict[str, int | None]
) -> list[str]:
    """The status lines: a header, then one row per member. A member without a live
    process is ``down``; a live one that did not answer is ``unreachable``."""
    rows = [list(_HEADER)]
    for m in manifest.members:
        pid = pids.get(m.member_id)
        st = statuses.get(m.member_id)
        if st is not None:
            rows.append([
                m.member_id, st.role.lower(), str(st.term), st.leader or "-",
                f"{st.commit_index}/{st.applied_index}", str(st.sessions),
                str(st.snapshot_index), str(pid if pid is not None else st.pid),
            ])  # fmt: skip
        else:
            role = "down" if pid is None else "unreachable"
            shown = str(pid) if pid is not None else (f"{m.pid} (gone)" if m.pid else "-")
            rows.append([m.member_id, role, "-", "-", "-", "-", "-", shown])
    widths = [max(len(r[i]) for r in rows) for i in range(len(_HEADER))]
    return [_row(r, widths) for r in rows]


def _agreed(statuses: dict[str, NodeStatus | None], size: int) -> tuple[str | None, int]:
    """The leader a majority of members names, and its term (None if there is none)."""
    votes: dict[str, int] = {}
    for st in statuses.values():
        if st is not None and st.leader is not None:
            votes[st.leader] = votes.get(st.leader, 0) + 1
    for leader, count in votes.items():
        own = statuses.get(leader)
        if count > size // 2 and own is not None and own.role.lower() == "leader":
            return leader, own.term
    return None, 0


_REMOTE_HEADER = (
    "ADDRESS", "MEMBER", "ROLE", "TERM", "LEADER", "COMMIT/APPLIED", "LOG", "SNAPSHOT",
    "VOTERS", "LEARNERS", "SESSIONS", "PENDING", "UPTIME", "CONTACT",
)  # fmt: skip


def _uptime(ms: int) -> str:
    seconds = ms // 1000
    hours, rest = divmod(seconds, 3600)
    return (
        f"{hours}h{rest // 60:02d}m{rest % 60:02d}s" if hours else f"{rest // 60}m{rest % 60:02d}s"
    )


def _contact(contact: Sequence[tuple[str, int]]) -> str:
    """``n2:10ms,n3:20ms`` (the leader's last contact with each follower), else ``-``."""
    cells = [f"{m}:{'never' if ms < 0 else f'{ms}ms'}" for m, ms in contact]
    return ",".join(cells) or "-"


def format_remote_status(statuses: dict[str, NodeStatus | None]) -> list[str]:
    """A header, then one row per address (in the order given); an address that did
    not answer is ``unreachable``."""
    rows = [list(_REMOTE_HEADER)]
    for address, st in statuses.items():
        if st is None:
            rows.append([address, "-", "unreachable", *["-"] * (len(_REMOTE_HEADER) - 3)])
            continue
        rows.append([
            address, st.member_id, st.role.lower(), str(st.term), st.leader or "-",
            f"{st.commit_index}/{st.applied_index}", str(st.last_log_index),
            str(st.snapshot_index), ",".join(st.voters) or "-", ",".join(st.learners) or "-",
            str(st.sessions), str(st.pending_server_requests), _uptime(st.uptime_ms),
            _contact(st.last_contact_ms),
        ])  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(_REMOTE_HEADER))]
    return [_row(r, widths) for r in rows]


def _fetch_all(
    addresses: Sequence[str], timeout: float, curve: CurveClient | None = None
) -> dict[str, NodeStatus | None]:
    fetch = status_fn(timeout, curve)

    def ask(address: str) -> NodeStatus | None:
        try:
            return fetch(address)
        except Exception:  # an unreachable node is a row, not a crash
            return None

    with ThreadPoolExecutor(max_workers=len(addresses)) as pool:
        futures = {a: pool.submit(ask, a) for a in dict.fromkeys(addresses)}
        return {a: f.result() for a, f in futures.items()}


def cluster_status_remote(
    addresses: Sequence[str], timeout: float, curve: CurveClient | None = None
) -> int:
    statuses = _fetch_all(addresses, timeout, curve)
    for line in format_remote_status(statuses):
        print(line)
    answered = sum(st is not None for st in statuses.values())
    voters = {v for st in statuses.values() if st is not None for v in st.voters}
    leader, term = _agreed_by_id(statuses, max(len(voters), len(statuses)))
    if leader is None:
        print(f"no leader; {answered}/{len(statuses)} addresses answered")
        return EXIT_ERROR
    print(f"leader {leader} (term {term}); {answered}/{len(statuses)} addresses answered")
    return EXIT_OK


def _agreed_by_id(statuses: dict[str, NodeStatus | None], size: int) -> tuple[str | None, int]:
    """Like :func:`_agreed`, with the statuses keyed by member id instead of address."""
    by_id: dict[str, NodeStatus | None] = {
        st.member_id: st for st in statuses.values() if st is not None
    }
    return _agreed(by_id, size)


def cluster_status(args: argparse.Namespace) -> int:
    if args.members:
        return cluster_status_remote(args.members, args.timeout, curve_from_args(args))
    directory = resolve_dir(args.dir)
    manifest = load_manifest(directory)
    pids = {m.member_id: live_pid(directory, m) for m in manifest.members}
    fetch = status_fn(args.timeout, curve_from_args(args, directory))

    def ask(member_id: str, address: str) -> NodeStatus | None:
        if pids[member_id] is None:
            return None
        try:
            return fetch(address)
        except Exception:  # an unreachable node is a row, not a crash
            return None

    with ThreadPoolExecutor(max_workers=len(manifest.members)) as pool:
        futures = {m.member_id: pool.submit(ask, m.member_id, m.client) for m in manifest.members}
        statuses = {k: f.result() for k, f in futures.items()}
    print(f"cluster {directory} (app {manifest.app}, {manifest.storage} storage)")
    for line in format_status_table(manifest, statuses, pids):
        print(line)
    up = sum(p is not None for p in pids.values())
    leader, term = _agreed(statuses, len(manifest.members))
    if leader is None:
        print(f"no leader; {up}/{len(manifest.members)} nodes running")
        return EXIT_ERROR
    print(f"leader {leader} (term {term}); {up}/{len(manifest.members)} nodes running")
    return EXIT_OK


def cluster_down(args: argparse.Namespace) -> int:
    directory = resolve_dir(args.dir)
    manifest = load_manifest(directory)
    members = [m.member_id for m in manifest.members]
    stopped, killed = stop_members(directory, manifest, members, timeout=args.timeout)
    save_manifest(directory, _no_pids(manifest))
    if stopped:
        print(f"stopped {', '.join(stopped)}")
    else:
        print("no node was running")
    if killed:
        print(f"(did not stop within {args.timeout:g}s, SIGKILLed: {', '.join(killed)})")
    if args.purge:
        shutil.rmtree(directory, ignore_errors=True)
        clear_current(directory)
        print(f"removed {directory}")
    return EXIT_OK


def cluster_kill(args: argparse.Namespace) -> int:
    directory = resolve_dir(args.dir)
    manifest = load_manifest(directory)
    for member_id in args.members:
        m = manifest.member(member_id)
        if live_pid(directory, m) is None:
            raise CliError(f"{member_id} is not running")
    stopped, _ = stop_members(directory, manifest, args.members, graceful=False)
    for member_id in stopped:
        print(f"killed {member_id} (pid {manifest.member(member_id).pid}) with SIGKILL")
        manifest = manifest.with_pid(member_id, None)
    save_manifest(directory, manifest)
    return EXIT_OK


def cluster_start(args: argparse.Namespace) -> int:
    directory = resolve_dir(args.dir)
    manifest = load_manifest(directory)
    for member_id in args.members:
        pid = live_pid(directory, manifest.member(member_id))
        if pid is not None:
            raise CliError(f"{member_id} is already running (pid {pid})")
    fetch = status_fn(1.0, curve_from_args(args, directory))
    for member_id in args.members:
        pid = spawn_member(directory, manifest, member_id)
        manifest = manifest.with_pid(member_id, pid)
        save_manifest(directory, manifest)
        print(f"started {member_id} (pid {pid})")
    result = wait_for_leader(directory, manifest, fetch, timeout=args.timeout, expect=args.members)
    if result.exited:
        for member_id in result.exited:
            _print_log_tail(directory, manifest, member_id)
        raise CliError(f"{', '.join(result.exited)} exited right after starting")
    for member_id in args.members:
        st = result.statuses.get(member_id)
        if st is None:
            raise CliError(f"{member_id} did not answer within {args.timeout:g}s")
        print(f"{member_id}: {st.role.lower()}, term {st.term}, leader {st.leader or '-'}")
    return EXIT_OK


def _admin_addresses(args: argparse.Namespace) -> tuple[list[str], CurveClient | None]:
    """The members' client addresses and the CURVE settings to reach them with."""
    if args.members:
        return list(args.members), curve_from_args(args)
    directory = resolve_dir(args.dir)
    manifest = load_manifest(directory)
    return [m.client for m in manifest.members], curve_from_args(args, directory)


def cluster_transfer_leader(args: argparse.Namespace) -> int:
    from actors.client import AdminError

    addresses, curve = _admin_addresses(args)
    member = MemberId(args.member) if args.member else None
    try:
        response = admin_fn(args.timeout, curve)(addresses, AdminOp.TRANSFER_LEADER, member)
    except AdminError as exc:
        raise CliError(str(exc)) from None
    where = f" (clients at {response.leader_hint})" if response.leader_hint else ""
    print(f"leadership transferred{f' to {member}' if member else ''}{where}")
    return EXIT_OK


def cluster_add(args: argparse.Namespace) -> int:
    from actors.client import AdminError, add_member

    addresses, curve = _admin_addresses(args)
    try:
        add_member(
            addresses,
            MemberId(args.member),
            args.peer,
            args.client,
            timeout=args.timeout,
            curve=curve,
        )
    except AdminError as exc:
        raise CliError(str(exc)) from None
    print(f"{args.member} is a voting member")
    return EXIT_OK


def cluster_remove(args: argparse.Namespace) -> int:
    from actors.client import AdminError, remove_member

    addresses, curve = _admin_addresses(args)
    try:
        remove_member(addresses, MemberId(args.member), timeout=args.timeout, curve=curve)
    except AdminError as exc:
        raise CliError(str(exc)) from None
    print(f"removed {args.member}; it is told so, stops taking part, and its node process exits")
    return EXIT_OK
