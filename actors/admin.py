"""Operator requests inside a node: leadership transfer and membership changes.

The registry (for an :class:`~protocol.admin.AdminRequest` from the client port) or
:class:`~actors.node.Node` (for an in-process call) tells the consensus actor an
:class:`AdminCommand` with a ``reply`` callable; nobody blocks on the actor. The
consensus actor keeps an :class:`AdminDesk`, which starts the operation on the core and
answers once it is finished, failed or timed out: one operation at a time, a second one
meanwhile gets a retryable error.

Membership: ``ADD_MEMBER`` proposes the member as a learner, then retries ``PROMOTE`` on
every tick (the core refuses while the learner is catching up) and answers once the
member is a voter in a committed configuration; an unreachable member never catches
up, so the request times out (the learner stays, harmless: learners do not count for
quorum; a ``REMOVE_MEMBER`` clears it). ``REMOVE_MEMBER`` of the leader itself first
transfers leadership and answers with a retryable error naming the new leader, where
the request is repeated.

Addresses: the core's configuration holds member ids only. Each node keeps an address
book (its configured members, plus what ``LEARN_MEMBER`` / ``ADD_MEMBER`` told it);
operators' tools send ``LEARN_MEMBER`` to every member before ``ADD_MEMBER``. With
durable storage what a node learns is kept in its data directory
(:mod:`actors.address_book`); a ``LEARN_MEMBER`` that could not be saved is answered
with that error (the address is used until the node restarts).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from actors.config import endpoint_error
from protocol.admin import AdminOp, AdminRequest, AdminResponse
from protocol.ids import MemberId
from protocol.raft import RaftCore
from protocol.raft.types import ChangeKind, MembershipChange, Proposed, Refused, Role

__all__ = ["AdminCommand", "AdminDesk", "Reply"]

Reply = Callable[[AdminResponse], None]
#: Records a member's (peer, client) addresses in the node's address book; returns why
#: they could not be kept beyond a restart, if they could not.
Learn = Callable[[MemberId, str, str], str | None]


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
    #: "transfer", "learner" (waiting to promote), "promote" or "remove".
    phase: str = "transfer"


class AdminDesk:
    """The admin operation in flight on one consensus actor (see the module docstring).

    A transfer is done when the core is no longer leader (the answer names the new
    leader's client address); the core itself gives up after an election timeout, and
    the desk answers with a retryable error after ``timeout_ticks``.
    """

    def __init__(
        self,
        core: RaftCore,
        client_addresses: Mapping[MemberId, str],
        timeout_ticks: int,
        *,
        learn: Learn | None = None,
        change_timeout_ticks: int | None = None,
    ) -> None:
        self.core = core
        self.client_addresses = client_addresses
        self.timeout_ticks = timeout_ticks
        self.change_timeout_ticks = change_timeout_ticks or 10 * timeout_ticks
        self.learn = learn
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
        core = self.core
        if request.op in (AdminOp.ADD_MEMBER, AdminOp.LEARN_MEMBER):
            if not request.member or not request.peer_address or not request.client_address:
                self._answer(command, False, "a member id, peer and client address are needed")
                return
            error = endpoint_error(request.peer_address, request.client_address)
            if error is not None:
                self._answer(command, False, error)
                return
            unsaved = None
            if self.learn is not None:
                unsaved = self.learn(request.member, request.peer_address, request.client_address)
            if request.op == AdminOp.LEARN_MEMBER:
                self._answer(command, unsaved is None, unsaved or "")
                return
        if core.role != Role.LEADER:
            self._answer(command, False, "not the leader", retryable=core.leader is None)
            return
        if request.op == AdminOp.ADD_MEMBER:
            self._add(command)
        elif request.op == AdminOp.REMOVE_MEMBER:
            self._remove(command)
        else:
            self._transfer(command)

    def _add(self, command: AdminCommand) -> None:
        member = command.request.member
        assert member is not None
        config = self.core.config
        if member in config.voters:
            self._answer(command, True)  # already done (e.g. a repeated request)
            return
        if member not in config.learners:
            result = self.core.change_membership(MembershipChange(ChangeKind.ADD_LEARNER, member))
            if isinstance(result, Refused):
                self._refused(command, result)
                return
        self.pending = _Pending(command, member, self.change_timeout_ticks, "learner")

    def _remove(self, command: AdminCommand) -> None:
        member = command.request.member
        core = self.core
        if member is None or member not in core.config.members:
            self._answer(command, True)  # not (or no longer) a member
            return
        if member == core.id and len(core.config.voters) > 1 and core.id in core.config.voters:
            self._transfer(command)  # hand leadership away first; the caller repeats
            return
        result = core.change_membership(MembershipChange(ChangeKind.REMOVE, member))
        if isinstance(result, Refused):
            self._refused(command, result)
            return
        self.pending = _Pending(command, member, self.change_timeout_ticks, "remove")

    def _transfer(self, command: AdminCommand) -> None:
        request = command.request
        core = self.core
        if request.op == AdminOp.REMOVE_MEMBER:
            target = self._best_voter()
        else:
            target = request.member if request.member is not None else self._best_voter()
        if target is None:
            self._answer(command, False, "there is no other voter to transfer to")
            return
        if target == core.id:
            self._answer(command, True)  # already leads (e.g. a repeated request)
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
        if pending.phase != "transfer":
            self._change_tick(pending)
            if self.pending is None:
                return
        pending.ticks_left -= 1
        if pending.ticks_left <= 0:
            self.pending = None
            what = {
                "transfer": f"leadership did not move to {pending.target} in time",
                "learner": f"{pending.target} has not caught up yet (it stays a learner)",
            }.get(pending.phase, "the change did not commit in time")
            self._answer(pending.command, False, what, retryable=True)

    def _change_tick(self, pending: _Pending) -> None:
        """Move a membership change along: promote a learner, notice a commit."""
        core = self.core
        committed = core.config_index <= core.commit_index
        config = core.config
        if pending.phase == "learner" and committed and pending.target in config.learners:
            result = core.change_membership(MembershipChange(ChangeKind.PROMOTE, pending.target))
            if isinstance(result, Proposed):
                pending.phase = "promote"
            elif not result.retryable:
                self.pending = None
                self._refused(pending.command, result)
            return
        done = (pending.phase == "promote" and pending.target in config.voters) or (
            pending.phase == "remove" and pending.target not in config.members
        )
        if committed and done:
            self.pending = None
            self._answer(pending.command, True)

    def on_leadership(self) -> None:
        """The core's role or leader changed: a transfer in flight may be done."""
        pending = self.pending
        core = self.core
        if pending is None or core.role == Role.LEADER:
            return  # still leading
        if pending.phase != "transfer":
            # Lost leadership mid-change (or stepped down after removing itself).
            self.pending = None
            if pending.phase == "remove" and pending.target == core.id:
                self._answer(pending.command, True)
            else:
                why = "leadership changed during the change; ask again"
                self._answer(pending.command, False, why, retryable=True)
            return
        if core.leader is None:
            return  # the new leader is not known here yet
        self.pending = None
        if pending.command.request.op == AdminOp.REMOVE_MEMBER:
            why = f"leadership moved to {core.leader} first; repeat the removal there"
            self._answer(pending.command, False, why, retryable=True)
        elif core.leader == pending.target:
            self._answer(pending.command, True)
        else:
            self._answer(
                pending.command, False, f"leadership moved to {core.leader} instead", retryable=True
            )
