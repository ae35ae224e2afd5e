"""One conformance suite for every transport implementation (the ``harness`` fixture).

What the actor shells rely on: frames arrive with the right sender/routing id, in order
on a healthy link; peers come and go at run time; a client gets answers by routing id
and can be cut off; oversized, rejected and handler-crashing frames are dropped and
counted while the transport keeps working; sends never block; stop is clean.
"""

from __future__ import annotations

import re
import threading

import pytest

from actors.transport import (
    ClientConnection,
    ClientTransport,
    PeerTransport,
    Transport,
    TransportError,
    TransportStats,
)
from protocol.ids import MemberId

from .harness import PROBE, Harness, Inbox, transport_threads, wait_until


def test_transports_implement_the_interfaces(harness: Harness) -> None:
    peer, _ = harness.peer("a")
    server, _ = harness.server()
    client, _ = harness.client()
    assert isinstance(peer, PeerTransport)
    assert isinstance(server, ClientTransport)
    assert isinstance(client, ClientConnection)
    for t in (peer, server, client):
        assert isinstance(t, Transport)
        assert t.stats() == TransportStats()


def test_bound_addresses_are_real(harness: Harness) -> None:
    a, _ = harness.peer("a")
    server, _ = harness.server()
    assert a.address != server.address
    if harness.kind == "zmq":
        for address in (a.address, server.address):
            m = re.fullmatch(r"tcp://127\.0\.0\.1:(\d+)", address)
            assert m and int(m.group(1)) > 0, address
    else:
        assert a.address.startswith("inmem://") and server.address.startswith("inmem://")


def test_peers_send_both_ways_with_sender_ids(harness: Harness) -> None:
    a, inbox_a = harness.peer("a")
    b, inbox_b = harness.peer("b")
    harness.link(a, b, inbox_b)
    harness.link(b, a, inbox_a)
    assert a.send(MemberId("b"), b"hello b")
    assert b.send(MemberId("a"), b"hello a")
    assert inbox_b.get() == (MemberId("a"), b"hello b")
    assert inbox_a.get() == (MemberId("b"), b"hello a")
    assert a.peers() == {MemberId("b"): b.address}


def test_many_frames_arrive_in_order_on_a_healthy_link(harness: Harness) -> None:
    a, _ = harness.peer("a")
    b, inbox_b = harness.peer("b")
    harness.link(a, b, inbox_b)
    frames = [i.to_bytes(4, "big") * 25 for i in range(2000)]
    for frame in frames:
        assert a.send(MemberId("b"), frame)
    assert [f for _, f in inbox_b.take(len(frames))] == frames
    assert b.stats().frames_in >= len(frames)
    assert a.stats().frames_out >= len(frames)
    assert a.stats().bytes_out >= 100 * len(frames)


def test_concurrent_senders_each_keep_their_order(harness: Harness) -> None:
    a, _ = harness.peer("a")
    b, inbox_b = harness.peer("b")
    harness.link(a, b, inbox_b)
    per_thread = 300

    def blast(k: int) -> None:
        for i in range(per_thread):
            a.send(MemberId("b"), bytes([k]) + i.to_bytes(4, "big"))

    threads = [threading.Thread(target=blast, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    got = [f for _, f in inbox_b.take(4 * per_thread)]
    for k in range(4):
        mine = [int.from_bytes(f[1:], "big") for f in got if f[0] == k]
        assert mine == list(range(per_thread))


def test_peers_are_added_replaced_and_removed_at_run_time(harness: Harness) -> None:
    a, _ = harness.peer("a")
    c1, inbox_c1 = harness.peer("c")
    dropped = a.stats().dropped
    a.send(MemberId("c"), b"to nobody yet")
    wait_until(lambda: a.stats().dropped == dropped + 1)

    harness.link(a, c1, inbox_c1)
    a.send(MemberId("c"), b"to c1")
    assert inbox_c1.get() == (MemberId("a"), b"to c1")

    # The member moves to a new address (e.g. restarted elsewhere).
    c2, inbox_c2 = harness.peer("c")
    harness.link(a, c2, inbox_c2)
    a.send(MemberId("c"), b"to c2")
    assert inbox_c2.get() == (MemberId("a"), b"to c2")
    assert a.peers() == {MemberId("c"): c2.address}

    a.remove_peer(MemberId("c"))
    assert a.peers() == {}
    dropped = a.stats().dropped
    a.send(MemberId("c"), b"removed")
    wait_until(lambda: a.stats().dropped == dropped + 1)
    a.remove_peer(MemberId("never-added"))  # harmless
    assert inbox_c1.empty() and inbox_c2.empty()


def test_sends_to_unknown_or_unreachable_peers_do_not_block(harness: Harness) -> None:
    a, _ = harness.peer("a")
    a.add_peer(MemberId("ghost"), harness.unreachable_address())
    done = threading.Event()

    def blast() -> None:
        for _ in range(5000):
            a.send(MemberId("ghost"), b"x" * 100)
            a.send(MemberId("unknown"), b"x" * 100)
        done.set()

    worker = threading.Thread(target=blast)
    worker.start()
    worker.join(60)
    assert done.is_set(), "send blocked"
    wait_until(lambda: a.stats().dropped == 10_000)
    assert a.stats().frames_out == 0


def test_client_request_response_by_routing_id(harness: Harness) -> None:
    server, requests = harness.server()
    c1, inbox1 = harness.client()
    c2, inbox2 = harness.client()
    assert c1.address is None
    c1.connect(server.address)
    c2.connect(server.address)
    assert c1.address == server.address
    assert c1.send(b"one")
    assert c2.send(b"two")
    got = dict((frame, rid) for rid, frame in requests.take(2))
    assert set(got) == {b"one", b"two"}
    assert got[b"one"] != got[b"two"]
    assert server.send(got[b"two"], b"answer two")
    assert server.send(got[b"one"], b"answer one")
    assert inbox1.get() == (b"answer one",)
    assert inbox2.get() == (b"answer two",)
    # A second request on the same connection comes with the same routing id.
    c1.send(b"again")
    assert requests.get() == (got[b"one"], b"again")


def test_client_frames_come_with_the_senders_admin_flag(harness: Harness) -> None:
    """``on_frame(routing_id, frame, admin)``: ``admin`` is the sender's authenticated
    identity (with CURVE: an admin key or not; without: the configured default; in
    memory: what the connection says it is), frame by frame, per connection."""
    for what, server, inbox, clients in harness.identity_cases():
        for k, (client, _) in enumerate(clients):
            client.connect(server.address)
            for n in range(3):
                client.send(b"c%d-%d" % (k, n))
        frames = {frame for _, frame in inbox.take(3 * len(clients))}
        assert len(frames) == 3 * len(clients), what
        expected = {
            b"c%d-%d" % (k, n): admin for k, (_, admin) in enumerate(clients) for n in range(3)
        }
        assert inbox.admin == expected, what


def test_server_sends_to_unknown_routing_ids_are_dropped(harness: Harness) -> None:
    server, _ = harness.server()
    server.send(b"\x00nope", b"lost")
    wait_until(lambda: server.stats().dropped == 1)


def test_disconnect_cuts_a_client_off_until_it_reconnects(harness: Harness) -> None:
    server, requests = harness.server()
    client, inbox = harness.client()
    client.connect(server.address)
    client.send(b"hi")
    rid, _ = requests.get()
    server.send(rid, b"goodbye")
    server.disconnect(rid)
    assert inbox.get() == (b"goodbye",)  # queued before the disconnect: still sent

    client.send(b"still there?")
    wait_until(lambda: server.stats().dropped == 1)
    server.send(rid, b"never")
    wait_until(lambda: server.stats().dropped == 2)

    client.connect(server.address)  # reconnect: a new routing id
    client.send(b"back")
    new_rid, frame = requests.get()
    assert frame == b"back" and new_rid != rid
    server.send(new_rid, b"welcome back")
    assert inbox.get() == (b"welcome back",)
    assert requests.empty()


def test_client_close_then_connect_again(harness: Harness) -> None:
    server, requests = harness.server()
    client, inbox = harness.client()
    assert not client.send(b"not connected")
    client.connect(server.address)
    client.close()
    assert client.address is None
    assert not client.send(b"closed")
    assert client.stats().dropped == 2
    client.connect(server.address)
    client.send(b"open again")
    rid, frame = requests.get()
    assert frame == b"open again"
    server.send(rid, b"ok")
    assert inbox.get() == (b"ok",)


def test_oversized_frames_are_dropped_and_counted_on_both_sides(harness: Harness) -> None:
    a, _ = harness.peer("a", max_frame_bytes=1000)
    b, inbox_b = harness.peer("b")
    c, inbox_c = harness.peer("c", max_frame_bytes=1000)
    harness.link(a, b, inbox_b)
    harness.link(b, c, inbox_c)

    assert not a.send(MemberId("b"), b"x" * 1001)  # refused by the sender
    assert a.stats().oversized == 1
    assert a.send(MemberId("b"), b"x" * 1000)  # the limit itself is fine
    assert inbox_b.get() == (MemberId("a"), b"x" * 1000)

    assert b.send(MemberId("c"), b"y" * 5000)  # b allows it, c does not
    wait_until(lambda: c.stats().oversized == 1)
    b.send(MemberId("c"), b"small")
    assert inbox_c.get() == (MemberId("b"), b"small")


def test_oversized_client_frames_are_dropped_and_counted(harness: Harness) -> None:
    server, requests = harness.server(max_frame_bytes=1000)
    client, _ = harness.client()
    client.connect(server.address)
    client.send(b"z" * 3000)
    wait_until(lambda: server.stats().oversized == 1)
    client.send(b"fine")
    assert requests.get()[1] == b"fine"


def reject_bad(frame: bytes) -> None:
    if frame.startswith(b"bad"):
        raise ValueError("rejected by the validator")


def test_validator_rejects_are_dropped_and_counted(harness: Harness) -> None:
    a, _ = harness.peer("a")
    b, inbox_b = harness.peer("b", validator=reject_bad)
    server, requests = harness.server(validator=reject_bad)
    client, _ = harness.client()
    harness.link(a, b, inbox_b)
    a.send(MemberId("b"), b"bad frame")
    a.send(MemberId("b"), b"good frame")
    assert inbox_b.get() == (MemberId("a"), b"good frame")
    assert b.stats().decode_errors == 1

    client.connect(server.address)
    client.send(b"bad request")
    client.send(b"good request")
    assert requests.get()[1] == b"good request"
    assert server.stats().decode_errors == 1


def test_a_raising_handler_is_counted_and_the_transport_keeps_going(harness: Harness) -> None:
    a, _ = harness.peer("a")
    inbox_b = Inbox()
    inbox_b.raise_on = b"boom"
    b, _ = harness.peer("b", inbox=inbox_b)
    harness.link(a, b, inbox_b)
    a.send(MemberId("b"), b"boom")
    a.send(MemberId("b"), b"after")
    assert inbox_b.get() == (MemberId("a"), b"after")
    assert b.stats().handler_errors == 1


def test_handlers_may_send(harness: Harness) -> None:
    """An echo server answering from inside its handler (the transport's own thread)."""
    inbox = Inbox()
    holder: list[ClientTransport] = []

    def echo(routing_id: bytes, frame: bytes, admin: bool) -> None:
        holder[0].send(routing_id, frame[::-1])
        inbox.client(routing_id, frame, admin)

    if harness.kind == "zmq":
        from actors.transport import ZmqClientTransport

        server: ClientTransport = harness._keep(ZmqClientTransport(echo))
    else:
        from actors.transport import InMemoryClientTransport

        assert hasattr(harness, "hub")
        server = harness._keep(InMemoryClientTransport(harness.hub, echo))
    holder.append(server)
    client, replies = harness.client()
    client.connect(server.address)
    for i in range(50):
        client.send(b"ping%d" % i)
    assert [r[0] for r in replies.take(50)] == [(b"ping%d" % i)[::-1] for i in range(50)]


def test_stop_is_clean_idempotent_and_final(harness: Harness) -> None:
    a, _ = harness.peer("a")
    server, _ = harness.server()
    client, _ = harness.client()
    client.connect(server.address)
    for t in (a, server, client):
        t.start()  # idempotent
        t.stop()
        t.stop()
        with pytest.raises(TransportError):
            t.start()
    assert not a.send(MemberId("a"), b"after stop")
    assert not server.send(b"rid", b"after stop")
    assert not client.send(b"after stop")
    harness.close()
    assert transport_threads() == []


def test_stop_before_start_and_bind_conflicts(harness: Harness) -> None:
    a, _ = harness.peer("a")
    clash, _ = harness.peer("b", bind=a.address, start=False)
    with pytest.raises(TransportError):
        clash.start()
    clash.stop()  # harmless after a failed start
    never, _ = harness.peer("never", start=False)
    never.stop()
    with pytest.raises(TransportError):
        never.start()


def test_peers_added_before_start_are_used(harness: Harness) -> None:
    b, inbox_b = harness.peer("b")
    a, _ = harness.peer("a", start=False)
    a.add_peer(MemberId("b"), b.address)
    a.start()
    harness.link(a, b, inbox_b)
    a.send(MemberId("b"), b"configured early")
    assert inbox_b.get() == (MemberId("a"), b"configured early")


def test_a_restarted_peer_at_the_same_address_is_reached_again(harness: Harness) -> None:
    a, _ = harness.peer("a")
    b1, inbox_b1 = harness.peer("b")
    harness.link(a, b1, inbox_b1)
    b1.stop()
    b2, inbox_b2 = harness.peer("b", bind=b1.address)
    assert b2.address == b1.address
    # No add_peer: the old link reconnects by itself.
    probed = inbox_b2.probed
    deadline_hits = 0
    while not probed.is_set():
        deadline_hits += 1
        assert deadline_hits < 500, "link to the restarted peer did not come back"
        a.send(MemberId("b"), PROBE)
        probed.wait(0.02)
    a.send(MemberId("b"), b"welcome back")
    assert inbox_b2.get() == (MemberId("a"), b"welcome back")


def test_a_handler_may_stop_its_own_transport(harness: Harness) -> None:
    stopped = threading.Event()
    holder: list[PeerTransport] = []

    def stop_self(member: MemberId, frame: bytes) -> None:
        if frame == b"stop":
            holder[0].stop()
            stopped.set()

    a, _ = harness.peer("a")
    b, _ = harness.peer("b", handler=stop_self)
    holder.append(b)
    a.add_peer(MemberId("b"), b.address)
    deadline_hits = 0
    while not stopped.is_set():
        deadline_hits += 1
        assert deadline_hits < 500, "stop frame never arrived"
        a.send(MemberId("b"), b"stop")
        stopped.wait(0.02)
    assert not b.send(MemberId("a"), b"after stop")


def test_a_flow_controlled_stream_never_stalls(harness: Harness) -> None:
    """The sender keeps a bounded window in flight and waits for the receiver, over and
    over: the pattern that exposed a lost wake-up of the ZeroMQ I/O thread (it once went
    to sleep with frames still queued)."""
    total, window = 30_000, 500
    received = [0]
    cond = threading.Condition()
    probes = Inbox()

    def count(member: MemberId, frame: bytes) -> None:
        if frame == PROBE:
            probes.probed.set()
            return
        with cond:
            received[0] += 1
            cond.notify_all()

    a, _ = harness.peer("a")
    b, _ = harness.peer("b", handler=count)
    harness.link(a, b, probes)
    for i in range(total):
        floor = i - window
        with cond:
            assert cond.wait_for(lambda f=floor: received[0] >= f, 10), (
                f"stalled: {received[0]} of {i} frames arrived; {a.stats()}"
            )
        a.send(MemberId("b"), b"x" * 100)
    with cond:
        assert cond.wait_for(lambda: received[0] == total, 10)
