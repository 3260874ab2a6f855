"""COMtune on a split CNN: accuracy against permuted packet loss for the plain model and for
models fine-tuned with packet-level dropout at the cut (p = 0.3 / 0.5 / 0.7).

    python benchmarks/bench_comtune.py [--seeds 0 1 2] [--cut pool3] [--elements 16] [--repeats 10]
        [--part tail|all] [--quantize] [--mnist DIR] [--curves-out comtune_curves.json]

Setup: ``split_cnn`` on digits trained 30 epochs exactly as ``bench_split_channel.py`` (its
``train`` helper), then cut after ``--cut``; the plain model is that split, each COMtune model a
copy fine-tuned ``--tune-epochs`` (15) epochs, Adam lr 1e-3, tail only (``--part tail``: the device
head stays as deployed), with ``PacketDropout`` grouped by the channel's own packet plan. Channel:
fp16, permuted, ``--elements`` per packet, zero-fill, no rescale (the lab framework's
convention, used in training and in the channel alike). Each rate 0, 0.1, ..., 0.9, 1.0 is
``--repeats`` Bernoulli packet-loss draws over the 359 test samples through ``simulate_batch``.
``--mnist DIR`` uses the MNIST IDX files in DIR instead of digits (no IDX files exist on the
development machine, so no MNIST figures below). ``--curves-out`` writes the seed-mean curves as
``{"curves": {"plain": [[loss, acc], ...], "comtune_p0.3": ...}}`` for ``bench_mwjc.py --curves``.

Choice of cut (fixed before the COMtune runs, same for every seed): the default cut after ``relu2``
(2,048 elements, 4 packets of 512) is too redundant for the bar's premise — the plain model loses
only ~8 points at 50 % loss — and with 4 packets 1/16 of the samples lose *every* packet at 50 %
loss (24 % at 70 %), which no tuning can survive. Scanning the plain model (seed 0, 3 draws) over
cuts relu1/relu2/pool2/relu3/pool3/relu_fc × 512/64/16 elements per packet, the steepest plain
curves with enough packets are at the compact ``pool3`` cut (64x2x2 = 256 elements, the last
conv map): 16 elements → 16 packets (shown), 32 → 8 packets (sensitivity row). ``relu_fc`` (64
elements) collapses the plain model (-36 points) but tuning cannot recover it either (-4 points
head+tail, -11 tail only, at 50 %).

Measured (2-core CPU box shared with other jobs; default arguments, 75 s):

    python benchmarks/bench_comtune.py --curves-out comtune_curves.json
    accuracy % (mean of seeds 0/1/2) at permuted packet loss, pool3 cut, 16 packets of 16 fp16
    rate          0     .1    .2    .3    .4    .5    .6    .7    .8    .9    1.0
    plain       98.6  98.2  97.8  96.6  94.9  91.5  85.6  77.4  63.2  42.5  10.0
    comtune .3  98.5  98.6  98.5  98.4  98.2  97.9  97.1  95.3  88.8  68.7  10.0
    comtune .5  98.5  98.5  98.5  98.4  98.2  98.1  97.6  96.2  91.2  73.2  10.0
    comtune .7  98.4  98.4  98.4  98.3  98.2  97.9  97.8  96.4  92.7  76.4  10.0

Bar per seed, points relative to the plain model at 0 % loss:

    setting             seed  plain@0%  plain drop@50%  COMtune(.5) drop@50%  drop@70%
    pool3, 16 packets    0     98.05        7.49             0.28               2.42
    (default)            1     98.89        7.10             0.58               2.26
                         2     98.89        6.82             0.53               2.42
    pool3, 8 packets     0     98.05        8.77             1.59               7.55
    (--elements 32)      1     98.89       10.06             0.61               6.57
                         2     98.89        7.88             1.23               6.96

Bar: COMtune p = 0.5 within 2 points at 50 % and within 5 points at 70 % loss — **met on every
seed** (default setting). The premise that the untuned model loses > 10 points at 50 % loss is
**not met on digits**: this CNN loses 6.8–7.5 points (default) and 7.9–10.1 with 8 larger packets,
where COMtune misses the 70 % half of the bar. The reason is that with 8 packets, 0.7^8 = 5.8 % of
samples lose every packet. So no single setting meets both halves on digits. MNIST
(``--mnist DIR``) was not run: there are no IDX files on this machine. Fine-tuning the head too
(``--part all``) made no difference in the scan (pool3, 16 packets, 3 seeds: within 0.5 points
of tail-only at 50 and 70 %), so the default stays tail-only. Across COMtune models the p used
in training matters little at or below its p; a higher p gains 1–3 points at 80–90 % loss.
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
    model = build_model("split_cnn", tr.input_shape, tr.num_classes, seed=seed)
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
    ap.add_argument("--cut", default="pool3")
    ap.add_argument("--elements", type=int, default=16, help="fp16 elements per packet")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--tune-epochs", type=int, default=15)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--part", choices=["tail", "all"], default="tail")
    ap.add_argument("--quantize", action="store_true", help="int8 channel, fake-quantized in fine-tuning")
    ap.add_argument("--mnist", metavar="DIR", help="MNIST IDX files here instead of digits")
    ap.add_argument("--curves-out", metavar="PATH", help="write seed-mean curves JSON for bench_mwjc --curves")
    args = ap.parse_args()
    torch.set_num_threads(1)
    spec = ChannelSpec(quant="int8" if args.quantize else "fp16", order="permuted",
                       elements_per_packet=args.elements, rescale="none")
    t0 = time.perf_counter()
    rows = [run_seed(s, args, spec) for s in args.seeds]
    for row in rows:
        print(json.dumps({"seed": row["seed"], "bar": row["bar"],
                          "curves_pct": {k: [round(100 * a, 1) for _, a in v] for k, v in row["curves"].items()}}))
    mean = {name: [(r, round(float(np.mean([dict(row["curves"][name])[r] for row in rows])), 4)) for r in RATES]
            for name in rows[0]["curves"]}
    summary = {"setup": {"dataset": "mnist" if args.mnist else "digits", "cut": args.cut,
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
