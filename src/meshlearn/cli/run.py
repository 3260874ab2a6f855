"""`meshlearn run`, `demo` and `config show`: run any kind of experiment from a TOML file or a preset.

    meshlearn run quickstart --set fl.rounds=50          # a preset, with overrides
    meshlearn run examples/overlay/swim.toml             # the kind is read from the file
    meshlearn run --resume latest --set fl.rounds=80     # continue a stored run (safe overrides only)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from meshlearn.cli import app
from meshlearn.cli.console import RUNS_DIR_HELP, Reporter, err, out, summary_table
from meshlearn.errors import ConfigError

config_app = typer.Typer(help="Inspect experiment configuration.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(config_app, name="config")

CONFIG_ARG = typer.Argument(None, help="TOML file or preset name (presets: `meshlearn config show --presets`).")
SET = typer.Option([], "--set", help="Override a key, e.g. --set fl.rounds=10 (repeatable).")
RUNS_DIR = typer.Option(None, "--runs-dir", help=RUNS_DIR_HELP)
QUIET = typer.Option(False, "--quiet", "-q", help="No progress, only warnings and the summary.")


@app.command("run")
def run_cmd(config: Optional[str] = CONFIG_ARG, set_: list[str] = SET,
            resume: Optional[str] = typer.Option(None, "--resume", help="Continue a stored run (id, unique prefix "
                                                 "or 'latest'); --set may change the keys the kind allows, e.g. "
                                                 "fl.rounds."),
            runs_dir: Optional[Path] = RUNS_DIR, quiet: bool = QUIET) -> None:
    """Run an experiment of any kind (fl, overlay, split: read from the file) and store its config, metrics and checkpoints."""
    from meshlearn.experiment import load_experiment

    if (config is None) == (resume is None):
        raise ConfigError("", "give a CONFIG (TOML file or preset, e.g. `meshlearn run quickstart`) "
                          "or --resume RUN (e.g. --resume latest), not both")
    execute(load_experiment(config, set_) if config else None, runs_dir, resume=resume,
            overrides=set_ if resume else (), quiet=quiet)


@app.command("demo")
def demo_cmd(runs_dir: Optional[Path] = RUNS_DIR, quiet: bool = QUIET) -> None:
    """Run the quickstart: FedAvg, 20 IoT clients, lossy uplink, one crash, digits data."""
    from meshlearn.experiment import load_experiment

    execute(load_experiment("quickstart"), runs_dir, quiet=quiet)


def execute(cfg, runs_dir: Optional[Path], *, resume: str | None = None, overrides=(), quiet: bool = False) -> None:
    """Run through the lifecycle with progress on stderr and the kind's summary on stdout."""
    from meshlearn.experiment import run_experiment
    from meshlearn.experiment.lifecycle import Terminated
    from meshlearn.store import RunStore

    with Reporter(_step_name(cfg), quiet) as reporter:
        try:
            run = run_experiment(cfg, RunStore(runs_dir), resume=resume, overrides=overrides, progress=reporter)
        except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM (Terminated): the run is interrupted, resumable
            reporter.close()
            how = "terminated" if isinstance(stop, Terminated) else "interrupted"
            err.print(f"[yellow]{how}[/]: completed rounds are saved; resume with `meshlearn run --resume latest`")
            sys.exit(143 if isinstance(stop, Terminated) else 130)
    print_summary(run)


def _step_name(cfg) -> str:
    from meshlearn.experiment import kind_named

    return kind_named(getattr(cfg, "kind", None)).step if cfg is not None else "step"


def print_summary(run) -> None:
    """The kind's summary of ``run`` as a table, and where it is stored."""
    from meshlearn.experiment import kind_named

    kind = kind_named(run.info.get("kind"))
    rows = [*kind.summary(run), ("stored in", str(run.path))]
    out.print(summary_table(f"run {run.id}  [{run.info.get('status')}]", rows))


@config_app.command("show")
def config_show(preset: Optional[str] = typer.Argument(None, help="Preset or TOML file to resolve; omit for the "
                                                       "defaults of --kind."),
                kind: Optional[str] = typer.Option(None, "--kind", help="Show the defaults of this experiment kind "
                                                   "(fl, overlay, split) [default: fl]."),
                presets: bool = typer.Option(False, "--presets", help="List the bundled presets and exit.")) -> None:
    """Print every config key with its value and a comment saying what it does."""
    from meshlearn.config import dump_with_comments
    from meshlearn.experiment import KINDS, kind_named, load_experiment, preset_names

    if presets:
        typer.echo("\n".join(preset_names()))
        return
    if preset and kind:
        raise ConfigError("--kind", "give a PRESET/FILE or --kind, not both (a file names its own kind)")
    if kind is not None and kind not in KINDS:
        raise ConfigError("--kind", f"unknown experiment kind {kind!r}", KINDS.names())
    cfg = load_experiment(preset) if preset else kind_named(kind).config()()
    typer.echo(dump_with_comments(cfg))
