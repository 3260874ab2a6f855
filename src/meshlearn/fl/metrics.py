"""Derived FL metrics computed from a run's round table. Pure functions with no I/O.

A round table is a list of dicts with one dict per round, as ``store.RunMetrics.round_table``
returns: ``{"round": r, "accuracy": ..., "virtual_time": ..., ...}``. ``round_rows`` builds the
same shape from the rows of a ``MemorySink``.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

__all__ = ["time_to_accuracy", "round_rows"]


def time_to_accuracy(rows: Iterable[Mapping[str, Any]], target: float) -> float | None:
    """Virtual seconds at the end of the first round whose accuracy is >= ``target``.

    Returns None when no round reaches the target. Rounds are scanned in round order; rows
    without an accuracy or a virtual_time are skipped.
    """
    ordered = sorted(rows, key=lambda r: r.get("round") if r.get("round") is not None else math.inf)
    for row in ordered:
        acc, t = row.get("accuracy"), row.get("virtual_time")
        if acc is None or t is None or math.isnan(acc):
            continue
        if acc >= target:
            return float(t)
    return None


def round_rows(sink_rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Round-table dicts from ``MemorySink.rows`` (run-level rows only; the last value per key wins)."""
    table: dict[int, dict[str, Any]] = {}
    for row in sink_rows:
        if row.get("node") is None and row.get("round") is not None:
            table.setdefault(row["round"], {"round": row["round"]})[row["key"]] = row["value"]
    return [table[r] for r in sorted(table)]
