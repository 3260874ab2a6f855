"""Split inference of a digits CNN over a lossy tensor channel: accuracy against Bernoulli packet
loss (sequential vs permuted packets) and bytes per sample for fp32 / fp16 / 8-bit uniform (min-max) /
bottleneck + 8-bit uniform.

    python benchmarks/bench_split_channel.py [--epochs 30] [--repeats 5] [--seed 0] [--heatmap cut.png]

``--heatmap PATH`` also writes the per-channel heat map of test sample 0's cut tensor before and
after 50% permuted packet loss (lost elements blue).

Setup: ``split_cnn`` on digits (1,438 train / 359 test, 8x8), trained 30 epochs with Adam, cut
after ``relu2`` (a 32x8x8 = 2,048-element tensor; head 1.22 MFLOP, tail 0.62 MFLOP per sample).
Loss sweep: fp16 packets of 512 elements (the lab framework's packet), so 4 packets per sample,
no rescaling, each rate averaged over ``--repeats`` Bernoulli loss draws. Bytes are on the wire:
IP+UDP (28 B) and our 22-byte packet header per packet, MTU 1500, mean over 50 samples. The
bottleneck (1x1 conv 32→k + ReLU on the device, 3x3 conv k→32 + ReLU on the server) starts from
the trained model and is fine-tuned end to end for ``--epochs // 2`` epochs. Latency = head on an
``iot`` device (0.2 GFLOP/s) + transfer over 1 Mbit/s with 10 ms propagation + tail on a
100 GFLOP/s server.

Measured (2-core CPU box, default arguments, seed 0, 16 s wall):

    accuracy % at packet loss   0%     10%    30%    50%    70%
      sequential              98.33  97.83  95.88  88.41  71.53
      permuted                98.33  97.83  97.05  90.47  74.99

    channel                      acc %  (drop)  wire B/sample  vs fp32  latency ms
      fp32                       98.33   0.00      8,492       1.000      84.0
      fp16                       98.33   0.00      4,246       0.500      50.1
      uniform8                   98.33   0.00      2,148       0.253      33.3
      uniform8 + zstd            98.33   0.00      1,663       0.196      29.4
      bottleneck k=8 + uniform8  97.77   0.56        562       0.066      20.8
      k=8 + uniform8 + zstd      97.77   0.56        490       0.058      20.2
      bottleneck k=4 + uniform8  97.77   0.56        306       0.036      18.6
      k=4 + uniform8 + zstd      97.77   0.56        299       0.035      18.6

Seeds 1 and 2 give the same picture: 0% loss 98.89%; permuted 92.5 / 91.1% at 50% loss and
75.4% at 70%; sequential 86.2 / 81.4% at 50%; k=4 + uniform8 at 0.036 of fp32 with +0.27 / -0.84
points, k=8 + uniform8 at 0.066 with 0.00 / -0.28 points. ("uniform8" is ``ChannelSpec(quant="uniform")``,
8 bits per element, the default.)

Against the issue's bars: bottleneck + uniform8 <= 1/16 (0.0625) of the fp32 wire bytes with <= 1 point
loss at 0% packet loss — **met by k=4** (0.036, -0.56 points; within 1 point on all three seeds);
k=8 + uniform8 carries 0.066, just over 1/16 once packet headers are counted (512 B of payload + 50 B of
headers), and meets it with per-packet zstd (0.058). Note for COMtune: this untuned model is
already fairly loss-tolerant on digits (about -8 points at 50% permuted loss, not the > 10 points
the issue expects of an untuned model); MNIST or a cut with more, smaller packets should show a
steeper baseline curve. The figures above are this script's JSON output, rounded.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from meshlearn.data import load_dataset
from meshlearn.models import build_model
from meshlearn.net import BernoulliLoss, NoLoss
from meshlearn.net.devices import DeviceProfile, server_profile
from meshlearn.split import ChannelSpec, end_to_end_latency, over_loss_model, transmit
from meshlearn.split.heatmap import render_heatmaps
from meshlearn.split.comtune import accuracy_under_loss
from meshlearn.split.model import SplitModel, fit_classifier, split_model

CUT = "relu2"
LOSS_RATES = (0.0, 0.1, 0.3, 0.5, 0.7)
DEVICE = DeviceProfile(flops=2e8, up_bps=1e6, down_bps=5e6)  # the ``iot`` median
UPLINK = {"bandwidth_bps": 1e6, "latency_s": 0.01}


def wire_and_latency(split: SplitModel, x: torch.Tensor, spec: ChannelSpec, n: int = 50) -> tuple[float, float]:
    """Mean wire bytes per sample and end-to-end latency (s) over ``n`` samples, no loss."""
    with torch.no_grad():
        z = split.encode(x[:n]).numpy()
    deliver = over_loss_model(NoLoss(), np.random.default_rng(0), header_bytes=spec.header_bytes, **UPLINK)
    results = [transmit(z[i], spec, deliver, tag=i) for i in range(n)]
    transfer = float(np.mean([r.transfer_s for r in results]))
    latency = end_to_end_latency(split.head_flops, split.tail_flops, transfer, DEVICE, server_profile())
    return float(np.mean([r.wire_bytes for r in results])), latency.total_s


def loss_sweep(split: SplitModel, x: torch.Tensor, y: np.ndarray, repeats: int, seed: int) -> dict:
    out = {}
    for order in ("sequential", "permuted"):
        spec = ChannelSpec(quant="fp16", elements_per_packet=512, order=order)
        rng = np.random.default_rng(seed)
        out[order] = {f"{p:.1f}": round(100 * float(np.mean(
            [accuracy_under_loss(split, x, y, spec, p, rng) for _ in range(repeats)])), 2) for p in LOSS_RATES}
    return out


def byte_table(base: SplitModel, bottlenecks: dict[int, SplitModel], x: torch.Tensor, y: np.ndarray) -> list[dict]:
    rows, rng = [], np.random.default_rng(0)
    cases = [("fp32", base, ChannelSpec(quant="fp32")), ("fp16", base, ChannelSpec(quant="fp16")),
             ("uniform8", base, ChannelSpec(quant="uniform")),
             ("uniform8+zstd", base, ChannelSpec(quant="uniform", compress="zstd"))]
    for k, model in bottlenecks.items():
        cases += [(f"bottleneck{k}+uniform8", model, ChannelSpec(quant="uniform")),
                  (f"bottleneck{k}+uniform8+zstd", model, ChannelSpec(quant="uniform", compress="zstd"))]
    for name, model, spec in cases:
        wire, latency = wire_and_latency(model, x, spec)
        rows.append({"channel": name, "cut_elements": model.cut_numel,
                     "accuracy_pct": round(100 * accuracy_under_loss(model, x, y, spec, 0.0, rng), 2),
                     "wire_bytes_per_sample": round(wire, 1), "latency_ms": round(1e3 * latency, 2)})
    fp32 = rows[0]["wire_bytes_per_sample"]
    for row in rows:
        row["ratio_vs_fp32"] = round(row["wire_bytes_per_sample"] / fp32, 4)
        row["accuracy_drop_pts"] = round(rows[0]["accuracy_pct"] - row["accuracy_pct"], 2)
    return rows


def write_heatmap(split: SplitModel, x: torch.Tensor, path: str, seed: int) -> None:
    """Heat map of sample 0's cut tensor before and after 50% permuted fp16 packet loss."""
    with torch.no_grad():
        z = split.encode(x[:1]).numpy()[0]
    spec = ChannelSpec(quant="fp16", elements_per_packet=512)
    result = transmit(z, spec, over_loss_model(BernoulliLoss(0.5), np.random.default_rng(seed)))
    render_heatmaps(z, result.tensor, mask=result.mask, path=path, scale=8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--heatmap", metavar="PATH", help="also write a before/after heat map PNG here")
    args = ap.parse_args()
    t0 = time.perf_counter()
    train_set, test_set = load_dataset("digits", seed=args.seed)
    xtr, ytr = torch.from_numpy(train_set.x), torch.from_numpy(train_set.y)
    xte, yte = torch.from_numpy(test_set.x), test_set.y
    model = build_model("split_cnn", train_set.input_shape, 10, seed=args.seed)
    fit_classifier(model, xtr, ytr, epochs=args.epochs, seed=args.seed)
    base = split_model(model, CUT, train_set.input_shape)
    bottlenecks = {}
    for k in (8, 4):
        bottlenecks[k] = split_model(model, CUT, train_set.input_shape, bottleneck=k, seed=args.seed)
        fit_classifier(bottlenecks[k], xtr, ytr, epochs=max(1, args.epochs // 2), seed=args.seed + k, lr=1e-3)
    result = {
        "setup": {"model": "split_cnn", "cut": CUT, "cut_shape": list(base.cut_shape), "epochs": args.epochs,
                  "repeats": args.repeats, "seed": args.seed, "test_samples": len(yte),
                  "head_flops": base.head_flops, "tail_flops": base.tail_flops},
        "accuracy_vs_loss_pct": loss_sweep(base, xte, yte, args.repeats, args.seed),
        "bytes": byte_table(base, bottlenecks, xte, yte),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if args.heatmap:
        write_heatmap(base, xte, args.heatmap, args.seed)
        result["heatmap"] = args.heatmap
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
