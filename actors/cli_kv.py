"""``raft-actors kv set|get|delete|cas|watch``: the kv store of a running cluster.

Each invocation opens one client session (following leader hints from whichever member
answers), runs its request and closes the session. Values on the command line are JSON
(``42``, ``true``, ``null``, ``'{"a": 1}'``, ``'"quoted"'``); anything that is not
valid JSON is taken as a plain string. Values are printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any, TypeVar

from actors.cli_common import (
    EXIT_FALSE,
    EXIT_OK,
    CliError,
    Subcommands,
    add_curve_args,
    curve_from_args,
    positive_float,
    positive_int,
)
from actors.cluster import live_pid, load_manifest, resolve_dir
from examples.kvstore import (
    KvCas,
    KvDelete,
    KvEntry,
    KvEvent,
    KvGet,
    KvRequest,
    KvSet,
    KvUnwatch,
    KvWatch,
    parse_event,
)
from protocol.codec import ProtocolError

if TYPE_CHECKING:
    from actors.client import RaftClient

__all__ = ["add_parser", "format_event", "members_from_args", "parse_value", "show"]

_TIMEOUT = 10.0
R = TypeVar("R")


def _key(text: str) -> str:
    """argparse type: a kv key (a non-empty string)."""
    if not text:
        raise argparse.ArgumentTypeError("a key must be a non-empty string")
    return text


def parse_value(text: str) -> Any:
    """A command-line value: JSON if it parses, else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def show(value: Any) -> str:
    """A stored value for humans: JSON where possible (bytes as ``b'...'``)."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _entry(e: KvEntry) -> str:
    return f"{e.key} = {show(e.value)} (version {e.version}, revision {e.mod_revision})"


def format_event(event: KvEvent) -> str:
    """One watch event as a line."""
    if event.kind == "delete":
        return f"delete {event.key} (revision {event.revision})"
    return (
        f"set {event.key} = {show(event.value)} "
        f"(version {event.version}, revision {event.revision})"
    )


def add_parser(commands: Subcommands) -> None:
    kv = commands.add_parser(
        "kv",
        help="read and write the kv store of a running cluster",
        description="Talk to the kv store app of a running cluster. Values are JSON "
        "where they parse (42, true, null, '\"text\"', '{\"a\": 1}'), plain strings "
        "otherwise.",
    )
    sub = kv.add_subparsers(dest="action", metavar="ACTION", required=True)

    def request(name: str, help_: str, description: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_, description=description)
        _target_args(p)
        p.add_argument(
            "--timeout",
            type=positive_float,
            metavar="SECONDS",
            default=_TIMEOUT,
            help=f"seconds to connect and for the request (default: {_TIMEOUT:g})",
        )
        return p

    p = request("set", "set a key", "Set KEY to VALUE (through the log).")
    p.add_argument("key", metavar="KEY", type=_key)
    p.add_argument("value", metavar="VALUE", type=parse_value)
    p.set_defaults(handler=kv_set)

    p = request(
        "get",
        "read a key",
        "Print KEY's value as JSON (a linearizable read). Exits 3 if the key is absent.",
    )
    p.add_argument("key", metavar="KEY", type=_key)
    p.add_argument("-v", "--verbose", action="store_true", help="also print version/revision")
    p.set_defaults(handler=kv_get)

    p = request("delete", "delete a key", "Delete KEY (nothing happens if it is absent).")
    p.add_argument("key", metavar="KEY", type=_key)
    p.set_defaults(handler=kv_delete)

    p = request(
        "cas",
        "compare-and-set",
        "Set KEY to NEW only if its value is EXPECTED (compared strictly: 1, 1.0 and "
        "true differ). EXPECTED null means 'only if the key is absent'. Exits 3 if it did "
        "not swap.",
    )
    p.add_argument("key", metavar="KEY", type=_key)
    p.add_argument("expected", metavar="EXPECTED", type=parse_value)
    p.add_argument("new", metavar="NEW", type=parse_value)
    p.set_defaults(handler=kv_cas)

    p = sub.add_parser(
        "watch",
        help="print changes to a key",
        description="Print every later change to KEY, one line each, until --count "
        "events arrived, --timeout passed or Ctrl-C. Exits 3 if --count events did not "
        "arrive within --timeout.",
    )
    _target_args(p)
    p.add_argument("key", metavar="KEY", type=_key)
    p.add_argument(
        "--count", type=positive_int, metavar="N", help="stop after N events (default: never)"
    )
    p.add_argument(
        "--timeout",
        type=positive_float,
        metavar="SECONDS",
        help="stop after S seconds (default: never)",
    )
    p.set_defaults(handler=kv_watch)


def _target_args(p: argparse.ArgumentParser) -> None:
    add_curve_args(p)
    p.add_argument(
        "--members",
        metavar="ADDR,...",
        help="client addresses, e.g. tcp://127.0.0.1:8001,... (default: the cluster's)",
    )
    p.add_argument(
        "--dir",
        metavar="DIR",
        help="the cluster directory (default: $RAFT_ACTORS_DIR, else the last `cluster up`)",
    )


def members_from_args(args: argparse.Namespace) -> list[str]:
    """The client addresses to try: ``--members``, else the cluster directory's (its
    running members first). ``host:port`` gets a ``tcp://`` prefix."""
    if args.members:
        addresses = [a.strip() for a in args.members.split(",") if a.strip()]
        if not addresses:
            raise CliError("--members: no address given")
        return [a if "://" in a else f"tcp://{a}" for a in addresses]
    directory = resolve_dir(args.dir)
    manifest = load_manifest(directory)
    if manifest.app != "kvstore":
        raise CliError(f"the cluster in {directory} runs the {manifest.app} app, not kvstore")
    running = [m.client for m in manifest.members if live_pid(directory, m) is not None]
    if not running:
        raise CliError(
            f"no node of the cluster in {directory} is running "
            "(`raft-actors cluster up` or `cluster start MEMBER`)"
        )
    return running + [m.client for m in manifest.members if m.client not in running]


@contextmanager
def _client(
    args: argparse.Namespace,
    timeout: float,
    on_server_request: Callable[[Any], None] | None = None,
) -> Iterator[RaftClient]:
    members = members_from_args(args)  # before the import: "no cluster" needs no client
    directory = None if args.members else resolve_dir(args.dir)
    curve = curve_from_args(args, directory, admin=False)
    from actors.client import RaftClient

    client = RaftClient(members, on_server_request=on_server_request, curve=curve)
    try:
        try:
            client.connect(timeout=timeout)
        except TimeoutError:
            raise CliError(
                f"no leader reachable within {timeout:g}s at {', '.join(members)}"
            ) from None
        yield client
    finally:
        client.close()


def _call(client: RaftClient, request: KvRequest[R], timeout: float) -> R:
    try:
        return request.parse_result(client.call(request.to_native(), timeout=timeout))
    except ProtocolError as exc:
        raise CliError(f"unexpected answer from the cluster: {exc}") from None


def kv_set(args: argparse.Namespace) -> int:
    with _client(args, args.timeout) as client:
        result = _call(client, KvSet(args.key, args.value), args.timeout)
    print(f"OK {_entry(result.entry)}")
    return EXIT_OK


def kv_get(args: argparse.Namespace) -> int:
    request = KvGet(args.key)
    with _client(args, args.timeout) as client:
        try:
            result = request.parse_result(client.query(request.to_native(), timeout=args.timeout))
        except ProtocolError as exc:
            raise CliError(f"unexpected answer from the cluster: {exc}") from None
    if result.entry is None:
        print(f"{args.key}: not found", file=sys.stderr)
        return EXIT_FALSE
    print(_entry(result.entry) if args.verbose else show(result.entry.value))
    return EXIT_OK


def kv_delete(args: argparse.Namespace) -> int:
    with _client(args, args.timeout) as client:
        result = _call(client, KvDelete(args.key), args.timeout)
    if result.prev is None:
        print(f"{args.key} was not set; nothing deleted")
    else:
        print(f"deleted {args.key} (was {show(result.prev.value)}; revision {result.revision})")
    return EXIT_OK


def kv_cas(args: argparse.Namespace) -> int:
    with _client(args, args.timeout) as client:
        result = _call(client, KvCas(args.key, args.expected, args.new), args.timeout)
    if result.swapped and result.entry is not None:
        print(f"swapped: {_entry(result.entry)}")
        return EXIT_OK
    now = "absent" if result.entry is None else show(result.entry.value)
    print(f"not swapped: {args.key} is {now}, not {show(args.expected)}")
    return EXIT_FALSE


def kv_watch(args: argparse.Namespace) -> int:
    events: queue.SimpleQueue[Any] = queue.SimpleQueue()
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    connect_timeout = _TIMEOUT if args.timeout is None else min(_TIMEOUT, args.timeout)
    seen = 0
    with _client(args, connect_timeout, on_server_request=events.put) as client:
        watched = _call(client, KvWatch(args.key), connect_timeout)
        now = "absent" if watched.entry is None else show(watched.entry.value)
        print(f"watching {args.key} (now {now}, revision {watched.revision}); Ctrl-C to stop")
        sys.stdout.flush()
        while args.count is None or seen < args.count:
            wait = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if wait <= 0:
                break
            try:
                payload = events.get(timeout=wait)
            except queue.Empty:
                continue
            try:
                event = parse_event(payload)
            except ProtocolError as exc:
                print(f"(ignored a notification that is not a kv event: {exc})", file=sys.stderr)
                continue
            if event.key != args.key:
                continue
            seen += 1
            print(format_event(event), flush=True)
        with suppress(Exception):  # best effort: closing the session drops the watch anyway
            _call(client, KvUnwatch(args.key), _TIMEOUT)
    if args.count is not None and seen < args.count:
        print(f"only {seen} of {args.count} events within {args.timeout:g}s", file=sys.stderr)
        return EXIT_FALSE
    return EXIT_OK
