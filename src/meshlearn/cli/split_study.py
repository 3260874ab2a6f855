"""`meshlearn split tune | curve | search | bandit`: the design-time side of split computing.

    meshlearn split train --out plain.safetensors --cut pool2 --batch-norm --epochs 30
    meshlearn split tune --model plain.safetensors --p 0.5 --elements 16 --out tuned.safetensors   # COMtune
    meshlearn split curve --model plain.safetensors --model tuned.safetensors --elements 16 --out curves.json
    meshlearn split bandit --curves curves.json --tensor-bytes 1024            # MWJC over a simulated WLAN
    meshlearn split search --link-mbps 1 --latency-ms 10 --max-drop 0.5        # NASC-style (cut, k, quant)

Each is a shortcut for a split experiment of that study (``meshlearn run`` of a file with
kind = "split"): the options build its config, the run goes into the run store, option defaults
come from the study's settings model. ``tune`` writes a model file with the same recipe as its
input (``split serve`` / ``infer`` / ``heatmap`` load it unchanged); ``curve`` writes the curves
JSON that ``bandit --curves`` (and ``benchmarks/bench_mwjc.py --curves``) read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from meshlearn.cli.console import err
from meshlearn.cli.console import out as stdout  # commands here have an --out option
from meshlearn.cli.split import (BITS, CHANNEL, ELEMENTS, MODEL, MTU, ORDER, PERM_SEED, QUANT, RESCALE, RESCALE_P,
                                 RUNS_DIR, channel, check_out, option, run_study, split_app)
from meshlearn.errors import UsageError
from meshlearn.split.nasc import NascSettings
from meshlearn.split.studies import DEFAULT_RATES, BanditStudy, CurveStudy, TuneStudy

OUT_JSON = typer.Option(None, "--out", help="Also write the full result as JSON here.")


def _floats(option_name: str, raw: str) -> list[float]:
    try:
        return [float(v) for v in raw.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{option_name} takes comma-separated numbers, e.g. 0,0.3,0.5; got {raw!r}") from None


def _ints_or_none(option_name: str, raw: str) -> list[int | None]:
    try:
        return [None if v.strip().lower() == "none" else int(v) for v in raw.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{option_name} takes comma-separated widths or 'none', e.g. none,4,8; got {raw!r}") from None


def _words(raw: str) -> list[str]:
    return [v.strip() for v in raw.split(",") if v.strip()]


def _listed(values) -> str:
    return ",".join("none" if v is None else f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def _shared(seed: int, study: str, **sections: Any) -> dict[str, Any]:
    return {"name": f"split-{study}", "seed": seed, "study": study, **sections}


# ----- COMtune and curves -------------------------------------------------------------------
@split_app.command("tune")
def tune_cmd(
    model: Path = MODEL,
    out: Path = typer.Option(..., "--out", help="Where to write the tuned model file (safetensors)."),
    p: float = option(TuneStudy, "p", "--p"), epochs: int = option(TuneStudy, "epochs", "--epochs"),
    lr: float = option(TuneStudy, "lr", "--lr"), part: str = option(TuneStudy, "part", "--part"),
    quantize: bool = option(TuneStudy, "quantize", "--quantize"),
    seed: int = typer.Option(0, "--seed", help="Seed of the dropout masks and batch order."),
    quant: str = QUANT, bits: int = BITS, elements: int = ELEMENTS, order: str = ORDER, perm_seed: int = PERM_SEED,
    mtu: int = MTU, rescale: str = RESCALE, rescale_p: float = RESCALE_P, runs_dir: Optional[Path] = RUNS_DIR,
) -> None:
    """COMtune: fine-tune a split model with packet dropout at the cut so it tolerates packet loss.

    The dropout drops whole packets exactly as the channel (--quant, --elements, --order,
    --perm-seed, --mtu, --rescale) packs them. Prints test accuracy before and after at 0% and at
    --p loss (JSON).
    """
    check_out(out)
    section = channel(quant, bits, elements, order, perm_seed, mtu, rescale=rescale, rescale_p=rescale_p)
    result = run_study(_shared(seed, "tune", model=str(model), channel=section,
                               tune={"p": p, "epochs": epochs, "lr": lr, "part": part, "quantize": quantize,
                                     "out": str(out)}), runs_dir)
    print(json.dumps(result), flush=True)


@split_app.command("curve")
def curve_cmd(
    models: list[Path] = typer.Option(..., "--model", help="Split model file (repeatable); its curve is named "
                                      "after the file's stem."),
    rates: str = typer.Option(_listed(DEFAULT_RATES), "--rates", help="Packet-loss rates, comma-separated, each in "
                              "[0, 1] (`split bandit` needs curves from 0 to 1)."),
    repeats: int = option(CurveStudy, "repeats", "--repeats"),
    seed: int = typer.Option(0, "--seed", help="Seed of the loss draws (every model meets the same ones)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the curves JSON (input of `split bandit "
                                       "--curves`) [default: curves.json in the run]."),
    quant: str = QUANT, bits: int = BITS, elements: int = ELEMENTS, order: str = ORDER, perm_seed: int = PERM_SEED,
    mtu: int = MTU, rescale: str = RESCALE, rescale_p: float = RESCALE_P, runs_dir: Optional[Path] = RUNS_DIR,
) -> None:
    """Accuracy against packet-loss rate through the real channel, for one or more split models."""
    check_out(out)
    section = channel(quant, bits, elements, order, perm_seed, mtu, rescale=rescale, rescale_p=rescale_p)
    curve = {"rates": _floats("--rates", rates), "repeats": repeats, "models": [str(m) for m in models],
             "out": None if out is None else str(out)}
    result = run_study(_shared(seed, "curve", channel=section, curve=curve), runs_dir)
    names = list(result["curves"])
    table = Table(title=f"accuracy % vs packet loss ({result['packets']} packets)")
    table.add_column("loss")
    for name in names:
        table.add_column(name, justify="right")
    for i, (rate, _) in enumerate(result["curves"][names[0]]):
        table.add_row(f"{100 * rate:g}%", *(f"{100 * result['curves'][n][i][1]:.2f}" for n in names))
    stdout.print(table)
    err.print(f"wrote {result['path']}", highlight=False)


# ----- NASC-style search ------------------------------------------------------------------
def _nasc(field: str, *flags: str):
    return option(NascSettings, field, *flags)


@split_app.command("search")
def search_cmd(
    link_mbps: float = typer.Option(NascSettings.model_fields["link_bps"].default / 1e6, "--link-mbps",
                                    help="Uplink rate device -> server, Mbit/s."),
    latency_ms: float = typer.Option(1e3 * NascSettings.model_fields["latency_s"].default, "--latency-ms",
                                     help="One-way propagation delay, ms."),
    device_gflops: float = typer.Option(NascSettings.model_fields["device_flops"].default / 1e9, "--device-gflops",
                                        help="Device compute, GFLOP/s (iot 0.2, mobile 2)."),
    server_gflops: float = typer.Option(NascSettings.model_fields["server_flops"].default / 1e9, "--server-gflops",
                                        help="Server compute, GFLOP/s."),
    max_drop: float = _nasc("max_drop", "--max-drop"), folds: int = _nasc("folds", "--folds"),
    confidence: float = _nasc("confidence", "--confidence"),
    cuts: str = typer.Option("relu1,relu2,pool2,relu3,pool3,relu_fc", "--cuts", help="Layers to cut after."),
    bottlenecks: str = typer.Option(_listed(NascSettings.model_fields["bottlenecks"].default), "--bottlenecks",
                                    help="Bottleneck widths; none = no bottleneck."),
    quants: str = typer.Option(_listed(NascSettings.model_fields["quants"].default), "--quants",
                               help="Wire encodings to try."),
    strategy: str = _nasc("strategy", "--strategy"), epochs: int = _nasc("epochs", "--epochs"),
    finetune_epochs: int = _nasc("finetune_epochs", "--finetune-epochs"),
    seed: int = typer.Option(0, "--seed", help="Seed of data split, folds and weights."),
    out: Optional[Path] = OUT_JSON, runs_dir: Optional[Path] = RUNS_DIR,
) -> None:
    """Pick split point, bottleneck width and wire encoding for the lowest modelled latency within --max-drop.

    split_cnn on digits. Latency = device compute + transfer of the packets + server compute;
    accuracy from (cross-)validated fine-tunes, never the test split, which is only reported.
    Defaults take ~2 minutes on 2 cores (--folds 1 --confidence 0.5: ~20 s).
    """
    check_out(out)
    search = dict(device_flops=device_gflops * 1e9, server_flops=server_gflops * 1e9, link_bps=link_mbps * 1e6,
                  latency_s=latency_ms / 1e3, max_drop=max_drop, folds=folds, confidence=confidence,
                  cuts=_words(cuts), bottlenecks=_ints_or_none("--bottlenecks", bottlenecks), quants=_words(quants),
                  strategy=strategy, epochs=epochs, finetune_epochs=finetune_epochs,
                  out=None if out is None else str(out))
    _search_table(run_study(_shared(seed, "search", search=search), runs_dir))


def _search_table(result: dict) -> None:
    table = Table(title=f"NASC-style search: {result['candidates']} candidates, {result['evaluated']} estimated, "
                        f"{result['trained']} bottleneck models trained")
    for col in ("", "candidate", "latency ms", "wire B", "est. drop pts", "test acc %"):
        table.add_column(col, justify="right" if col not in ("", "candidate") else "left")
    for key in ("chosen", "baseline"):
        row = result[key]
        if row is None:
            table.add_row(key, "none feasible", "", "", "", "")
            continue
        table.add_row(key, row["candidate"], f"{1e3 * row['latency_s']:.2f}", str(row["wire_bytes"]),
                      f"{row['drop_pts']:.2f}", f"{100 * row.get('test_accuracy', float('nan')):.2f}")
    stdout.print(table)
    if result["latency_ratio"] is not None:
        stdout.print(f"latency ratio chosen / best fixed split: {result['latency_ratio']:.3f}")


# ----- MWJC -------------------------------------------------------------------------------
@split_app.command("bandit")
def bandit_cmd(
    curves: Optional[Path] = option(BanditStudy, "curves_file", "--curves"),
    variants: Optional[str] = typer.Option(None, "--variants", help="Comma-separated curve names to play "
                                           "[default: every curve in --curves]."),
    rates: str = typer.Option(_listed(BanditStudy.model_fields["rates_mbps"].default), "--rates",
                              help="802.11a/g PHY rates (Mbit/s) to pick from."),
    retry_limits: str = typer.Option(_listed(BanditStudy.model_fields["retry_limits"].default), "--retry-limits",
                                     help="MAC retry limits to pick from."),
    tensor_bytes: int = option(BanditStudy, "tensor_bytes", "--tensor-bytes"),
    snr_db: float = option(BanditStudy, "snr_db", "--snr-db"),
    snr_std_db: float = option(BanditStudy, "snr_std_db", "--snr-std-db"),
    lam: float = option(BanditStudy, "lam_per_s", "--lam"), rounds: int = option(BanditStudy, "rounds", "--rounds"),
    feedback: str = option(BanditStudy, "feedback", "--feedback"),
    seed: int = typer.Option(0, "--seed", help="Seed of channel and bandit."),
    out: Optional[Path] = OUT_JSON, runs_dir: Optional[Path] = RUNS_DIR,
) -> None:
    """MWJC: a UCB bandit picks PHY rate, retry limit and model variant in a simulated lossy WLAN.

    Scored against an exhaustive Monte Carlo evaluation of every arm: prints the best arm, how often
    the bandit played it in the last half of the rounds, and its regret.
    """
    check_out(out)
    bandit = dict(curves_file=None if curves is None else str(curves), rates_mbps=_floats("--rates", rates),
                  retry_limits=[int(r) for r in _floats("--retry-limits", retry_limits)], tensor_bytes=tensor_bytes,
                  snr_db=snr_db, snr_std_db=snr_std_db, lam_per_s=lam, rounds=rounds, feedback=feedback,
                  **({"variants": _words(variants)} if variants else {}))
    report = run_study(_shared(seed, "bandit", bandit=bandit), runs_dir)
    if out is not None:
        out.write_text(json.dumps(report, indent=1) + "\n")
        err.print(f"wrote {out}")
    _bandit_table(report, rounds)


def _bandit_table(report: dict, rounds: int) -> None:
    table = Table(title=f"MWJC: {report['arms']} arms, {rounds} rounds, best-arm pick rate (last half) "
                        f"{report['best_pick_rate_last_half']:.3f}")
    for col in ("arm", "expected reward", "accuracy", "latency ms", "played (last half)"):
        table.add_column(col, justify="left" if col == "arm" else "right")
    for row in report["top5"]:
        table.add_row(row["arm"], f"{row['expected_reward']:.4f}", f"{row['accuracy']:.4f}", f"{row['latency_ms']:.2f}",
                      str(report["histogram_last_half"].get(row["arm"], 0)))
    stdout.print(table)
    if report["best_margin"] is not None and report["best_margin"] < 3 * report["eval_stderr"]:
        err.print(f"note: the best arm leads {report['runner_up']} by {report['best_margin']:.5f}, within 3 Monte "
                      f"Carlo standard errors ({report['eval_stderr']:.5f}): a statistical tie, so the pick rate "
                      "undercounts good choices")
    if report["placeholder_curves"]:
        err.print(f"placeholder curves in play: {', '.join(report['placeholder_curves'])} (pass --curves)")
