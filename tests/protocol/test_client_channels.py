"""ChannelTable: which shared connection and channel each client session uses."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from protocol.client import ChannelTable


def test_sessions_to_one_key_share_a_connection_up_to_the_limit() -> None:
    table: ChannelTable[str, str] = ChannelTable(2)
    assert table.per_connection == 2
    a = table.place("a", "n1")
    b = table.place("b", "n1")
    c = table.place("c", "n1")
    assert (a.opened, b.opened, c.opened) == (True, False, True)
    assert (a.connection, a.channel) == (b.connection, 0) and b.channel == 1
    assert c.connection != a.connection and c.channel == 0
    assert table.sessions_on(a.connection) == ["a", "b"]
    assert table.connections() == {a.connection: 2, c.connection: 1}
    d = table.place("d", "n2")  # another member: another connection
    assert d.opened and d.connection not in (a.connection, c.connection)


def test_a_moving_session_never_reuses_a_channel_or_the_connection_it_leaves() -> None:
    table: ChannelTable[str, str] = ChannelTable(8)
    a = table.place("a", "n1")
    table.place("b", "n1")
    moved = table.place("b", "n2")  # b follows a hint; a stays
    assert moved.opened and moved.closed is None
    assert table.session_at(a.connection, 1) is None  # late frames for b: nobody's
    # Back to n1: not the shared connection b left (it is suspect: its server may have
    # dropped it), a fresh one; a keeps its channel there.
    back = table.place("b", "n1")
    assert back.opened and back.connection != a.connection and back.closed == moved.connection
    assert table.where("a") == (a.connection, 0)
    assert table.place("c", "n1").connection == back.connection  # newcomers: not a's either
    again = table.place("b", "n1")  # a reconnect to the same member: a fresh connection
    assert again.opened and again.connection not in (a.connection, back.connection)
    assert table.where("b") == (again.connection, 0)


def test_a_connection_a_session_left_takes_no_newcomers() -> None:
    """After a step-down the server drops the whole connection but tells only the
    channels it knew: a newcomer placed there would wait out its handshake."""
    table: ChannelTable[str, str] = ChannelTable(8)
    first = table.place("s1", "n1")
    table.place("s2", "n1")
    table.place("s1", "n2")  # told "not here": moves
    newcomer = table.place("s4", "n1")
    assert newcomer.opened and newcomer.connection != first.connection
    assert table.where("s2") == (first.connection, 1)  # s2 stays until it is told too


def test_the_last_session_leaving_closes_the_connection() -> None:
    table: ChannelTable[str, str] = ChannelTable(8)
    a = table.place("a", "n1")
    table.place("b", "n1")
    assert table.release("a") is None
    assert table.release("b") == a.connection
    assert table.release("b") is None  # already gone
    assert table.connections() == {}
    assert table.session_at(a.connection, 0) is None
    assert table.sessions_on(a.connection) == []
    assert table.place("c", "n1").opened  # nothing left to share


def test_a_connection_whose_channels_are_used_up_takes_no_one_new() -> None:
    table: ChannelTable[str, str] = ChannelTable(1)
    a = table.place("a", "n1")
    assert table.place("b", "n1").connection != a.connection
    with pytest.raises(ValueError, match="per_connection"):
        ChannelTable(0)
    with pytest.raises(ValueError, match="per_connection"):
        ChannelTable(257)


def test_a_refusal_lowers_the_channels_per_connection_for_that_key_only() -> None:
    """A server that takes 2 sessions per connection refuses channel 2 (and up): the
    table uses 2 for that key from then on; other keys keep the table's number."""
    table: ChannelTable[str, str] = ChannelTable(8)
    first = [table.place(s, "n1") for s in "abcd"]
    assert {p.connection for p in first} == {first[0].connection}
    table.refused("d")  # channel 3: the limit is at most 3
    assert table.channels_for("n1") == 3
    table.refused("c")  # channel 2: at most 2
    table.refused("d")  # a higher channel teaches nothing new
    assert table.channels_for("n1") == 2 and table.channels_for("n2") == 8
    moved = table.place("c", "n1")  # the refused session backs off: a fresh connection
    assert moved.opened and moved.channel == 0
    e = table.place("e", "n1")
    assert (e.connection, e.channel) == (moved.connection, 1)
    f = table.place("f", "n1")  # that connection has its 2: a new one
    assert f.opened and f.channel == 0
    assert len({p.connection for p in (first[0], moved, f)}) == 3
    assert table.place("g", "n2").connection == table.place("h", "n2").connection


def test_a_refusal_on_channel_zero_teaches_nothing() -> None:
    # A node refuses there only for its lifetime cap on one channel's sessions.
    table: ChannelTable[str, str] = ChannelTable(8)
    first = table.place("a", "n1")
    table.refused("a")
    table.refused("nobody")  # no channel: nothing learned
    assert table.channels_for("n1") == 8
    b = table.place("b", "n1")
    assert (b.connection, b.channel) == (first.connection, 1)


class ChannelTableMachine(RuleBasedStateMachine):
    """Random placements and releases keep the table's promises."""

    def __init__(self) -> None:
        super().__init__()
        self.per = 3
        self.table: ChannelTable[str, int] = ChannelTable(self.per)
        self.used: dict[int, set[int]] = {}  # connection -> channels ever given
        self.open: dict[int, str] = {}  # live connection -> key
        self.holder: dict[int, tuple[int, int]] = {}
        self.limit: dict[str, int] = {}  # per key: channels a connection may use

    @rule(session=st.integers(0, 6), key=st.sampled_from(["n1", "n2"]))
    def place(self, session: int, key: str) -> None:
        before = self.holder.get(session)
        p = self.table.place(session, key)
        if before is not None:
            assert p.connection != before[0]  # never the connection it leaves
            still = any(h[0] == before[0] for s, h in self.holder.items() if s != session)
            assert (p.closed == before[0]) == (not still)
        else:
            assert p.closed is None
        if p.closed is not None:
            del self.open[p.closed]
        assert p.channel not in self.used.get(p.connection, set())  # never reused
        assert 0 <= p.channel < self.limit.get(key, self.per)
        assert p.opened == (p.connection not in self.open)
        self.used.setdefault(p.connection, set()).add(p.channel)
        self.open[p.connection] = key
        self.holder[session] = (p.connection, p.channel)

    @rule(session=st.integers(0, 6))
    def release(self, session: int) -> None:
        before = self.holder.pop(session, None)
        closed = self.table.release(session)
        if before is None:
            assert closed is None
            return
        still = any(h[0] == before[0] for h in self.holder.values())
        assert (closed == before[0]) == (not still)
        if closed is not None:
            del self.open[closed]

    @rule(session=st.integers(0, 6))
    def refuse(self, session: int) -> None:
        where = self.holder.get(session)
        self.table.refused(session)
        if where is not None:
            key = self.open[where[0]]
            if where[1] > 0:
                self.limit[key] = min(self.limit.get(key, self.per), where[1])
        for key in ("n1", "n2"):
            assert self.table.channels_for(key) == self.limit.get(key, self.per)

    @invariant()
    def agrees(self) -> None:
        for session, (conn, channel) in self.holder.items():
            assert self.table.where(session) == (conn, channel)
            assert self.table.session_at(conn, channel) == session
        counts: dict[int, int] = {}
        for conn, _ in self.holder.values():
            counts[conn] = counts.get(conn, 0) + 1
        assert self.table.connections() == counts  # no empty connection stays open


TestChannelTable = ChannelTableMachine.TestCase
TestChannelTable.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
