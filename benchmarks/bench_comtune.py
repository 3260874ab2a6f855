"""COMtune on a split CNN: accuracy against permuted packet loss for the plain model and for
models fine-tuned with packet-level dropout at the cut (p = 0.3 / 0.5 / 0.7).

    python benchmarks/bench_comtune.py [--seeds 0 1 2] [--cut pool2] [--elements 16] [--repeats 10]
        [--no-batch-norm] [--part tail|all] [--quantize] [--mnist DIR] [--curves-out comtune_curves.json]

Setup: ``split_cnn`` with BatchNorm after each conv (``--no-batch-norm`` drops it; the paper's
VGG-style COMtune network has it) on digits, trained 30 epochs with ``fit_classifier``, then cut
after ``--cut`` (``pool2``: 32x4x4 = 512 elements, the max-pooled block-2 map like the paper's
7x7x128 cut). The plain model is that split; each COMtune model a copy fine-tuned ``--tune-epochs``
(30) epochs, Adam with a cosine-annealed rate from ``--lr`` (2e-3), tail only (``--part tail``: the
device head stays as deployed), with ``PacketDropout`` grouped by the channel's own packet plan.
Channel: fp16, permuted, ``--elements`` (16) per packet = 32 packets, zero-fill, no rescale (the lab
framework's convention, in training and in the channel alike). Each rate 0, 0.1, ..., 1.0 is
``--repeats`` (10) Bernoulli packet-loss draws over the 359 test samples through ``simulate_batch``.
``--mnist DIR`` uses MNIST IDX files instead of digits (none exist on the development machine, so no
MNIST figures below). ``--curves-out`` writes the seed-mean curves as ``{"curves": {"plain": [[loss,
acc], ...], "comtune_p0.3": ...}}`` for ``bench_mwjc.py --curves``.

How the setting was chosen (seeds 0-2 only; seeds 3-5 were run afterwards, unchanged, as a check):
without BatchNorm this CNN is too robust for the bar's premise at every cut (scan of relu1 ... relu_fc
x 512 / 64 / 16 elements per packet: the plain model loses at most ~8-10 points at 50 % loss where
enough packets exist; with ``hidden=256`` the fc cut loses 1.2). Zero-filling without rescale shifts
the statistics the next BatchNorm layer was calibrated on, so with BatchNorm the plain model breaks
at a cut *followed by* conv + BN (``pool2``: -17 to -33 points at 50 %), but not at cuts followed by
a max-pool (``relu2``: -1.7; ``relu3``: -0.5), which survives zero-fill. COMtune retunes the tail's
BN statistics to the dropped regime. With 15 epochs at a constant lr 1e-3 the p = 0.5 model's drop at
70 % loss was 3.7-5.0 points and varied by up to ±1.4 between otherwise equal runs; a cosine-annealed
30-epoch fine-tune (now the default of ``comtune``) gave 1.6-3.3.

Measured (2-core CPU box; 194 s for six seeds):

    python benchmarks/bench_comtune.py --seeds 0 1 2 3 4 5 --curves-out comtune_curves.json
    accuracy % (mean of seeds 0-5) at permuted packet loss, pool2 cut, 32 packets of 16 fp16
    rate          0     .1    .2    .3    .4    .5    .6    .7    .8    .9    1.0
    plain       99.3  99.0  98.5  96.2  90.5  78.4  58.7  36.9  19.7  11.5  10.0
    comtune .3  99.4  99.4  99.3  99.2  99.0  98.4  97.1  91.7  76.1  43.0  10.0
    comtune .5  99.4  99.4  99.3  99.2  99.1  98.9  98.3  96.6  89.6  64.2  10.1
    comtune .7  99.4  99.4  99.3  99.2  99.2  98.9  98.6  97.7  95.1  80.3  10.0

Bar per seed, points relative to the plain model at 0 % loss:

    seed  plain@0%  plain drop@50%  COMtune(.5) drop@50%  drop@70%
     0     98.89       16.52             0.42               3.18
     1     99.72       32.98             0.97               3.29
     2     98.33       17.66             0.03               1.64
     3     99.72       18.75             0.31               2.37     (check seeds, run after the
     4     99.72       12.23             0.47               2.90      setting was fixed)
     5     99.44       27.05             0.22               2.65

    python benchmarks/bench_comtune.py --no-batch-norm      (same cut, no BatchNorm)
     0-2   98.05-98.89  4.5-5.6          0.1-0.7            2.3-2.8

Bar (untuned > 10 points lost at 50 %; COMtune p = 0.5 <= 2 at 50 % and <= 5 at 70 %): **met on all
six seeds** with BatchNorm; without BatchNorm COMtune's half holds but the untuned CNN is robust on
its own. The p used in training matters little at or below that p; a higher p gains 1-5 points at
70-90 % loss. Tuning head and tail (``--part all``) made no consistent difference (earlier scan).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from meshlearn.data import load_dataset
from meshlearn.models import build_model
from meshlearn.split.channel import ChannelSpec
from meshlearn.split.comtune import comtune, loss_curve
from meshlearn.split.model import fit_classifier, split_model

RATES = tuple(round(0.1 * i, 1) for i in range(11))
TUNE_PS = (0.3, 0.5, 0.7)


def data(seed: int, mnist: str | None):
    tr, te = load_dataset("mnist_idx", path=mnist) if mnist else load_dataset("digits", seed=seed)
    return tr, (torch.from_numpy(tr.x), torch.from_numpy(tr.y)), (torch.from_numpy(te.x), te.y)


def run_seed(seed: int, args: argparse.Namespace, spec: ChannelSpec) -> dict:
    tr, train_xy, test_xy = data(seed, args.mnist)
    model = build_model("split_cnn", tr.input_shape, tr.num_classes, seed=seed, batch_norm=args.batch_norm)
    fit_classifier(model, *train_xy, epochs=args.epochs, seed=seed)
    plain = split_model(model, args.cut, tr.input_shape)
    models = {"plain": plain}
    for p in TUNE_PS:
        models[f"comtune_p{p}"] = comtune(plain, train_xy, p, epochs=args.tune_epochs, lr=args.lr, spec=spec,
                                          seed=seed, part=args.part, quantize=args.quantize)
    curves = {name: loss_curve(m, test_xy, spec, RATES, repeats=args.repeats, seed=seed)
              for name, m in models.items()}
    base = dict(curves["plain"])[0.0]
    tuned = dict(curves["comtune_p0.5"])
    bar = {"plain_at_0": round(100 * base, 2),
           "plain_drop_50": round(100 * (base - dict(curves["plain"])[0.5]), 2),
           "comtune05_drop_50": round(100 * (base - tuned[0.5]), 2),
           "comtune05_drop_70": round(100 * (base - tuned[0.7]), 2)}
    bar["met"] = bar["plain_drop_50"] > 10 and bar["comtune05_drop_50"] <= 2 and bar["comtune05_drop_70"] <= 5
    return {"seed": seed, "cut_shape": list(plain.cut_shape), "packets": -(-plain.cut_numel // spec.packet_elements),
            "curves": curves, "bar": bar}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--cut", default="pool2")
    ap.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=True,
                    help="split_cnn with BatchNorm after each conv (the paper's VGG-style net has it)")
    ap.add_argument("--elements", type=int, default=16, help="fp16 elements per packet")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--tune-epochs", type=int, default=30)
    ap.add_argument("--lr", type=float, default=2e-3, help="COMtune's peak learning rate (cosine-annealed)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--part", choices=["tail", "all"], default="tail")
    ap.add_argument("--quantize", action="store_true", help="8-bit uniform channel, fake-quantized in fine-tuning")
    ap.add_argument("--mnist", metavar="DIR", help="MNIST IDX files here instead of digits")
    ap.add_argument("--curves-out", metavar="PATH", help="write seed-mean curves JSON for bench_mwjc --curves")
    args = ap.parse_args()
    torch.set_num_threads(1)
    spec = ChannelSpec(quant="uniform" if args.quantize else "fp16", order="permuted",
                       elements_per_packet=args.elements, rescale="none")
    t0 = time.perf_counter()
    rows = [run_seed(s, args, spec) for s in args.seeds]
    for row in rows:
        print(json.dumps({"seed": row["seed"], "bar": row["bar"],
                          "curves_pct": {k: [round(100 * a, 1) for _, a in v] for k, v in row["curves"].items()}}))
    mean = {name: [(r, round(float(np.mean([dict(row["curves"][name])[r] for row in rows])), 4)) for r in RATES]
            for name in rows[0]["curves"]}
    summary = {"setup": {"dataset": "mnist" if args.mnist else "digits", "cut": args.cut,
                         "batch_norm": args.batch_norm,
                         "cut_shape": rows[0]["cut_shape"], "packets": rows[0]["packets"], "spec": spec.model_dump(),
                         "epochs": args.epochs, "tune_epochs": args.tune_epochs, "part": args.part,
                         "repeats": args.repeats, "seeds": args.seeds},
               "mean_curves_pct": {k: [round(100 * a, 1) for _, a in v] for k, v in mean.items()},
               "bar_met_every_seed": all(row["bar"]["met"] for row in rows),
               "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(summary))
    if args.curves_out:
        Path(args.curves_out).write_text(json.dumps({"source": "benchmarks/bench_comtune.py", **summary["setup"],
                                                     "curves": mean}, indent=1))


if __name__ == "__main__":
    main()
