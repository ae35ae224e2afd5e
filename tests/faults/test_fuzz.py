"""Fuzzing both ports of a real 3-process cluster while a kv workload runs.

Hostile frames -- hypothesis-generated (valid-looking msgpack of wrong shapes, frames
with a wrong protocol version, truncated real messages, arbitrary msgpack values,
random bytes) and seeded random ones (random bytes, oversized frames, non-ZMTP garbage
straight onto the TCP ports) -- go to every member's client port (DEALERs) and peer port
(PUSH sockets posing as members or strangers), while :class:`KvClients` run get/set/cas
on three keys. Afterwards every node must still run, the workload must have made
progress without errors, and its history must be linearizable.

The fuzz frames never carry a well-formed kv command (payloads are random bytes) nor a
well-formed Raft message (Raft tags get the wrong number of fields): without CURVE a
forged Raft message from a "member" is not garbage but an (unauthenticated) attack,
which is what CURVE is for (``tests/security``).
"""

from __future__ import annotations

import dataclasses
import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from actors.cluster import alive, create_cluster
from actors.config import NodeConfig
from protocol.codec import encode, registered_messages
from protocol.ids import MemberId, RequestId, SessionId
from protocol.raft.messages import Heartbeat, RequestVote
from protocol.wire import ClientRequest, ContinueSession, CreateSession, KeepAlive, Query
from tests.checker.linearizability import UNKNOWN, Operation, check_history
from tests.cluster_procs import ProcessCluster
from tests.conftest import LONG
from tests.faults.harness import KvClients, operation_to_json, save_failure
from tests.faults.history import check_kv_history, resolve_unknowns

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800 if LONG else 180)]

#: The nodes' frame limit (the NodeConfig default): oversized frames are one byte more.
MAX_FRAME = NodeConfig.__dataclass_fields__["max_frame_bytes"].default
PROTOCOL_VERSION = 1

_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=16)
    | st.binary(max_size=32),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)
_TAGS = sorted(registered_messages())


def _arity(tag: int) -> int:
    return len(dataclasses.fields(registered_messages()[tag]))


@st.composite
def _wrong_shape(draw: st.DrawFn) -> bytes:
    """A registered tag with the wrong number of fields (never a decodable message)."""
    tag = draw(st.sampled_from(_TAGS))
    n = draw(st.integers(0, 8).filter(lambda k: k != _arity(tag)))
    fields = draw(st.lists(_values, min_size=n, max_size=n))
    return bytes(msgpack.packb([PROTOCOL_VERSION, tag, *fields], use_bin_type=True))


_SAMPLES = [
    encode(CreateSession({"k": "v"}, b"nonce")),
    encode(ContinueSession(SessionId("nope"), b"n")),
    encode(KeepAlive(SessionId("nope"), 1)),
    encode(ClientRequest(RequestId(1), RequestId(1), b"\xc1junk")),
    encode(Query(1, b"\xc1junk")),
    encode(RequestVote(5, MemberId("n1"), MemberId("n2"), 3, 2)),
    encode(Heartbeat(5, MemberId("n1"), MemberId("n2"), 3, 0)),
]


def _truncated() -> st.SearchStrategy[bytes]:
    return st.sampled_from([s for s in _SAMPLES if len(s) > 1]).flatmap(
        lambda s: st.integers(1, len(s) - 1).map(lambda cut: s[:cut])
    )


hostile_frames = st.one_of(
    _wrong_shape(),
    st.builds(
        lambda v, tag, rest: bytes(msgpack.packb([v, tag, *rest], use_bin_type=True)),
        st.integers(2, 300),
        st.sampled_from(_TAGS),
        st.lists(_values, max_size=4),
    ),
    # Any msgpack value but one that starts like a message of this protocol version.
    _values.filter(lambda v: not (isinstance(v, list) and v[:1] == [PROTOCOL_VERSION])).map(
        lambda v: bytes(msgpack.packb(v, use_bin_type=True))
    ),
    _truncated(),
    st.binary(min_size=1, max_size=256),
)
#: (frame, "client" or "peer", member index, claimed sender for the peer port)
targets = st.tuples(
    hostile_frames,
    st.sampled_from(["client", "peer"]),
    st.integers(0, 2),
    st.sampled_from(["n1", "n2", "n3", "fuzz"]),
)


class Fuzzer:
    """Sockets at every member's ports; counts what it threw."""

    def __init__(self, cluster: ProcessCluster) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.client_addresses = [m.client for m in cluster.manifest.members]
        self.peer_addresses = [m.peer for m in cluster.manifest.members]
        self.sent = 0
        self.dealers: list[zmq.Socket[Any]] = []
        self.pushes: list[zmq.Socket[Any]] = []
        self.fresh_dealers()
        for address in self.peer_addresses:
            push = self.ctx.socket(zmq.PUSH)
            push.setsockopt(zmq.LINGER, 0)
            push.setsockopt(zmq.SNDHWM, 1000)
            push.connect(address)
            self.pushes.append(push)

    def fresh_dealers(self) -> None:
        """New client connections (the nodes drop a connection after a bad frame)."""
        for dealer in self.dealers:
            dealer.close(0)
        self.dealers = []
        for address in self.client_addresses:
            dealer = self.ctx.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.setsockopt(zmq.SNDHWM, 1000)
            dealer.connect(address)
            self.dealers.append(dealer)
        for dealer in self.dealers:  # drain (and so ignore) whatever came back
            while dealer.poll(0):
                dealer.recv_multipart()

    def throw(self, frame: bytes, port: str, member: int, sender: str) -> None:
        try:
            if port == "client":
                self.dealers[member].send(frame, zmq.NOBLOCK)
            else:
                self.pushes[member].send_multipart([sender.encode(), frame], zmq.NOBLOCK)
            self.sent += 1
        except zmq.Again:
            pass  # not connected yet or queue full: nothing to count

    def random_round(self, rng: random.Random) -> None:
        """Random bytes, odd part counts, an oversized frame and raw TCP garbage."""
        for _ in range(20):
            member = rng.randrange(3)
            junk = rng.randbytes(rng.randint(1, 512))
            self.throw(junk, rng.choice(["client", "peer"]), member, rng.choice(["n1", "x"]))
        with_parts = [rng.randbytes(8) for _ in range(rng.choice([1, 3, 4]))]
        try:
            self.pushes[rng.randrange(3)].send_multipart(with_parts, zmq.NOBLOCK)
            self.dealers[rng.randrange(3)].send_multipart([b"a", b"b"], zmq.NOBLOCK)
        except zmq.Again:
            pass
        big = b"\x00" * (MAX_FRAME + 1)
        self.throw(big, rng.choice(["client", "peer"]), rng.randrange(3), "n1")
        address = rng.choice(self.client_addresses + self.peer_addresses)
        host, port = address.removeprefix("tcp://").rsplit(":", 1)
        try:
            with socket.create_connection((host, int(port)), timeout=1.0) as raw:
                raw.sendall(rng.randbytes(rng.randint(1, 4096)))
            self.sent += 1
        except OSError:
            pass

    def close(self) -> None:
        for s in [*self.dealers, *self.pushes]:
            s.close(0)
        self.ctx.term()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ProcessCluster]:
    directory, manifest = create_cluster(
        tmp_path / "cluster", nodes=3, app="kvstore", storage="durable"
    )
    made = ProcessCluster(directory, manifest)
    try:
        for member in made.members():
            made.start(member)
        made.leader()
        yield made
    finally:
        made.kill_all()


def fuzz_run(cluster: ProcessCluster, run_seed: int, seconds: float, clients: int = 4) -> None:
    workload = KvClients(cluster.addresses, clients, ["a", "b", "c"], run_seed, op_timeout=4.0)
    fuzzer = Fuzzer(cluster)
    rng = random.Random(run_seed)
    rounds = 0
    try:
        workload.start()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:

            @seed(run_seed * 1000 + rounds)
            @settings(
                max_examples=25,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(st.lists(targets, min_size=1, max_size=10))
            def throw(batch: list[tuple[bytes, str, int, str]]) -> None:
                for frame, port, member, sender in batch:
                    fuzzer.throw(frame, port, member, sender)

            throw()
            fuzzer.random_round(rng)
            fuzzer.fresh_dealers()
            rounds += 1
    finally:
        workload.stop()
        fuzzer.close()
    history = workload.history()
    counts = workload.counts()
    verdict = check_kv_history(history)
    dead = [m for m in cluster.members() if not alive(cluster.pid(m))]
    problems = []
    if dead:
        problems.append(f"nodes died: {dead}")
    if workload.errors:
        problems.append(f"workload errors: {workload.errors!r}")
    if not verdict.ok:
        problems.append(f"not linearizable (or undecided) on key {verdict.key!r}")
    if min(counts.get(k, 0) for k in ("get_ok", "set_ok", "cas_ok")) == 0:
        problems.append(f"no progress of some kind: {counts}")
    if fuzzer.sent < 100 * rounds:
        problems.append(f"only {fuzzer.sent} hostile frames in {rounds} rounds")
    if verdict.ok and not _catches_a_bad_read(history):
        problems.append("the checker accepted this history with a read of a never-written value")
    if problems:
        report = {
            "workload": "kv+fuzz",
            "seed": run_seed,
            "seconds": seconds,
            "counts": counts,
            "fuzz_frames": fuzzer.sent,
            "history": [operation_to_json(op) for op in sorted(history, key=lambda o: o.call)],
            "problems": problems,
        }
        path = save_failure(f"fuzz-seed{run_seed}", report, cluster)
        raise AssertionError(f"{'; '.join(problems)}; saved to {path}")
    print(f"fuzz seed {run_seed}: {fuzzer.sent} hostile frames, {len(history)} ops {counts}")


def _catches_a_bad_read(history: list[Operation]) -> bool:
    """The check is not vacuous: one read changed to a never-written value must fail."""
    reads = [op for op in history if op.kind == "get" and op.output is not UNKNOWN]
    if not reads:
        return True
    bad = max(reads, key=lambda op: op.call)
    tampered = [
        dataclasses.replace(op, output="never-written") if op is bad else op for op in history
    ]
    return not check_history(resolve_unknowns(tampered)).ok


def test_fuzzing_both_ports_under_a_kv_workload_keeps_it_linearizable(
    cluster: ProcessCluster,
) -> None:
    fuzz_run(cluster, run_seed=11, seconds=10.0)


@pytest.mark.long
@pytest.mark.parametrize("run_seed", [21, 22, 23])
def test_fuzzing_long(cluster: ProcessCluster, run_seed: int) -> None:
    fuzz_run(cluster, run_seed, seconds=60.0, clients=6)
