"""The `meshlearn` command line: one typer app, one module per command group, thin over the experiment API.

    meshlearn run CONFIG|PRESET [--set a.b=1] [--resume RUN]   run an experiment of any kind into the run store
    meshlearn demo                                             the quickstart, nothing to configure
    meshlearn config show [PRESET] [--kind K]                  every key, its default and its meaning
    meshlearn runs list | show | export | compare | rm         look at (and tidy) stored runs
    meshlearn data show CONFIG|PRESET [--set a.b=1]            how the training set is split over clients
    meshlearn serve / join / peer CONFIG                       real FL processes over TCP
    meshlearn keys secret | issue                              a cluster secret, per-client key files
    meshlearn swarm init | serve | infer                       a model partitioned across server processes
    meshlearn overlay sim | up,  meshlearn split ...           shortcuts for overlay and split experiments

Errors from meshlearn print one clear line and exit 2 (bad config or usage) or 1 (anything
else), never a traceback. Rule: command modules import only typer and rich at module level; the
learning stack (numpy, torch) is imported inside the commands that need it, so `meshlearn --help`
and `meshlearn runs list` start in well under a second.
"""

from __future__ import annotations

import importlib
import sys
from typing import Optional

import click
import typer

from meshlearn.errors import MeshlearnError, UsageError

app = typer.Typer(
    name="meshlearn",
    help="Federated and decentralized learning, split computing and overlays over unreliable networks, "
         "simulated or on real machines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # help texts are plain: "[default: ./runs]" must not be read as markup
)


def _version(show: bool) -> None:
    if show:
        from meshlearn import __version__

        typer.echo(f"meshlearn {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True,
                                                 help="Print the version and exit.")) -> None:
    """Federated and decentralized learning, split computing and overlays over unreliable networks."""


from meshlearn.cli import data, deploy, keys, overlay, run, runs  # noqa: E402,F401  (commands register)

__all__ = ["app", "main", "command"]

# Command groups whose modules import heavy packages (their option defaults come from the settings
# models): loaded only when one of their commands runs. name -> (module, typer app attribute, help).
LAZY_GROUPS = {"split": ("meshlearn.cli.split", "split_app", "Split computing: train, COMtune and search split "
                         "models; serve the tail and run the head over UDP; MWJC link/model bandit."),
               "swarm": ("meshlearn.cli.swarm", "swarm_app", "A model partitioned across server processes that "
                         "place themselves: serve, status, infer and generate with failover, pipeline training.")}


class _LazyGroup(click.Group):
    """A click group standing in for a typer app that is imported on first use."""

    def __init__(self, name: str, module: str, attr: str, help: str):
        super().__init__(name=name, help=help, no_args_is_help=True)
        self._where, self._group = (module, attr), None

    def _load(self) -> click.Group:
        if self._group is None:
            module, attr = self._where
            self._group = typer.main.get_command(getattr(importlib.import_module(module), attr))
        return self._group

    def list_commands(self, ctx: click.Context) -> list[str]:
        return self._load().list_commands(ctx)

    def get_command(self, ctx: click.Context, name: str):
        return self._load().get_command(ctx, name)


def command() -> click.Group:
    """The whole `meshlearn` command as a click group (lazy groups included)."""
    group = typer.main.get_command(app)
    for name, (module, attr, text) in LAZY_GROUPS.items():
        group.add_command(_LazyGroup(name, module, attr, text), name)
    return group


def _error(text: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]error:[/] {text}", highlight=False, soft_wrap=True, markup=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `meshlearn` script (``argv=None``: the process's own arguments)."""
    code = _run(argv)
    if argv is None:  # the real command line: everything is written and flushed, skip the slow teardown
        _fast_exit(code)
    sys.exit(code)


def _run(argv: list[str] | None) -> int:
    try:
        command().main(args=argv, prog_name="meshlearn", standalone_mode=True)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except click.exceptions.Exit as stop:  # --help, --version
        return stop.exit_code
    except click.exceptions.ClickException as problem:  # e.g. a lazy group called without a command
        problem.show()
        return problem.exit_code
    except UsageError as err:
        _error(_escape(str(err)))
        return 2
    except MeshlearnError as err:
        _error(_escape(str(err)))
        return 1
    return 0


def _fast_exit(code: int) -> None:
    """Exit without the interpreter's teardown of torch, scipy and friends (~2 s after a run has finished).

    Run files are already closed or committed when a command returns (run.json is rewritten atomically,
    metrics are committed, the run log is closed); this flushes the standard streams and logging first."""
    import logging
    import os

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    logging.shutdown()
    os._exit(code)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
