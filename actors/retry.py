"""``RetrySchedulerActor``: resends server requests that clients have not acknowledged.

On the leader only, every ``interval_ms`` it asks the session actor a dirty question,
"is any pending server request last sent before now - age?", and only when the answer
is yes proposes ``GetRequestsForRetry(now - age)`` through Raft. The dirty read is a
hint that keeps idle clusters from writing to the log; the committed command's result
(which the session actor turns into ``SendServerRequest``\\ s) is the authority on what
is resent, so every replica agrees on each request's ``last_sent_at``.
"""

from __future__ import annotations

from typing import Any

from actors.base import NodeActor, Wiring, member_logger
from actors.messages import ProposeRetry, RetryCheck, RetryHint, Tick
from protocol.actions import LeadershipChanged, NodeRole
from protocol.ids import MemberId

__all__ = ["RetrySchedulerActor"]


class RetrySchedulerActor(NodeActor):
    def __init__(
        self, member_id: MemberId, wiring: Wiring, *, interval_ms: int, age_ms: int
    ) -> None:
        super().__init__()
        self.wiring = wiring
        self.interval_ms = interval_ms
        self.age_ms = age_ms
        self.log = member_logger(__name__, member_id)
        self.is_leader = False
        self._next_check = 0
        self._asking = False
        self.proposed = 0

    def handle(self, message: Any) -> None:
        if isinstance(message, LeadershipChanged):
            self.is_leader = message.role == NodeRole.LEADER
            self._asking = False
        elif isinstance(message, Tick):
            if self.is_leader and not self._asking and message.now_ms >= self._next_check:
                self._next_check = message.now_ms + self.interval_ms
                self._asking = True
                assert self.wiring.session is not None
                self.wiring.session.tell(RetryCheck(message.now_ms - self.age_ms))
        elif isinstance(message, RetryHint):
            self._asking = False
            if self.is_leader and message.pending:
                self.proposed += 1
                assert self.wiring.consensus is not None
                self.wiring.consensus.tell(ProposeRetry(message.before_ms))
