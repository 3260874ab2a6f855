"""NASC-style search on digits: split point x bottleneck width x wire encoding, minimising modelled
end-to-end latency under an accuracy constraint, against the best fixed split point.

    python benchmarks/bench_nasc.py [--seeds 0 1 2] [--max-drop 0.5] [--finetune-epochs 10] [--all-cuts] [--cheap-only]

Setup: ``split_cnn`` on digits; 20% of the 1,438 training samples held out as the validation set
the search uses (feasible = at most ``--max-drop`` points below the unsplit model there); test
accuracy (359 samples) is only reported. Base model 30 epochs Adam; each (cut, k) bottleneck model
fine-tuned end to end for 10 epochs. Space: cuts after relu1, relu2, pool2, relu3, pool3, relu_fc
(the post-activation cuts; ``--all-cuts`` adds conv1, conv2, conv3, flatten and fc: same shapes) x
k in {none, 1, 2, 4, 8, 16} x {fp32, fp16, int8} = 108 candidates, 30 of them need a fine-tune.
Device: ``iot`` median (0.2 GFLOP/s); server 100 GFLOP/s. Links: 1 Mbit/s with 10 ms propagation
(the iot uplink) and 20 Mbit/s with 5 ms. Baseline "best fixed split": the fastest cut with no
bottleneck and fp32 (accuracy = the unsplit model's). The modelled latencies of the 1 Mbit/s link
are cross-checked against ``bench_split_channel.wire_and_latency`` (``transmit`` + ``end_to_end_latency``).
One torch thread (the box is shared). Both strategies share one estimator per seed (its cache),
but each reports the distinct fine-tunes *it* needed.

Measured (2-core shared CPU box, one torch thread)::

    python benchmarks/bench_nasc.py              (fine-tune 10 epochs, both strategies, 209 s)

          link        seed  chosen          best fixed split     ms chosen / fixed   ratio  val drop  test diff
          1Mbit/10ms   0    relu1/k1/int8   relu_fc/-/fp32       11.14 / 21.64       0.515   0.35     -1.95
          1Mbit/10ms   1    relu1/k2/int8   relu_fc/-/fp32       11.67 / 21.64       0.539   0.00     -1.11
          1Mbit/10ms   2    relu1/k2/int8   relu_fc/-/fp32       11.67 / 21.64       0.539   0.00     -1.11
          20Mbit/5ms   0    relu1/k1/int8   relu1/-/fp32          5.27 /  8.60       0.613   0.35     -1.95
          20Mbit/5ms   1,2  relu1/k2/int8   relu1/-/fp32          5.32 /  8.60       0.618   0.00     -1.11

    Fine-tunes needed: exhaustive 30 of 30 (108 accuracy estimates), latency-ordered 1 / 2 / 2
    (1 / 3 / 3 estimates); same optimum on all 6 (seed, link) pairs. Modelled latency equals
    transmit + end_to_end_latency exactly (cross-check error 0.0 s). Test diff = chosen minus the
    fixed split's (= unsplit model's) test accuracy, points; baseline test 97.49 / 99.16 / 98.61 %.

    python benchmarks/bench_nasc.py --cheap-only --finetune-epochs 30      (37 s)

          seed 0: relu1/k1/int8  ratio 0.515 (1 Mbit) / 0.613 (20 Mbit)  val drop -0.35  test diff -0.28
          seed 1: relu1/k2/int8  ratio 0.539 / 0.618                     val drop  0.00  test diff -1.11
          seed 2: relu1/k2/int8  ratio 0.539 / 0.618                     val drop  0.35  test diff +0.28

    Against the bar ("lower modelled latency than the best fixed split point at equal accuracy, ±1
    point"): latency half met by a wide margin — 0.51-0.54x the best fixed split at 1 Mbit/s and
    0.61-0.62x at 20 Mbit/s, every seed (propagation, 10 / 5 ms, is the floor both pay). Accuracy
    **not met strictly**: the constraint holds on the validation split the search uses (drop <= 0.35
    points), but on the 359-sample test set the chosen config is -1.95 / -1.11 / -1.11 points with
    10-epoch fine-tunes and -0.28 / -1.11 / +0.28 with 30-epoch fine-tunes: seed 1 misses by 0.11
    points (4 test samples lost, 3.6 allowed). Validation (288 samples) is too small to certify ±1 on
    test for a width-1/2 bottleneck; a larger validation set or a safety margin in max_drop (untested
    here) is the next step. The figures above are this script's JSON output, rounded.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_split_channel import DEVICE, UPLINK, wire_and_latency  # noqa: E402

from meshlearn.split.nasc import NascSettings, build_estimator, channel_spec, search  # noqa: E402

POST_ACTIVATION = ("relu1", "relu2", "pool2", "relu3", "pool3", "relu_fc")
LINKS = {"1Mbit/10ms": (1e6, 0.01), "20Mbit/5ms": (20e6, 0.005)}


def cross_check(estimator, result: dict) -> float:
    """Largest |modelled - transmit-measured| latency (s) of chosen and baseline on the 1 Mbit/s link."""
    worst = 0.0
    for which in ("chosen", "baseline"):
        row = result[which]
        model = estimator.split_model(row["cut"], row["bottleneck"])
        spec = channel_spec(estimator.settings, row["quant"])
        _, measured = wire_and_latency(model, estimator.data["test"][0], spec, n=5)
        worst = max(worst, abs(measured - row["latency_s"]))
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--max-drop", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--finetune-epochs", type=int, default=10)
    ap.add_argument("--all-cuts", action="store_true")
    ap.add_argument("--cheap-only", action="store_true", help="run only the latency-ordered strategy")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    assert DEVICE.flops == 2e8 and UPLINK == {"bandwidth_bps": 1e6, "latency_s": 0.01}
    base = dict(device_flops=2e8, server_flops=1e11, max_drop=args.max_drop, epochs=args.epochs,
                finetune_epochs=args.finetune_epochs, cuts=None if args.all_cuts else POST_ACTIVATION)
    runs = []
    for seed in args.seeds:
        estimator = build_estimator(NascSettings(**base), seed)
        for link, (bps, lat) in LINKS.items():
            out = {}
            for strategy in (("latency_ordered",) if args.cheap_only else ("exhaustive", "latency_ordered")):
                settings = NascSettings(**base, link_bps=bps, latency_s=lat, strategy=strategy)
                out[strategy] = search(settings, seed=seed, estimator=estimator)
            lo = out["latency_ordered"]
            ex = out.get("exhaustive", {"chosen": {"candidate": None}, "trained": None, "evaluated": None})
            ch, bl = lo["chosen"], lo["baseline"]
            row = {
                "seed": seed, "link": link, "candidates": lo["candidates"],
                "chosen": ch["candidate"], "baseline": bl["candidate"],
                "chosen_ms": round(1e3 * ch["latency_s"], 3), "baseline_ms": round(1e3 * bl["latency_s"], 3),
                "latency_ratio": round(lo["latency_ratio"], 4),
                "val_drop_pts": round(ch["drop_pts"], 2),
                "test_diff_pts": round(100 * (ch["test_accuracy"] - bl["test_accuracy"]), 2),
                "baseline_test_pct": round(100 * bl["test_accuracy"], 2),
                "same_optimum": None if args.cheap_only else ex["chosen"]["candidate"] == ch["candidate"],
                "trained_exhaustive": ex["trained"], "trained_latency_ordered": lo["trained"],
                "evaluated_exhaustive": ex["evaluated"], "evaluated_latency_ordered": lo["evaluated"],
            }
            if link == "1Mbit/10ms":
                row["crosscheck_max_abs_err_s"] = cross_check(estimator, lo)
            runs.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    summary = {}
    for link in LINKS:
        rows = [r for r in runs if r["link"] == link]
        summary[link] = {
            "mean_latency_ratio": round(sum(r["latency_ratio"] for r in rows) / len(rows), 4),
            "test_diff_pts": [r["test_diff_pts"] for r in rows],
            "bar_met_all_seeds": all(r["latency_ratio"] < 1 and abs(r["test_diff_pts"]) <= 1.0 for r in rows),
            "same_optimum_all_seeds": None if args.cheap_only else all(r["same_optimum"] for r in rows),
        }
    print(json.dumps({"settings": {**base, "cuts": list(base["cuts"] or ["all"])}, "runs": runs,
                      "summary": summary, "seconds": round(time.perf_counter() - t0, 1)}, indent=2))


if __name__ == "__main__":
    main()
