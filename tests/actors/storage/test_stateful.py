"""Random append / truncate / compact / save / sync / restart sequences against a model.

The model is the simplest thing that can be right: a compaction point, a list of
entries and a hard state. It also remembers every state since the last sync, because
after a crash the contract allows the store to hold the synced state plus any prefix
of the unsynced writes, and nothing else.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from actors.storage import DurableLog, DurableStorage, MemoryStorage
from protocol.ids import MemberId
from protocol.raft.log import EntryKind, HardState, LogEntry

Storage = MemoryStorage | DurableStorage


@dataclass(frozen=True)
class Model:
    point: tuple[int, int] = (0, 0)
    entries: tuple[LogEntry, ...] = ()
    hard_state: HardState = field(default_factory=HardState)

    @property
    def last(self) -> tuple[int, int]:
        return (self.entries[-1].index, self.entries[-1].term) if self.entries else self.point

    def term_at(self, index: int) -> int | None:
        if index == self.point[0]:
            return self.point[1]
        for e in self.entries:
            if e.index == index:
                return e.term
        return None


def observe(storage: Storage) -> Model:
    log = storage.log
    first, last = log.first_index(), log.last_index()
    point_term = log.term_at(first - 1)
    assert point_term is not None
    return Model(
        (first - 1, point_term), tuple(log.entries(first, last + 1)), storage.stable.hard_state()
    )


class StorageMachine(RuleBasedStateMachine):
    """Drives one storage implementation and the model side by side."""

    #: The durable log to drive (``None``: the in-memory storage).
    durable: DurableLog | None = None

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="storage-stateful-"))
        self.storage: Storage = self._open() if self.durable else MemoryStorage()
        self.model = Model()
        self.since_sync: list[Model] = [self.model]  # synced state, then after each write

    def teardown(self) -> None:
        self.storage.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _wrote(self, model: Model) -> None:
        self.model = model
        self.since_sync.append(model)

    @rule(n=st.integers(1, 5), bump=st.integers(0, 2), size=st.integers(0, 40))
    def append(self, n: int, bump: int, size: int) -> None:
        index, term = self.model.last
        new = tuple(
            LogEntry(index + k, term + bump, EntryKind(k % 3), bytes([k]) * size)
            for k in range(1, n + 1)
        )
        self.storage.log.append(new)
        self._wrote(replace(self.model, entries=self.model.entries + new))

    @precondition(lambda self: self.model.entries)
    @rule(data=st.data())
    def truncate(self, data: st.DataObject) -> None:
        first = self.model.point[0] + 1
        index = data.draw(st.integers(first, self.model.last[0] + 2))
        self.storage.log.truncate_suffix(index)
        kept = tuple(e for e in self.model.entries if e.index < index)
        if kept != self.model.entries:
            self._wrote(replace(self.model, entries=kept))

    @rule(data=st.data(), conflict=st.booleans())
    def compact(self, data: st.DataObject, conflict: bool) -> None:
        index = data.draw(st.integers(0, self.model.last[0] + 3))
        term = self.model.term_at(index)
        if term is None or conflict:
            term = self.model.last[1] + 1
        self.storage.log.compact_prefix(index, term)
        if index <= self.model.point[0]:
            return
        if self.model.term_at(index) == term:
            kept = tuple(e for e in self.model.entries if e.index > index)
        else:
            kept = ()
        self._wrote(replace(self.model, point=(index, term), entries=kept))

    @rule(bump=st.integers(0, 1), vote=st.sampled_from([None, "a", "b"]), commit=st.integers(0, 9))
    def save(self, bump: int, vote: str | None, commit: int) -> None:
        hs = self.model.hard_state
        voted = MemberId(vote) if vote else None
        if bump == 0 and hs.voted_for is not None:
            voted = hs.voted_for
        new = HardState(hs.term + bump, voted, commit)
        self.storage.stable.save(new, None)
        self._wrote(replace(self.model, hard_state=new))

    @rule()
    def sync(self) -> None:
        self.storage.log.sync()
        self.storage.stable.sync()
        self.since_sync = [self.model]

    @rule(seed=st.integers(0, 2**32))
    def crash_and_restart(self, seed: int) -> None:
        if isinstance(self.storage, MemoryStorage):
            self.storage.crash(random.Random(seed))
        else:
            self.storage.close()
            self.storage = self._open()
        seen = observe(self.storage)
        # log and stable store may keep different prefixes of their unsynced writes
        logs = [(m.point, m.entries) for m in self.since_sync]
        hard_states = [m.hard_state for m in self.since_sync]
        assert (seen.point, seen.entries) in logs, "log after crash is no allowed state"
        assert seen.hard_state in hard_states, "hard state after crash is no allowed state"
        self.model = seen
        self.since_sync = [seen]

    def _open(self) -> DurableStorage:
        assert self.durable is not None
        return DurableStorage.open(self.dir, durable_log=self.durable)

    @invariant()
    def agrees_with_model(self) -> None:
        seen = observe(self.storage)
        assert seen == self.model
        assert self.storage.log.last_term() == self.model.last[1]


class MemoryMachine(StorageMachine):
    durable = None


class SqliteMachine(StorageMachine):
    durable = "sqlite"


class FileMachine(StorageMachine):
    durable = "file"


# The durable machines fsync and reopen: fewer examples, ten times more under --long.
_DURABLE_EXAMPLES = 40 if settings.default.max_examples <= 100 else 400
_DURABLE = settings(max_examples=_DURABLE_EXAMPLES, stateful_step_count=30, deadline=None)
TestMemoryStorage = MemoryMachine.TestCase
TestMemoryStorage.settings = settings(stateful_step_count=40, deadline=None)
TestSqliteStorage = SqliteMachine.TestCase
TestSqliteStorage.settings = _DURABLE
TestFileStorage = FileMachine.TestCase
TestFileStorage.settings = _DURABLE
