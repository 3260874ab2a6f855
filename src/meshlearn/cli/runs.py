"""`meshlearn runs list | show | export | compare | rm`: look at (and tidy) what the run store holds.

Runs of every kind are listed together; `show` and `compare` ask each run's kind what to print
(a round table for FL runs, scalar results for overlay and split runs). Nothing here imports the
learning stack until a kind is asked for. A run whose process was killed shows as ``died`` with the time
it last wrote anything; damaged or read-only run directories are one-line errors (StoreError).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from meshlearn.cli import app
from meshlearn.cli.console import RUNS_DIR_HELP, out
from meshlearn.errors import ConfigError, StoreError, UsageError

runs_app = typer.Typer(help="List, inspect, export, compare and remove stored runs.", no_args_is_help=True,
                       rich_markup_mode=None)
app.add_typer(runs_app, name="runs")

RUNS_DIR = typer.Option(None, "--runs-dir", help=RUNS_DIR_HELP)
RUN_ARG = typer.Argument("latest", help="Run id, unique prefix, run name or 'latest'.")


def _store(runs_dir: Optional[Path]):
    from meshlearn.store import RunStore

    return RunStore(runs_dir)


@runs_app.command("list")
def list_cmd(runs_dir: Optional[Path] = RUNS_DIR) -> None:
    """Every run, newest first: kind, what ran, status, progress and final accuracy."""
    store = _store(runs_dir)
    runs = store.list_runs()
    if not runs:
        out.print(f"no runs in {store.root} yet: try `meshlearn demo`, or point --runs-dir or "
                  "$MESHLEARN_RUNS at your runs directory", highlight=False)
        return
    table = Table("id", "kind", "what", "status", "steps", "accuracy", "created")
    for r in runs:
        acc, info = r.info.get("final_accuracy"), r.info
        table.add_row(escape(r.id), str(info.get("kind", "")), escape(_what(info)), _status(r.status, r.died),
                      str(info.get("completed_round", "")), "" if acc is None else f"{acc:.4f}", r.created[:19])
    out.print(table)


def _status(status: str, died: Optional[str]) -> str:
    """``died`` runs carry the UTC time they last wrote anything."""
    return f"died {died[:19].replace('T', ' ')}" if died else status


def _kind(run):
    from meshlearn.experiment import kind_named

    return kind_named(run.info.get("kind"))


@runs_app.command("show")
def show_cmd(run: str = RUN_ARG, runs_dir: Optional[Path] = RUNS_DIR) -> None:
    """A run's summary, its per-step metrics (FL: the round table) and where its files are."""
    from meshlearn.cli.console import summary_table

    r = _store(runs_dir).open_run(run)
    kind = _kind(r)
    out.print(summary_table(f"{r.id}  [{_status(r.status, r.died_at)}]  {r.info.get('kind', '')}", kind.summary(r)))
    shown = kind.table(r)
    if shown is not None:
        header, rows = shown
        table = Table(*header)
        for row in rows:
            table.add_row(*row)
        out.print(table)
    out.print(f"config: {r.config_path}\nmetrics: {r.metrics_path}\nlog: {r.path / 'run.log'}", highlight=False)


@runs_app.command("export")
def export_cmd(run: str = RUN_ARG,
               fmt: str = typer.Option("csv", "--format", "-f", help="csv (one row per step) or json (config, run "
                                       "info and every metric)."),
               out_path: Optional[Path] = typer.Option(None, "--out", "-o", help="Output file [default: inside "
                                                       "the run]."),
               runs_dir: Optional[Path] = RUNS_DIR) -> None:
    """Write a run's metrics as CSV or JSON."""
    from meshlearn.store import export_csv, export_json

    if fmt not in ("csv", "json"):
        raise ConfigError("--format", f"unknown format {fmt!r}", ["csv", "json"])
    if out_path is not None and not out_path.parent.is_dir():
        raise UsageError(f"cannot write --out {out_path}: its directory {out_path.parent} does not exist; check "
                         "that the directory exists or pick another path")
    r = _store(runs_dir).open_run(run)
    path = export_csv(r, out_path) if fmt == "csv" else export_json(r, out_path)  # other write failures: StoreError
    out.print(f"wrote {path}", highlight=False)


@runs_app.command("compare")
def compare_cmd(runs: list[str] = typer.Argument(..., help="Run ids, unique prefixes or names ('latest' works too)."),
                target: float = typer.Option(0.9, "--target", help="Accuracy for the time-to-accuracy column."),
                runs_dir: Optional[Path] = RUNS_DIR) -> None:
    """Runs side by side: what ran and each kind's headline numbers (FL: accuracy, wire bytes, time to --target)."""
    if not 0 < target <= 1:
        raise ConfigError("--target", f"accuracy target must be in (0, 1], got {target}")
    store = _store(runs_dir)
    opened = [store.open_run(name) for name in runs]
    lines = [(r, _kind(r).headline(r, target)) for r in opened]
    columns = list(dict.fromkeys(key for _, line in lines for key in line))
    title = "comparison (FL times: virtual seconds unless real)"
    if len({r.info.get("kind") for r in opened}) == 1:  # one kind: a row per run
        table = Table("run", "name", "kind", "what", *columns, title=title)
        for r, line in lines:
            table.add_row(*_described(r), *(_cell(line.get(c)) for c in columns))
    else:  # kinds report different numbers: a column per run
        table = Table("", *(escape(r.id) for r in opened), title=title)
        for i, label in enumerate(("name", "kind", "what")):
            table.add_row(label, *(_described(r)[i + 1] for r in opened))
        for c in columns:
            table.add_row(escape(c), *(_cell(line.get(c)) for _, line in lines))
    out.print(table)


def _what(info: dict) -> str:
    """What a run ran, as its kind described it (algorithm, protocol or study)."""
    return str(info.get("algorithm") or info.get("protocol") or info.get("study") or "")


def _described(r) -> list[str]:
    return [escape(r.id), escape(str(r.info.get("name", ""))), str(r.info.get("kind", "")), escape(_what(r.info))]


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return f"{value:.4f}" if isinstance(value, float) else escape(str(value))


@runs_app.command("rm")
def rm_cmd(runs: list[str] = typer.Argument(..., help="Run ids, unique prefixes or names to delete."),
           yes: bool = typer.Option(False, "--yes", "-y", help="Delete without asking."),
           runs_dir: Optional[Path] = RUNS_DIR) -> None:
    """Delete stored runs (their whole directories: config, metrics, checkpoints, log)."""
    store = _store(runs_dir)
    doomed = [store.open_run(name) for name in runs]
    for r in doomed:
        if r.status == "running" and not yes:
            raise UsageError(f"run {r.id} is marked running (another process may be writing it); pass --yes to "
                             "delete it anyway")
    if not yes and not typer.confirm(f"delete {len(doomed)} run(s): {', '.join(r.id for r in doomed)}?"):
        raise typer.Exit(1)
    for r in doomed:
        r.close()
        try:
            shutil.rmtree(r.path)
        except OSError as exc:
            why = exc.strerror or exc
            raise StoreError(f"cannot remove {r.path}: {why}; is the runs directory read-only?") from None
        out.print(f"removed {r.path}", highlight=False)
