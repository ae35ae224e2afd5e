"""What a node does once it learns it was removed from the cluster, and remembers.

The leader never sends a removed member the entry that removes it; it answers the
member's next message with a :class:`~protocol.raft.messages.RemovedNotice`
(a leader that removed itself knows on its own). The Raft core then stops taking part
(no elections, no votes, role ``removed``), and the node:

* logs it once, clearly;
* writes ``<data_dir>/REMOVED`` (durable storage), so that a restart with the old data
  directory -- whose configuration still names it a voter -- is refused with a clear
  error instead of campaigning with a stale configuration. To add the member again,
  start it with an empty data directory (``node --join``);
* sets :attr:`RemovalFlag.event`, which ``raft-actors node`` waits on to exit.

Should a leader replicate to the member again while it still runs (it was added back
under the same id before its process stopped, or the notice was late), the core turns
follower again and the node clears the mark.
"""

from __future__ import annotations

import threading
from pathlib import Path

from actors.storage.fsutil import atomic_write

__all__ = ["REMOVED_FILE", "RemovalFlag", "removed_marker"]

#: The marker file in a removed member's data directory.
REMOVED_FILE = "REMOVED"


def removed_marker(data_dir: Path | None) -> str | None:
    """The marker's text if ``data_dir`` belongs to a removed member, else None."""
    if data_dir is None:
        return None
    path = data_dir / REMOVED_FILE
    try:
        return path.read_text(errors="replace").strip() or "removed"
    except FileNotFoundError:
        return None


class RemovalFlag:
    """Set once when the node learns it was removed; persists the fact if it can."""

    def __init__(self, member: str, data_dir: Path | None) -> None:
        self.member = member
        self.data_dir = data_dir
        self.event = threading.Event()
        self.error: str | None = None

    @property
    def is_set(self) -> bool:
        return self.event.is_set()

    def set(self, term: int) -> None:
        """Record the removal (learnt in ``term``); idempotent."""
        if self.event.is_set():
            return
        if self.data_dir is not None:
            text = (
                f"{self.member} was removed from the cluster (learnt in term {term}); "
                "start it with an empty data directory to add it again\n"
            )
            try:
                atomic_write(self.data_dir / REMOVED_FILE, text.encode())
            except OSError as exc:
                self.error = f"could not record the removal in {self.data_dir}: {exc}"
        self.event.set()

    def clear(self) -> None:
        """A leader replicates to this member again: it was added back."""
        if self.data_dir is not None:
            try:
                (self.data_dir / REMOVED_FILE).unlink(missing_ok=True)
            except OSError as exc:
                self.error = f"could not clear the removal mark in {self.data_dir}: {exc}"
        self.event.clear()
