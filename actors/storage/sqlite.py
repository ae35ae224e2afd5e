"""The durable log and stable store: one SQLite database (stdlib ``sqlite3``).

The database runs in WAL mode with ``synchronous=FULL``: a commit is durable when it
returns (SQLite fsyncs the write-ahead log). Writes go into one open transaction that
``sync()`` commits, so any number of appends, truncations and hard-state saves since the
last sync cost one fsync: group commit. A crash before the commit loses all of them,
which the contract in :mod:`.interfaces` allows.

The log and the stable store share one :class:`Database` (one connection), so a sync of
either commits both, atomically.

Threading: the connection is created with ``check_same_thread=False`` so that it can be
opened and loaded on one thread and then handed to the writer thread, but it must be
used by one thread at a time; the writer (:mod:`.writer`) is its only user while it
runs. Nothing here locks.

Any SQLite or OS error is translated into a :class:`StorageError` and poisons the
database: every later call raises :class:`StorageFailedError` naming the first failure.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from protocol.codec import ProtocolError, decode, encode
from protocol.raft.log import Configuration, EntryKind, HardState, LogEntry

from .errors import (
    CorruptStorageError,
    FailureLatch,
    InvalidOperationError,
    StorageError,
    StorageIOError,
)
from .interfaces import check_append, check_hard_state

__all__ = ["Database", "SqliteLogStore", "SqliteStableStore"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE log (
    idx  INTEGER PRIMARY KEY,
    term INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE state (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    point_index   INTEGER NOT NULL,
    point_term    INTEGER NOT NULL,
    hard_state    BLOB NOT NULL,
    configuration BLOB
);
"""


def translate(exc: BaseException, doing: str) -> StorageError:
    """Map an ``sqlite3``/OS exception to the matching :class:`StorageError`."""
    name = str(getattr(exc, "sqlite_errorname", ""))
    text = f"{doing}: {exc}" + (f" [{name}]" if name else "")
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return CorruptStorageError(f"corrupt database while {text}")
    if name == "SQLITE_FULL":
        return StorageIOError(f"disk full while {text}")
    if name.startswith(("SQLITE_READONLY", "SQLITE_PERM", "SQLITE_AUTH")) or isinstance(
        exc, PermissionError
    ):
        return StorageIOError(f"permission denied while {text}")
    return StorageIOError(f"I/O error while {text}")


class Database(FailureLatch):
    """One SQLite connection with a lazily opened write transaction and a failure latch."""

    def __init__(self, path: Path, format_version: int) -> None:
        self.path = path
        self._in_txn = False
        try:
            self._conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise translate(exc, f"opening {path}") from exc
        try:
            self._setup(format_version)
        except sqlite3.Error as exc:
            self._conn.close()
            raise translate(exc, f"opening {path}") from exc
        except StorageError:
            self._conn.close()
            raise

    def _setup(self, format_version: int) -> None:
        conn = self._conn
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StorageIOError(f"{self.path}: cannot switch to WAL mode (got {mode!r})")
        conn.execute("PRAGMA synchronous=FULL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, format_version):
            raise CorruptStorageError(
                f"{self.path}: database says format version {version}, the directory says "
                f"{format_version}"
            )
        conn.execute("BEGIN IMMEDIATE")
        exists = conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'state'")
        if exists.fetchone()[0] == 0:  # a new database (never "repair" a missing row)
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT INTO state VALUES (1, 0, 0, ?, NULL)", (encode(HardState()),))
            conn.execute(f"PRAGMA user_version={int(format_version)}")
        conn.execute("COMMIT")

    # ------------------------------------------------------------------ guarded access

    def fail(self, exc: BaseException, doing: str) -> StorageError:
        """Poison the database with ``exc`` (translated); return the error to raise."""
        error = exc if isinstance(exc, StorageError) else translate(exc, doing)
        if self._latch(error) and self._in_txn:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            self._in_txn = False
        return error

    def query(self, sql: str, params: Sequence[Any] = (), doing: str = "reading") -> sqlite3.Cursor:
        """Run a read; the caller iterates the cursor inside ``try/except sqlite3.Error``."""
        self.check()
        try:
            return self._conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise self.fail(exc, doing) from exc

    def rows(self, sql: str, params: Sequence[Any] = (), doing: str = "reading") -> list[Any]:
        """Run a read and fetch every row."""
        cursor = self.query(sql, params, doing)
        try:
            return cursor.fetchall()
        except sqlite3.Error as exc:
            raise self.fail(exc, doing) from exc

    def write(self, sql: str, params: Sequence[Any] = (), doing: str = "writing") -> None:
        """Run one write statement inside the open transaction (opening it if needed)."""
        self._begin(doing)
        try:
            self._conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise self.fail(exc, doing) from exc

    def write_many(self, sql: str, params: Sequence[Sequence[Any]], doing: str = "writing") -> None:
        """Run one write statement per parameter row inside the open transaction."""
        self._begin(doing)
        try:
            self._conn.executemany(sql, params)
        except sqlite3.Error as exc:
            raise self.fail(exc, doing) from exc

    def _begin(self, doing: str) -> None:
        self.check()
        if not self._in_txn:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self.fail(exc, doing) from exc
            self._in_txn = True

    def commit(self) -> None:
        """Commit the open transaction: one fsync makes every write since the last durable.

        If the commit fails, whether it reached the disk is unknown, so the database is
        poisoned either way.
        """
        self.check()
        if not self._in_txn:
            return
        try:
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self.fail(exc, "committing (fsync)") from exc
        self._in_txn = False

    @property
    def has_unsynced_writes(self) -> bool:
        """True while a transaction holds writes that a crash would lose."""
        return self._in_txn

    def close(self) -> None:
        """Close the connection; an open transaction is rolled back (lost, as in a crash)."""
        if self._closed:
            return
        self._closed = True
        self._in_txn = False
        try:
            self._conn.close()  # rolls back an open transaction
        except sqlite3.Error as exc:  # pragma: no cover - close does not fail in practice
            log.error("closing %s: %s", self.path, exc)


def _corrupt(db: Database, what: str) -> StorageError:
    return db.fail(CorruptStorageError(f"corrupt database {db.path}: {what}"), what)


def _entry(db: Database, row: Any) -> LogEntry:
    idx, term, kind, data = row
    if type(idx) is not int or type(term) is not int or type(data) is not bytes:
        raise _corrupt(db, f"malformed log row {idx!r}")
    try:
        return LogEntry(idx, term, EntryKind(kind), data)
    except ValueError:
        raise _corrupt(db, f"log row {idx} has unknown kind {kind!r}") from None


class SqliteLogStore:
    """The durable :class:`~.interfaces.LogStore`, one row per entry.

    First/last index and last term are cached, so the hot path (``append`` + ``sync``)
    reads nothing from the database.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        rows = db.rows("SELECT point_index, point_term FROM state WHERE id = 1")
        if len(rows) != 1 or any(type(v) is not int for v in rows[0]):
            raise _corrupt(db, "missing or malformed state row")
        self._point_index: int = rows[0][0]
        self._point_term: int = rows[0][1]
        self._last_index: int = self._point_index
        self._last_term: int = self._point_term
        lo, hi, count = db.rows("SELECT min(idx), max(idx), count(*) FROM log")[0]
        if count == 0:
            return
        if lo != self._point_index + 1 or hi - lo + 1 != count:
            raise _corrupt(
                db,
                f"log rows {lo}..{hi} ({count} rows) are not contiguous after the "
                f"compaction point {self._point_index}",
            )
        last = _entry(db, db.rows("SELECT * FROM log WHERE idx = ?", (hi,))[0])
        self._last_index, self._last_term = last.index, last.term

    def first_index(self) -> int:
        self._db.check()
        return self._point_index + 1

    def last_index(self) -> int:
        self._db.check()
        return self._last_index

    def last_term(self) -> int:
        self._db.check()
        return self._last_term

    def term_at(self, index: int) -> int | None:
        self._db.check()
        if index == self._point_index:
            return self._point_term
        if index == self._last_index:
            return self._last_term
        if not self._point_index < index <= self._last_index:
            return None
        rows = self._db.rows("SELECT term FROM log WHERE idx = ?", (index,))
        if len(rows) != 1 or type(rows[0][0]) is not int:
            raise _corrupt(self._db, f"log row {index} missing or malformed")
        term: int = rows[0][0]
        return term

    def entries(self, start: int, stop: int, max_bytes: int | None = None) -> list[LogEntry]:
        self._db.check()
        if not (self._point_index + 1 <= start <= stop <= self._last_index + 1):
            raise InvalidOperationError(
                f"range [{start}, {stop}) outside the log [{self._point_index + 1}, "
                f"{self._last_index + 1})"
            )
        out: list[LogEntry] = []
        total = 0
        cursor = self._db.query(
            "SELECT idx, term, kind, data FROM log WHERE idx >= ? AND idx < ? ORDER BY idx",
            (start, stop),
            "reading the log",
        )
        try:
            for row in cursor:
                entry = _entry(self._db, row)
                total += len(entry.data)
                if max_bytes is not None and total > max_bytes and out:
                    break
                out.append(entry)
        except sqlite3.Error as exc:
            raise self._db.fail(exc, "reading the log") from exc
        finally:
            cursor.close()
        expected = range(start, start + len(out))
        complete = len(out) == stop - start or (max_bytes is not None and out)
        if not complete or any(e.index != i for e, i in zip(out, expected, strict=True)):
            raise _corrupt(self._db, f"log rows in [{start}, {stop}) missing")
        return out

    def append(self, entries: Sequence[LogEntry]) -> None:
        self._db.check()
        batch = check_append(entries, self._last_index, self._last_term)
        if not batch:
            return
        self._db.write_many(
            "INSERT INTO log (idx, term, kind, data) VALUES (?, ?, ?, ?)",
            [(e.index, e.term, int(e.kind), e.data) for e in batch],
            "appending to the log",
        )
        self._last_index, self._last_term = batch[-1].index, batch[-1].term

    def truncate_suffix(self, index: int) -> None:
        self._db.check()
        if index <= self._point_index:
            raise InvalidOperationError(
                f"cannot truncate from {index}: entries before {self._point_index + 1} are "
                "compacted (committed)"
            )
        if index > self._last_index:
            return
        new_last_term = self.term_at(index - 1)
        assert new_last_term is not None
        self._db.write("DELETE FROM log WHERE idx >= ?", (index,), "truncating the log")
        self._last_index, self._last_term = index - 1, new_last_term

    def compact_prefix(self, index: int, term: int) -> None:
        self._db.check()
        if index <= self._point_index:
            return
        keep_suffix = self.term_at(index) == term
        doing = "compacting the log"
        if keep_suffix:
            self._db.write("DELETE FROM log WHERE idx <= ?", (index,), doing)
        else:
            self._db.write("DELETE FROM log", (), doing)
        self._db.write(
            "UPDATE state SET point_index = ?, point_term = ? WHERE id = 1", (index, term), doing
        )
        self._point_index, self._point_term = index, term
        if not keep_suffix:
            self._last_index, self._last_term = index, term

    def sync(self) -> None:
        self._db.commit()

    def close(self) -> None:
        self._db.close()


class SqliteStableStore:
    """The durable :class:`~.interfaces.StableStore`: one row, both fields together."""

    def __init__(self, db: Database) -> None:
        self._db = db
        rows = db.rows("SELECT hard_state, configuration FROM state WHERE id = 1")
        if len(rows) != 1:
            raise _corrupt(db, "missing state row")
        raw_hard, raw_conf = rows[0]
        try:
            self._hard_state: HardState = decode(_blob(raw_hard), HardState)
            self._configuration: Configuration | None = (
                None if raw_conf is None else decode(_blob(raw_conf), Configuration)
            )
        except ProtocolError as exc:
            raise _corrupt(db, f"stable state does not decode: {exc}") from None

    def hard_state(self) -> HardState:
        self._db.check()
        return self._hard_state

    def configuration(self) -> Configuration | None:
        self._db.check()
        return self._configuration

    def save(self, hard_state: HardState, configuration: Configuration | None) -> None:
        self._db.check()
        check_hard_state(self._hard_state, hard_state)
        if configuration is not None and not isinstance(configuration, Configuration):
            raise InvalidOperationError(f"not a Configuration: {type(configuration).__name__}")
        self._db.write(
            "UPDATE state SET hard_state = ?, configuration = ? WHERE id = 1",
            (encode(hard_state), None if configuration is None else encode(configuration)),
            "saving the hard state",
        )
        self._hard_state, self._configuration = hard_state, configuration

    def sync(self) -> None:
        self._db.commit()

    def close(self) -> None:
        self._db.close()


def _blob(value: Any) -> bytes:
    if type(value) is not bytes:
        raise ProtocolError(f"expected a blob, got {type(value).__name__}")
    return value
