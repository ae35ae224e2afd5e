"""The durable log and stable store: records in one append-only :class:`~.logfile.LogFile`.

Every mutating call appends one record (payloads are msgpack):

* ``ENTRIES`` ``[first index, [[term, kind, data], ...]]``: one appended batch (packing
  the whole batch with one ``msgpack.packb`` is far cheaper than per-entry packing);
* ``TRUNCATE`` ``[index]``: entries from ``index`` on are deleted;
* ``COMPACT`` ``[index, term]``: a new compaction point, with the contract's rule (keep
  the suffix after a matching entry, else drop every entry);
* ``STATE`` ``[hard state, configuration or nil]``, each encoded with
  :func:`protocol.codec.encode`.

Opening the file replays the records into a :class:`LogState`: the compaction point,
where the term changes (runs), the offset of each ``ENTRIES`` record that still holds a
live entry, the hard state and configuration. Entry data stays on disk: log entries
are only read back when a node restarts (the consensus core keeps its own log in
memory), so :meth:`FileLogStore.entries` reads the records with ``pread``. A record
that is intact (checksum) but does not fit the log replayed so far is a
:class:`CorruptStorageError` naming the file and the offset.

Both stores share one :class:`LogState` and so one file: a sync of either makes both
durable, and the second sync finds nothing to do. Truncated, compacted and superseded
records are dead bytes; when they outweigh both the live ones and one preallocation
chunk, :meth:`LogState.sync` rewrites the file with just the live state (compaction
point, hard state, live entries) instead of syncing it.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from typing import Any

import msgpack

from protocol.codec import ProtocolError, decode, encode
from protocol.raft.log import Configuration, EntryKind, HardState, LogEntry

from .errors import InvalidOperationError, StorageError
from .interfaces import check_append, check_hard_state
from .logfile import HEADER, MAGIC, LogFile

__all__ = ["COMPACT", "ENTRIES", "STATE", "TRUNCATE", "FileLogStore", "FileStableStore", "LogState"]

#: Record types.
ENTRIES, TRUNCATE, COMPACT, STATE = 1, 2, 3, 4
_KINDS = frozenset(int(k) for k in EntryKind)


def _unpack(payload: bytes) -> Any:
    try:
        return msgpack.unpackb(payload, raw=False, use_list=True)
    except Exception:  # msgpack raises a zoo of types on garbage
        return None


def _ints(value: Any, n: int) -> bool:
    return type(value) is list and len(value) == n and all(type(v) is int for v in value)


class LogState:
    """The replayed content of one log file, kept current by both stores' writes."""

    def __init__(self, file: LogFile) -> None:
        self.file = file
        self.point_index = self.point_term = self.last_index = 0
        # Term runs: entry run_starts[k] and the ones after it (up to the next run) have
        # term run_terms[k]; the first run starts at the compaction point.
        self._run_starts, self._run_terms = [0], [0]
        # Each ENTRIES record holding a live entry: first index, offset, size in bytes.
        self._rec_first: list[int] = []
        self._rec_off: list[int] = []
        self._rec_size: list[int] = []
        self._entry_bytes = 0  # sum of _rec_size
        self._point_size = 0  # size of the latest COMPACT record
        self.hard_state = HardState()
        self.configuration: Configuration | None = None
        self._state_payload: bytes | None = None
        self._state_size = 0  # size of the latest STATE record
        for offset, kind, payload in file.records():
            self._replay(offset, kind, payload)

    # --------------------------------------------------------------------------- reads

    @property
    def last_term(self) -> int:
        return self._run_terms[-1]

    def term_at(self, index: int) -> int | None:
        if not self.point_index <= index <= self.last_index:
            return None
        return self._run_terms[bisect_right(self._run_starts, index) - 1]

    def entries(self, start: int, stop: int, max_bytes: int | None) -> list[LogEntry]:
        out: list[LogEntry] = []
        total = 0
        j = bisect_right(self._rec_first, start) - 1
        while start < stop and j < len(self._rec_first) and self._rec_first[j] < stop:
            offset = self._rec_off[j]
            _, payload = self.file.read(offset)
            first, items = self._decode_entries(offset, payload)
            if first != self._rec_first[j]:
                raise self.file.corrupt(
                    offset, f"record starts at {first}, not {self._rec_first[j]}"
                )
            for index in range(max(start, first), min(stop, self._record_stop(j))):
                term, kind, data = items[index - first]
                total += len(data)
                if max_bytes is not None and total > max_bytes and out:
                    return out
                out.append(LogEntry(index, term, EntryKind(kind), data))
            j += 1
        return out

    def _record_stop(self, j: int) -> int:
        """One past the last live entry of record ``j``.

        A record's tail may be truncated (and overwritten by the next record), or it
        may be the last record and its tail beyond the last index.
        """
        return self._rec_first[j + 1] if j + 1 < len(self._rec_first) else self.last_index + 1

    def _decode_entries(self, offset: int, payload: bytes) -> tuple[int, list[list[Any]]]:
        """The first index and ``[term, kind, data]`` items of an ``ENTRIES`` record."""
        raw = _unpack(payload)
        if type(raw) is not list or len(raw) != 2 or type(raw[0]) is not int:
            raise self.file.corrupt(offset, "malformed entries record")
        first, items = raw
        if type(items) is not list or not items:
            raise self.file.corrupt(offset, "entries record without entries")
        for item in items:
            if (
                type(item) is not list
                or len(item) != 3
                or type(item[0]) is not int
                or item[1] not in _KINDS
                or type(item[2]) is not bytes
            ):
                raise self.file.corrupt(offset, f"malformed entry in a record from index {first}")
        return first, items

    # ---------------------------------------------------------------------- mutations

    def append(self, batch: Sequence[LogEntry]) -> None:
        first = batch[0].index
        payload = msgpack.packb([first, [[e.term, e.kind, e.data] for e in batch]])
        offset = self.file.append(ENTRIES, payload)
        terms: Sequence[int] = ()
        if not batch[0].term == batch[-1].term == self.last_term:  # else nothing to walk
            terms = [e.term for e in batch]
        self._add_entries(offset, HEADER.size + len(payload), first, len(batch), terms)

    def truncate(self, index: int) -> None:
        self.file.append(TRUNCATE, msgpack.packb([index]))
        self._truncate(index)

    def compact(self, index: int, term: int) -> None:
        payload = msgpack.packb([index, term])
        self.file.append(COMPACT, payload)
        self._compact(index, term, HEADER.size + len(payload))

    def save(self, hard_state: HardState, configuration: Configuration | None) -> None:
        conf = None if configuration is None else encode(configuration)
        payload = msgpack.packb([encode(hard_state), conf])
        self.file.append(STATE, payload)
        self._set_state(hard_state, configuration, payload)

    def _add_entries(
        self, offset: int, size: int, first: int, n: int, terms: Sequence[int]
    ) -> None:
        """Index an ``ENTRIES`` record; ``terms`` may be empty if all are ``last_term``."""
        previous = self.last_term
        for i, term in enumerate(terms):
            if term != previous:
                self._run_starts.append(first + i)
                self._run_terms.append(term)
                previous = term
        self._rec_first.append(first)
        self._rec_off.append(offset)
        self._rec_size.append(size)
        self._entry_bytes += size
        self.last_index = first + n - 1

    def _truncate(self, index: int) -> None:
        k = bisect_right(self._run_starts, index - 1)
        del self._run_starts[k:], self._run_terms[k:]
        self._drop_records(bisect_left(self._rec_first, index), len(self._rec_first))
        self.last_index = index - 1

    def _compact(self, index: int, term: int, size: int) -> None:
        if self.term_at(index) == term and index < self.last_index:  # keep the suffix
            k = bisect_right(self._run_starts, index) - 1
            self._run_starts[: k + 1], self._run_terms[: k + 1] = [index], [term]
            self._drop_records(0, bisect_right(self._rec_first, index + 1) - 1)
        else:
            self._run_starts, self._run_terms = [index], [term]
            self._drop_records(0, len(self._rec_first))
            self.last_index = index
        self.point_index, self.point_term = index, term
        self._point_size = size

    def _drop_records(self, lo: int, hi: int) -> None:
        self._entry_bytes -= sum(self._rec_size[lo:hi])
        del self._rec_first[lo:hi], self._rec_off[lo:hi], self._rec_size[lo:hi]

    def _set_state(self, hard: HardState, conf: Configuration | None, payload: bytes) -> None:
        self.hard_state, self.configuration = hard, conf
        self._state_payload = payload
        self._state_size = HEADER.size + len(payload)

    # ------------------------------------------------------------------------ replay

    def _replay(self, offset: int, kind: int, payload: bytes) -> None:
        size = HEADER.size + len(payload)
        if kind == ENTRIES:
            first, items = self._decode_entries(offset, payload)
            if first != self.last_index + 1:
                raise self.file.corrupt(
                    offset, f"entries start at {first}, not after the last index {self.last_index}"
                )
            terms = [item[0] for item in items]
            if any(b < a for a, b in zip([self.last_term, *terms], terms, strict=False)):
                raise self.file.corrupt(offset, f"terms go backwards in entries from {first}")
            self._add_entries(offset, size, first, len(items), terms)
            return
        raw = _unpack(payload)
        if kind == TRUNCATE and _ints(raw, 1) and self.point_index < raw[0] <= self.last_index:
            self._truncate(raw[0])
        elif kind == COMPACT and _ints(raw, 2) and raw[0] > self.point_index and raw[1] >= 0:
            self._compact(raw[0], raw[1], size)
        elif kind == STATE and type(raw) is list and len(raw) == 2:
            try:
                hard = decode(raw[0], HardState)
                conf = None if raw[1] is None else decode(raw[1], Configuration)
            except ProtocolError as exc:
                raise self.file.corrupt(offset, f"stable state does not decode: {exc}") from None
            self._set_state(hard, conf, payload)
        else:
            raise self.file.corrupt(
                offset, f"record of type {kind} does not fit the log ({raw!r:.80})"
            )

    # -------------------------------------------------------------------- durability

    def sync(self) -> None:
        """Sync the file, or rewrite it if dead records outweigh live ones."""
        self.file.check()
        live = self._entry_bytes + self._state_size + self._point_size
        dead = self.file.end - len(MAGIC) - live
        if dead > max(live, self.file.chunk_bytes):
            self._rewrite()
        else:
            self.file.sync()

    def _rewrite(self) -> None:
        self.file.flush()
        firsts: list[int] = []
        sizes: list[int] = []
        offsets = self.file.rewrite(self._live_records(firsts, sizes))
        # the compaction point and state records come first, as big as before
        del offsets[: (self.point_index > 0) + (self._state_payload is not None)]
        self._rec_first, self._rec_off, self._rec_size = firsts, offsets, sizes
        self._entry_bytes = sum(sizes)

    def _live_records(self, firsts: list[int], sizes: list[int]) -> Iterator[tuple[int, bytes]]:
        """The live state as records; fills ``firsts`` and ``sizes`` of the entries."""
        if self.point_index > 0:
            yield COMPACT, msgpack.packb([self.point_index, self.point_term])
        if self._state_payload is not None:
            yield STATE, self._state_payload
        for j, offset in enumerate(list(self._rec_off)):
            _, payload = self.file.read(offset)
            first, items = self._decode_entries(offset, payload)
            lo, hi = max(first, self.point_index + 1), self._record_stop(j)
            if (lo, hi) != (first, first + len(items)):  # partly dead: keep the live part
                payload = msgpack.packb([lo, items[lo - first : hi - first]])
            firsts.append(lo)
            sizes.append(HEADER.size + len(payload))
            yield ENTRIES, payload


class _Store:
    """What both stores share: one :class:`LogState`, so one sync and one close."""

    def __init__(self, state: LogState) -> None:
        self._state = state
        self._file = state.file

    def sync(self) -> None:
        self._state.sync()

    def close(self) -> None:
        self._file.close()


class FileLogStore(_Store):
    """The durable :class:`~.interfaces.LogStore` over a shared :class:`LogState`."""

    def first_index(self) -> int:
        self._file.check()
        return self._state.point_index + 1

    def last_index(self) -> int:
        self._file.check()
        return self._state.last_index

    def last_term(self) -> int:
        self._file.check()
        return self._state.last_term

    def term_at(self, index: int) -> int | None:
        self._file.check()
        return self._state.term_at(index)

    def entries(self, start: int, stop: int, max_bytes: int | None = None) -> list[LogEntry]:
        self._file.check()
        first, last = self._state.point_index + 1, self._state.last_index
        if not first <= start <= stop <= last + 1:
            raise InvalidOperationError(
                f"range [{start}, {stop}) outside the log [{first}, {last + 1})"
            )
        return self._state.entries(start, stop, max_bytes)

    def append(self, entries: Sequence[LogEntry]) -> None:
        self._file.check()
        batch = check_append(entries, self._state.last_index, self._state.last_term)
        if batch:
            self._state.append(batch)

    def truncate_suffix(self, index: int) -> None:
        self._file.check()
        if index <= self._state.point_index:
            raise InvalidOperationError(
                f"cannot truncate from {index}: entries before {self._state.point_index + 1} "
                "are compacted (committed)"
            )
        if index <= self._state.last_index:
            self._state.truncate(index)

    def compact_prefix(self, index: int, term: int) -> None:
        self._file.check()
        if index > self._state.point_index:
            self._state.compact(index, term)


class FileStableStore(_Store):
    """The durable :class:`~.interfaces.StableStore`: one ``STATE`` record per save."""

    def hard_state(self) -> HardState:
        self._file.check()
        return self._state.hard_state

    def configuration(self) -> Configuration | None:
        self._file.check()
        return self._state.configuration

    def save(self, hard_state: HardState, configuration: Configuration | None) -> None:
        self._file.check()
        check_hard_state(self._state.hard_state, hard_state)
        if configuration is not None and not isinstance(configuration, Configuration):
            raise InvalidOperationError(f"not a Configuration: {type(configuration).__name__}")
        self._state.save(hard_state, configuration)


def open_state(file: LogFile) -> LogState:
    """Replay ``file`` into a :class:`LogState`; close the file if that fails."""
    try:
        return LogState(file)
    except StorageError:
        file.close()
        raise
