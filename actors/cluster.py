"""Local cluster management: the processes behind ``raft-actors cluster ...``.

A *cluster directory* holds everything about one local cluster::

    DIR/cluster.json     the manifest: app, storage, members, their addresses and pids
    DIR/<member>.toml    each node's configuration (``raft-actors node --config``)
    DIR/<member>.log     each node's stdout and stderr
    DIR/data/<member>/   each node's log, hard state and snapshots (durable storage)
    DIR/keys/            CURVE key files (``cluster up --curve`` only): ``server/``,
                         ``peers/<member>``, ``clients/client``, ``admins/admin``

Nodes run as detached processes (their own session and process group), so they outlive
the command that started them; the manifest remembers their pids. Before signalling a
recorded pid, we check (on Linux, through ``/proc``) that it still runs *our* node for
*this* config, so a recycled pid never gets killed by mistake.

Nothing here knows how to talk to a node: waiting for a leader takes a status function
(:func:`actors.client.fetch_status` in real use), which keeps this module testable with
stand-in processes.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from protocol.admin import NodeStatus

__all__ = [
    "APPS",
    "MANIFEST",
    "ClusterError",
    "ClusterManifest",
    "LeaderWait",
    "ManagedMember",
    "StatusFn",
    "alive",
    "clear_current",
    "create_cluster",
    "curve_key_paths",
    "free_ports",
    "live_pid",
    "load_manifest",
    "node_command",
    "read_current",
    "resolve_dir",
    "runs_member",
    "save_manifest",
    "spawn_member",
    "state_file",
    "stop_members",
    "tail",
    "wait_for_leader",
    "write_current",
]

#: The apps a local cluster can run (``--app``).
APPS = ("kvstore", "counter")
#: The manifest's file name inside a cluster directory.
MANIFEST = "cluster.json"
_FORMAT_VERSION = 1

Storage = Literal["durable", "memory"]
#: Asks one node for its status by client address; raises if it does not answer.
StatusFn = Callable[[str], NodeStatus]


class ClusterError(Exception):
    """A cluster command that cannot do what was asked; the message says why."""


# ---------------------------------------------------------------- manifest


@dataclass(frozen=True, slots=True)
class ManagedMember:
    """One node of a local cluster, as the manifest records it."""

    member_id: str
    peer: str
    client: str
    #: Config file name, relative to the cluster directory.
    config: str
    #: Log file name, relative to the cluster directory.
    log: str
    #: The pid of the last process started for it (``None`` if never started or stopped).
    pid: int | None = None


@dataclass(frozen=True, slots=True)
class ClusterManifest:
    """What ``cluster.json`` holds."""

    app: str
    storage: Storage
    members: tuple[ManagedMember, ...]

    def member(self, member_id: str) -> ManagedMember:
        for m in self.members:
            if m.member_id == member_id:
                return m
        names = ", ".join(m.member_id for m in self.members)
        raise ClusterError(f"no member {member_id!r} in this cluster (members: {names})")

    def with_pid(self, member_id: str, pid: int | None) -> ClusterManifest:
        self.member(member_id)  # raises for an unknown member
        members = tuple(
            replace(m, pid=pid) if m.member_id == member_id else m for m in self.members
        )
        return replace(self, members=members)

    @property
    def client_addresses(self) -> list[str]:
        return [m.client for m in self.members]


def save_manifest(directory: Path, manifest: ClusterManifest) -> None:
    """Write ``cluster.json`` atomically (temp file, then rename)."""
    raw = {
        "version": _FORMAT_VERSION,
        "app": manifest.app,
        "storage": manifest.storage,
        "members": {
            m.member_id: {
                "peer": m.peer,
                "client": m.client,
                "config": m.config,
                "log": m.log,
                "pid": m.pid,
            }
            for m in manifest.members
        },
    }
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(raw, indent=2) + "\n")
    os.replace(tmp, directory / MANIFEST)


def load_manifest(directory: Path) -> ClusterManifest:
    """Read ``cluster.json``; :class:`ClusterError` if it is absent or malformed."""
    path = directory / MANIFEST
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ClusterError(f"no cluster in {directory} (no {MANIFEST})") from None
    except (OSError, ValueError) as exc:
        raise ClusterError(f"cannot read {path}: {exc}") from None
    try:
        if raw["version"] != _FORMAT_VERSION:
            raise ClusterError(f"{path}: unsupported format version {raw['version']!r}")
        storage = raw["storage"]
        if storage not in ("durable", "memory"):
            raise ClusterError(f"{path}: bad storage {storage!r}")
        members = tuple(
            ManagedMember(
                member_id=str(name),
                peer=str(m["peer"]),
                client=str(m["client"]),
                config=str(m["config"]),
                log=str(m["log"]),
                pid=None if m["pid"] is None else int(m["pid"]),
            )
            for name, m in raw["members"].items()
        )
        return ClusterManifest(app=str(raw["app"]), storage=storage, members=members)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ClusterError(f"{path} is malformed: {exc!r}") from None


# ---------------------------------------------------------------- which directory


def state_file() -> Path:
    """Where the last cluster directory is remembered: ``$RAFT_ACTORS_HOME/current``,
    else ``$XDG_RUNTIME_DIR/raft-actors/current``, else ``~/.raft-actors/current``."""
    home = os.environ.get("RAFT_ACTORS_HOME")
    if home:
        return Path(home) / "current"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "raft-actors" / "current"
    return Path.home() / ".raft-actors" / "current"


def write_current(directory: Path) -> None:
    """Remember ``directory`` as the current cluster (best effort: a read-only home
    only means ``--dir`` is needed next time)."""
    path = state_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(str(directory.resolve()) + "\n")
    except OSError:
        pass


def read_current() -> Path | None:
    """The remembered cluster directory, if any."""
    try:
        text = state_file().read_text().strip()
    except OSError:
        return None
    return Path(text) if text else None


def clear_current(directory: Path) -> None:
    """Forget the remembered directory if it is ``directory``."""
    current = read_current()
    if current is not None and current == directory.resolve():
        with suppress(OSError):
            state_file().unlink()


def resolve_dir(explicit: str | None) -> Path:
    """The cluster directory a command acts on: ``--dir``, else ``$RAFT_ACTORS_DIR``,
    else the remembered one. :class:`ClusterError` if none is known or it holds no
    cluster."""
    if explicit:
        directory, source = Path(explicit), "--dir"
    elif os.environ.get("RAFT_ACTORS_DIR"):
        directory, source = Path(os.environ["RAFT_ACTORS_DIR"]), "RAFT_ACTORS_DIR"
    else:
        current = read_current()
        if current is None:
            raise ClusterError(
                "no cluster running: start one with `raft-actors cluster up`, "
                "or name its directory with --dir or RAFT_ACTORS_DIR"
            )
        directory, source = current, f"the last cluster ({state_file()})"
    if not (directory / MANIFEST).is_file():
        raise ClusterError(f"no cluster in {directory} (from {source}): no {MANIFEST} there")
    return directory


# ---------------------------------------------------------------- creating


#: Where :func:`free_ports` looks first: registered ports below the kernel's ephemeral
#: range, so an outgoing connection elsewhere cannot take a picked port before a node
#: binds it (a port from bind-to-0 is ephemeral, and any connect() may be handed it).
_PICK_FROM = 20000


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default; other systems: IANA's is 49152-65535


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct TCP ports free on ``host`` right now (all held open while picking,
    so they differ; another process could still take one before a node binds it).

    Ports are drawn at random from below the ephemeral range where there is room
    (see :data:`_PICK_FROM`), else the kernel picks (bind to port 0)."""
    low, _ = _ephemeral_range()
    rng = random.SystemRandom()
    room = low - _PICK_FROM > 1000
    with ExitStack() as held:
        ports: list[int] = []
        for _ in range(n):
            for _attempt in range(200):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    s.bind((host, rng.randrange(_PICK_FROM, low) if room else 0))
                except OSError:
                    s.close()
                    continue
                held.enter_context(s)  # open until all are picked, so they differ
                ports.append(s.getsockname()[1])
                break
            else:
                raise ClusterError(f"found no free port on {host} in 200 tries")
        return ports


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid TOML basic string


def create_cluster(
    directory: Path | None,
    *,
    nodes: int,
    app: str,
    storage: Storage,
    settings: dict[str, int | str] | None = None,
    curve: bool = False,
) -> tuple[Path, ClusterManifest]:
    """Make a cluster directory: free loopback ports, one TOML config per node, the
    manifest (no pids yet). ``directory=None`` makes a fresh temporary one; an existing
    directory must be empty. ``settings`` are extra ``NodeConfig`` fields for every
    node (e.g. ``election_timeout_ms``). ``curve``: generate CURVE keys under ``DIR/keys``
    (see :func:`curve_key_paths`) and turn CURVE on in every config."""
    if nodes < 1:
        raise ClusterError("a cluster needs at least one node")
    if app not in APPS:
        raise ClusterError(f"unknown app {app!r} (choose from {', '.join(APPS)})")
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="raft-actors-"))
    else:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ClusterError(f"cannot create {directory}: {exc}") from None
        if any(directory.iterdir()):
            raise ClusterError(f"{directory} is not empty; choose a new or empty directory")
    directory = directory.resolve()
    ports = free_ports(2 * nodes)
    members = tuple(
        ManagedMember(
            member_id=f"n{i + 1}",
            peer=f"tcp://127.0.0.1:{ports[2 * i]}",
            client=f"tcp://127.0.0.1:{ports[2 * i + 1]}",
            config=f"n{i + 1}.toml",
            log=f"n{i + 1}.log",
        )
        for i in range(nodes)
    )
    table = "".join(
        f"\n[members.{m.member_id}]\npeer = {_toml_str(m.peer)}\nclient = {_toml_str(m.client)}\n"
        for m in members
    )
    extra = "".join(
        f"{k} = {v if isinstance(v, int) else _toml_str(v)}\n"
        for k, v in sorted((settings or {}).items())
    )
    if curve:
        _make_curve_keys(directory, [m.member_id for m in members])
    for m in members:
        head = f"member_id = {_toml_str(m.member_id)}\nstorage = {_toml_str(storage)}\n"
        if storage == "durable":
            head += f"data_dir = {_toml_str('data/' + m.member_id)}\n"
        if curve:
            head += (
                'curve_server_key = "keys/server/server.key_secret"\n'
                f"curve_node_key = {_toml_str(f'keys/peers/{m.member_id}.key_secret')}\n"
                'curve_peer_keys = "keys/peers"\n'
                'curve_client_keys = "keys/clients"\n'
                'curve_admin_keys = "keys/admins"\n'
            )
        (directory / m.config).write_text(
            f"# node {m.member_id}: `raft-actors node --config {m.config} --app {app}`\n"
            + head
            + extra
            + table
        )
    manifest = ClusterManifest(app=app, storage=storage, members=members)
    save_manifest(directory, manifest)
    return directory, manifest


def curve_key_paths(directory: Path, *, admin: bool = True) -> tuple[Path, Path] | None:
    """For a cluster made with ``curve=True``: (the admin's -- or with ``admin=False``
    the client's -- ``.key_secret`` file, the server's public ``.key`` file), which the
    CLI uses to talk to it; else None."""
    keys = directory / "keys"
    own = keys / "admins" / "admin.key_secret" if admin else keys / "clients" / "client.key_secret"
    server = keys / "server" / "server.key"
    return (own, server) if own.is_file() and server.is_file() else None


def _make_curve_keys(directory: Path, members: Sequence[str]) -> None:
    from actors.transport import CurveError, generate_keys

    keys = directory / "keys"
    try:
        generate_keys(keys / "server", "server")
        for member in members:
            generate_keys(keys / "peers", member)
        generate_keys(keys / "clients", "client")
        generate_keys(keys / "admins", "admin")
    except CurveError as exc:
        raise ClusterError(f"cannot make CURVE keys: {exc}") from None


# ---------------------------------------------------------------- processes


def node_command(config: Path, app: str) -> list[str]:
    """The command that runs one node in the foreground."""
    return [sys.executable, "-m", "actors.cli", "node", "--config", str(config), "--app", app]


def _source_root() -> str:
    """The directory holding the ``actors`` package, so children import this very code
    even when it is not installed."""
    return str(Path(__file__).resolve().parent.parent)


def parse_setting(pair: str) -> tuple[str, int | str]:
    """``FIELD=VALUE`` of ``--set``: an integer if it reads as one, else a string
    (``--set actor_threads=separate``). ``ValueError`` without ``=`` or a field."""
    key, sep, value = pair.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set {pair!r}: expected FIELD=VALUE")
    try:
        return key.strip(), int(value)
    except ValueError:
        return key.strip(), value.strip()


def spawn_member(
    directory: Path,
    manifest: ClusterManifest,
    member_id: str,
    *,
    command: Sequence[str] | None = None,
) -> int:
    """Start one node detached (own session and process group, stdin from /dev/null,
    output appended to its log, faulthandler on) and return its pid. ``command``
    replaces the default :func:`node_command` (tests use stand-ins)."""
    member = manifest.member(member_id)
    config = directory / member.config
    if not config.is_file():
        raise ClusterError(f"{config} is missing")
    argv = list(command) if command is not None else node_command(config, manifest.app)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_source_root(), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    # A native crash (SIGSEGV, SIGABRT, ...) then leaves a Python traceback in the log
    # instead of nothing at all.
    env.setdefault("PYTHONFAULTHANDLER", "1")
    with open(directory / member.log, "ab") as log:
        log.write(f"--- starting {member_id}: {' '.join(argv)}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(
                argv,
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        except OSError as exc:
            raise ClusterError(f"cannot start {member_id}: {exc}") from None
    _CHILDREN[proc.pid] = proc
    _await_exec(proc)  # so that a pid check right away recognises it
    return proc.pid


#: Processes started by this process: polled so they never linger as zombies (a zombie
#: still answers ``kill(pid, 0)``).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
#: How those children ended (``Popen.returncode``: negative = killed by that signal).
_EXITS: dict[int, int] = {}


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running (not zombie) process."""
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        _EXITS[pid] = child.returncode
        del _CHILDREN[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (not Linux): trust kill(0)
    # The state follows the parenthesised command name, which may itself hold spaces.
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def exit_status(pid: int) -> str | None:
    """How a child started here ended ("exit code 1", "killed by SIGKILL"), if it has
    (``None``: still running, or not our child): what a test prints when a node died."""
    alive(pid)  # reaps it if it just ended
    code = _EXITS.get(pid)
    if code is None:
        return None
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def runs_member(pid: int, config: Path) -> bool:
    """Whether ``pid`` is alive and (where ``/proc`` tells) runs with ``config`` on its
    command line, i.e. is still our node and not a recycled pid."""
    if not alive(pid):
        return False
    cmdline = _cmdline(pid)
    return cmdline is None or str(config).encode() in cmdline


def _cmdline(pid: int) -> list[bytes] | None:
    """The process's command line as ``/proc`` shows it (``[b""]`` while an exec is
    still setting up the new image), or ``None`` if unreadable (no ``/proc``)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None


def _await_exec(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Return once ``/proc`` shows the child's new command line (or it ended, or
    ``timeout`` passed). ``Popen`` returns as soon as the exec is committed, but until
    the kernel has set up the new image (up to ~10 ms seen on a loaded machine) the
    command line reads empty, and :func:`runs_member` would take the new node for a
    dead one: ``cluster up`` then reported it "exited during startup" and stopped it."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if _cmdline(proc.pid) != [b""]:
            return
        time.sleep(0.001)


def _signal(pid: int, sig: signal.Signals) -> None:
    """Signal the node's process group (it leads its own), falling back to the pid."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
    except PermissionError:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return


def _wait_dead(pids: list[int], deadline: float) -> list[int]:
    """Wait (bounded) until the pids are gone; return the ones still alive."""
    left = [p for p in pids if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if alive(p)]
    return left


def live_pid(directory: Path, member: ManagedMember) -> int | None:
    """The member's recorded pid if it still runs this member's node."""
    if member.pid is None:
        return None
    return member.pid if runs_member(member.pid, directory / member.config) else None


def stop_members(
    directory: Path,
    manifest: ClusterManifest,
    member_ids: Sequence[str],
    *,
    graceful: bool = True,
    timeout: float = 10.0,
) -> tuple[list[str], list[str]]:
    """Stop the named members: SIGTERM and wait up to ``timeout`` s, then SIGKILL the
    leftovers (``graceful=False``: SIGKILL at once). Returns (members that were
    running, members that needed SIGKILL); raises :class:`ClusterError` if any
    survives even SIGKILL."""
    targets: dict[int, str] = {}
    for member_id in member_ids:
        pid = live_pid(directory, manifest.member(member_id))
        if pid is not None:
            targets[pid] = member_id
    first = signal.SIGTERM if graceful else signal.SIGKILL
    for pid in targets:
        _signal(pid, first)
    left = _wait_dead(list(targets), time.monotonic() + (timeout if graceful else 5.0))
    killed = [targets[p] for p in left] if graceful else []
    for pid in left:
        _signal(pid, signal.SIGKILL)
    left = _wait_dead(left, time.monotonic() + 5.0)
    if left:
        raise ClusterError(
            "still running after SIGKILL: " + ", ".join(f"{targets[p]} (pid {p})" for p in left)
        )
    return sorted(targets.values()), sorted(killed)


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file (empty if unreadable)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# ---------------------------------------------------------------- waiting for a leader


@dataclass(frozen=True, slots=True)
class LeaderWait:
    """The outcome of :func:`wait_for_leader`."""

    leader: str | None
    term: int
    statuses: dict[str, NodeStatus]
    #: Members whose process exited while we waited.
    exited: tuple[str, ...]


def _poll(
    directory: Path, manifest: ClusterManifest, status: StatusFn
) -> Iterator[tuple[str, NodeStatus | None, bool]]:
    """(member, its status or None, whether its recorded process has exited) for every
    member; members without a recorded pid are not asked."""
    for m in manifest.members:
        if m.pid is None:
            yield m.member_id, None, False
        elif not runs_member(m.pid, directory / m.config):
            yield m.member_id, None, True
        else:
            try:
                st: NodeStatus | None = status(m.client)
            except Exception:  # any failure to answer means "not ready yet"
                st = None
            yield m.member_id, st, False


def wait_for_leader(
    directory: Path,
    manifest: ClusterManifest,
    status: StatusFn,
    *,
    timeout: float,
    expect: Sequence[str] | None = None,
    not_leader: str | None = None,
    interval: float = 0.1,
) -> LeaderWait:
    """Poll until every member in ``expect`` (default: all) answers and they all name
    the same leader, which itself says it leads (and is not ``not_leader``); bounded by
    ``timeout`` s. Returns early if an expected member's process exits. The result has
    ``leader=None`` on failure, with the last statuses seen."""
    expected = set(expect) if expect is not None else {m.member_id for m in manifest.members}
    deadline = time.monotonic() + timeout
    statuses: dict[str, NodeStatus] = {}
    while True:
        statuses = {}
        exited = []
        for member_id, st, gone in _poll(directory, manifest, status):
            if st is not None:
                statuses[member_id] = st
            if gone and member_id in expected:
                exited.append(member_id)
        if exited:
            return LeaderWait(None, 0, statuses, tuple(exited))
        leader = _agreed_leader(statuses, expected)
        if leader is not None and leader != not_leader:
            return LeaderWait(leader, statuses[leader].term, statuses, ())
        if time.monotonic() >= deadline:
            return LeaderWait(None, 0, statuses, ())
        time.sleep(interval)


def _agreed_leader(statuses: dict[str, NodeStatus], expected: set[str]) -> str | None:
    if not expected <= set(statuses):
        return None
    leaders = {statuses[m].leader for m in expected}
    if len(leaders) != 1:
        return None
    (leader,) = leaders
    if leader is None or leader not in statuses or statuses[leader].role.lower() != "leader":
        return None
    term = statuses[leader].term
    return leader if all(statuses[m].term == term for m in expected) else None
