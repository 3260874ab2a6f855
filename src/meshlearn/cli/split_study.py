"""`meshlearn split tune | curve | search | bandit`: the design-time side of split computing.

    meshlearn split train --out plain.safetensors --cut pool2 --batch-norm --epochs 30
    meshlearn split tune --model plain.safetensors --p 0.5 --elements 16 --out tuned.safetensors   # COMtune
    meshlearn split curve --model plain.safetensors --model tuned.safetensors --elements 16 --out curves.json
    meshlearn split bandit --curves curves.json --tensor-bytes 1024            # MWJC over a simulated WLAN
    meshlearn split search --link-mbps 1 --latency-ms 10 --max-drop 0.5        # NASC-style (cut, k, quant)

``tune`` writes a model file with the same recipe as its input (``split serve`` / ``split infer``
/ ``split heatmap`` load it unchanged). ``curve`` measures accuracy against packet-loss rate
through the real channel and writes the curves JSON that ``bandit --curves`` (and
``benchmarks/bench_mwjc.py --curves``) read. Channel options mean what they mean for ``split
infer`` and must match the channel the model will meet.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from meshlearn.cli.split import (
    BITS, ELEMENTS, MODEL, MTU, ORDER, PERM_SEED, QUANT, RESCALE, RESCALE_P, _torch_threads, channel_spec,
    check_out, load_split_model, save_split_model, split_app,
)
from meshlearn.errors import UsageError

console = Console(stderr=True)
OUT_JSON = typer.Option(None, "--out", help="Also write the full result as JSON here.")


def _bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)


def _floats(option: str, raw: str) -> list[float]:
    try:
        return [float(v) for v in raw.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{option} takes comma-separated numbers, e.g. 0,0.3,0.5; got {raw!r}") from None


def _ints_or_none(option: str, raw: str) -> tuple[int | None, ...]:
    try:
        return tuple(None if v.strip().lower() == "none" else int(v) for v in raw.split(",") if v.strip())
    except ValueError:
        raise UsageError(f"{option} takes comma-separated widths or 'none', e.g. none,4,8; got {raw!r}") from None


def _words(raw: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in raw.split(",") if v.strip())


def _write_json(out: Optional[Path], data: dict) -> None:
    if out is not None:
        out.write_text(json.dumps(data, indent=1) + "\n")
        console.print(f"wrote {out}")


def _train_data(meta: dict[str, Any]):
    import torch

    from meshlearn.data import load_dataset

    train_set, test_set = load_dataset(str(meta["dataset"]), seed=int(meta["data_seed"]))
    return (torch.from_numpy(train_set.x), torch.from_numpy(train_set.y)), (test_set.x, test_set.y)


# ----- COMtune ----------------------------------------------------------------------------


@split_app.command("tune")
def tune_cmd(
    model: Path = MODEL,
    out: Path = typer.Option(..., "--out", help="Where to write the tuned model file (safetensors)."),
    p: float = typer.Option(0.5, "--p", help="Packet dropout rate at the cut during fine-tuning, in [0, 1)."),
    epochs: int = typer.Option(30, "--epochs", help="Fine-tuning epochs (cosine-annealed Adam)."),
    lr: float = typer.Option(2e-3, "--lr", help="Peak learning rate."),
    part: str = typer.Option("tail", "--part", help="tail: fine-tune the server side only (the device model "
                             "stays as it is); all: head and tail."),
    quantize: bool = typer.Option(False, "--quantize", help="Fake-quantize the cut with --quant while tuning."),
    seed: int = typer.Option(0, "--seed", help="Seed of the dropout masks and batch order."),
    quant: str = QUANT, bits: int = BITS, elements: int = ELEMENTS, order: str = ORDER, perm_seed: int = PERM_SEED,
    mtu: int = MTU, rescale: str = RESCALE, rescale_p: float = RESCALE_P,
) -> None:
    """COMtune: fine-tune a split model with packet dropout at the cut so it tolerates packet loss.

    The dropout drops whole packets exactly as the channel (--quant, --elements, --order,
    --perm-seed, --mtu, --rescale) packs them. Prints test accuracy before and after at 0% and at
    --p loss (JSON).
    """
    from meshlearn.split.comtune import comtune, loss_curve

    if not 0.0 <= p < 1.0:
        raise UsageError(f"--p must be in [0, 1), got {p}")
    if epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {epochs}")
    check_out(out)
    spec = channel_spec(quant, bits, elements, order, perm_seed, mtu, "none", None, None, rescale, rescale_p)
    _torch_threads()
    split, meta = load_split_model(model)
    train_xy, test_xy = _train_data(meta)
    t0 = time.perf_counter()
    with _bar() as bar:
        task = bar.add_task(f"COMtune p={p:g}", total=epochs)
        tuned = comtune(split, train_xy, p, epochs=epochs, lr=lr, spec=spec, seed=seed, part=part,
                        quantize=quantize, progress=lambda done, _: bar.update(task, completed=done))
    rates = sorted({0.0, p})
    before, after = (dict(loss_curve(m, test_xy, spec, rates, repeats=5, seed=seed)) for m in (split, tuned))
    new_meta = {**meta, "comtune_p": p, "comtune_part": part, "comtune_epochs": epochs, "tuned_from": str(model),
                "test_accuracy_pct": round(100 * after[0.0], 2)}
    save_split_model(out, tuned, new_meta)
    print(json.dumps({"path": str(out), "p": p, "part": part, "packets": _packets(split.cut_numel, spec),
                      "before_pct": {f"{r:g}": round(100 * a, 2) for r, a in before.items()},
                      "after_pct": {f"{r:g}": round(100 * a, 2) for r, a in after.items()},
                      "seconds": round(time.perf_counter() - t0, 1)}), flush=True)


def _packets(n_elements: int, spec) -> int:
    from meshlearn.split.channel import packet_plan

    return int(packet_plan(n_elements, spec)[2])


@split_app.command("curve")
def curve_cmd(
    models: list[Path] = typer.Option(..., "--model", help="Split model file (repeatable); its curve is named "
                                      "after the file's stem."),
    rates: str = typer.Option("0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1", "--rates",
                              help="Packet-loss rates, comma-separated, each in [0, 1] (`split bandit` needs "
                              "curves from 0 to 1)."),
    repeats: int = typer.Option(10, "--repeats", help="Loss draws per rate (the test split each time)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the loss draws (every model meets the same ones)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the curves JSON (input of `split bandit "
                                       "--curves`)."),
    quant: str = QUANT, bits: int = BITS, elements: int = ELEMENTS, order: str = ORDER, perm_seed: int = PERM_SEED,
    mtu: int = MTU, rescale: str = RESCALE, rescale_p: float = RESCALE_P,
) -> None:
    """Accuracy against packet-loss rate through the real channel, for one or more split models."""
    from meshlearn.split.comtune import loss_curve

    points = _floats("--rates", rates)
    if not points or any(not 0.0 <= r <= 1.0 for r in points) or sorted(set(points)) != points:
        raise UsageError(f"--rates must be distinct rising rates in [0, 1], got {rates!r}")
    names = [m.stem for m in models]
    if len(set(names)) != len(names):
        raise UsageError(f"--model files need distinct names (curves are named by file stem), got {names}")
    check_out(out)
    spec = channel_spec(quant, bits, elements, order, perm_seed, mtu, "none", None, None, rescale, rescale_p)
    _torch_threads()
    loaded = [load_split_model(m) for m in models]
    curves = {}
    with _bar() as bar:
        task = bar.add_task("loss curves", total=len(models))
        for name, (split, meta) in zip(names, loaded):
            _, test_xy = _train_data(meta)
            curves[name] = loss_curve(split, test_xy, spec, points, repeats=repeats, seed=seed)
            bar.advance(task)
    table = Table(title=f"accuracy % vs packet loss ({_packets(loaded[0][0].cut_numel, spec)} packets)")
    table.add_column("loss")
    for name in names:
        table.add_column(name, justify="right")
    for i, r in enumerate(points):
        table.add_row(f"{100 * r:g}%", *(f"{100 * curves[n][i][1]:.2f}" for n in names))
    Console().print(table)
    _write_json(out, {"source": "meshlearn split curve", "spec": spec.model_dump(), "repeats": repeats,
                      "seed": seed, "models": [str(m) for m in models], "curves": curves})


# ----- NASC-style search ------------------------------------------------------------------


@split_app.command("search")
def search_cmd(
    link_mbps: float = typer.Option(1.0, "--link-mbps", help="Uplink rate device -> server, Mbit/s."),
    latency_ms: float = typer.Option(10.0, "--latency-ms", help="One-way propagation delay, ms."),
    device_gflops: float = typer.Option(0.2, "--device-gflops", help="Device compute, GFLOP/s (iot 0.2, mobile 2)."),
    server_gflops: float = typer.Option(100.0, "--server-gflops", help="Server compute, GFLOP/s."),
    max_drop: float = typer.Option(0.5, "--max-drop", help="Largest accepted accuracy loss vs the unsplit "
                                   "model, percentage points."),
    folds: int = typer.Option(5, "--folds", help="K-fold cross-validated accuracy estimates (1: one 20% "
                              "validation split; cheaper, less reliable)."),
    confidence: float = typer.Option(0.95, "--confidence", help="Feasible only if the drop's one-sided upper "
                                     "bound at this confidence is <= --max-drop (0.5: point estimate)."),
    cuts: str = typer.Option("relu1,relu2,pool2,relu3,pool3,relu_fc", "--cuts", help="Layers to cut after."),
    bottlenecks: str = typer.Option("none,1,2,4,8,16", "--bottlenecks", help="Bottleneck widths; none = no "
                                    "bottleneck."),
    quants: str = typer.Option("fp32,fp16,uniform", "--quants", help="Wire encodings to try (uniform: 8-bit "
                               "min-max)."),
    strategy: str = typer.Option("latency_ordered", "--strategy", help="latency_ordered (trains only what is "
                                 "faster than the answer) | exhaustive (every candidate)."),
    epochs: int = typer.Option(30, "--epochs", help="Epochs for the base model."),
    finetune_epochs: int = typer.Option(10, "--finetune-epochs", help="Epochs per bottleneck fine-tune."),
    seed: int = typer.Option(0, "--seed", help="Seed of data split, folds and weights."),
    out: Optional[Path] = OUT_JSON,
) -> None:
    """Pick split point, bottleneck width and wire encoding for the lowest modelled latency within --max-drop.

    split_cnn on digits. Latency = device compute + transfer of the packets + server compute;
    accuracy from (cross-)validated fine-tunes, never the test split, which is only reported.
    Defaults take ~2 minutes on 2 cores (--folds 1 --confidence 0.5: ~20 s).
    """
    from meshlearn.split.nasc import NascSettings, search

    check_out(out)
    settings = NascSettings(
        device_flops=device_gflops * 1e9, server_flops=server_gflops * 1e9, link_bps=link_mbps * 1e6,
        latency_s=latency_ms / 1e3, max_drop=max_drop, folds=folds, confidence=confidence, cuts=_words(cuts),
        bottlenecks=_ints_or_none("--bottlenecks", bottlenecks), quants=_words(quants), strategy=strategy,
        epochs=epochs, finetune_epochs=finetune_epochs)
    _torch_threads()

    def show(event: dict) -> None:
        mark = "[green]ok[/]" if event["feasible"] else "[red]no[/]"
        console.print(f"  {event['candidate']:<18} {event['latency_ms']:8.2f} ms  drop {event['drop_pts']:5.2f} "
                      f"(bound {event['drop_bound_pts']:5.2f}) pts  {mark}", highlight=False)

    with console.status("training the base model(s) and searching ..."):
        result = search(settings, seed=seed, progress=show)
    _search_table(result)
    _write_json(out, result)


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
    Console().print(table)
    if result["latency_ratio"] is not None:
        Console().print(f"latency ratio chosen / best fixed split: {result['latency_ratio']:.3f}")


# ----- MWJC -------------------------------------------------------------------------------


@split_app.command("bandit")
def bandit_cmd(
    curves: Optional[Path] = typer.Option(None, "--curves", help="Curves JSON from `split curve` (or "
                                          "bench_comtune.py --curves-out); its curves become the model variants "
                                          "[default: the built-in placeholder curves]."),
    variants: Optional[str] = typer.Option(None, "--variants", help="Comma-separated curve names to play "
                                           "[default: every curve in --curves]."),
    rates: str = typer.Option("6,9,12,18,24,36,48,54", "--rates", help="802.11a/g PHY rates (Mbit/s) to pick from."),
    retry_limits: str = typer.Option("0,1,3,7", "--retry-limits", help="MAC retry limits to pick from."),
    tensor_bytes: int = typer.Option(12_544, "--tensor-bytes", help="Bytes of the split tensor per inference."),
    snr_db: float = typer.Option(20.0, "--snr-db", help="Mean SNR of the link, dB."),
    snr_std_db: float = typer.Option(0.0, "--snr-std-db", help="Std of the Gauss-Markov SNR, dB (0: fixed)."),
    lam: float = typer.Option(50.0, "--lam", help="Latency weight λ: reward = accuracy - λ · latency (s)."),
    rounds: int = typer.Option(2000, "--rounds", help="Bandit rounds (one inference each)."),
    feedback: str = typer.Option("link", "--feedback", help="link: a round scores every variant on the tensor "
                                 "that arrived; arm: only the played one."),
    seed: int = typer.Option(0, "--seed", help="Seed of channel and bandit."),
    out: Optional[Path] = OUT_JSON,
) -> None:
    """MWJC: a UCB bandit picks PHY rate, retry limit and model variant in a simulated lossy WLAN.

    Scored against an exhaustive Monte Carlo evaluation of every arm: prints the best arm, how often
    the bandit played it in the last half of the rounds, and its regret.
    """
    from meshlearn.config import validate_config
    from meshlearn.split.mwjc import MwjcSettings, load_curves, simulate_mwjc

    check_out(out)
    measured = {} if curves is None else load_curves(curves)
    names = list(_words(variants)) if variants else (list(measured) or None)
    extra = {"variants": names} if names else {}
    settings = validate_config(MwjcSettings, dict(
        rates_mbps=_floats("--rates", rates), retry_limits=[int(r) for r in _floats("--retry-limits", retry_limits)],
        curves=measured, tensor_bytes=tensor_bytes, snr_db=snr_db, snr_std_db=snr_std_db, lam_per_s=lam,
        rounds=rounds, feedback=feedback, **extra))
    with _bar() as bar:
        task = bar.add_task("MWJC rounds", total=rounds)
        report = simulate_mwjc(settings, seed=seed, progress=lambda t, _: bar.update(task, completed=t))
    table = Table(title=f"MWJC: {report['arms']} arms, {rounds} rounds, best-arm pick rate (last half) "
                        f"{report['best_pick_rate_last_half']:.3f}")
    for col in ("arm", "expected reward", "accuracy", "latency ms", "played (last half)"):
        table.add_column(col, justify="left" if col == "arm" else "right")
    for row in report["top5"]:
        table.add_row(row["arm"], f"{row['expected_reward']:.4f}", f"{row['accuracy']:.4f}", f"{row['latency_ms']:.2f}",
                      str(report["histogram_last_half"].get(row["arm"], 0)))
    Console().print(table)
    if report["best_margin"] is not None and report["best_margin"] < 3 * report["eval_stderr"]:
        console.print(f"note: the best arm leads {report['runner_up']} by {report['best_margin']:.5f}, within 3 Monte "
                      f"Carlo standard errors ({report['eval_stderr']:.5f}): a statistical tie, so the pick rate "
                      "undercounts good choices")
    if report["placeholder_curves"]:
        console.print(f"placeholder curves in play: {', '.join(report['placeholder_curves'])} (pass --curves)")
    _write_json(out, {"settings": settings.model_dump(), **report})
