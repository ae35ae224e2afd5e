"""Operator status messages: round trip and pinned layout."""

from __future__ import annotations

import msgpack

from protocol import NodeStatus, StatusRequest, StatusResponse, decode, encode
from protocol.ids import MemberId

STATUS = NodeStatus(
    member_id=MemberId("n1"), role="leader", term=3, leader=MemberId("n1"), commit_index=10,
    applied_index=9, last_log_index=10, snapshot_index=0, voters=(MemberId("n1"),),
    learners=(), sessions=2, pending_server_requests=1, client_address="tcp://127.0.0.1:2",
    peer_address="tcp://127.0.0.1:1", pid=42, uptime_ms=1000,
)  # fmt: skip


def test_status_round_trip_and_layout() -> None:
    frame = encode(StatusResponse(7, STATUS))
    assert decode(frame) == StatusResponse(7, STATUS)
    assert msgpack.unpackb(encode(StatusRequest(5))) == [1, 251, 5]
    assert msgpack.unpackb(frame)[:3] == [1, 252, 7]
