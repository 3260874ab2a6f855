"""`meshlearn overlay sim | up`: simulated overlay experiments into the run store; real SWIM over UDP."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from meshlearn.cli import app
from meshlearn.cli.console import RUNS_DIR_HELP
from meshlearn.cli.deploy import INSECURE, SECRET_FILE, read_secret
from meshlearn.errors import UsageError

overlay_app = typer.Typer(help="Fault-tolerant overlay: simulated experiments (sim) and real SWIM members over "
                          "UDP (up).", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(overlay_app, name="overlay")
console = Console()


@overlay_app.command("sim")
def sim_cmd(
    config: Optional[Path] = typer.Argument(None, help="Overlay experiment TOML (see examples/overlay/) "
                                           "[default: a 1,000-member SWIM cluster]."),
    set_: list[str] = typer.Option([], "--set", help="Override a key, e.g. --set swim.nodes=10000 (repeatable)."),
    runs_dir: Optional[Path] = typer.Option(None, "--runs-dir", help=RUNS_DIR_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress, only the summary."),
) -> None:
    """Simulate an overlay experiment (protocol = swim | propagation | dsml) and store its results.

    The same as `meshlearn run CONFIG` for a file with kind = "overlay" (this command reads any
    overlay file, with or without the kind key).

    Example: meshlearn overlay sim examples/overlay/swim.toml --set swim.nodes=10000
    """
    from meshlearn.cli.run import execute
    from meshlearn.config import load_config
    from meshlearn.experiment.overlay import config_model

    if config is not None and not config.is_file():
        raise UsageError(f"no config file at {config}; see examples/overlay/ for examples")
    execute(load_config(config_model(), config, set_), runs_dir, quiet=quiet)


@overlay_app.command("up")
def up_cmd(
    listen: str = typer.Option(..., "--listen", help="HOST:FIRST-LAST: the members this process hosts, "
                               "one UDP+TCP port each, e.g. 127.0.0.1:7000-7024."),
    cluster: list[str] = typer.Option(..., "--cluster", help="Every member's address range, HOST:FIRST-LAST "
                                      "(repeatable); member ids are their HOST:PORT."),
    seed_node: list[str] = typer.Option([], "--seed", help="A member to join through (repeatable) "
                                        "[default: the first --cluster address]."),
    preset: str = typer.Option("lan", "--preset", help="Timing preset: lan | wan | local (memberlist's)."),
    duration: float = typer.Option(60.0, "--duration", help="Seconds to run before leaving quietly."),
    events: Optional[Path] = typer.Option(None, "--events", help="Append membership events here as JSON lines."),
    status_every: float = typer.Option(10.0, "--status-every", help="Seconds between membership tables and "
                                       "run-store snapshots (0: tables only at the end, snapshots every 5 s)."),
    runs_dir: Optional[Path] = typer.Option(None, "--runs-dir", help=RUNS_DIR_HELP),
    secret_file: Optional[Path] = SECRET_FILE, insecure: bool = INSECURE,
) -> None:
    """Host a block of SWIM members; they probe, gossip and detect failures with the whole cluster.

    Example (4 terminals, 100 members; the key file holds the cluster key):

        meshlearn overlay up --listen 127.0.0.1:7000-7024 --cluster 127.0.0.1:7000-7099 --secret-file key
        meshlearn overlay up --listen 127.0.0.1:7025-7049 --cluster 127.0.0.1:7000-7099 --secret-file key ...
    """
    import asyncio

    from meshlearn.overlay.swim.config import swim_preset
    from meshlearn.overlay.swim.udp import SwimHost, open_events, parse_cluster

    book = parse_cluster(cluster)
    local = list(parse_cluster([listen]))
    seeds = seed_node or [next(iter(book))]
    if duration <= 0:
        raise UsageError(f"--duration must be positive, got {duration}")
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(message)s")
    host = SwimHost(local, book, config=swim_preset(preset), seeds=seeds, secret=read_secret(secret_file, insecure),
                    events=open_events(events))
    run = _open_run(runs_dir, listen, cluster, seeds, preset, duration)
    console.print(f"hosting {len(local)} of {len(book)} members ({local[0]} … {local[-1]}), "
                  f"seeds {', '.join(seeds)}, {duration:g} s; run {run.id}")
    ticks = iter(range(1, 10**9))

    def status(h) -> None:
        _record(run, h, next(ticks))
        if status_every > 0:
            _print_status(h)

    status_now = "failed"
    try:
        asyncio.run(host.run(duration, status, status_every or 5.0))
        status_now = "completed"
    finally:
        _record(run, host, next(ticks))
        run.finish(status_now, **{f"stat_{k}": v for k, v in host.stats().items()})
        _print_status(host)
        stats = {k: v for k, v in host.stats().items() if v}
        console.print("counters: " + (", ".join(f"{k}={v}" for k, v in sorted(stats.items())) or "none"))


def _open_run(runs_dir, listen: str, cluster: list[str], seeds: list[str], preset: str, duration: float):
    import tomli_w

    from meshlearn.store import RunStore

    options = {"listen": listen, "cluster": cluster, "seeds": seeds, "preset": preset, "duration_s": duration}
    return RunStore(runs_dir).create_run(f"overlay-up-{listen.replace(':', '-')}", tomli_w.dumps(options),
                                         {"kind": "overlay-up", "command": "meshlearn overlay up"})


def _record(run, host, tick: int) -> None:
    """Each hosted member's view (alive / suspect / dead counts) as metrics, one round per tick."""
    rows = []
    for member, alive, suspect, dead, incarnation in host.table():
        rows += [dict(key=f"swim.{name}", value=float(value), round=tick, node=member)
                 for name, value in (("alive", alive), ("suspect", suspect), ("dead", dead),
                                     ("incarnation", incarnation))]
    run.metrics.log_many(rows)
    run.metrics.flush()


def _print_status(host) -> None:
    rows = host.table()
    table = Table(title=f"membership as seen by {len(rows)} local members")
    for column in ("member", "alive", "suspect", "dead", "incarnation"):
        table.add_column(column, justify="right" if column != "member" else "left")
    shown = rows if len(rows) <= 8 else rows[:4] + rows[-4:]
    for row in shown:
        table.add_row(*map(str, row))
    console.print(table)
