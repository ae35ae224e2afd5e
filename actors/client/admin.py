"""``admin_request``, ``add_member``, ``remove_member``: operate a cluster by address.

Sent without a session to any member's client address; a follower answers with the
leader's address, which is followed, and retryable refusals (no leader yet, another
change in flight) are repeated until ``timeout``.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence

from actors.client.host import ConnectionFactory
from actors.client.raft_client import client_factory
from actors.transport import CurveClient
from protocol.admin import AdminOp, AdminRequest, AdminResponse
from protocol.codec import ProtocolError, decode, encode
from protocol.ids import MemberId

__all__ = ["AdminError", "add_member", "admin_request", "remove_member"]

_correlation = itertools.count(1)
#: Pause before repeating a retryable refusal (s).
_RETRY_S = 0.1
#: How long one node may take to answer one request (a transfer takes up to about an
#: election timeout; a membership change until it is committed).
_ATTEMPT_S = 5.0


class AdminError(RuntimeError):
    """The cluster refused the request (``response`` says why), or nobody answered."""

    def __init__(self, message: str, response: AdminResponse | None = None) -> None:
        super().__init__(message)
        self.response = response


def _ask_once(
    address: str, request: AdminRequest, timeout: float, factory: ConnectionFactory
) -> AdminResponse | None:
    """One request on a fresh connection (sent once: a repeat would be a second
    operation); the answer, or None if none came within ``timeout``."""
    answered = threading.Event()
    answer: list[AdminResponse] = []

    def on_frame(frame: bytes) -> None:
        try:
            msg: AdminResponse = decode(frame, (AdminResponse,))
        except ProtocolError:
            return
        if msg.correlation_id == request.correlation_id and not answered.is_set():
            answer.append(msg)
            answered.set()

    conn = factory(on_frame)
    try:
        conn.start()
        conn.connect(address)
        conn.send(encode(request))
        return answer[0] if answered.wait(timeout) else None
    finally:
        conn.stop()


def admin_request(
    addresses: Sequence[str],
    op: AdminOp,
    member: MemberId | None = None,
    *,
    peer_address: str = "",
    client_address: str = "",
    timeout: float = 30.0,
    connection_factory: ConnectionFactory | None = None,
    curve: CurveClient | None = None,
) -> AdminResponse:
    """Carry out ``op`` at the cluster's leader, found from ``addresses`` (client
    addresses of members); returns the successful :class:`AdminResponse` or raises
    :class:`AdminError` (refused for good, or still refused/unanswered at ``timeout``).
    ``curve``: connect with CURVE (with an admin key where the cluster checks them)."""
    if not addresses:
        raise AdminError("no member address given")
    factory = client_factory(connection_factory, curve)
    deadline = time.monotonic() + timeout
    candidates = list(addresses)
    turn = 0
    address = candidates[0]
    last: AdminResponse | None = None
    while (remaining := deadline - time.monotonic()) > 0:
        request = AdminRequest(next(_correlation), op, member, peer_address, client_address)
        response = _ask_once(address, request, min(remaining, _ATTEMPT_S), factory)
        if response is not None and response.ok:
            return response
        if response is not None:
            last = response
            hint = response.leader_hint
            if hint and hint != address:
                address = hint  # follow the leader at once
                continue
            if not response.retryable:
                raise AdminError(f"{op.name.lower()} refused: {response.error}", response)
            if hint == address:  # the leader says: not now
                time.sleep(min(_RETRY_S, max(0.0, deadline - time.monotonic())))
                continue
        # No answer, no leader known, or a retryable refusal: try the next member.
        turn += 1
        address = candidates[turn % len(candidates)]
        time.sleep(min(_RETRY_S, max(0.0, deadline - time.monotonic())))
    why = last.error if last is not None else "no answer"
    raise AdminError(f"{op.name.lower()} did not succeed within {timeout:g}s: {why}", last)


def add_member(
    addresses: Sequence[str],
    member: MemberId,
    peer_address: str,
    client_address: str,
    *,
    timeout: float = 60.0,
    connection_factory: ConnectionFactory | None = None,
    curve: CurveClient | None = None,
) -> AdminResponse:
    """Teach every member at ``addresses`` the new member's addresses
    (``LEARN_MEMBER``, best effort: a member that misses it cannot reach the new one
    should it lead later), then add it at the leader (learner, promoted once caught up).
    The new node must be running (started with ``join``) for the change to complete."""
    factory = client_factory(connection_factory, curve)
    for address in dict.fromkeys(addresses):
        request = AdminRequest(
            next(_correlation), AdminOp.LEARN_MEMBER, member, peer_address, client_address
        )
        _ask_once(address, request, min(2.0, timeout), factory)
    return admin_request(
        addresses,
        AdminOp.ADD_MEMBER,
        member,
        peer_address=peer_address,
        client_address=client_address,
        timeout=timeout,
        connection_factory=factory,
    )


def remove_member(
    addresses: Sequence[str],
    member: MemberId,
    *,
    timeout: float = 60.0,
    connection_factory: ConnectionFactory | None = None,
    curve: CurveClient | None = None,
) -> AdminResponse:
    """Remove ``member`` at the leader (a leader removing itself hands leadership away
    first; the request follows it to the new leader)."""
    return admin_request(
        addresses,
        AdminOp.REMOVE_MEMBER,
        member,
        timeout=timeout,
        connection_factory=connection_factory,
        curve=curve,
    )
