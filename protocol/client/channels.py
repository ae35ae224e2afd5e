"""Which shared connection and channel each client session uses: pure bookkeeping.

Sessions hosted by one client loop share transport connections (see
:mod:`protocol.wire`: a connection carries up to ``max_sessions_per_connection``
channels). :class:`ChannelTable` decides, for a session that must (re)connect to a
*key* (the server address plus whatever else must match for sharing, e.g. security
settings), which connection and channel it gets:

- a connection to the same key with an unused channel, never the one the session is
  leaving (a reconnect gets a fresh connection when the old one is suspect);
- else a new connection (``opened``).

A connection a session moved away from takes no new sessions after that: a session
moves when its server said "not here" or closed it (a step-down, a bad frame), and the
server may have dropped the whole connection, which it tells only the channels it
knew; a newcomer placed there would wait out a handshake timeout.

Channels are never reused on a connection: a late answer to a session that left (a
``NotLeader``, a response to a resent request) arrives on a channel nobody holds and
is dropped, instead of reaching another session. A connection thus serves at most
``per_connection`` sessions over its life, and it is closed (``closed``) when its last
session leaves. The actor shell (``actors.client.connections``) owns the sockets.

A server may take fewer channels per connection than ``per_connection`` (its own
``max_sessions_per_connection``): it refuses a session on channel ``c`` beyond its
limit with ``TOO_MANY_SESSIONS``, which tells that its limit is at most ``c``
(channels are numbered from 0 and each carries one session). The shell reports that
(:meth:`ChannelTable.refused`), and from then on connections to that key get at most
``c`` channels, so only the sessions placed before the first refusal bounce (they back
off and take a fresh connection). A refusal on channel 0 teaches nothing: a server
takes at least one channel, and it refuses there only for its other limit, on the
sessions one channel creates over its life. The learned limit only ever drops: a
server whose limit was raised is used at the lower one until the table is rebuilt.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["ChannelTable", "Placement"]

K = TypeVar("K", bound=Hashable)
S = TypeVar("S", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a session went: ``connection`` (an id), ``channel`` on it; ``opened``: the
    connection is new (the shell opens it); ``closed``: a connection the session left
    that has no session any more (the shell closes it), or None."""

    connection: int
    channel: int
    opened: bool
    closed: int | None


@dataclass(slots=True)
class _Connection(Generic[K, S]):
    key: K
    next_channel: int = 0
    live: dict[int, S] = field(default_factory=dict)


class ChannelTable(Generic[K, S]):
    """Sessions to (connection, channel) placements; see the module docstring."""

    def __init__(self, per_connection: int) -> None:
        if not 1 <= per_connection <= 256:
            raise ValueError("per_connection must be between 1 and 256")
        self._per = per_connection
        self._ids = itertools.count(1)
        self._connections: dict[int, _Connection[K, S]] = {}
        #: Per key: connections with channels left (in opening order).
        self._open: dict[K, list[int]] = {}
        #: Per key: a channel limit below ``per_connection`` learned from a refusal.
        self._limits: dict[K, int] = {}
        self._where: dict[S, tuple[int, int]] = {}

    @property
    def per_connection(self) -> int:
        return self._per

    def channels_for(self, key: K) -> int:
        """Channels a new connection to ``key`` gets: ``per_connection``, or less
        once its server refused one (see the module docstring)."""
        return self._limits.get(key, self._per)

    def place(self, session: S, key: K) -> Placement:
        """Move ``session`` to a channel of a connection to ``key`` (see the module
        docstring); it leaves its current channel, if any."""
        left = self._where.get(session)
        if left is not None:  # suspect from now on (see the module docstring)
            self._unlist(left[0], self._connections[left[0]].key)
        closed = self.release(session)
        conn_id = 0
        for candidate in self._open.get(key, ()):
            if left is None or candidate != left[0]:
                conn_id = candidate
                break
        opened = conn_id == 0
        if opened:
            conn_id = next(self._ids)
            self._connections[conn_id] = _Connection(key)
            self._open.setdefault(key, []).append(conn_id)
        conn = self._connections[conn_id]
        channel = conn.next_channel
        conn.next_channel += 1
        conn.live[channel] = session
        self._where[session] = (conn_id, channel)
        if conn.next_channel >= self.channels_for(key):  # full for good: never reused
            self._unlist(conn_id, key)
        return Placement(conn_id, channel, opened, closed)

    def refused(self, session: S) -> None:
        """The server refused ``session``'s channel as beyond its sessions-per-connection
        limit: connections to the same key get at most that many channels from now on,
        and those already holding as many take no newcomers (see the module docstring;
        channel 0 teaches nothing). ``session`` keeps its channel until it moves."""
        where = self._where.get(session)
        if where is None:
            return
        conn_id, channel = where
        if channel == 0:
            # A server takes at least one channel per connection, so a refusal on the
            # first one is not about channels: a node also caps the sessions one
            # channel creates over its life (a client that keeps re-creating).
            return
        key = self._connections[conn_id].key
        limit = channel
        if limit >= self.channels_for(key):
            return
        self._limits[key] = limit
        for listed in list(self._open.get(key, ())):
            if self._connections[listed].next_channel >= limit:
                self._unlist(listed, key)

    def release(self, session: S) -> int | None:
        """``session`` leaves its channel; returns its connection if that is now empty
        (and forgotten: the shell closes it)."""
        where = self._where.pop(session, None)
        if where is None:
            return None
        conn_id, channel = where
        conn = self._connections[conn_id]
        del conn.live[channel]
        if conn.live:
            return None
        del self._connections[conn_id]
        self._unlist(conn_id, conn.key)
        return conn_id

    def where(self, session: S) -> tuple[int, int] | None:
        """``(connection, channel)`` of ``session``, if it has one."""
        return self._where.get(session)

    def session_at(self, connection: int, channel: int) -> S | None:
        """The session that holds ``channel`` on ``connection`` now, if any."""
        conn = self._connections.get(connection)
        return None if conn is None else conn.live.get(channel)

    def sessions_on(self, connection: int) -> list[S]:
        """The sessions on ``connection`` now, by channel."""
        conn = self._connections.get(connection)
        return [] if conn is None else [conn.live[c] for c in sorted(conn.live)]

    def connections(self) -> dict[int, int]:
        """Every open connection and how many sessions it holds."""
        return {cid: len(conn.live) for cid, conn in self._connections.items()}

    def _unlist(self, conn_id: int, key: K) -> None:
        ids = self._open.get(key)
        if ids is not None and conn_id in ids:
            ids.remove(conn_id)
            if not ids:
                del self._open[key]
