"""Operator status messages: round trip and pinned layout."""

from __future__ import annotations

import dataclasses

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
    contact = ((MemberId("n2"), 12), (MemberId("n3"), -1))
    leader = StatusResponse(8, dataclasses.replace(STATUS, last_contact_ms=contact))
    assert decode(encode(leader)) == leader
    assert msgpack.unpackb(encode(leader))[3][-1] == [["n2", 12], ["n3", -1]]


def test_admin_round_trip_and_layout() -> None:
    from protocol import AdminOp, AdminRequest, AdminResponse

    request = AdminRequest(3, AdminOp.ADD_MEMBER, MemberId("n4"), "tcp://a:1", "tcp://a:2")
    assert decode(encode(request)) == request
    assert msgpack.unpackb(encode(request)) == [1, 253, 3, 2, "n4", "tcp://a:1", "tcp://a:2"]
    transfer = AdminRequest(4, AdminOp.TRANSFER_LEADER, None)
    assert decode(encode(transfer)) == transfer
    response = AdminResponse(3, False, "busy", True, "tcp://b:2")
    assert decode(encode(response)) == response
    assert msgpack.unpackb(encode(response)) == [1, 254, 3, False, "busy", True, "tcp://b:2"]
