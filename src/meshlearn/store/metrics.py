"""``MetricsDB``: a run's metrics in one SQLite file (WAL mode, survives crashes).

One table, one row per logged value::

    metrics(id, t_sim, t_wall, round, node, key, value)

``node IS NULL`` marks run-level metrics (the round table); per-node metrics
carry the node id. Writes are buffered in memory and committed by an explicit
:meth:`MetricsDB.flush` (one transaction, ``executemany``), so a training loop
can log freely and flush once per round. Readers in other processes (the UI, a
report command) open the same file with ``readonly=True`` while the writer runs.
NaN values are stored as NULL by SQLite and read back as ``nan``.

Damage is a ``StoreError`` saying what to do, never a raw ``sqlite3`` error: a garbage or truncated
file, a full disk, a lock. A writer opening an existing file checks it first (``PRAGMA quick_check``),
so a resume never writes into a damaged database. Readers are query-only; where the run directory is
read-only (a read-only mount) they open ``mode=ro``, and ``immutable=1`` where SQLite cannot create the
WAL index there (announced when rows a killed writer left in ``-wal`` cannot be seen that way).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from meshlearn.errors import StoreError, UsageError

__all__ = ["MetricsDB", "MetricRow"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS metrics (
    id INTEGER PRIMARY KEY,
    t_sim REAL,
    t_wall REAL,
    round INTEGER,
    node TEXT,
    key TEXT NOT NULL,
    value REAL
);
CREATE INDEX IF NOT EXISTS metrics_key_round ON metrics (key, round);
"""
_INSERT = "INSERT INTO metrics (t_sim, t_wall, round, node, key, value) VALUES (?, ?, ?, ?, ?, ?)"
_COLUMNS = ("key", "value", "round", "node", "t_sim", "t_wall")
_AUTO_FLUSH_ROWS = 100_000  # bound memory if a caller never flushes
_log = logging.getLogger("meshlearn.store")
_warned_wal: set[str] = set()  # read-only mounts whose unseen -wal rows were announced (once per process)


class MetricRow(NamedTuple):
    """One stored metric value."""

    id: int
    t_sim: float | None
    t_wall: float | None
    round: int | None
    node: str | None
    key: str
    value: float


def _row(raw: Sequence[Any]) -> MetricRow:
    value = raw[6]
    return MetricRow(*raw[:6], math.nan if value is None else float(value))


class MetricsDB:
    """Buffered writer and query helper over ``metrics.sqlite``."""

    def __init__(self, path: str | Path, *, readonly: bool = False, timeout: float = 10.0):
        self.path, self.readonly = Path(path), readonly
        self._buffer: list[tuple[Any, ...]] = []
        self._conn = self._connect(timeout)

    def _connect(self, timeout: float) -> sqlite3.Connection:
        if self.readonly:
            return self._connect_reader(timeout)
        existed = self.path.is_file() and self.path.stat().st_size > 0
        with self._errors("open"):
            conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
            try:
                if existed:
                    _check_integrity(conn)
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.executescript(_SCHEMA)
            except BaseException:
                conn.close()
                raise
        return conn

    def _connect_reader(self, timeout: float) -> sqlite3.Connection:
        """A query-only connection; ``mode=ro`` (then ``immutable=1``) where the directory is read-only."""
        if not self.path.is_file():
            raise StoreError(f"no metrics database at {self.path}; has the run logged anything yet?")
        with self._errors("read"):
            if os.access(self.path.parent, os.W_OK) and os.access(self.path, os.W_OK):
                conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
                conn.execute("PRAGMA query_only = ON")
                return _probe(conn)
            uri = self.path.resolve().as_uri()
            try:  # works where the WAL index exists or can be made
                return _probe(sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=timeout, isolation_level=None))
            except sqlite3.OperationalError as exc:
                if "unable to open" not in str(exc):
                    raise
            conn = _probe(sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None))
            has_table = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'metrics'").fetchone() is not None
        self._announce_unseen_wal(conn, has_table)
        return conn

    def _announce_unseen_wal(self, conn: sqlite3.Connection, has_table: bool) -> None:
        """On a read-only mount without a WAL index, rows still in ``-wal`` cannot be read: say so."""
        wal = self.path.with_name(self.path.name + "-wal")
        if not wal.is_file() or wal.stat().st_size == 0:
            return
        where = (f"rows still in {wal.name} (the writer was killed before moving them into {self.path.name}) "
                 "cannot be read on this read-only filesystem; copy the run directory somewhere writable")
        if not has_table:
            conn.close()
            raise StoreError(f"{self.path}: all its {where} to read them")
        if str(wal) not in _warned_wal:
            _warned_wal.add(str(wal))
            _log.warning("%s: %s to see them", self.path, where)

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn SQLite errors into a StoreError naming the file and what to do about it."""
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(_explain(self.path, action, exc)) from None

    # ------------------------------------------------------------------ writing

    def log(
        self,
        key: str,
        value: float,
        *,
        round: int | None = None,
        node: str | None = None,
        t_sim: float | None = None,
        t_wall: float | None = None,
    ) -> None:
        """Buffer one value; ``t_wall`` defaults to now. Call :meth:`flush` to commit."""
        self._check_writable()
        t_wall = time.time() if t_wall is None else t_wall
        node = None if node is None else str(node)
        self._buffer.append((t_sim, t_wall, round, node, str(key), float(value)))
        if len(self._buffer) >= _AUTO_FLUSH_ROWS:
            self.flush()

    def log_many(self, rows: Iterable[Mapping[str, Any] | Sequence[Any]]) -> None:
        """Buffer many rows: dicts with ``key``/``value`` (+ ``round``, ``node``, ``t_sim``,
        ``t_wall``) or tuples in that order."""
        for row in rows:
            fields = dict(row) if isinstance(row, Mapping) else dict(zip(_COLUMNS, row))
            try:
                key, value = fields.pop("key"), fields.pop("value")
            except KeyError:
                raise UsageError(f"metric row {row!r} needs a 'key' and a 'value'") from None
            self.log(key, value, **fields)

    def flush(self) -> int:
        """Commit buffered rows in one transaction; returns how many were written."""
        if not self._buffer:
            return 0
        with self._errors("write"), self._transaction():  # on failure the rows stay buffered for a retry
            self._conn.executemany(_INSERT, self._buffer)
        count, self._buffer = len(self._buffer), []
        return count

    def delete_after_round(self, round: int) -> int:
        """Drop rows with ``round > round`` (a partial round before a resume); returns the count."""
        self.flush()
        with self._errors("write"), self._transaction():
            cursor = self._conn.execute("DELETE FROM metrics WHERE round > ?", (round,))
        return cursor.rowcount

    def _transaction(self) -> Any:
        self._check_writable()
        return _Transaction(self._conn)

    def _check_writable(self) -> None:
        if self.readonly:
            raise UsageError(f"{self.path} was opened read-only; open MetricsDB(path) to write")

    # ------------------------------------------------------------------ reading

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if not self.readonly:
            self.flush()  # read your own writes
        with self._errors("read"):
            return self._conn.execute(sql, params).fetchall()

    @property
    def journal_mode(self) -> str:
        return str(self._query("PRAGMA journal_mode")[0][0])

    def rows(self, key: str | None = None, round: int | None = None, node: str | None = None) -> list[MetricRow]:
        """Stored rows in insertion order, optionally filtered by key, round and node."""
        where, params = _filters(key=key, round=round, node=node)
        sql = f"SELECT id, t_sim, t_wall, round, node, key, value FROM metrics{where} ORDER BY id"
        return [_row(raw) for raw in self._query(sql, params)]

    def keys(self) -> list[str]:
        """Every metric key, sorted."""
        return [raw[0] for raw in self._query("SELECT DISTINCT key FROM metrics ORDER BY key")]

    def series(self, key: str, node: str | None = None) -> list[tuple[int | None, float]]:
        """``(round, value)`` pairs of one key, by round; ``node=None`` means run-level rows."""
        node_sql = "node IS NULL" if node is None else "node = ?"
        params = (key,) if node is None else (key, str(node))
        sql = f"SELECT round, value FROM metrics WHERE key = ? AND {node_sql} ORDER BY round, id"
        return [(r, math.nan if v is None else float(v)) for r, v in self._query(sql, params)]

    def round_table(self, keys: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """One dict per round (``{"round": r, key: last value, ...}``) of the run-level metrics.

        Only keys logged in that round appear in its dict.
        """
        key_sql = f" AND key IN ({', '.join('?' * len(keys))})" if keys is not None else ""
        sql = (
            "SELECT m.round, m.key, m.value FROM metrics m JOIN ("
            "SELECT MAX(id) AS id FROM metrics WHERE node IS NULL AND round IS NOT NULL"
            f"{key_sql} GROUP BY round, key) last ON m.id = last.id ORDER BY m.round, m.key"
        )
        table: dict[int, dict[str, Any]] = {}
        for rnd, key, value in self._query(sql, list(keys or [])):
            table.setdefault(rnd, {"round": rnd})[key] = math.nan if value is None else float(value)
        return list(table.values())

    def max_round(self) -> int | None:
        """The highest round any row was logged for, or None."""
        return self._query("SELECT MAX(round) FROM metrics")[0][0]

    # ---------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Flush (when writable) and close the connection; safe to call twice.

        The connection is closed even when the last flush fails (a full disk): that StoreError is raised
        after closing, and the rows it could not write are dropped."""
        if self._conn is None:
            return
        try:
            if not self.readonly:
                self.flush()
        finally:
            self._buffer = []
            self._conn.close()
            self._conn = None  # type: ignore[assignment]

    def __enter__(self) -> MetricsDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "ro" if self.readonly else "rw"
        return f"MetricsDB({str(self.path)!r}, {mode}, buffered={len(self._buffer)})"


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        if not exc_type:
            self.conn.execute("COMMIT")
            return
        with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already (disk full)
            self.conn.execute("ROLLBACK")


def _probe(conn: sqlite3.Connection) -> sqlite3.Connection:
    """Read the schema once, so that an unreadable file fails here rather than at the first query."""
    try:
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except BaseException:
        conn.close()
        raise
    return conn


def _check_integrity(conn: sqlite3.Connection) -> None:
    problems = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
    if problems != ["ok"]:
        raise sqlite3.DatabaseError(f"database disk image is malformed ({problems[0]})")


def _explain(path: Path, action: str, exc: sqlite3.Error) -> str:
    """One line: what is wrong with the metrics file and how to fix it."""
    text = str(exc)
    if "full" in text:
        return f"cannot write {path}: the disk is full ({text}); free some space, then resume the run"
    if "locked" in text or "busy" in text:
        return f"{path} is locked by another process ({text}); wait for the run that writes it to end"
    if "readonly" in text or "read-only" in text or ("unable to open" in text and action != "read"):
        return (f"cannot open {path} for writing ({text}): the run is on a read-only filesystem or not yours; "
                "copy the run directory to a writable --runs-dir and work on the copy")
    if "unable to open" in text:
        return f"cannot open {path} ({text}); check that this user may read it and the directory it is in"
    if "no such table" in text:
        text = "it holds no metrics table: the file is empty or was truncated"
    return (f"the metrics database {path} is damaged ({text}); nothing was changed: the run's config and "
            f"checkpoints are intact; move the file aside (e.g. to {path.name}.damaged) to resume or show the "
            "run without its old metrics, or restore it from a backup")


def _filters(**values: Any) -> tuple[str, list[Any]]:
    """`` WHERE a = ? AND b = ?`` for the non-None values."""
    used = {name: value for name, value in values.items() if value is not None}
    if not used:
        return "", []
    where = " WHERE " + " AND ".join(f"{name} = ?" for name in used)
    return where, [str(v) if name == "node" else v for name, v in used.items()]
