"""meshlearn.store: run directories, their metrics database, checkpoints and exports.

``RunStore(root)`` creates and finds runs; a ``Run`` has ``config.toml``,
``run.json`` (atomically rewritten status and owning process: a running run whose
process is gone is ``died``), ``metrics.sqlite`` (``MetricsDB``, SQLite in WAL mode)
and ``checkpoints/`` (safetensors with a sha256 of their tensors, newest 3 kept).
Damaged, read-only or full run directories raise ``StoreError`` and never lose data.
"""

from meshlearn.store.export import export_csv, export_json
from meshlearn.store.metrics import MetricRow, MetricsDB
from meshlearn.store.runs import ENV_VAR, Run, RunInfo, RunStore

__all__ = [
    "RunStore",
    "Run",
    "RunInfo",
    "MetricsDB",
    "MetricRow",
    "export_csv",
    "export_json",
    "ENV_VAR",
]
