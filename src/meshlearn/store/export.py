"""Exporting a run's metrics for plotting elsewhere: CSV (round table) and JSON (everything).

* ``metrics.csv``  -- one row per round, ``round`` then the metric keys sorted;
  run-level metrics only (``node`` empty), last value per round.
* ``export.json`` -- ``{"id", "config", "info", "metrics": {key: [row, ...]}}`` with
  every row (per-node ones included); NaN is written as ``null``.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from meshlearn.errors import StoreError
from meshlearn.store.files import atomic_write, atomic_write_text
from meshlearn.store.metrics import MetricRow, MetricsDB
from meshlearn.store.runs import Run

__all__ = ["export_csv", "export_json", "CSV_NAME", "JSON_NAME"]

CSV_NAME, JSON_NAME = "metrics.csv", "export.json"


def _with_metrics(run: Run, use: Any) -> Any:
    """Call ``use(db)`` with the run's metrics (None if nothing was logged), closing what we opened."""
    db = run.metrics_reader()
    try:
        return use(db)
    finally:
        if db is not None and db is not run._metrics:
            db.close()


def _csv_value(value: Any) -> Any:
    """Empty for missing / NaN; whole numbers (counts, bytes) without a trailing ``.0``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def export_csv(run: Run, path: str | Path | None = None, keys: Sequence[str] | None = None) -> Path:
    """Write the round table (``round`` + sorted keys) as CSV; returns the file path."""
    path = Path(path) if path is not None else run.path / CSV_NAME
    table = _with_metrics(run, lambda db: db.round_table(keys) if db else [])
    columns = sorted(keys if keys is not None else {k for row in table for k in row} - {"round"})
    lines = _csv_lines(["round", *columns], table)
    _guarded(path, lambda: atomic_write(path, lambda tmp: _write_rows(tmp, lines)))
    return path


def _csv_lines(header: list[str], table: list[dict[str, Any]]) -> list[list[Any]]:
    return [header] + [[_csv_value(row.get(col)) for col in header] for row in table]


def _write_rows(path: Path, lines: list[list[Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(lines)


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else value


def _finite(obj: Any) -> Any:
    """Config/info values with non-finite floats spelled as TOML does (``inf``, ``nan``)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _grouped(rows: list[MetricRow]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        item = row._asdict()
        item.pop("key"), item.pop("id")
        item["value"] = _json_number(row.value)
        out.setdefault(row.key, []).append(item)
    return out


def _all_rows(db: MetricsDB | None) -> list[MetricRow]:
    return db.rows() if db is not None else []


def export_json(run: Run, path: str | Path | None = None) -> Path:
    """Write config, info and every metric row grouped by key as JSON; returns the file path."""
    path = Path(path) if path is not None else run.path / JSON_NAME
    data = {
        "id": run.id,
        "config": _finite(run.config() if run.config_path.is_file() else {}),
        "info": _finite(run.info),
        "metrics": _grouped(_with_metrics(run, _all_rows)),
    }
    _guarded(path, lambda: atomic_write_text(path, json.dumps(data, indent=2, default=str, allow_nan=False) + "\n"))
    return path


def _guarded(path: Path, write: Any) -> None:
    """Run `write`; a filesystem error becomes a StoreError naming the path."""
    try:
        write()
    except OSError as err:
        raise StoreError(f"cannot write {path}: {err.strerror or err}; pick another --out path") from None
