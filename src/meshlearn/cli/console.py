"""What the commands print: progress (a bar on a terminal, one line per step otherwise) and summaries.

Rule: stdout carries results (summary tables, JSON); stderr carries progress and warnings, so
``meshlearn run ... > log`` still shows one line per round as the run goes.
"""

from __future__ import annotations

import sys
from typing import Any, Iterable

from rich.console import Console
from rich.markup import escape
from rich.table import Table

__all__ = ["out", "err", "Reporter", "summary_table", "RUNS_DIR_HELP"]


class _Stdout:
    """stdout, at least 120 columns wide so tables stay readable when piped (the width is read at each print)."""

    def print(self, *args, **kwargs) -> None:
        Console(width=max(Console().width, 120)).print(*args, **kwargs)


out = _Stdout()
err = Console(stderr=True)
RUNS_DIR_HELP = "Run store root [default: $MESHLEARN_RUNS or ./runs]."


class Reporter:
    """Receives lifecycle ``Progress`` reports: a rich bar on a terminal, plain lines otherwise."""

    def __init__(self, label: str = "step", quiet: bool = False, tty: bool | None = None):
        self.label, self.quiet = label, quiet
        self.tty = err.is_terminal if tty is None else tty
        self._bar = self._task = None
        self._decile = -1  # line mode with many steps: one line per tenth of the run

    def __call__(self, report: Any) -> None:
        if report.message is not None:
            self._warn(report.message)
        elif not self.quiet:
            self._step(report.step, report.total, report.metrics)

    def _warn(self, text: str) -> None:
        if self._bar is not None:
            self._bar.console.print(f"[yellow]warning:[/] {escape(text)}", highlight=False)
        else:
            err.print(f"[yellow]warning:[/] {escape(text)}", highlight=False, soft_wrap=True)

    def _step(self, step: int, total: int | None, metrics: dict) -> None:
        shown = "  ".join(f"{k} {_short(v)}" for k, v in metrics.items() if k in _SHOWN)
        if not self.tty:
            if total and total > 100:
                if 10 * step // total <= self._decile:
                    return
                self._decile = 10 * step // total
            of = f"/{total}" if total else ""
            print(f"{self.label} {step}{of}" + (f": {shown}" if shown else ""), file=sys.stderr, flush=True)
            return
        if self._bar is None:
            self._start(total)
        self._bar.update(self._task, completed=step, description=shown or self.label)

    def _start(self, total: int | None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                             console=err, transient=False)
        self._bar.start()
        self._task = self._bar.add_task(self.label, total=total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> "Reporter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_SHOWN = ("accuracy", "loss", "bytes_up", "clients_completed", "detected", "accuracy_pct")


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() and abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def summary_table(title: str, rows: Iterable[tuple[str, str]]) -> Table:
    table = Table(title=escape(title), show_header=False)
    for key, value in rows:
        table.add_row(escape(key), escape(value))
    return table
