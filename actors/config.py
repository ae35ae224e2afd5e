"""Node configuration: one dataclass, loadable from a TOML file.

Every duration is in milliseconds; every address is a ZeroMQ endpoint such as
``tcp://127.0.0.1:7001``. Nothing here has a global default address or port: an
embedding application passes its own.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from actors.storage import FORMATS, DurableLog
from protocol.ids import MemberId

__all__ = [
    "ACTOR_THREADS",
    "CURVE_KEYS",
    "ENTRY_OVERHEAD_BYTES",
    "ConfigError",
    "MemberAddress",
    "NodeConfig",
    "endpoint_error",
    "load_config",
]

#: The values of ``NodeConfig.actor_threads``, the default first.
ACTOR_THREADS = ("hybrid", "separate", "shared", "transport")

#: Room a command needs around its payload in a log entry and an AppendEntries frame.
ENTRY_OVERHEAD_BYTES = 4096


class ConfigError(ValueError):
    """A configuration that cannot describe a working node."""


_ENDPOINT = re.compile(r"[a-z][a-z0-9+.-]*://\S+").fullmatch


def endpoint_error(*addresses: str) -> str | None:
    """Why the first of ``addresses`` that is no endpoint is refused; None if each is
    ``scheme://rest``, what a transport binds or connects to (``tcp://host:port``,
    ``ipc://path``, ``inmem://name`` ...): a bare ``host:port`` would only fail later,
    at a bind or silently at every connect."""
    for address in addresses:
        if not _ENDPOINT(address):
            return f"not an endpoint such as tcp://host:port: {address!r}"
    return None


@dataclass(frozen=True, slots=True)
class MemberAddress:
    """Where one member listens: Raft peers on ``peer``, clients on ``client``."""

    peer: str
    client: str


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything one node needs; see the README's configuration reference."""

    member_id: MemberId
    #: Every voting member of the initial cluster, this one included.
    members: dict[MemberId, MemberAddress]
    #: Where this node keeps its log, hard state and snapshots (durable storage only).
    data_dir: Path | None = None
    storage: Literal["durable", "memory"] = "durable"
    #: How durable storage keeps the log, term, vote and configuration: ``"sqlite"``, in
    #: SQLite (WAL, ``synchronous=FULL``); ``"file"``, in one append-only file of
    #: checksummed records of our own (half the CPU and about half the wall time per
    #: fsynced batch). A data directory keeps the one it was created with.
    durable_log: DurableLog = "sqlite"
    transport: Literal["zmq", "memory"] = "zmq"
    tick_ms: int = 10
    election_timeout_ms: int = 300
    heartbeat_ms: int = 50
    session_timeout_ms: int = 10_000
    keep_alive_ms: int = 1_000
    retry_interval_ms: int = 500
    retry_age_ms: int = 1_000
    #: Take a snapshot once the log since the last one holds this many bytes.
    snapshot_threshold_bytes: int = 16 * 1024 * 1024
    #: Entries kept in the log after a snapshot, for followers that are a little behind.
    snapshot_trailing_entries: int = 1_000
    max_frame_bytes: int = 4 * 1024 * 1024
    max_payload_bytes: int = 1024 * 1024
    #: Limits a hostile client cannot exceed (each answered with a typed error).
    #: Sessions one client connection may create.
    max_sessions_per_connection: int = 8
    #: Sessions this node tracks at once (live plus being created).
    max_sessions: int = 100_000
    #: Commands of one session proposed and not yet answered.
    max_pending_requests_per_session: int = 1024
    #: Responses one session may leave cached: a command more than this far above the
    #: session's lowest pending request id is refused (``TOO_MANY_PENDING``).
    max_cached_responses_per_session: int = 8192
    #: Queries of one connection being answered at once.
    max_pending_queries_per_connection: int = 256
    #: CURVE (all optional; on when ``curve_server_key`` is set; see the README's
    #: Security section). The cluster's server key pair (a ``.key_secret`` file shared
    #: by every member: clients and peers know its public half).
    curve_server_key: Path | None = None
    #: This member's own key pair (``.key_secret``), its identity towards other members.
    curve_node_key: Path | None = None
    #: Directory of the members' public keys allowed on the peer port: ``NAME.key`` is
    #: member ``NAME``'s key and speaks only for it (frames sent with it under another
    #: member id are dropped). This member's own public key must be there as
    #: ``<member_id>.key`` (checked when the node starts).
    curve_peer_keys: Path | None = None
    #: Directory of the client public keys allowed on the client port.
    curve_client_keys: Path | None = None
    #: Directory of the admin public keys: allowed on the client port, and the only
    #: keys whose admin requests (membership, leadership transfer) are honoured.
    curve_admin_keys: Path | None = None
    #: Test-only: a JSON file of peers to cut off (``{"drop": ["n2"]}``), read by
    #: :class:`actors.transport.FaultControlledPeerTransport`; fault-injection tests
    #: use it to partition real processes. ``None`` (the default): no such wrapper.
    fault_control: Path | None = None
    #: Serve Prometheus metrics on ``http://metrics_host:metrics_port/metrics`` (needs
    #: the ``metrics`` extra; 0 picks a free port). ``None`` (the default): no endpoint.
    metrics_port: int | None = None
    #: A learner is promoted to voter once its log reaches the leader's commit index or
    #: is within this many entries of the leader's last entry (0: only the former).
    promotion_lag_entries: int = 0
    metrics_host: str = "127.0.0.1"
    #: Where the node's actors (registry, consensus, session, retry) run:
    #: ``"hybrid"``, consensus on the peer transport's I/O thread and the registry on
    #: the client transport's (:mod:`actors.loop_host`: no hand-off between a
    #: transport and the actor it feeds), session and retry each on a thread of its
    #: own (the user's ``apply``, queries and the snapshots the node takes never hold
    #: up peer frames or heartbeats); ``"separate"``, each on a thread of its own;
    #: ``"shared"``, all on one thread (a message from one to another is a queue
    #: append, not a thread wake-up; but then snapshot writes and the user's state
    #: machine run on the consensus thread, so a slow disk or a blocking ``apply``
    #: delays heartbeats and can cost leadership); ``"transport"``, session, retry and
    #: consensus on the peer transport's I/O thread and the registry on the client
    #: transport's (the same caveat as ``"shared"``, and a slow ``apply`` also holds up
    #: the reading of peer frames).
    actor_threads: Literal["hybrid", "separate", "shared", "transport"] = "hybrid"
    #: Where log writes and their fsync run: ``"thread"``, on the storage writer's own
    #: thread (group commit; the consensus actor carries on meanwhile); ``"inline"``,
    #: on the consensus actor's thread (no hand-off either way; a slow fsync then
    #: holds up that thread, and with it heartbeats, as in etcd).
    storage_writes: Literal["thread", "inline"] = "thread"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.curve_server_key is not None and (
            self.curve_node_key is None or self.curve_peer_keys is None
        ):
            raise ConfigError("CURVE (curve_server_key) needs curve_node_key and curve_peer_keys")
        if self.curve_server_key is None and any(
            getattr(self, name) is not None for name in CURVE_KEYS[1:]
        ):
            raise ConfigError("curve_* keys need curve_server_key (which turns CURVE on)")
        if self.member_id not in self.members:
            raise ConfigError(f"member_id {self.member_id!r} is not among members")
        for member, address in self.members.items():
            for kind, endpoint in (("peer", address.peer), ("client", address.client)):
                error = endpoint_error(endpoint)
                if error is not None:
                    raise ConfigError(f"members.{member}.{kind}: {error}")
        if self.storage == "durable" and self.data_dir is None:
            raise ConfigError("durable storage needs a data_dir")
        if self.storage not in ("durable", "memory"):
            raise ConfigError(f"storage must be 'durable' or 'memory', not {self.storage!r}")
        if self.durable_log not in FORMATS:
            logs = " or ".join(repr(log) for log in FORMATS)
            raise ConfigError(f"durable_log must be {logs}, not {self.durable_log!r}")
        if self.transport not in ("zmq", "memory"):
            raise ConfigError(f"transport must be 'zmq' or 'memory', not {self.transport!r}")
        if self.actor_threads not in ACTOR_THREADS:
            modes = ", ".join(repr(m) for m in ACTOR_THREADS)
            raise ConfigError(f"actor_threads must be one of {modes}, not {self.actor_threads!r}")
        if self.storage_writes not in ("thread", "inline"):
            raise ConfigError(
                f"storage_writes must be 'thread' or 'inline', not {self.storage_writes!r}"
            )
        for name in (
            "tick_ms",
            "election_timeout_ms",
            "heartbeat_ms",
            "session_timeout_ms",
            "max_sessions_per_connection",
            "max_sessions",
            "max_pending_requests_per_session",
            "max_cached_responses_per_session",
            "max_pending_queries_per_connection",
            "max_payload_bytes",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        if self.heartbeat_ms >= self.election_timeout_ms:
            raise ConfigError("heartbeat_ms must be shorter than election_timeout_ms")
        if self.keep_alive_ms >= self.session_timeout_ms:
            raise ConfigError("keep_alive_ms must be shorter than session_timeout_ms")
        if self.promotion_lag_entries < 0:
            raise ConfigError("promotion_lag_entries must be >= 0")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics_port must be in 0..65535, not {self.metrics_port}")
        if self.max_payload_bytes + ENTRY_OVERHEAD_BYTES > self.max_frame_bytes:
            # A command that big would be accepted, logged, and then never fit in an
            # AppendEntries frame: replication would stop for good.
            raise ConfigError(
                f"max_frame_bytes must exceed max_payload_bytes by {ENTRY_OVERHEAD_BYTES}"
            )

    @property
    def curve(self) -> bool:
        """Whether CURVE encryption and authentication are on."""
        return self.curve_server_key is not None

    @property
    def address(self) -> MemberAddress:
        return self.members[self.member_id]

    @property
    def peers(self) -> dict[MemberId, MemberAddress]:
        """The other members."""
        return {m: a for m, a in self.members.items() if m != self.member_id}

    def with_changes(self, **changes: Any) -> NodeConfig:
        return replace(self, **changes)


#: The path-valued CURVE keys (``curve_server_key`` first: it turns CURVE on).
CURVE_KEYS = (
    "curve_server_key",
    "curve_node_key",
    "curve_peer_keys",
    "curve_client_keys",
    "curve_admin_keys",
)
_PATHS = ("data_dir", "fault_control", *CURVE_KEYS)
_STRINGS = {
    "storage",
    "durable_log",
    "transport",
    "metrics_host",
    "actor_threads",
    "storage_writes",
}
_SCALARS = {f.name for f in fields(NodeConfig)} - {
    "member_id",
    "members",
    "extra",
    *_PATHS,
}


def load_config(path: str | Path) -> NodeConfig:
    """Read a node's TOML file.

    ```toml
    member_id = "n1"
    data_dir = "data/n1"          # relative to the file
    election_timeout_ms = 300     # any NodeConfig field

    [members.n1]
    peer = "tcp://127.0.0.1:7001"
    client = "tcp://127.0.0.1:8001"
    ```
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return config_from_dict(raw, base_dir=path.parent)


def config_from_dict(raw: dict[str, Any], base_dir: Path = Path()) -> NodeConfig:
    """Build a config from plain values (a parsed TOML table), checking every key."""
    raw = dict(raw)
    try:
        member_id = MemberId(str(raw.pop("member_id")))
        members_raw = raw.pop("members")
    except KeyError as exc:
        raise ConfigError(f"missing required key {exc}") from None
    if not isinstance(members_raw, dict) or not members_raw:
        raise ConfigError("members must be a table of member -> {peer, client}")
    members = {}
    for name, addr in members_raw.items():
        if not isinstance(addr, dict) or set(addr) != {"peer", "client"}:
            raise ConfigError(f"members.{name} needs exactly 'peer' and 'client'")
        members[MemberId(str(name))] = MemberAddress(str(addr["peer"]), str(addr["client"]))
    paths: dict[str, Path | None] = {}
    for name in _PATHS:
        value = raw.pop(name, None)
        if value is not None and type(value) is not str:
            raise ConfigError(f"{name} must be str, got {value!r}")
        paths[name] = (base_dir / value) if value is not None else None
    extra = raw.pop("extra", {})
    unknown = set(raw) - _SCALARS
    if unknown:
        raise ConfigError(f"unknown keys: {', '.join(sorted(unknown))}")
    for key, value in raw.items():
        expected = str if key in _STRINGS else int
        if type(value) is not expected:
            raise ConfigError(f"{key} must be {expected.__name__}, got {value!r}")
    try:
        return NodeConfig(
            member_id=member_id,
            members=members,
            extra=extra,
            **paths,  # type: ignore[arg-type]
            **raw,
        )
    except TypeError as exc:
        raise ConfigError(str(exc)) from None
