"""The `meshlearn` command line: one typer app, one module per command group.

    meshlearn run CONFIG|PRESET [--set a.b=1] [--resume RUN]   simulate an experiment into the run store
    meshlearn demo                                             the quickstart, nothing to configure
    meshlearn config show [PRESET]                             every key, its default and its meaning
    meshlearn runs list | show RUN | export RUN                look at stored runs
    meshlearn data show CONFIG|PRESET [--set a.b=1]            how the training set is split over clients
    meshlearn serve CONFIG / meshlearn join CONFIG             real FL server / client processes over TCP
    meshlearn overlay up --listen H:P-P --cluster H:P-P         real SWIM members over UDP

Errors from meshlearn print one clear line and exit 2 (bad config or usage) or 1 (anything
else), never a traceback.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from meshlearn.errors import MeshlearnError, UsageError

app = typer.Typer(
    name="meshlearn",
    help="Federated and decentralized learning over unreliable networks, simulated or on real machines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True)

from meshlearn.cli import data, deploy, overlay, run, runs, split, split_study  # noqa: E402  (commands register)

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `meshlearn` script."""
    try:
        app(args=argv, standalone_mode=True)
    except UsageError as err:
        err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except MeshlearnError as err:
        err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(1)
