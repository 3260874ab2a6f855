"""`meshlearn runs list | show | export`: look at what the run store holds."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from meshlearn.cli import app
from meshlearn.errors import ConfigError, UsageError
from meshlearn.store import RunStore, export_csv, export_json

console = Console(width=max(Console().width, 120))  # wide tables stay readable when piped
runs_app = typer.Typer(help="List, inspect and export stored runs.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")

RUNS_DIR = typer.Option(None, "--runs-dir", help="Run store root [default: $MESHLEARN_RUNS or ./runs].")
SHOW_KEYS = ["accuracy", "loss", "bytes_up", "bytes_down", "clients_completed", "clients_dropped", "virtual_time"]


@runs_app.command("list")
def list_cmd(runs_dir: Optional[Path] = RUNS_DIR) -> None:
    """Every run, newest first, with status and final accuracy."""
    store = RunStore(runs_dir)
    runs = store.list_runs()
    if not runs:
        console.print(f"no runs in {store.root} yet: try `meshlearn demo`, or point --runs-dir or "
                      "$MESHLEARN_RUNS at your runs directory", highlight=False)
        return
    table = Table("id", "status", "rounds", "accuracy", "created")
    for r in runs:
        acc = r.info.get("final_accuracy")
        table.add_row(r.id, r.status, str(r.info.get("completed_round", "")),
                      "" if acc is None else f"{acc:.4f}", r.created)
    console.print(table)


@runs_app.command("show")
def show_cmd(run: str = typer.Argument("latest", help="Run id, unique prefix or 'latest'."),
             runs_dir: Optional[Path] = RUNS_DIR) -> None:
    """Per-round metrics of one run and where its files are."""
    r = RunStore(runs_dir).open_run(run)
    db = r.metrics_reader()
    if str(r.info.get("kind", "")).startswith("overlay"):
        console.print(_summary_table(r, db))
    else:
        table = Table("round", *SHOW_KEYS, title=escape(f"{r.id}  [{r.status}]"))
        for row in db.round_table(SHOW_KEYS) if db is not None else []:
            table.add_row(str(row["round"]), *(_fmt(row.get(k)) for k in SHOW_KEYS))
        console.print(table)
    console.print(f"config: {r.path / 'config.toml'}\nmetrics: {r.path / 'metrics.sqlite'}")


@runs_app.command("export")
def export_cmd(run: str = typer.Argument("latest", help="Run id, unique prefix or 'latest'."),
               fmt: str = typer.Option("csv", "--format", "-f", help="csv (one row per round) or json (config, run info and every metric)."),
               out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output file [default: inside the run]."),
               runs_dir: Optional[Path] = RUNS_DIR) -> None:
    """Write a run's metrics as CSV or JSON."""
    if fmt not in ("csv", "json"):
        raise ConfigError("--format", f"unknown format {fmt!r}", ["csv", "json"])
    if out is not None and not out.parent.is_dir():
        raise UsageError(f"cannot write --out {out}: its directory {out.parent} does not exist; check that the "
                         "directory exists or pick another path")
    r = RunStore(runs_dir).open_run(run)
    path = export_csv(r, out) if fmt == "csv" else export_json(r, out)  # other write failures: StoreError
    console.print(f"wrote {path}")


def _summary_table(r, db) -> Table:
    """Overlay runs: every run-level metric, and for per-row series their count and mean."""
    table = Table("metric", "value", title=escape(f"{r.id}  [{r.status}]  {r.info.get('kind')} {r.info.get('protocol', '')}"))
    for key in db.keys() if db is not None else []:
        rows = db.rows(key)
        scalars = [row.value for row in rows if row.round is None]
        if scalars:
            table.add_row(key, _fmt(scalars[-1]))
        else:
            values = [row.value for row in rows]
            table.add_row(f"{key} (mean of {len(values)})", _fmt(sum(values) / len(values)))
    return table


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1:
        return f"{value:,.0f}"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


COMPARE_KEYS = ["accuracy", "bytes_up", "bytes_down", "bytes_total", "virtual_time"]


def compare_row(run, target: float) -> list[str]:
    """One line of `runs compare`: what ran, how well, at what cost."""
    from meshlearn.fl.metrics import time_to_accuracy

    rows = run.metrics_reader().round_table(COMPARE_KEYS)
    accs = [r["accuracy"] for r in rows if r.get("accuracy") is not None]
    traffic = sum(r.get("bytes_total", r.get("bytes_up", 0) + r.get("bytes_down", 0)) for r in rows)
    tta = time_to_accuracy(rows, target)
    algo = run.config().get("fl", {}).get("algorithm", "fedavg")
    return [run.info.get("name") or run.id, algo, str(len(rows)), _fmt(accs[-1] if accs else None), _fmt(max(accs) if accs else None),
            f"{traffic:,.0f}", _fmt(rows[-1].get("virtual_time") if rows else None),
            "not reached" if tta is None else f"{tta:,.1f}"]


@runs_app.command("compare")
def compare_cmd(runs: list[str] = typer.Argument(..., help="Run ids or unique prefixes ('latest' works too)."),
                target: float = typer.Option(0.9, "--target", help="Accuracy for the time-to-accuracy column."),
                runs_dir: Optional[Path] = RUNS_DIR) -> None:
    """Runs side by side: final and best accuracy, total wire bytes, virtual time, time to --target."""
    if not 0 < target <= 1:
        raise ConfigError("--target", f"accuracy target must be in (0, 1], got {target}")
    store = RunStore(runs_dir)
    table = Table("run", "algorithm", "evals", "final acc", "best acc", "wire bytes", "virtual s",
                  f"s to {target:.0%}", title="comparison (times are virtual seconds)")
    for name in runs:
        table.add_row(*compare_row(store.open_run(name), target))
    console.print(table)
