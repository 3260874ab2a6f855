"""`meshlearn run`, `demo` and `config show`: simulate experiments from a TOML file or a preset."""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from meshlearn.cli import app
from meshlearn.config import dump_with_comments, load_config
from meshlearn.errors import ConfigError
from meshlearn.experiment.schema import ExperimentConfig
from meshlearn.experiment.build import planned_rounds
from meshlearn.store import RunStore

console = Console()
config_app = typer.Typer(help="Inspect experiment configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("meshlearn.presets").iterdir() if p.name.endswith(".toml"))


def resolve_config_path(config: str) -> Path:
    """A path to a TOML file, or the name of a bundled preset."""
    path = Path(config)
    if path.exists():
        return path
    if config in preset_names():
        return Path(str(resources.files("meshlearn.presets") / f"{config}.toml"))
    raise ConfigError("config", f"no file {config!r} and no preset of that name", preset_names())


def load_experiment(config: str, overrides: list[str]) -> ExperimentConfig:
    return load_config(ExperimentConfig, resolve_config_path(config), overrides)


_DROP_FAULT = {"faults.crashes": "drop the crashes with --set faults.crashes=[]",
               "faults.partitions": "drop the partitions with --set faults.partitions=[]"}


def check_runnable(cfg: ExperimentConfig) -> ExperimentConfig:
    """Catch mistakes that only surface when a simulation is built, before a run directory exists.

    The schema cannot see them: a data.path that does not exist on this machine, or faults that
    name clients the config does not have (e.g. the quickstart crashes client-07, so
    `--set data.clients=5` needs the crash dropped too).
    """
    return check_faults(check_data_path(cfg))


def check_data_path(cfg: ExperimentConfig) -> ExperimentConfig:
    """data.path must exist here; a ConfigError (exit 2) that says how to point at it otherwise."""
    path = cfg.data.path
    if path is not None and not Path(path).expanduser().exists():
        raise ConfigError("data.path", f"no file or directory {path!r} (relative paths are read from "
                          f"{Path.cwd()}); fix the path in the config or pass --set data.path=PATH")
    return cfg


def check_faults(cfg: ExperimentConfig) -> ExperimentConfig:
    """Faults may only name nodes the config has; the error says which ones exist and how to drop the fault."""
    from meshlearn.experiment.build import SERVER, client_ids

    ids = client_ids(cfg.data.clients)
    try:
        cfg.faults.expand([SERVER, *ids], np.random.default_rng(0), 0.0)
    except ConfigError as err:
        if not err.key.startswith("faults.") or "unknown node" not in err.reason:
            raise
        section = next((v for k, v in _DROP_FAULT.items() if err.key.startswith(k)), None)
        drop = f", or {section}" if section else ""
        raise ConfigError(err.key, f"{err.reason}: data.clients = {cfg.data.clients} gives the nodes server and "
                          f"{ids[0]} … {ids[-1]}; name one of those, raise data.clients{drop}") from None
    return cfg


@app.command("run")
def run_cmd(
    config: Optional[str] = typer.Argument(None, help="TOML file or preset name (see `meshlearn config show`)."),
    set_: list[str] = typer.Option([], "--set", help="Override a key, e.g. --set fl.rounds=10 (repeatable)."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Resume a stored run (id, unique prefix or 'latest')."),
    runs_dir: Optional[Path] = typer.Option(None, "--runs-dir", help="Run store root [default: $MESHLEARN_RUNS or ./runs]."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar, only the summary."),
) -> None:
    """Simulate a federated-learning experiment and store its metrics, config and checkpoints."""
    if (config is None) == (resume is None):
        raise ConfigError("", "give a CONFIG (TOML file or preset, e.g. `meshlearn run quickstart`) "
                          "or --resume RUN (e.g. --resume latest), not both")
    cfg = check_runnable(load_experiment(config, set_)) if config else None
    execute(cfg, RunStore(runs_dir), resume, quiet)


@app.command("demo")
def demo_cmd(
    runs_dir: Optional[Path] = typer.Option(None, "--runs-dir", help="Run store root [default: $MESHLEARN_RUNS or ./runs]."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar, only the summary."),
) -> None:
    """Run the quickstart: FedAvg, 20 IoT clients, lossy uplink, one crash, digits data."""
    execute(load_experiment("quickstart", []), RunStore(runs_dir), None, quiet)


@config_app.command("show")
def config_show(preset: Optional[str] = typer.Argument(None, help="Preset or TOML file to resolve; omit for defaults.")) -> None:
    """Print every config key with its value and a comment saying what it does."""
    cfg = load_experiment(preset, []) if preset else ExperimentConfig()
    typer.echo(dump_with_comments(cfg))


def execute(cfg: ExperimentConfig | None, store: RunStore, resume: str | None, quiet: bool) -> None:
    from meshlearn.experiment.run import run_simulated

    rounds = planned_rounds(cfg) if cfg else _stored_rounds(store, resume)
    with _progress(quiet) as progress:
        task = progress.add_task("rounds", total=rounds)

        def on_round(n: int, m: dict) -> None:
            progress.update(task, completed=n, description=f"acc {m.get('accuracy', float('nan')):.3f}")

        try:
            outcome = run_simulated(cfg, store=store, resume=resume, on_round=on_round)
        except KeyboardInterrupt:
            progress.stop()
            console.print("[yellow]interrupted[/]: completed rounds are saved; resume with "
                          "`meshlearn run --resume latest`")
            sys.exit(130)
    print_summary(outcome)


def _stored_rounds(store: RunStore, resume: str) -> int:
    return planned_rounds(load_config(ExperimentConfig, store.open_run(resume).path / "config.toml"))


def _progress(quiet: bool) -> Progress:
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    return Progress(*columns, console=console, disable=quiet, transient=False)


def print_summary(outcome) -> None:
    info = outcome.run.reload() or outcome.run.info
    table = Table(title=f"run {outcome.run.id}", show_header=False)
    final = outcome.final
    rows = [("rounds", str(outcome.rounds)), ("test accuracy", f"{final.get('accuracy', float('nan')):.4f}"),
            ("test loss", f"{final.get('loss', float('nan')):.4f}"),
            ("bytes up (total)", f"{info.get('bytes_up', 0):,.0f}"),
            ("bytes down (total)", f"{info.get('bytes_down', 0):,.0f}"),
            ("virtual time", f"{final.get('virtual_time', 0):.1f} s"), ("wall time", f"{outcome.wall_s:.1f} s"),
            ("stored in", str(outcome.run.path))]
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
