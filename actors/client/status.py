"""``fetch_status``: ask one node how it is, without a session (for operators, CLIs)."""

from __future__ import annotations

import itertools
import threading
import time

from actors.client.host import ConnectionFactory
from actors.client.raft_client import client_factory
from actors.transport import CurveClient
from protocol.admin import NodeStatus, StatusRequest, StatusResponse
from protocol.codec import ProtocolError, decode, encode

__all__ = ["fetch_status"]

_correlation = itertools.count(1)
#: The request is sent again this often until answered (a frame may be lost, e.g. an
#: in-memory frame sent before the node was bound).
_RESEND_S = 0.2


def fetch_status(
    address: str,
    *,
    timeout: float = 2.0,
    connection_factory: ConnectionFactory | None = None,
    curve: CurveClient | None = None,
) -> NodeStatus:
    """One ``StatusRequest`` to the node at ``address`` (its client address) on a fresh
    connection; returns its :class:`~protocol.admin.NodeStatus`, or raises
    ``TimeoutError`` after ``timeout`` seconds. Any node answers, whatever its role.
    Other frames on the connection are ignored. ``curve``: connect with CURVE (a node
    that refuses the key never answers: ``TimeoutError``)."""
    cid = next(_correlation)
    answered = threading.Event()
    answer: list[NodeStatus] = []

    def on_frame(frame: bytes) -> None:
        try:
            msg: StatusResponse = decode(frame, (StatusResponse,))
        except ProtocolError:
            return  # not for us (or garbage)
        if msg.correlation_id == cid and not answered.is_set():
            answer.append(msg.status)
            answered.set()

    conn = client_factory(connection_factory, curve)(on_frame)
    try:
        conn.start()
        conn.connect(address)
        request = encode(StatusRequest(cid))
        remaining = timeout
        deadline = time.monotonic() + timeout
        while remaining > 0:
            conn.send(request)
            if answered.wait(min(remaining, _RESEND_S)):
                return answer[0]
            remaining = deadline - time.monotonic()
    finally:
        conn.stop()
    raise TimeoutError(f"no status from {address} within {timeout}s")
