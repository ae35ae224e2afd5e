"""Operator requests inside a node: leadership transfer (and the bookkeeping around it).

The registry (for an :class:`~protocol.admin.AdminRequest` from the client port) or
:class:`~actors.node.Node` (for an in-process call) tells the consensus actor an
:class:`AdminCommand` with a ``reply`` callable; nobody blocks on the actor. The
consensus actor keeps an :class:`AdminDesk`, which starts the operation on the core and
answers once it is finished, failed or timed out: one operation at a time, a second one
meanwhile gets a retryable error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from protocol.admin import AdminOp, AdminRequest, AdminResponse
from protocol.ids import MemberId
from protocol.raft import RaftCore
from protocol.raft.types import Refused, Role

__all__ = ["AdminCommand", "AdminDesk", "Reply"]

Reply = Callable[[AdminResponse], None]


@dataclass(frozen=True, slots=True)
class AdminCommand:
    """An operator request for the consensus actor; ``reply`` is called exactly once,
    from the consensus actor's thread (it must not block)."""

    request: AdminRequest
    reply: Reply


@dataclass(slots=True)
class _Pending:
    command: AdminCommand
    target: MemberId
    ticks_left: int


class AdminDesk:
    """The admin operation in flight on one consensus actor (see the module docstring).

    A transfer is done when the core is no longer leader (the answer names the new
    leader's client address); the core itself gives up after an election timeout, and
    the desk answers with a retryable error after ``timeout_ticks``.
    """

    def __init__(
        self, core: RaftCore, client_addresses: Mapping[MemberId, str], timeout_ticks: int
    ) -> None:
        self.core = core
        self.client_addresses = client_addresses
        self.timeout_ticks = timeout_ticks
        self.pending: _Pending | None = None

    def _hint(self, leader: MemberId | None) -> str | None:
        return self.client_addresses.get(leader) if leader is not None else None

    def _answer(
        self, command: AdminCommand, ok: bool, error: str = "", *, retryable: bool = False
    ) -> None:
        leader = self.core.leader
        command.reply(
            AdminResponse(command.request.correlation_id, ok, error, retryable, self._hint(leader))
        )

    def _refused(self, command: AdminCommand, refused: Refused) -> None:
        what = refused.reason.name.lower().replace("_", " ")
        error = f"{what}: {refused.detail}" if refused.detail else what
        # No leader known yet: worth asking again shortly.
        retryable = refused.retryable or refused.leader is None
        command.reply(
            AdminResponse(
                command.request.correlation_id,
                False,
                error,
                retryable,
                self._hint(refused.leader),
            )
        )

    def submit(self, command: AdminCommand) -> None:
        """Start ``command`` (or refuse it at once)."""
        request = command.request
        if self.pending is not None:
            self._answer(command, False, "another admin operation is in flight", retryable=True)
            return
        if request.op != AdminOp.TRANSFER_LEADER:
            self._answer(command, False, f"{request.op.name.lower()} is not supported")
            return
        core = self.core
        if core.role != Role.LEADER:
            self._answer(command, False, "not the leader", retryable=core.leader is None)
            return
        target = request.member if request.member is not None else self._best_voter()
        if target is None:
            self._answer(command, False, "there is no other voter to transfer to")
            return
        refused = core.transfer_leader(target)
        if refused is not None:
            self._refused(command, refused)
            return
        self.pending = _Pending(command, target, self.timeout_ticks)

    def _best_voter(self) -> MemberId | None:
        """The other voter whose log matches the leader's furthest."""
        core = self.core
        others = [m for m in core.config.voters if m != core.id]
        if not others:
            return None
        return max(others, key=lambda m: (core.progress[m].match, m))

    def on_tick(self) -> None:
        """Count down the operation in flight; answer it when it has timed out."""
        pending = self.pending
        if pending is None:
            return
        self.on_leadership()
        if self.pending is None:
            return
        pending.ticks_left -= 1
        if pending.ticks_left <= 0:
            self.pending = None
            self._answer(
                pending.command,
                False,
                f"leadership did not move to {pending.target} in time",
                retryable=True,
            )

    def on_leadership(self) -> None:
        """The core's role or leader changed: a transfer in flight may be done."""
        pending = self.pending
        core = self.core
        if pending is None or core.role == Role.LEADER or core.leader is None:
            return  # still leading, or the new leader is not known here yet
        self.pending = None
        if core.leader == pending.target:
            self._answer(pending.command, True)
        else:
            self._answer(
                pending.command, False, f"leadership moved to {core.leader} instead", retryable=True
            )
