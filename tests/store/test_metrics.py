"""MetricsDB: WAL mode, buffering, queries, resume truncation, concurrent readers."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest

from meshlearn.errors import StoreError, UsageError
from meshlearn.store import MetricsDB


@pytest.fixture
def db(tmp_path: Path) -> MetricsDB:
    with MetricsDB(tmp_path / "metrics.sqlite") as handle:
        yield handle


def fill(db: MetricsDB) -> None:
    db.log_many(
        [
            {"key": "loss", "value": 1.0, "round": 0},
            {"key": "acc", "value": 0.1, "round": 0},
            {"key": "loss", "value": 0.9, "round": 0},  # later value of the same round wins
            {"key": "loss", "value": 5.0, "round": 0, "node": "n1"},  # per-node: not in the table
            ("loss", 0.5, 1),
            ("acc", 0.4, 1, None, 12.5),
            ("acc", 0.7, 2),
            ("lr", 0.01),  # no round: not in the table
        ]
    )


def test_wal_mode_and_schema(db: MetricsDB) -> None:
    assert db.journal_mode == "wal"
    conn = sqlite3.connect(db.path)
    cols = [row[1] for row in conn.execute("PRAGMA table_info(metrics)")]
    assert cols == ["id", "t_sim", "t_wall", "round", "node", "key", "value"]
    indexes = [row[1] for row in conn.execute("PRAGMA index_list(metrics)")]
    assert "metrics_key_round" in indexes
    assert [r[2] for r in conn.execute("PRAGMA index_info(metrics_key_round)")] == ["key", "round"]
    conn.close()


def test_log_is_buffered_until_flush(db: MetricsDB) -> None:
    other = sqlite3.connect(db.path)
    db.log("loss", 1.0, round=0)
    assert other.execute("SELECT COUNT(*) FROM metrics").fetchone()[0] == 0
    assert db.flush() == 1 and db.flush() == 0
    assert other.execute("SELECT COUNT(*) FROM metrics").fetchone()[0] == 1
    other.close()


def test_log_fields(db: MetricsDB) -> None:
    db.log("x", 2, round=3, node=7, t_sim=1.5, t_wall=100.0)
    db.log("y", True)
    x, y = db.rows()
    assert (x.key, x.value, x.round, x.node, x.t_sim, x.t_wall) == ("x", 2.0, 3, "7", 1.5, 100.0)
    assert y.value == 1.0 and y.round is None and y.node is None and y.t_wall > 0


def test_rows_keys_and_series(db: MetricsDB) -> None:
    fill(db)
    assert db.keys() == ["acc", "loss", "lr"]
    assert [r.value for r in db.rows(key="loss")] == [1.0, 0.9, 5.0, 0.5]
    assert [r.key for r in db.rows(round=0)] == ["loss", "acc", "loss", "loss"]
    assert db.rows(key="acc", round=1)[0].t_sim == 12.5
    assert db.series("loss") == [(0, 1.0), (0, 0.9), (1, 0.5)]
    assert db.series("loss", node="n1") == [(0, 5.0)]
    assert db.series("nope") == []


def test_round_table(db: MetricsDB) -> None:
    fill(db)
    assert db.round_table() == [
        {"round": 0, "acc": 0.1, "loss": 0.9},
        {"round": 1, "acc": 0.4, "loss": 0.5},
        {"round": 2, "acc": 0.7},
    ]
    assert db.round_table(["loss"]) == [{"round": 0, "loss": 0.9}, {"round": 1, "loss": 0.5}]
    assert db.round_table([]) == []


def test_nan_round_trips(db: MetricsDB) -> None:
    db.log("loss", float("nan"), round=0)
    assert math.isnan(db.rows()[0].value) and math.isnan(db.series("loss")[0][1])
    assert math.isnan(db.round_table()[0]["loss"])


def test_delete_after_round(db: MetricsDB) -> None:
    fill(db)
    db.log("loss", 0.2, round=3)  # still buffered: must be deleted too
    assert db.delete_after_round(0) == 4
    assert [row["round"] for row in db.round_table()] == [0]
    assert db.max_round() == 0
    assert [r.key for r in db.rows() if r.round is None] == ["lr"]  # round-less rows stay


def test_log_many_needs_key_and_value(db: MetricsDB) -> None:
    with pytest.raises(UsageError, match="'key' and a 'value'"):
        db.log_many([{"value": 1.0}])


def test_concurrent_reader_sees_only_committed(db: MetricsDB) -> None:
    db.log("loss", 1.0, round=0)
    db.flush()
    reader = MetricsDB(db.path, readonly=True)
    cursor = reader._conn.execute("SELECT value FROM metrics")  # an open read transaction
    assert cursor.fetchone() == (1.0,)
    db.log("loss", 0.5, round=1)
    db.flush()  # the writer is not blocked by the open reader
    assert reader.series("loss") == [(0, 1.0), (1, 0.5)]
    db.log("loss", 0.1, round=2)
    assert len(reader.rows()) == 2  # unflushed rows are invisible
    with pytest.raises(UsageError, match="read-only"):
        reader.log("x", 1.0)
    with pytest.raises(sqlite3.OperationalError):
        reader._conn.execute("DELETE FROM metrics")
    reader.close()


def test_readonly_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no metrics database"):
        MetricsDB(tmp_path / "none.sqlite", readonly=True)


def test_close_flushes_and_reopen_appends(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite"
    first = MetricsDB(path)
    first.log("a", 1.0, round=0)
    first.close()
    first.close()  # idempotent
    with MetricsDB(path) as second:
        second.log("a", 2.0, round=1)
    with MetricsDB(path, readonly=True) as reader:
        assert reader.series("a") == [(0, 1.0), (1, 2.0)]
