"""Where a node finds the other members, including those it learned at run time.

The Raft configuration names members by id only; a node reaches them through its
address book: the members of its config file, plus what ``LEARN_MEMBER`` and
``ADD_MEMBER`` told it since (:mod:`actors.admin`). With durable storage the learned
part is kept in ``<data_dir>/MEMBERS`` (JSON, replaced atomically), so a node
restarted with its original config file still reaches a member added after it was
written. Without it, a restarted leader could not replicate to that member, and the
cluster would have one member less than it counts on.

At start a learned address wins over the config file's for the same member (as etcd
uses the membership in its data directory, not its start flags, once it has one): it
is the later word, typically a member replaced at a new address; the difference is
logged. To undo one, learn the member again or delete the file. An unreadable
``MEMBERS`` file stops the node with an error naming it: starting without members the
node may need would be a silent loss of fault tolerance. Members removed later stay in
the book (the core never sends to non-members; a new ``LEARN_MEMBER`` replaces an
address). With in-memory storage the book lives in memory, like the rest of the
node's state.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

from actors.config import MemberAddress, endpoint_error
from actors.storage.fsutil import atomic_write
from protocol.ids import MemberId

__all__ = ["MEMBERS_FILE", "AddressBook", "AddressBookError"]

#: The learned addresses in a node's data directory.
MEMBERS_FILE = "MEMBERS"
_FORMAT = 1


class AddressBookError(ValueError):
    """The learned addresses cannot be read."""


class AddressBook:
    """A node's member addresses: configured ones, then learned ones (see the module
    docstring). Used from one thread at a time (the node's start, then consensus)."""

    def __init__(
        self,
        configured: Mapping[MemberId, MemberAddress],
        data_dir: Path | None,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
    ) -> None:
        self._path = data_dir / MEMBERS_FILE if data_dir is not None else None
        self._log = log or logging.getLogger(__name__)
        self._configured = dict(configured)
        self._learned = self._load()
        for member, address in configured.items():
            learned = self._learned.get(member)
            if learned is not None and learned != address:
                self._log.warning(
                    "member %s: using the address learned at run time (%s / %s, kept in "
                    "%s), not the config file's (%s / %s)",
                    member, learned.peer, learned.client, self._path, address.peer,
                    address.client,
                )  # fmt: skip

    def members(self) -> dict[MemberId, MemberAddress]:
        """Every member this node knows an address of (a learned address wins)."""
        return {**self._configured, **self._learned}

    def learned(self) -> dict[MemberId, MemberAddress]:
        """What was learned at run time (and is kept in ``MEMBERS``)."""
        return dict(self._learned)

    def learn(self, member: MemberId, address: MemberAddress) -> str | None:
        """Record ``member`` at ``address`` (in memory at once, then on disk); an error
        message if it could not be saved (the node still uses the address)."""
        if self._learned.get(member) == address:
            return None
        self._learned[member] = address
        if self._path is None:
            return None
        document = {
            "format": _FORMAT,
            "members": {
                m: {"peer": a.peer, "client": a.client} for m, a in sorted(self._learned.items())
            },
        }
        try:
            atomic_write(self._path, (json.dumps(document, indent=1) + "\n").encode())
        except OSError as exc:
            return f"could not save the address of {member} in {self._path}: {exc}"
        return None

    def _load(self) -> dict[MemberId, MemberAddress]:
        if self._path is None:
            return {}
        try:
            text = self._path.read_text()
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise AddressBookError(f"cannot read {self._path}: {exc}") from None
        try:
            return _parse(json.loads(text))
        except (ValueError, TypeError) as exc:
            raise AddressBookError(
                f"{self._path} is not a member address file ({exc}); repair or delete it "
                "(then list the members it named in the config file, or learn them again)"
            ) from None


def _parse(document: object) -> dict[MemberId, MemberAddress]:
    if not isinstance(document, dict) or document.get("format") != _FORMAT:
        raise ValueError(f"expected a JSON object with format {_FORMAT}")
    members = document.get("members")
    if not isinstance(members, dict):
        raise ValueError("'members' must be an object")
    book: dict[MemberId, MemberAddress] = {}
    for member, entry in members.items():
        if not member or not isinstance(entry, dict):
            raise ValueError(f"bad entry for member {member!r}")
        peer, client = entry.get("peer"), entry.get("client")
        if not isinstance(peer, str) or not isinstance(client, str):
            raise ValueError(f"member {member!r} needs a peer and a client address")
        error = endpoint_error(peer, client)
        if error is not None:
            raise ValueError(f"member {member!r}: {error}")
        book[MemberId(member)] = MemberAddress(peer, client)
    return book
