"""`meshlearn data show`: how an experiment's training set is split over its clients.

    meshlearn data show quickstart --set data.partition=shards --set data.classes_per_client=2

The partition is built exactly as `meshlearn run` builds it (same loader, same seeds), so what
this prints is what each simulated client trains on.
"""

from __future__ import annotations

import math

import typer
from rich.console import Console

from meshlearn.errors import ConfigError

from meshlearn.cli import app

console = Console()
data_app = typer.Typer(help="Inspect the data an experiment trains on and how it is split over clients.",
                       no_args_is_help=True, rich_markup_mode=None)
app.add_typer(data_app, name="data")


@data_app.command("show")
def show_cmd(
    config: str = typer.Argument(..., help="TOML file or preset name (see `meshlearn config show`)."),
    set_: list[str] = typer.Option([], "--set", help="Override a key, e.g. --set data.alpha=0.1 (repeatable)."),
    rows: int = typer.Option(50, "--rows", "-n", min=1, help="Show at most N clients; the rest are counted."),
) -> None:
    """Per-client sample counts and label histograms of the experiment's partition, plus skew statistics.

    Row i of the table is client i (client-00, client-01, ...). "labels" lists class:count pairs.
    Label entropy is in bits: an iid split reaches about log2(number of classes).
    Try e.g. --set data.partition=shards --set data.classes_per_client=2, or --set data.alpha=0.1.
    """
    from meshlearn.data import partition_summary, summary_stats
    from meshlearn.experiment import load_experiment
    from meshlearn.experiment.fl.build import build_workspace
    from meshlearn.experiment.fl.kind import check_data_path
    from meshlearn.experiment.fl.schema import FLExperiment

    cfg = load_experiment(config, set_)
    if not isinstance(cfg, FLExperiment):
        raise ConfigError("config", f"{config} is a {getattr(cfg, 'kind', '?')} experiment: only FL experiments "
                          "split data over clients")
    check_data_path(cfg)  # faults and algorithm settings do not matter here
    ws = build_workspace(cfg)
    d, train = cfg.data, ws.train
    labels, parts = train.y, list(ws.parts.values())
    how = {"dirichlet": f" (alpha {d.alpha:g})", "quantity_skew": f" (alpha {d.alpha:g})",
           "shards": f" ({d.classes_per_client} classes per client)"}.get(d.partition, "")
    console.print(f"{train.name}: {len(train):,} training / {len(ws.test):,} test samples, "
                  f"{train.num_classes} classes; partition {d.partition}{how} over {d.clients} clients",
                  highlight=False, soft_wrap=True)
    console.print(partition_summary(labels, parts, train.num_classes, max_rows=rows))
    s = summary_stats(labels, parts, train.num_classes)
    console.print(f"samples per client: min {s['min_size']:.0f}, median {s['median_size']:.0f}, "
                  f"max {s['max_size']:.0f} · classes per client: mean {s['mean_classes']:.1f} of "
                  f"{train.num_classes} · label entropy: mean {s['mean_label_entropy']:.2f} bits "
                  f"(iid ≈ {math.log2(train.num_classes):.2f})", highlight=False, soft_wrap=True)
